//! The `wasmlock:lock@0.3.0` host traits. An `async func` takes what it
//! needs from the store (`Accessor::with`), waits without it, and hands its
//! result to the guest with it again: the guest's other tasks run meanwhile,
//! and cancelling the call drops the wait (which withdraws it, and releases
//! a grant that raced the cancel). A result enters the resource table only
//! in the call's last step, so a cancel never leaves one behind.
//!
//! The calls that do not wait are the 0.2 bindings' own, called through.

use std::convert::Infallible;

use tokio::sync::oneshot;
use wasmtime::component::{Access, Accessor, FutureReader, Resource};
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::p2::Pollable;

use super::bindings::wasmlock::lock::{locks, namespaces, types};
use crate::Wait;
use crate::wasm::bindings::wasmlock::lock::locks as p2;
use crate::wasm::error::{LockError, LockResult};
use crate::wasm::steps::{Begun, since_epoch};
use crate::wasm::{GuestGuard, GuestLock, GuestNamespace, GuestSemaphore};
use crate::wasm::{WasmLock, WasmLockCtxView, host};

/// Runs `step` with the store once the guest's releases begun before this
/// call are done (see `Releasing`): in one store access when none is under
/// way, as is usual. Cancel safe: the releases go on.
async fn settled<T, R>(
    store: &Accessor<T, WasmLock>,
    step: impl FnOnce(WasmLockCtxView<'_>) -> R,
) -> R {
    let mut step = Some(step);
    let earlier = store.with(|mut a| {
        let view = a.get();
        let earlier = view.ctx.releasing.earlier();
        if earlier.is_empty() {
            Ok(step.take().expect("not yet run")(view))
        } else {
            Err(earlier)
        }
    });
    match earlier {
        Ok(done) => done,
        Err(earlier) => {
            earlier.settled().await;
            store.with(|mut a| step.take().expect("not yet run")(a.get()))
        }
    }
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
        let opening = store.with(|mut a| {
            let mut view = a.get();
            let (handle, locks) = view.open_at_checked(&dir, k)?;
            LockResult::Ok(view.opened_lock(handle, move || locks.builder(&path).kind(k).build()))
        })?;
        let (lock, handle) = opening.await?;
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
        let asking = settled(store, |view| {
            let lock = view.lock_of(&this)?;
            LockResult::Ok(view.blocking(move || lock.is_locked()))
        })
        .await?;
        asking.await
    }

    async fn holder(
        store: &Accessor<T, Self>,
        this: Resource<GuestLock>,
    ) -> LockResult<Option<types::Holder>> {
        let lookup = settled(store, |mut view| view.holder_lookup(&this)).await?;
        Ok(lookup.await?.map(|(kind, details)| types::Holder {
            kind: host::holder_kind(kind).into(),
            since: since_epoch(&details).map(|d| types::Instant {
                seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
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
        let breaking = settled(store, |mut view| view.break_checked(&this, force)).await?;
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
    // The guest goes on while this task waits, free to release: no
    // deadlock to judge. A lock granted at once enters the table in the
    // same step, without a wait.
    let begun = settled(store, |mut view| {
        match view.begin_acquire(&this, host::mode(m.into()), asked, false)? {
            Begun::Held(guard) => Ok(Err(view.table.push(guard)?)),
            Begun::Waiting(waiting) => LockResult::Ok(Ok(waiting)),
        }
    })
    .await?;
    let guard = match begun {
        Ok(waiting) => waiting.granted().await?,
        Err(held) => return Ok(held),
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
        let handle = store.get().lost_handle()?;
        let mut signal = store.get().table.get_mut(&this)?.lost_signal(handle);
        // Never an error: an error would trap the guest. A hold released
        // instead of lost leaves the future pending, as the WIT says.
        FutureReader::new(&mut store, async move {
            signal.ready().await;
            Ok::<(), Infallible>(())
        })
    }

    async fn release(store: &Accessor<T, Self>, this: Resource<GuestGuard>) -> LockResult<()> {
        // Out of the table and released in one step with the store, or
        // handed to a task of its own: cancelling this call then leaves
        // the release running (the guest's next lock call waits for it),
        // never a hold nobody can release.
        let told = store.with(|mut a| {
            let view = a.get();
            let guard = match view.table.delete(this)?.release_now() {
                Ok(released) => return Ok(Err(released)),
                Err(guard) => guard,
            };
            let (tell, told) = oneshot::channel();
            view.ctx.releasing.push(async move {
                let _ = tell.send((*guard).release().await);
            });
            LockResult::Ok(Ok(told))
        })?;
        let released = match told {
            Ok(told) => told.await.map_err(|_| {
                LockError::trap(wasmtime::format_err!(
                    "wasmlock: a guard's release panicked"
                ))
            })?,
            Err(released) => released,
        };
        Ok(released?)
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
        let opening = store.with(|mut a| {
            let mut view = a.get();
            let (handle, slots, locks) = view.semaphore_at_checked(&dir, slots)?;
            LockResult::Ok(view.opened_semaphore(handle, move || locks.semaphore(&name, slots)))
        })?;
        let (sem, handle) = opening.await?;
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
        let asking = settled(store, |view| {
            let sem = view.semaphore_of(&this)?;
            LockResult::Ok(view.blocking(move || sem.available().map(|n| n as u32)))
        })
        .await?;
        asking.await
    }
}

/// Takes a permit of `this`, waiting as `asked` says, without the store.
async fn take_permit<T>(
    store: &Accessor<T, WasmLock>,
    this: Resource<GuestSemaphore>,
    asked: Wait,
) -> LockResult<Resource<GuestGuard>> {
    let waiting = settled(store, |mut view| view.begin_permit(&this, asked, false)).await?;
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
        let opening = store.with(|mut a| {
            let mut view = a.get();
            let (handle, name, namespace) = view.namespace_lock_checked(&this)?;
            LockResult::Ok(view.opened_lock(handle, move || namespace.lock(&name, &key)))
        })?;
        let (lock, handle) = opening.await?;
        store.with(|mut a| a.get().push_lock(lock, false, handle))
    }

    async fn open_semaphore(
        store: &Accessor<T, Self>,
        this: Resource<GuestNamespace>,
        key: String,
        slots: u32,
    ) -> LockResult<Resource<GuestSemaphore>> {
        let opening = store.with(|mut a| {
            let mut view = a.get();
            let (handle, slots, name, namespace) =
                view.namespace_semaphore_checked(&this, slots)?;
            LockResult::Ok(
                view.opened_semaphore(handle, move || namespace.semaphore(&name, &key, slots)),
            )
        })?;
        let (sem, handle) = opening.await?;
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
