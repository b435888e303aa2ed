//! Locks, their guards, and acquisitions in progress.

use std::rc::Rc;
use std::time::Duration;

use wasip2::filesystem::types::Descriptor;
use wasip2::io::poll::Pollable;

use crate::bindings::wasmlock::lock::{locks, types};
use crate::{Error, ErrorKind, Holder, Kind, Mode, Result, Wait, preopen, raw};

/// A lock on one file (or one key of a [`Namespace`](crate::Namespace)).
/// The handle holds nothing: each acquisition returns a [`Guard`], and the
/// guard is the hold. Two guards exclude each other, in this plugin too;
/// nothing is re-entrant.
///
/// ```no_run
/// use wasmlock_guest::{ErrorKind, Lock};
/// let lock = Lock::open("/data/jobs/42.lock")?;
/// match lock.try_lock() {
///     Ok(_guard) => { /* ours until the guard drops */ }
///     Err(e) if e.kind() == ErrorKind::WouldBlock => { /* someone else has it */ }
///     Err(e) => return Err(e),
/// }
/// # Ok::<(), wasmlock_guest::Error>(())
/// ```
#[derive(Debug)]
pub struct Lock {
    raw: locks::Lock,
    name: Rc<str>,
}

impl Lock {
    /// An OS lock on a guest path (absolute, or relative to `/`).
    pub fn open(path: &str) -> Result<Lock> {
        Self::open_kind(path, Kind::Os)
    }

    /// A soft (marker-file) lock on a guest path.
    pub fn open_soft(path: &str) -> Result<Lock> {
        Self::open_kind(path, Kind::Soft)
    }

    /// A lock of `kind` on a guest path.
    pub fn open_kind(path: &str, kind: Kind) -> Result<Lock> {
        let lock = preopen::with_dir(path, |dir, rel| Self::open_at(dir, rel, kind))?;
        Ok(lock.named(path))
    }

    /// A lock on `rel` inside a directory descriptor this plugin holds.
    pub fn open_at(dir: &Descriptor, rel: &str, kind: Kind) -> Result<Lock> {
        let raw =
            locks::Lock::open_at(dir, rel, raw::kind(kind)).map_err(|e| Error::about(rel, e))?;
        Ok(Lock::new(raw, rel))
    }

    /// An OS lock on a file this plugin opened (lock the data file itself).
    /// Through a descriptor without write access, the host allows shared
    /// holds only, unless it was configured otherwise.
    pub fn on_file(file: &Descriptor) -> Result<Lock> {
        let name = "<file descriptor>";
        let raw = locks::Lock::on_file(file).map_err(|e| Error::about(name, e))?;
        Ok(Lock::new(raw, name))
    }

    pub(crate) fn new(raw: locks::Lock, name: &str) -> Lock {
        Lock {
            raw,
            name: name.into(),
        }
    }

    fn named(mut self, name: &str) -> Lock {
        self.name = name.into();
        self
    }

    /// The path or key this lock was opened with, as error messages name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn err(&self, raw: types::ErrorCode) -> Error {
        Error::about(&self.name, raw)
    }

    /// Locks exclusively, waiting as long as it takes (the host may cap it:
    /// [`ErrorKind::Timeout`]).
    pub fn lock(&self) -> Result<Guard> {
        self.lock_with(Mode::Exclusive, Wait::Forever)
    }

    /// Locks exclusively if possible right now ([`ErrorKind::WouldBlock`] if not).
    pub fn try_lock(&self) -> Result<Guard> {
        self.lock_with(Mode::Exclusive, Wait::TryOnce)
    }

    /// Locks exclusively, waiting at most `timeout` ([`ErrorKind::Timeout`]).
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Guard> {
        self.lock_with(Mode::Exclusive, Wait::Timeout(timeout))
    }

    /// Locks shared, waiting as long as it takes.
    pub fn lock_shared(&self) -> Result<Guard> {
        self.lock_with(Mode::Shared, Wait::Forever)
    }

    /// Locks shared if possible right now.
    pub fn try_lock_shared(&self) -> Result<Guard> {
        self.lock_with(Mode::Shared, Wait::TryOnce)
    }

    /// Locks shared, waiting at most `timeout`.
    pub fn lock_shared_timeout(&self, timeout: Duration) -> Result<Guard> {
        self.lock_with(Mode::Shared, Wait::Timeout(timeout))
    }

    /// Locks in `mode`, waiting as `wait` says. Waiting forever for a lock
    /// this plugin holds through another guard is [`ErrorKind::Deadlock`].
    pub fn lock_with(&self, mode: Mode, wait: Wait) -> Result<Guard> {
        let raw = self
            .raw
            .acquire(raw::mode(mode), raw::wait(wait))
            .map_err(|e| self.err(e))?;
        Ok(Guard::from_raw(raw, self.name.clone()))
    }

    /// Starts an acquisition without waiting for it: wait on
    /// [`PendingLock::pollable`] together with other events
    /// (`wasi:io/poll`), then [`PendingLock::finish`].
    ///
    /// ```no_run
    /// use wasmlock_guest::{Lock, Mode};
    /// use wasip2::clocks::monotonic_clock::subscribe_duration;
    /// use wasip2::io::poll::poll;
    ///
    /// let lock = Lock::open("/data/x.lock")?;
    /// let pending = lock.start_lock(Mode::Exclusive)?;
    /// let ready = pending.pollable();                  // may be kept: it outlives `pending`
    /// let timer = subscribe_duration(1_000_000_000);
    /// if poll(&[&ready, &timer]).contains(&0) {
    ///     let _guard = pending.finish()?;
    /// } // else: dropping `pending` gives up cleanly
    /// # Ok::<(), wasmlock_guest::Error>(())
    /// ```
    pub fn start_lock(&self, mode: Mode) -> Result<PendingLock> {
        let raw = self
            .raw
            .start_acquire(raw::mode(mode))
            .map_err(|e| self.err(e))?;
        Ok(PendingLock::new(raw, self.name.clone()))
    }

    /// Whether anyone holds the lock, found without disturbing the holder.
    pub fn is_locked(&self) -> Result<bool> {
        self.raw.is_locked().map_err(|e| self.err(e))
    }

    /// Who holds the lock, if anyone: where (always), and the pid, host and
    /// time when the host reveals them.
    pub fn holder(&self) -> Result<Option<Holder>> {
        let holder = self.raw.holder().map_err(|e| self.err(e))?;
        Ok(holder.map(raw::holder))
    }

    /// Breaks a stale soft lock (with `force`, any soft lock), if the host
    /// allows this plugin to ([`ErrorKind::NotPermitted`] if not).
    pub fn break_lock(&self, force: bool) -> Result<()> {
        self.raw.break_lock(force).map_err(|e| self.err(e))
    }
}

/// One hold of a lock, or one permit of a semaphore; released when dropped.
/// It owns its hold: it may outlive the [`Lock`] it came from.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct Guard {
    raw: locks::Guard,
    name: Rc<str>,
}

impl Guard {
    pub(crate) fn from_raw(raw: locks::Guard, name: Rc<str>) -> Guard {
        Guard { raw, name }
    }

    /// The mode it was granted in.
    pub fn mode(&self) -> Mode {
        raw::from_mode(self.raw.mode())
    }

    /// For a semaphore permit, its slot.
    pub fn slot(&self) -> Option<u32> {
        self.raw.slot()
    }

    /// A number that grows with every grant of this lock, where the host's
    /// backend issues one (lock services); `None` for file locks.
    pub fn fence(&self) -> Option<u64> {
        self.raw.fence()
    }

    /// Whether the hold ended without a release: its soft marker was
    /// removed by someone else, a lock service's lease or key was lost, or
    /// the host's maximum hold time ran out.
    pub fn is_lost(&self) -> bool {
        self.raw.status() == types::HoldStatus::Lost
    }

    /// Ready once the hold is lost: poll it beside the work done under the
    /// lock, and stop when it fires.
    pub fn lost_pollable(&self) -> Pollable {
        self.raw.subscribe_lost()
    }

    /// Releases now and reports any error ([`ErrorKind::Lost`] if the hold
    /// had already ended); dropping the guard does the same silently.
    pub fn unlock(self) -> Result<()> {
        let name = self.name;
        locks::Guard::release(self.raw).map_err(|e| Error::about(&name, e))
    }
}

/// An acquisition in progress; dropping it gives up cleanly (a lock
/// granted meanwhile is passed on).
#[derive(Debug)]
pub struct PendingLock {
    raw: locks::FutureGuard,
    name: Rc<str>,
}

impl PendingLock {
    pub(crate) fn new(raw: locks::FutureGuard, name: Rc<str>) -> PendingLock {
        PendingLock { raw, name }
    }

    /// Ready when the acquisition completed (either way). It may be kept
    /// past [`finish`](Self::finish) and past the `PendingLock` itself.
    pub fn pollable(&self) -> Pollable {
        self.raw.subscribe()
    }

    /// Whether it has completed, without waiting.
    pub fn is_ready(&self) -> bool {
        self.pollable().ready()
    }

    /// The outcome, once: a guard when the lock is held.
    /// [`ErrorKind::WouldBlock`] while still pending — the acquisition goes
    /// on, and `finish` may be called again. After the outcome was taken,
    /// [`ErrorKind::Other`].
    pub fn finish(&self) -> Result<Guard> {
        match self.raw.get() {
            None => Err(Error::new(
                ErrorKind::WouldBlock,
                format!("{}: the acquisition is still pending", self.name),
            )),
            Some(Err(())) => Err(Error::new(
                ErrorKind::Other,
                format!(
                    "{}: the outcome of this acquisition was already taken",
                    self.name
                ),
            )),
            Some(Ok(Err(e))) => Err(Error::about(&self.name, e)),
            Some(Ok(Ok(raw))) => Ok(Guard::from_raw(raw, self.name.clone())),
        }
    }

    /// Blocks until it completes, then [`finish`](Self::finish)es.
    pub fn wait(self) -> Result<Guard> {
        self.pollable().block();
        self.finish()
    }
}
