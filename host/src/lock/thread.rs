//! Acquiring for a thread: blocking methods whose guards stay on it.

use std::time::Duration;

use super::{FileLock, LockGuard, Request};
use crate::{Holder, Mode, Owner, Result, Wait};

#[cfg(doc)]
use crate::{ErrorKind, FileLockBuilder};

impl FileLock {
    /// Locks exclusively, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Deadlock`] at once if this thread already holds the file
    /// with a [`LockGuard`] (through any handle) and would wait forever; the
    /// rest as for [`lock_with`](Self::lock_with).
    ///
    /// # Cancel safety
    ///
    /// Blocking: nothing to cancel.
    #[inline]
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        self.lock_with(Mode::Exclusive, Wait::Forever)
    }

    /// Locks exclusively if that is possible right now.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::WouldBlock`] when the lock is held (the detail names the
    /// holder's pid when known); the rest as for [`lock_with`](Self::lock_with).
    ///
    /// # Cancel safety
    ///
    /// Does not wait: nothing to cancel.
    #[inline]
    pub fn try_lock(&self) -> Result<LockGuard<'_>> {
        self.lock_with(Mode::Exclusive, Wait::TryOnce)
    }

    /// Locks exclusively, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`] when the lock did not come in time; the rest as
    /// for [`lock_with`](Self::lock_with).
    ///
    /// # Cancel safety
    ///
    /// Blocking: nothing to cancel.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.lock_with(Mode::Exclusive, Wait::Timeout(timeout))
    }

    /// Locks shared (with other readers), waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As for [`lock`](Self::lock); soft locks have no shared mode
    /// ([`ErrorKind::Unsupported`]).
    ///
    /// # Cancel safety
    ///
    /// Blocking: nothing to cancel.
    pub fn lock_shared(&self) -> Result<LockGuard<'_>> {
        self.lock_with(Mode::Shared, Wait::Forever)
    }

    /// Locks shared if that is possible right now.
    ///
    /// # Errors
    ///
    /// As for [`try_lock`](Self::try_lock).
    ///
    /// # Cancel safety
    ///
    /// Does not wait: nothing to cancel.
    pub fn try_lock_shared(&self) -> Result<LockGuard<'_>> {
        self.lock_with(Mode::Shared, Wait::TryOnce)
    }

    /// Locks shared, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As for [`lock_timeout`](Self::lock_timeout).
    ///
    /// # Cancel safety
    ///
    /// Blocking: nothing to cancel.
    pub fn lock_shared_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.lock_with(Mode::Shared, Wait::Timeout(timeout))
    }

    /// Locks in `mode`, waiting as `wait` says, blocking the calling thread.
    /// The guard stays on this thread (it is not `Send`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use wasmlock::{ErrorKind, FileLock, Mode, Wait};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = FileLock::new(dir.path().join("w.lock"))?;
    /// let g = lock.lock_with(Mode::Exclusive, Wait::Timeout(Duration::from_secs(1)))?;
    /// // This thread holds it: waiting forever would never end.
    /// let err = lock.lock_with(Mode::Shared, Wait::Forever).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Deadlock);
    /// # drop(g);
    /// # Ok::<(), wasmlock::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Every error names the lock path. [`ErrorKind::WouldBlock`] (try
    /// once) and [`ErrorKind::Timeout`] when the lock stays held;
    /// [`ErrorKind::Deadlock`] for a wait that could never end (above, or
    /// upgrading a re-entrant shared hold); [`ErrorKind::Unsupported`] when
    /// the file system has no kernel locks (see
    /// [`FileLockBuilder::fallback_to_soft`]) or for a shared soft lock;
    /// [`ErrorKind::PermissionDenied`], [`ErrorKind::InvalidPath`] or
    /// [`ErrorKind::Io`] when the lock file cannot be made or opened.
    ///
    /// # Cancel safety
    ///
    /// Blocking: nothing to cancel. A waiting thread holds its place in the
    /// first-in first-out queue until the lock or the deadline comes.
    #[inline]
    pub fn lock_with(&self, mode: Mode, wait: Wait) -> Result<LockGuard<'_>> {
        let req = self.thread_request(mode, wait);
        let entry = self.acquire(req, wait)?;
        Ok(LockGuard::new(self, req, entry))
    }

    /// [`lock_with`](Self::lock_with), calling `on_wait` once with the
    /// holder (when known) if the wait lasts longer than `after` — the hook
    /// behind "waiting for lock on PATH (held by pid N)" messages.
    ///
    /// ```
    /// use std::time::Duration;
    /// use wasmlock::{FileLock, Mode, Wait};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = FileLock::new(dir.path().join("slow.lock"))?;
    /// let _g = lock.lock_reporting(Mode::Exclusive, Wait::Forever, Duration::from_secs(1), |holder| {
    ///     eprintln!("waiting for lock on {} (held by {holder:?})", lock.path().display());
    /// })?;
    /// # Ok::<(), wasmlock::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`lock_with`](Self::lock_with), deadlock detection included.
    ///
    /// # Cancel safety
    ///
    /// Blocking: nothing to cancel.
    pub fn lock_reporting(
        &self,
        mode: Mode,
        wait: Wait,
        after: Duration,
        on_wait: impl FnOnce(Option<Holder>),
    ) -> Result<LockGuard<'_>> {
        let req = self.thread_request(mode, wait);
        let entry = self.acquire_reporting(req, wait, after, on_wait)?;
        Ok(LockGuard::new(self, req, entry))
    }

    /// How many holds the calling thread has on this handle through
    /// [`LockGuard`]s (a re-entrant handle counts every re-entry).
    ///
    /// ```
    /// use wasmlock::FileLock;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = FileLock::builder(dir.path().join("r.lock")).reentrant().build()?;
    /// let a = lock.lock()?;
    /// let b = lock.lock()?;                   // counts up
    /// assert_eq!(lock.hold_count(), 2);
    /// drop((a, b));
    /// assert_eq!(lock.hold_count(), 0);
    /// # Ok::<(), wasmlock::Error>(())
    /// ```
    pub fn hold_count(&self) -> u32 {
        self.hold_count_of_party(Owner::current_thread())
    }

    /// The request of a thread-bound acquisition: a re-entrant handle's
    /// owner is the thread itself, else the hold is new.
    fn thread_request(&self, mode: Mode, wait: Wait) -> Request {
        let (fresh, thread) = Owner::unique_and_thread();
        let req = if self.options.reentrant {
            Request::new(thread, mode)
        } else {
            Request::solo_of(fresh, mode)
        };
        req.held_by(thread).blocking(thread, wait)
    }
}
