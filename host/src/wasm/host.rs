//! The `wasmlock:lock@0.2.0` host traits, implemented over a guest's
//! [`WasmLockCtxView`] with the steps in `steps.rs`.
//!
//! As in wasmtime-wasi, only calls that may wait are async. A guard's drop
//! is not: it releases at once, or, when a soft marker's release would wait
//! for a breaker's turn, lets it finish on a blocking thread; the guest's
//! next lock call waits for it first. A release waits for that turn before
//! it locks the lock's in-process books, so attempts meanwhile do not wait.

use std::time::Duration;

use wasmlock_types::HolderKind;
use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::p2::DynPollable;

use super::WasmLockCtxView;
use super::bindings::wasmlock::lock::types::ErrorCode;
use super::bindings::wasmlock::lock::{locks, namespaces, types};
use super::error::{LockError, LockResult};
use super::guard::{GuestGuard, Native};
use super::pending::FutureGuard;
use super::resources::{GuestLock, GuestNamespace, GuestSemaphore};
use super::steps::{Begun, since_epoch};
use crate::{Kind, Mode, Wait};

pub(super) fn mode(m: types::Mode) -> Mode {
    match m {
        types::Mode::Exclusive => Mode::Exclusive,
        types::Mode::Shared => Mode::Shared,
    }
}

fn wit_mode(m: Mode) -> types::Mode {
    match m {
        Mode::Exclusive => types::Mode::Exclusive,
        Mode::Shared => types::Mode::Shared,
    }
}

pub(super) fn kind(k: types::Kind) -> Kind {
    match k {
        types::Kind::Os => Kind::Os,
        types::Kind::Soft => Kind::Soft,
    }
}

fn wait(w: types::Wait) -> Wait {
    match w {
        types::Wait::Forever => Wait::Forever,
        types::Wait::TryOnce => Wait::TryOnce,
        types::Wait::Timeout(ns) => Wait::Timeout(Duration::from_nanos(ns)),
    }
}

pub(super) fn holder_kind(k: HolderKind) -> types::HolderKind {
    match k {
        HolderKind::ThisGuest => types::HolderKind::ThisGuest,
        HolderKind::ThisHost => types::HolderKind::ThisHost,
        HolderKind::Elsewhere => types::HolderKind::Elsewhere,
    }
}

impl types::Host for WasmLockCtxView<'_> {
    fn convert_error_code(&mut self, err: LockError) -> wasmtime::Result<ErrorCode> {
        err.downcast()
    }
}

impl locks::Host for WasmLockCtxView<'_> {}

impl locks::HostLock for WasmLockCtxView<'_> {
    async fn open_at(
        &mut self,
        dir: Resource<Descriptor>,
        path: String,
        k: types::Kind,
    ) -> LockResult<Resource<GuestLock>> {
        let k = kind(k);
        let (handle, locks) = self.open_at_checked(&dir, k)?;
        let (lock, handle) = self
            .opened_lock(handle, move || locks.builder(&path).kind(k).build())
            .await?;
        self.push_lock(lock, false, handle)
    }

    async fn on_file(&mut self, file: Resource<Descriptor>) -> LockResult<Resource<GuestLock>> {
        self.lock_on_file(&file)
    }

    async fn acquire(
        &mut self,
        this: Resource<GuestLock>,
        m: types::Mode,
        w: types::Wait,
    ) -> LockResult<Resource<GuestGuard>> {
        self.ctx.releasing.settle().await;
        let asked = wait(w);
        // The guest waits in this call: it cannot release what it holds.
        // Deadlock is judged on what the guest asked for: a forever wait
        // the host caps would still end only in a timeout.
        let begun = self.begin_acquire(&this, mode(m), asked, asked == Wait::Forever)?;
        // No future at all for a lock granted at once: most acquisitions.
        let guard = match begun {
            Begun::Held(guard) => guard,
            Begun::Waiting(waiting) => waiting.granted().await?,
        };
        Ok(self.table.push(guard)?)
    }

    async fn start_acquire(
        &mut self,
        this: Resource<GuestLock>,
        m: types::Mode,
    ) -> LockResult<Resource<FutureGuard>> {
        self.ctx.releasing.settle().await;
        let m = mode(m);
        let (lock, held) = self.prepare(&this, m)?;
        let party = self.ctx.owner;
        let w = self.ctx.limits.clamp(Wait::Forever);
        let no_report = None::<(Duration, fn(Option<crate::Holder>))>;
        // The guest goes on running meanwhile, free to release: no deadlock
        // to detect.
        let acquisition = async move {
            lock.lock_for_party_async(m, w, party, false, no_report)
                .await
                .map(Native::Lock)
        };
        let pending = FutureGuard::start(acquisition, held, self.ctx.limits.max_hold())?;
        Ok(self.table.push(pending)?)
    }

    async fn is_locked(&mut self, this: Resource<GuestLock>) -> LockResult<bool> {
        self.ctx.releasing.settle().await;
        let lock = self.lock_of(&this)?;
        self.blocking(move || lock.is_locked()).await
    }

    async fn holder(&mut self, this: Resource<GuestLock>) -> LockResult<Option<types::Holder>> {
        self.ctx.releasing.settle().await;
        let found = self.holder_lookup(&this)?.await?;
        Ok(found.map(|(kind, details)| types::Holder {
            kind: holder_kind(kind),
            since: since_epoch(&details).map(|d| {
                wasmtime_wasi::p2::bindings::clocks::wall_clock::Datetime {
                    seconds: d.as_secs(),
                    nanoseconds: d.subsec_nanos(),
                }
            }),
            pid: details.pid,
            host: details.host,
        }))
    }

    async fn break_lock(&mut self, this: Resource<GuestLock>, force: bool) -> LockResult<()> {
        self.ctx.releasing.settle().await;
        self.break_checked(&this, force)?.await
    }

    fn drop(&mut self, this: Resource<GuestLock>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl locks::HostGuard for WasmLockCtxView<'_> {
    fn mode(&mut self, this: Resource<GuestGuard>) -> wasmtime::Result<types::Mode> {
        Ok(wit_mode(self.table.get(&this)?.mode()))
    }

    fn slot(&mut self, this: Resource<GuestGuard>) -> wasmtime::Result<Option<u32>> {
        Ok(self.table.get(&this)?.slot())
    }

    fn fence(&mut self, this: Resource<GuestGuard>) -> wasmtime::Result<Option<u64>> {
        Ok(self.table.get(&this)?.fence())
    }

    fn status(&mut self, this: Resource<GuestGuard>) -> wasmtime::Result<types::HoldStatus> {
        Ok(if self.table.get(&this)?.is_lost() {
            types::HoldStatus::Lost
        } else {
            types::HoldStatus::Held
        })
    }

    fn subscribe_lost(
        &mut self,
        this: Resource<GuestGuard>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let handle = self.lost_handle()?;
        let signal = self.table.get_mut(&this)?.lost_signal(handle);
        // Owned by the pollable, not a child of the guard: the guest may
        // keep the pollable after the guard is gone.
        let signal = self.table.push(signal)?;
        wasmtime_wasi::p2::subscribe(self.table, signal)
    }

    async fn release(&mut self, this: Resource<GuestGuard>) -> LockResult<()> {
        self.ctx.releasing.settle().await;
        let guard = self.table.delete(this)?;
        Ok(guard.release().await?)
    }

    fn drop(&mut self, this: Resource<GuestGuard>) -> wasmtime::Result<()> {
        let guard = self.table.delete(this)?;
        guard.close_now(&mut self.ctx.releasing);
        Ok(())
    }
}

impl locks::HostFutureGuard for WasmLockCtxView<'_> {
    fn subscribe(
        &mut self,
        this: Resource<FutureGuard>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let done = self.table.get(&this)?.done();
        // Owned by the pollable: keeping it past `get` and the future's drop
        // is fine (it is ready then).
        let done = self.table.push(done)?;
        wasmtime_wasi::p2::subscribe(self.table, done)
    }

    fn get(
        &mut self,
        this: Resource<FutureGuard>,
    ) -> wasmtime::Result<
        Option<std::result::Result<std::result::Result<Resource<GuestGuard>, ErrorCode>, ()>>,
    > {
        let outcome = self.table.get_mut(&this)?.get(&mut self.ctx.releasing);
        Ok(match outcome {
            None => None,
            Some(Err(())) => Some(Err(())),
            Some(Ok(Err(e))) => Some(Ok(Err(ErrorCode::from(&e)))),
            Some(Ok(Ok(guard))) => Some(Ok(Ok(self.table.push(guard)?))),
        })
    }

    async fn drop(&mut self, this: Resource<FutureGuard>) -> wasmtime::Result<()> {
        self.table.delete(this)?.close().await;
        Ok(())
    }
}

impl locks::HostSemaphore for WasmLockCtxView<'_> {
    async fn open_at(
        &mut self,
        dir: Resource<Descriptor>,
        name: String,
        slots: u32,
    ) -> LockResult<Resource<GuestSemaphore>> {
        let (handle, slots, locks) = self.semaphore_at_checked(&dir, slots)?;
        let (sem, handle) = self
            .opened_semaphore(handle, move || locks.semaphore(&name, slots))
            .await?;
        self.push_semaphore(sem, handle)
    }

    async fn acquire(
        &mut self,
        this: Resource<GuestSemaphore>,
        w: types::Wait,
    ) -> LockResult<Resource<GuestGuard>> {
        self.ctx.releasing.settle().await;
        let asked = wait(w);
        let waiting = self.begin_permit(&this, asked, asked == Wait::Forever)?;
        let guard = waiting.granted().await?;
        Ok(self.table.push(guard)?)
    }

    async fn start_acquire(
        &mut self,
        this: Resource<GuestSemaphore>,
    ) -> LockResult<Resource<FutureGuard>> {
        self.ctx.releasing.settle().await;
        let sem = self.table.get(&this)?.sem.clone();
        let held = self.held_slot()?;
        let w = self.ctx.limits.clamp(Wait::Forever);
        let party = self.ctx.owner;
        let acquisition = async move {
            sem.acquire_for_party_async(w, party, false)
                .await
                .map(Native::Permit)
        };
        let pending = FutureGuard::start(acquisition, held, self.ctx.limits.max_hold())?;
        Ok(self.table.push(pending)?)
    }

    async fn available(&mut self, this: Resource<GuestSemaphore>) -> LockResult<u32> {
        self.ctx.releasing.settle().await;
        let sem = self.semaphore_of(&this)?;
        self.blocking(move || sem.available().map(|n| n as u32))
            .await
    }

    fn slots(&mut self, this: Resource<GuestSemaphore>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&this)?.sem.slots() as u32)
    }

    fn drop(&mut self, this: Resource<GuestSemaphore>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl locks::HostNamespace for WasmLockCtxView<'_> {
    async fn open(
        &mut self,
        this: Resource<GuestNamespace>,
        key: String,
    ) -> LockResult<Resource<GuestLock>> {
        let (handle, name, namespace) = self.namespace_lock_checked(&this)?;
        let (lock, handle) = self
            .opened_lock(handle, move || namespace.lock(&name, &key))
            .await?;
        self.push_lock(lock, false, handle)
    }

    async fn open_semaphore(
        &mut self,
        this: Resource<GuestNamespace>,
        key: String,
        slots: u32,
    ) -> LockResult<Resource<GuestSemaphore>> {
        let (handle, slots, name, namespace) = self.namespace_semaphore_checked(&this, slots)?;
        let (sem, handle) = self
            .opened_semaphore(handle, move || namespace.semaphore(&name, &key, slots))
            .await?;
        self.push_semaphore(sem, handle)
    }

    fn drop(&mut self, this: Resource<GuestNamespace>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl namespaces::Host for WasmLockCtxView<'_> {
    fn get_namespaces(&mut self) -> wasmtime::Result<Vec<(Resource<GuestNamespace>, String)>> {
        let limits = self.ctx.limits.clone();
        let mut granted = Vec::new();
        for (name, namespace) in limits.namespaces() {
            // Each listing is new handles, as `get-directories` gives new
            // descriptors: counted, so listing in a loop cannot grow the
            // table without bound.
            let Some(handle) = limits.take_handle() else {
                wasmtime::bail!(
                    "wasmlock: the guest's open-handle limit was reached listing namespaces"
                );
            };
            let ns = GuestNamespace {
                name: name.clone(),
                namespace: namespace.clone(),
                _handle: handle,
            };
            granted.push((self.table.push(ns)?, name.clone()));
        }
        Ok(granted)
    }
}
