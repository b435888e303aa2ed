//! The generated host traits, implemented over a guest's [`WasmLockCtxView`].
//!
//! Every limit is checked before the file system is touched, and file-system
//! work that may take long (opening and creating files and directories,
//! a semaphore's slot files, reading holders and markers, breaking, a soft
//! marker's release, which takes turns with breakers) runs on a blocking
//! thread. What stays on the executor is an acquisition's attempts and a
//! release that cannot wait: a few system calls each (a `flock` with
//! `LOCK_NB` or `LOCK_UN`, a soft marker's exclusive create or unlink).
//!
//! As in wasmtime-wasi, only calls that may wait are async. A guard's drop
//! is not: it releases at once, or, when a soft marker's release would wait
//! for a breaker's turn, lets it finish on a blocking thread; the guest's
//! next lock call waits for it first. A release waits for that turn before
//! it locks the lock's in-process books, so attempts meanwhile do not wait.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cap_std::fs::Dir;
use wasmlock_types::{ErrorCode as Code, HolderKind};
use wasmtime::component::Resource;
use wasmtime_wasi::OpenMode;
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::runtime::spawn_blocking;

use super::bindings::wasmlock::lock::types::ErrorCode;
use super::bindings::wasmlock::lock::{locks, namespaces, types};
use super::error::{LockError, LockResult};
use super::guard::{GuestGuard, Native};
use super::pending::FutureGuard;
use super::resources::{GuestLock, GuestNamespace, GuestSemaphore};
use super::{WasmLockCtxView, ctx::Slot};
use crate::{FileLock, Kind, LockDir, Mode, Result, Semaphore, Wait};

fn mode(m: types::Mode) -> Mode {
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

fn kind(k: types::Kind) -> Kind {
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

fn holder_kind(k: HolderKind) -> types::HolderKind {
    match k {
        HolderKind::ThisGuest => types::HolderKind::ThisGuest,
        HolderKind::ThisHost => types::HolderKind::ThisHost,
        HolderKind::Elsewhere => types::HolderKind::Elsewhere,
    }
}

/// Runs file-system work on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> LockResult<T> {
    Ok(spawn_blocking(work).await?)
}

impl WasmLockCtxView<'_> {
    /// A unit of the open-handles quota, before anything is touched.
    fn handle_slot(&self) -> LockResult<Slot> {
        self.ctx
            .limits
            .take_handle()
            .ok_or_else(|| Code::Quota.into())
    }

    /// A unit of the held-locks quota for one more guard.
    fn held_slot(&self) -> LockResult<Slot> {
        self.ctx
            .limits
            .take_held()
            .ok_or_else(|| Code::Quota.into())
    }

    /// The writable directory behind a guest's descriptor, as a sandbox
    /// named by the guest's own spelling (host paths stay private).
    fn lock_dir(&mut self, dir: &Resource<Descriptor>) -> LockResult<LockDir> {
        let Descriptor::Dir(d) = self.table.get(dir)? else {
            return Err(Code::InvalidPath.into());
        };
        if d.perms.write_not_permitted() {
            return Err(Code::ReadOnly.into());
        }
        let file = d
            .dir
            .try_clone()
            .map_err(|e| ErrorCode::Other(Some(e.to_string())))?;
        Ok(LockDir::from_cap_std(Dir::from_std_file(file), ""))
    }

    fn push_lock(
        &mut self,
        lock: FileLock,
        read_only: bool,
        handle: Slot,
    ) -> LockResult<Resource<GuestLock>> {
        let guest = GuestLock {
            lock: Arc::new(lock),
            read_only,
            _handle: handle,
        };
        Ok(self.table.push(guest)?)
    }

    /// Opens a lock by path on a blocking thread (resolved and opened now,
    /// so a path out of the sandbox fails here) and hands it to the guest.
    async fn open_lock(
        &mut self,
        handle: Slot,
        open: impl FnOnce() -> Result<FileLock> + Send + 'static,
    ) -> LockResult<Resource<GuestLock>> {
        let lock = blocking(move || {
            let lock = open()?;
            lock.entry()?;
            Ok(lock)
        })
        .await?;
        self.push_lock(lock, false, handle)
    }

    /// Opens a semaphore on a blocking thread, its slot files made now, and
    /// hands it to the guest.
    async fn open_semaphore(
        &mut self,
        handle: Slot,
        open: impl FnOnce() -> Result<Semaphore> + Send + 'static,
    ) -> LockResult<Resource<GuestSemaphore>> {
        let sem = blocking(move || {
            let sem = open()?;
            sem.open_slots()?;
            Ok(sem)
        })
        .await?;
        let guest = GuestSemaphore {
            sem: Arc::new(sem),
            _handle: handle,
        };
        Ok(self.table.push(guest)?)
    }

    /// Refuses a semaphore size before any slot file is made.
    fn check_slots(&self, slots: u32) -> LockResult<usize> {
        if slots > self.ctx.limits.max_slots() {
            return Err(Code::Quota.into());
        }
        Ok(slots as usize)
    }

    /// What acquiring `this` in `m` needs: the handle, the guest's identity
    /// and its held-locks unit, after the policy checks.
    fn prepare(
        &mut self,
        this: &Resource<GuestLock>,
        m: Mode,
    ) -> LockResult<(Arc<FileLock>, Slot)> {
        let g = self.table.get(this)?;
        if g.read_only && !self.ctx.limits.read_only_allows(m) {
            return Err(Code::NotPermitted.into());
        }
        let lock = g.lock.clone();
        Ok((lock, self.held_slot()?))
    }

    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.ctx
            .limits
            .max_hold()
            .map(|max| tokio::time::Instant::now() + max)
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
        if !self.ctx.limits.allows(k) {
            return Err(Code::NotPermitted.into());
        }
        let handle = self.handle_slot()?;
        let locks = self.lock_dir(&dir)?;
        self.open_lock(handle, move || locks.builder(&path).kind(k).build())
            .await
    }

    async fn on_file(&mut self, file: Resource<Descriptor>) -> LockResult<Resource<GuestLock>> {
        if !self.ctx.limits.allows(Kind::Os) {
            return Err(Code::NotPermitted.into());
        }
        // The quota first: no descriptor is duplicated beyond it.
        let handle = self.handle_slot()?;
        let Descriptor::File(f) = self.table.get(&file)? else {
            return Err(Code::InvalidPath.into());
        };
        let read_only = !f.open_mode.contains(OpenMode::WRITE) || f.perms.write_not_permitted();
        let opened = f.file.try_clone();
        let name = PathBuf::from("<file descriptor>");
        let opened = opened.map_err(|e| crate::Error::from_io(e, &name))?;
        let lock = FileLock::from_file_as(opened, name)?;
        self.push_lock(lock, read_only, handle)
    }

    async fn acquire(
        &mut self,
        this: Resource<GuestLock>,
        m: types::Mode,
        w: types::Wait,
    ) -> LockResult<Resource<GuestGuard>> {
        self.ctx.releasing.settle().await;
        let m = mode(m);
        let (lock, held) = self.prepare(&this, m)?;
        let party = self.ctx.owner;
        let asked = wait(w);
        // Deadlock is judged on what the guest asked for: a forever wait
        // the host caps would still end only in a timeout.
        let blocks = asked == Wait::Forever;
        // A free lock is taken without building the waiting future, which
        // costs an uncontended lock+unlock more than the lock itself.
        let guard = match lock.try_fast_for_party(m, party, blocks) {
            Some(guard) => guard,
            None => {
                let w = self.ctx.limits.clamp(asked);
                let report = self.ctx.limits.slow_wait().map(|(after, report)| {
                    let path = lock.path().to_path_buf();
                    (after, move |h| report(&path, h))
                });
                // The guest waits in this call: it cannot release what it
                // holds.
                Box::pin(lock.lock_for_party_async(m, w, party, blocks, report)).await?
            }
        };
        let guard = GuestGuard::new(Native::Lock(guard), held, self.deadline());
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
        let lock = self.table.get(&this)?.lock.clone();
        blocking(move || lock.is_locked()).await
    }

    async fn holder(&mut self, this: Resource<GuestLock>) -> LockResult<Option<types::Holder>> {
        self.ctx.releasing.settle().await;
        let lock = self.table.get(&this)?.lock.clone();
        let (party, reveal) = (self.ctx.owner, self.ctx.limits.reveal_holders());
        let found = blocking(move || {
            let Some(kind) = lock.holder_kind(party)? else {
                return Ok(None);
            };
            let details = if reveal { lock.holder()? } else { None };
            Ok(Some((kind, details)))
        })
        .await?;
        Ok(found.map(|(kind, details)| {
            let details = details.unwrap_or_default();
            types::Holder {
                kind: holder_kind(kind),
                pid: details.pid,
                host: details.host,
                since: details
                    .since
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map(
                        |d| wasmtime_wasi::p2::bindings::clocks::wall_clock::Datetime {
                            seconds: d.as_secs(),
                            nanoseconds: d.subsec_nanos(),
                        },
                    ),
            }
        }))
    }

    async fn break_lock(&mut self, this: Resource<GuestLock>, force: bool) -> LockResult<()> {
        self.ctx.releasing.settle().await;
        let lock = self.table.get(&this)?.lock.clone();
        if !self.ctx.limits.allows_break(force) {
            return Err(Code::NotPermitted.into());
        }
        blocking(move || match lock.break_lock(force) {
            // A live holder, and no force: someone holds it.
            Err(e) if e.kind() == crate::ErrorKind::NotOwner => {
                Err(crate::Error::new(crate::ErrorKind::WouldBlock, lock.path()))
            }
            // Nobody holds it: nothing to break.
            Err(e) if e.kind() == crate::ErrorKind::NotHeld => Ok(()),
            other => other,
        })
        .await
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
        let signal = self.table.get_mut(&this)?.lost_signal();
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
        if !self.ctx.limits.allows(Kind::Os) {
            return Err(Code::NotPermitted.into());
        }
        let slots = self.check_slots(slots)?;
        let handle = self.handle_slot()?;
        let locks = self.lock_dir(&dir)?;
        self.open_semaphore(handle, move || locks.semaphore(&name, slots))
            .await
    }

    async fn acquire(
        &mut self,
        this: Resource<GuestSemaphore>,
        w: types::Wait,
    ) -> LockResult<Resource<GuestGuard>> {
        self.ctx.releasing.settle().await;
        let sem = self.table.get(&this)?.sem.clone();
        let held = self.held_slot()?;
        let asked = wait(w);
        let w = self.ctx.limits.clamp(asked);
        let (party, blocks) = (self.ctx.owner, asked == Wait::Forever);
        let permit = sem.acquire_for_party_async(w, party, blocks).await?;
        let guard = GuestGuard::new(Native::Permit(permit), held, self.deadline());
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
        let sem = self.table.get(&this)?.sem.clone();
        blocking(move || sem.available().map(|n| n as u32)).await
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
        let ns = self.table.get(&this)?;
        let (name, namespace) = (ns.name.clone(), ns.namespace.clone());
        if namespace
            .lock_kind()
            .is_some_and(|kind| !self.ctx.limits.allows(kind))
        {
            return Err(Code::NotPermitted.into());
        }
        let handle = self.handle_slot()?;
        self.open_lock(handle, move || namespace.lock(&name, &key))
            .await
    }

    async fn open_semaphore(
        &mut self,
        this: Resource<GuestNamespace>,
        key: String,
        slots: u32,
    ) -> LockResult<Resource<GuestSemaphore>> {
        let ns = self.table.get(&this)?;
        let (name, namespace) = (ns.name.clone(), ns.namespace.clone());
        if !self.ctx.limits.allows(Kind::Os) {
            return Err(Code::NotPermitted.into());
        }
        let slots = self.check_slots(slots)?;
        let handle = self.handle_slot()?;
        self.open_semaphore(handle, move || namespace.semaphore(&name, &key, slots))
            .await
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
