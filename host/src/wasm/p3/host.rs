//! The `wasmlock:lock@0.3.0` host traits. An `async func` takes what it
//! needs from the store (`Accessor::with`), waits without it, and hands its
//! result to the guest with it again: the guest's other tasks run meanwhile,
//! and cancelling the call drops the wait (which withdraws it, and releases
//! a grant that raced the cancel). A result enters the resource table only
//! in the call's last step, so a cancel never leaves one behind.
//!
//! The calls that do not wait are the 0.2 bindings' own, called through.

use std::convert::Infallible;

use wasmtime::component::{Access, Accessor, FutureReader, Resource};
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::p2::Pollable;

use super::bindings::wasmlock::lock::{locks, namespaces, types};
use crate::Wait;
use crate::wasm::bindings::wasmlock::lock::locks as p2;
use crate::wasm::error::{LockError, LockResult};
use crate::wasm::steps::{Begun, blocking, opened_lock, opened_semaphore, since_epoch};
use crate::wasm::{GuestGuard, GuestLock, GuestNamespace, GuestSemaphore};
use crate::wasm::{WasmLock, WasmLockCtxView, host};

/// Waits until the guest's earlier releases are done (see `Releasing`).
async fn settle<T>(store: &Accessor<T, WasmLock>) {
    let mut earlier = store.with(|mut access| std::mem::take(&mut access.get().ctx.releasing));
    earlier.settle().await;
}

impl types::Host for WasmLockCtxView<'_> {
    fn convert_error_code(&mut self, err: LockError) -> wasmtime::Result<types::ErrorCode> {
        err.downcast().map(Into::into)
    }
}

impl locks::Host for WasmLockCtxView<'_> {}

impl<T> locks::HostLockWithStore<T> for WasmLock {
    async fn open_at(
        store: &Accessor<T, Self>,
        dir: Resource<Descriptor>,
        path: String,
        k: types::Kind,
    ) -> LockResult<Resource<GuestLock>> {
        let k = host::kind(k.into());
        let (handle, locks) = store.with(|mut a| a.get().open_at_checked(&dir, k))?;
        let lock = opened_lock(move || locks.builder(&path).kind(k).build()).await?;
        store.with(|mut a| a.get().push_lock(lock, false, handle))
    }

    async fn acquire(
        store: &Accessor<T, Self>,
        this: Resource<GuestLock>,
        m: types::Mode,
    ) -> LockResult<Resource<GuestGuard>> {
        acquire_lock(store, this, m, Wait::Forever).await
    }

    async fn try_acquire(
        store: &Accessor<T, Self>,
        this: Resource<GuestLock>,
        m: types::Mode,
    ) -> LockResult<Resource<GuestGuard>> {
        acquire_lock(store, this, m, Wait::TryOnce).await
    }

    async fn is_locked(store: &Accessor<T, Self>, this: Resource<GuestLock>) -> LockResult<bool> {
        settle(store).await;
        let lock = store.with(|mut a| a.get().lock_of(&this))?;
        blocking(move || lock.is_locked()).await
    }

    async fn holder(
        store: &Accessor<T, Self>,
        this: Resource<GuestLock>,
    ) -> LockResult<Option<types::Holder>> {
        settle(store).await;
        let lookup = store.with(|mut a| a.get().holder_lookup(&this))?;
        Ok(lookup.await?.map(|(kind, details)| types::Holder {
            kind: host::holder_kind(kind).into(),
            since: since_epoch(&details).map(|d| types::Instant {
                seconds: d.as_secs() as i64,
                nanoseconds: d.subsec_nanos(),
            }),
            pid: details.pid,
            host: details.host,
        }))
    }

    async fn break_lock(
        store: &Accessor<T, Self>,
        this: Resource<GuestLock>,
        force: bool,
    ) -> LockResult<()> {
        settle(store).await;
        let breaking = store.with(|mut a| a.get().break_checked(&this, force))?;
        breaking.await
    }
}

/// Acquires `this` in `m`, waiting as `asked` says, without the store.
async fn acquire_lock<T>(
    store: &Accessor<T, WasmLock>,
    this: Resource<GuestLock>,
    m: types::Mode,
    asked: Wait,
) -> LockResult<Resource<GuestGuard>> {
    settle(store).await;
    // The guest goes on while this task waits, free to release: no
    // deadlock to judge.
    let begun = store.with(|mut a| {
        a.get()
            .begin_acquire(&this, host::mode(m.into()), asked, false)
    })?;
    let guard = match begun {
        Begun::Held(guard) => guard,
        Begun::Waiting(waiting) => waiting.granted().await?,
    };
    store.with(|mut a| Ok(a.get().table.push(guard)?))
}

impl locks::HostLock for WasmLockCtxView<'_> {
    fn on_file(&mut self, file: Resource<Descriptor>) -> LockResult<Resource<GuestLock>> {
        self.lock_on_file(&file)
    }

    fn drop(&mut self, this: Resource<GuestLock>) -> wasmtime::Result<()> {
        p2::HostLock::drop(self, this)
    }
}

impl<T> locks::HostGuardWithStore<T> for WasmLock {
    fn lost(
        mut store: Access<'_, T, Self>,
        this: Resource<GuestGuard>,
    ) -> wasmtime::Result<FutureReader<()>> {
        let mut signal = store.get().table.get_mut(&this)?.lost_signal();
        // Never an error: an error would trap the guest. A hold released
        // instead of lost leaves the future pending, as the WIT says.
        FutureReader::new(&mut store, async move {
            signal.ready().await;
            Ok::<(), Infallible>(())
        })
    }

    async fn release(store: &Accessor<T, Self>, this: Resource<GuestGuard>) -> LockResult<()> {
        settle(store).await;
        let guard = store.with(|mut a| a.get().table.delete(this))?;
        Ok(guard.release().await?)
    }
}

impl locks::HostGuard for WasmLockCtxView<'_> {
    fn mode(&mut self, this: Resource<GuestGuard>) -> wasmtime::Result<types::Mode> {
        p2::HostGuard::mode(self, this).map(Into::into)
    }

    fn slot(&mut self, this: Resource<GuestGuard>) -> wasmtime::Result<Option<u32>> {
        p2::HostGuard::slot(self, this)
    }

    fn fence(&mut self, this: Resource<GuestGuard>) -> wasmtime::Result<Option<u64>> {
        p2::HostGuard::fence(self, this)
    }

    fn status(&mut self, this: Resource<GuestGuard>) -> wasmtime::Result<types::HoldStatus> {
        p2::HostGuard::status(self, this).map(Into::into)
    }

    fn drop(&mut self, this: Resource<GuestGuard>) -> wasmtime::Result<()> {
        p2::HostGuard::drop(self, this)
    }
}

impl<T> locks::HostSemaphoreWithStore<T> for WasmLock {
    async fn open_at(
        store: &Accessor<T, Self>,
        dir: Resource<Descriptor>,
        name: String,
        slots: u32,
    ) -> LockResult<Resource<GuestSemaphore>> {
        let (handle, slots, locks) =
            store.with(|mut a| a.get().semaphore_at_checked(&dir, slots))?;
        let sem = opened_semaphore(move || locks.semaphore(&name, slots)).await?;
        store.with(|mut a| a.get().push_semaphore(sem, handle))
    }

    async fn acquire(
        store: &Accessor<T, Self>,
        this: Resource<GuestSemaphore>,
    ) -> LockResult<Resource<GuestGuard>> {
        take_permit(store, this, Wait::Forever).await
    }

    async fn try_acquire(
        store: &Accessor<T, Self>,
        this: Resource<GuestSemaphore>,
    ) -> LockResult<Resource<GuestGuard>> {
        take_permit(store, this, Wait::TryOnce).await
    }

    async fn available(
        store: &Accessor<T, Self>,
        this: Resource<GuestSemaphore>,
    ) -> LockResult<u32> {
        settle(store).await;
        let sem = store.with(|mut a| a.get().semaphore_of(&this))?;
        blocking(move || sem.available().map(|n| n as u32)).await
    }
}

/// Takes a permit of `this`, waiting as `asked` says, without the store.
async fn take_permit<T>(
    store: &Accessor<T, WasmLock>,
    this: Resource<GuestSemaphore>,
    asked: Wait,
) -> LockResult<Resource<GuestGuard>> {
    settle(store).await;
    let waiting = store.with(|mut a| a.get().begin_permit(&this, asked, false))?;
    let guard = waiting.granted().await?;
    store.with(|mut a| Ok(a.get().table.push(guard)?))
}

impl locks::HostSemaphore for WasmLockCtxView<'_> {
    fn slots(&mut self, this: Resource<GuestSemaphore>) -> wasmtime::Result<u32> {
        p2::HostSemaphore::slots(self, this)
    }

    fn drop(&mut self, this: Resource<GuestSemaphore>) -> wasmtime::Result<()> {
        p2::HostSemaphore::drop(self, this)
    }
}

impl<T> locks::HostNamespaceWithStore<T> for WasmLock {
    async fn open(
        store: &Accessor<T, Self>,
        this: Resource<GuestNamespace>,
        key: String,
    ) -> LockResult<Resource<GuestLock>> {
        let (handle, name, namespace) =
            store.with(|mut a| a.get().namespace_lock_checked(&this))?;
        let lock = opened_lock(move || namespace.lock(&name, &key)).await?;
        store.with(|mut a| a.get().push_lock(lock, false, handle))
    }

    async fn open_semaphore(
        store: &Accessor<T, Self>,
        this: Resource<GuestNamespace>,
        key: String,
        slots: u32,
    ) -> LockResult<Resource<GuestSemaphore>> {
        let (handle, slots, name, namespace) =
            store.with(|mut a| a.get().namespace_semaphore_checked(&this, slots))?;
        let sem = opened_semaphore(move || namespace.semaphore(&name, &key, slots)).await?;
        store.with(|mut a| a.get().push_semaphore(sem, handle))
    }
}

impl locks::HostNamespace for WasmLockCtxView<'_> {
    fn drop(&mut self, this: Resource<GuestNamespace>) -> wasmtime::Result<()> {
        p2::HostNamespace::drop(self, this)
    }
}

impl namespaces::Host for WasmLockCtxView<'_> {
    fn get_namespaces(&mut self) -> wasmtime::Result<Vec<(Resource<GuestNamespace>, String)>> {
        crate::wasm::bindings::wasmlock::lock::namespaces::Host::get_namespaces(self)
    }
}
