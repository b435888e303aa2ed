//! The generated host traits, implemented over a guest's [`WasmLockCtxView`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cap_std::fs::Dir;
use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::Descriptor;

use super::WasmLockCtxView;
use super::bindings::wasmlock::lock::{locks, types};
use super::resources::{GuestLock, GuestPermit, GuestSemaphore, PendingAcquire};
use crate::lock::Request;
use crate::{Error, ErrorKind, FileLock, Holder, Kind, LockDir, Mode, Wait};

type WitResult<T> = wasmtime::Result<Result<T, types::Error>>;

/// What a guest sees of an error: the case, and a message naming the path
/// as the guest spelled it.
fn to_wit(e: &Error) -> types::Error {
    let msg = e.to_string();
    match e.kind() {
        ErrorKind::WouldBlock => types::Error::WouldBlock,
        ErrorKind::Timeout => types::Error::Timeout,
        ErrorKind::NotHeld => types::Error::NotHeld,
        ErrorKind::NotOwner => types::Error::NotOwner,
        ErrorKind::Deadlock => types::Error::Deadlock,
        ErrorKind::PermissionDenied => types::Error::PermissionDenied(msg),
        ErrorKind::InvalidPath => types::Error::InvalidPath(msg),
        ErrorKind::Unsupported => types::Error::Unsupported(msg),
        ErrorKind::Lost => types::Error::Lost,
        ErrorKind::QuotaExceeded => types::Error::QuotaExceeded,
        _ => types::Error::Io(msg),
    }
}

fn mode(m: types::Mode) -> Mode {
    match m {
        types::Mode::Exclusive => Mode::Exclusive,
        types::Mode::Shared => Mode::Shared,
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

fn holder(h: Holder) -> types::Holder {
    types::Holder {
        pid: h.pid,
        host: h.host,
        since: h
            .since
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(
                |d| wasmtime_wasi::p2::bindings::clocks::wall_clock::Datetime {
                    seconds: d.as_secs(),
                    nanoseconds: d.subsec_nanos(),
                },
            ),
    }
}

fn refuse(kind: ErrorKind, path: &str, detail: &str) -> types::Error {
    to_wit(&Error::new(kind, path).with_detail(detail.to_owned()))
}

impl WasmLockCtxView<'_> {
    /// The directory behind a guest's descriptor, as a sandbox.
    fn lock_dir(&mut self, dir: &Resource<Descriptor>, path: &str) -> WitResult<LockDir> {
        let Descriptor::Dir(d) = self.table.get(dir)? else {
            return Ok(Err(refuse(
                ErrorKind::InvalidPath,
                path,
                "the descriptor is not a directory",
            )));
        };
        if d.perms.write_not_permitted() {
            return Ok(Err(refuse(
                ErrorKind::PermissionDenied,
                path,
                "the directory descriptor is read-only",
            )));
        }
        let file = match d.dir.try_clone() {
            Ok(f) => f,
            Err(e) => return Ok(Err(to_wit(&Error::from_io(e, path.as_ref())))),
        };
        // Named by the guest's own spelling: host paths stay private.
        Ok(Ok(LockDir::from_cap_std(Dir::from_std_file(file), "")))
    }

    fn guest_lock(&mut self, lock: FileLock) -> WitResult<Resource<GuestLock>> {
        let Some(handle) = self.ctx.limits.take_handle() else {
            return Ok(Err(types::Error::QuotaExceeded));
        };
        let guest = GuestLock {
            lock: Arc::new(lock),
            owner: self.ctx.owner,
            held: Arc::new(Mutex::new(None)),
            _handle: handle,
        };
        Ok(Ok(self.table.push(guest)?))
    }
}

impl types::Host for WasmLockCtxView<'_> {}

impl locks::Host for WasmLockCtxView<'_> {}

impl locks::HostLock for WasmLockCtxView<'_> {
    async fn open_at(
        &mut self,
        dir: Resource<Descriptor>,
        path: String,
        k: types::Kind,
    ) -> WitResult<Resource<GuestLock>> {
        if !self.ctx.limits.allows(kind(k)) {
            return Ok(Err(refuse(
                ErrorKind::PermissionDenied,
                &path,
                "the host does not allow this kind of lock",
            )));
        }
        let locks = match self.lock_dir(&dir, &path)? {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        // Resolve now, so a path out of the sandbox fails at open, not later.
        let lock = locks.builder(&path).kind(kind(k)).build();
        match lock.and_then(|l| l.entry().map(|_| l)) {
            Ok(lock) => self.guest_lock(lock),
            Err(e) => Ok(Err(to_wit(&e))),
        }
    }

    async fn on_file(&mut self, file: Resource<Descriptor>) -> WitResult<Resource<GuestLock>> {
        let name = "<file descriptor>";
        let Descriptor::File(f) = self.table.get(&file)? else {
            return Ok(Err(refuse(
                ErrorKind::InvalidPath,
                name,
                "the descriptor is a directory",
            )));
        };
        let opened = f
            .file
            .try_clone()
            .map_err(|e| Error::from_io(e, name.as_ref()));
        match opened.and_then(|f| FileLock::from_file_as(f, PathBuf::from(name))) {
            Ok(lock) => self.guest_lock(lock),
            Err(e) => Ok(Err(to_wit(&e))),
        }
    }

    async fn acquire(
        &mut self,
        this: Resource<GuestLock>,
        m: types::Mode,
        w: types::Wait,
    ) -> WitResult<()> {
        let g = self.table.get(&this)?;
        let (lock, owner, held) = (g.lock.clone(), g.owner, g.held.clone());
        let (m, w) = (mode(m), wait(w));
        let reserved = match reserve_held(self, &lock, owner) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        // The guest is the party that waits: it cannot release what it
        // holds while this call lasts.
        let req = Request::new(owner, m).held_by(owner).blocking(owner, w);
        let w = self.ctx.limits.clamp(w);
        let acquired = match self.ctx.limits.slow_wait() {
            Some((after, report)) => {
                let path = lock.path().to_path_buf();
                let on_wait = move |h| report(&path, h);
                lock.acquire_reporting_async(req, w, after, on_wait).await
            }
            None => lock.acquire_async(req, w).await,
        };
        Ok(match acquired {
            Ok(_) => {
                if let Some(slot) = reserved {
                    *held.lock().unwrap() = Some(slot);
                }
                Ok(())
            }
            Err(e) => Err(to_wit(&e)),
        })
    }

    async fn start_acquire(
        &mut self,
        this: Resource<GuestLock>,
        m: types::Mode,
    ) -> WitResult<Resource<PendingAcquire>> {
        let g = self.table.get(&this)?;
        let (lock, owner, held) = (g.lock.clone(), g.owner, g.held.clone());
        let reserved = match reserve_held(self, &lock, owner) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let req = Request::new(owner, mode(m))
            .held_by(owner)
            .blocking(owner, Wait::Forever);
        let w = self.ctx.limits.clamp(Wait::Forever);
        let fut_lock = lock.clone();
        let future = Box::pin(async move { fut_lock.acquire_async(req, w).await.map(drop) });
        let pending = PendingAcquire::new(lock, owner, future, reserved, held);
        // A wait that could never end is refused now, not handed out.
        if let Some(Err(e)) = pending.outcome()
            && e.kind() == ErrorKind::Deadlock
        {
            return Ok(Err(types::Error::Deadlock));
        }
        Ok(Ok(self.table.push(pending)?))
    }

    async fn release(&mut self, this: Resource<GuestLock>) -> WitResult<()> {
        let g = self.table.get(&this)?;
        let r = g.lock.release(g.owner);
        if g.lock.hold_count_of(g.owner) == 0 {
            g.held.lock().unwrap().take();
        }
        Ok(r.map_err(|e| to_wit(&e)))
    }

    async fn hold_count(&mut self, this: Resource<GuestLock>) -> wasmtime::Result<u32> {
        let g = self.table.get(&this)?;
        Ok(g.lock.hold_count_of(g.owner))
    }

    async fn is_locked(&mut self, this: Resource<GuestLock>) -> WitResult<bool> {
        let g = self.table.get(&this)?;
        Ok(g.lock.is_locked().map_err(|e| to_wit(&e)))
    }

    async fn holder(&mut self, this: Resource<GuestLock>) -> WitResult<Option<types::Holder>> {
        let g = self.table.get(&this)?;
        Ok(g.lock
            .holder()
            .map(|h| h.map(holder))
            .map_err(|e| to_wit(&e)))
    }

    async fn break_lock(&mut self, this: Resource<GuestLock>, force: bool) -> WitResult<()> {
        let g = self.table.get(&this)?;
        if !self.ctx.limits.allow_break() {
            let path = g.lock.path().display().to_string();
            return Ok(Err(refuse(
                ErrorKind::PermissionDenied,
                &path,
                "the host does not allow this guest to break locks",
            )));
        }
        Ok(g.lock.break_lock(force).map_err(|e| to_wit(&e)))
    }

    async fn drop(&mut self, this: Resource<GuestLock>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

/// Takes a unit of the held-locks quota when this acquisition would make the
/// handle a holder (re-entrant acquisitions cost nothing).
fn reserve_held(
    view: &WasmLockCtxView<'_>,
    lock: &FileLock,
    owner: crate::Owner,
) -> Result<Option<super::ctx::Slot>, types::Error> {
    if lock.hold_count_of(owner) > 0 {
        return Ok(None);
    }
    view.ctx
        .limits
        .take_held()
        .map(Some)
        .ok_or(types::Error::QuotaExceeded)
}

impl locks::HostPending for WasmLockCtxView<'_> {
    async fn subscribe(
        &mut self,
        this: Resource<PendingAcquire>,
    ) -> wasmtime::Result<Resource<wasmtime_wasi::p2::DynPollable>> {
        wasmtime_wasi::p2::subscribe(self.table, this)
    }

    async fn finish(&mut self, this: Resource<PendingAcquire>) -> WitResult<()> {
        let p = self.table.get_mut(&this)?;
        Ok(match p.finish() {
            None => Err(types::Error::WouldBlock),
            Some(r) => r.map_err(|e| to_wit(&e)),
        })
    }

    async fn drop(&mut self, this: Resource<PendingAcquire>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl locks::HostSemaphore for WasmLockCtxView<'_> {
    async fn open_at(
        &mut self,
        dir: Resource<Descriptor>,
        name: String,
        slots: u32,
    ) -> WitResult<Resource<GuestSemaphore>> {
        if !self.ctx.limits.allows(Kind::Os) {
            return Ok(Err(refuse(
                ErrorKind::PermissionDenied,
                &name,
                "the host does not allow OS locks",
            )));
        }
        let locks = match self.lock_dir(&dir, &name)? {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        let sem = match locks.semaphore(&name, slots as usize) {
            Ok(s) => s,
            Err(e) => return Ok(Err(to_wit(&e))),
        };
        let Some(handle) = self.ctx.limits.take_handle() else {
            return Ok(Err(types::Error::QuotaExceeded));
        };
        let guest = GuestSemaphore {
            sem: Arc::new(sem),
            _handle: handle,
        };
        Ok(Ok(self.table.push(guest)?))
    }

    async fn acquire(
        &mut self,
        this: Resource<GuestSemaphore>,
        w: types::Wait,
    ) -> WitResult<Resource<GuestPermit>> {
        let sem = self.table.get(&this)?.sem.clone();
        let Some(held) = self.ctx.limits.take_held() else {
            return Ok(Err(types::Error::QuotaExceeded));
        };
        let w = self.ctx.limits.clamp(wait(w));
        let permit = match sem.acquire_owned_async(w).await {
            Ok(permit) => permit,
            Err(e) => return Ok(Err(to_wit(&e))),
        };
        let permit = GuestPermit {
            permit,
            _held: held,
        };
        Ok(Ok(self.table.push(permit)?))
    }

    async fn available(&mut self, this: Resource<GuestSemaphore>) -> WitResult<u32> {
        let sem = &self.table.get(&this)?.sem;
        Ok(sem.available().map(|n| n as u32).map_err(|e| to_wit(&e)))
    }

    async fn drop(&mut self, this: Resource<GuestSemaphore>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl locks::HostPermit for WasmLockCtxView<'_> {
    async fn slot(&mut self, this: Resource<GuestPermit>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&this)?.permit.slot() as u32)
    }

    async fn drop(&mut self, this: Resource<GuestPermit>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
