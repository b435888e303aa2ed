//! Acquiring on an `Arc<FileLock>`: guards that own their handle.

use std::sync::Arc;

use super::{FileLock, OwnedLockGuard, Request};
use crate::{Mode, Owner, Result, Wait};

#[cfg(doc)]
use crate::{ErrorKind, LockGuard};

impl FileLock {
    /// Locks exclusively, waiting as long as it takes, with a guard that
    /// keeps the handle alive and can go anywhere (`Send + 'static`).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use wasmlock::FileLock;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = Arc::new(FileLock::new(dir.path().join("o.lock"))?);
    /// let guard = lock.lock_owned()?;
    /// std::thread::spawn(move || drop(guard)).join().unwrap(); // released there
    /// assert!(lock.try_lock().is_ok());
    /// # Ok::<(), wasmlock::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`lock_with_owned`](Self::lock_with_owned).
    ///
    /// # Cancel safety
    ///
    /// Blocking: nothing to cancel.
    pub fn lock_owned(self: &Arc<Self>) -> Result<OwnedLockGuard> {
        self.lock_with_owned(Mode::Exclusive, Wait::Forever)
    }

    /// [`lock_owned`](Self::lock_owned) in shared mode.
    ///
    /// # Errors
    ///
    /// As for [`lock_with_owned`](Self::lock_with_owned).
    ///
    /// # Cancel safety
    ///
    /// Blocking: nothing to cancel.
    pub fn lock_shared_owned(self: &Arc<Self>) -> Result<OwnedLockGuard> {
        self.lock_with_owned(Mode::Shared, Wait::Forever)
    }

    /// [`try_lock`](Self::try_lock) with an owned guard.
    ///
    /// # Errors
    ///
    /// As for [`try_lock`](Self::try_lock).
    ///
    /// # Cancel safety
    ///
    /// Does not wait: nothing to cancel.
    pub fn try_lock_owned(self: &Arc<Self>) -> Result<OwnedLockGuard> {
        self.lock_with_owned(Mode::Exclusive, Wait::TryOnce)
    }

    /// [`try_lock_shared`](Self::try_lock_shared) with an owned guard.
    ///
    /// # Errors
    ///
    /// As for [`try_lock`](Self::try_lock).
    ///
    /// # Cancel safety
    ///
    /// Does not wait: nothing to cancel.
    pub fn try_lock_shared_owned(self: &Arc<Self>) -> Result<OwnedLockGuard> {
        self.lock_with_owned(Mode::Shared, Wait::TryOnce)
    }

    /// [`lock_with`](Self::lock_with) with an owned guard, blocking the
    /// calling thread while it waits.
    ///
    /// # Errors
    ///
    /// As for [`lock_with`](Self::lock_with): a thread that holds the file
    /// with a [`LockGuard`] and would wait forever gets
    /// [`ErrorKind::Deadlock`].
    ///
    /// # Cancel safety
    ///
    /// Blocking: nothing to cancel.
    pub fn lock_with_owned(self: &Arc<Self>, mode: Mode, wait: Wait) -> Result<OwnedLockGuard> {
        let req = Request::solo(mode).blocking(Owner::current_thread(), wait);
        let entry = self.acquire(req, wait)?;
        Ok(OwnedLockGuard::new(self.clone(), req, entry))
    }

    /// Async [`lock_owned`](Self::lock_owned): the guard can move to another
    /// task or thread, the way `tokio::sync::Mutex::lock_owned` works.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use wasmlock::FileLock;
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), wasmlock::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = Arc::new(FileLock::new(dir.path().join("t.lock"))?);
    /// let guard = lock.lock_owned_async().await?;
    /// tokio::spawn(async move {
    ///     // ... work under the lock in another task ...
    ///     drop(guard);
    /// }).await.unwrap();
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`lock_with_async`](Self::lock_with_async).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`lock_async`](Self::lock_async).
    pub async fn lock_owned_async(self: &Arc<Self>) -> Result<OwnedLockGuard> {
        self.lock_with_owned_async(Mode::Exclusive, Wait::Forever)
            .await
    }

    /// Async [`lock_shared_owned`](Self::lock_shared_owned).
    ///
    /// # Errors
    ///
    /// As for [`lock_with_async`](Self::lock_with_async).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`lock_async`](Self::lock_async).
    pub async fn lock_shared_owned_async(self: &Arc<Self>) -> Result<OwnedLockGuard> {
        self.lock_with_owned_async(Mode::Shared, Wait::Forever)
            .await
    }

    /// Async [`lock_with_owned`](Self::lock_with_owned).
    ///
    /// # Errors
    ///
    /// As for [`lock_with_async`](Self::lock_with_async).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`lock_async`](Self::lock_async).
    pub async fn lock_with_owned_async(
        self: &Arc<Self>,
        mode: Mode,
        wait: Wait,
    ) -> Result<OwnedLockGuard> {
        let req = Request::solo(mode);
        let entry = self.acquire_async(req, wait).await?;
        Ok(OwnedLockGuard::new(self.clone(), req, entry))
    }
}

#[cfg(feature = "wasmtime")]
impl FileLock {
    /// An owned guard for a guest: the hold is the guard's own, booked for
    /// `party` (the guest), whom deadlock detection looks for when `blocks`
    /// says the guest asked to wait forever and cannot go on (and so cannot
    /// release) meanwhile — also when the host capped that wait to `wait`.
    /// A wait longer than `after` is reported once through `on_wait`.
    ///
    /// The queued path: callers try
    /// [`try_fast_for_party`](Self::try_fast_for_party) first where the
    /// uncontended case matters.
    pub(crate) async fn lock_for_party_async(
        self: &Arc<Self>,
        mode: Mode,
        wait: Wait,
        party: Owner,
        blocks: bool,
        report: Option<(std::time::Duration, impl FnOnce(Option<crate::Holder>))>,
    ) -> Result<OwnedLockGuard> {
        let req = party_request(mode, party, blocks);
        let entry = match report {
            Some((after, on_wait)) => {
                self.acquire_reporting_async(req, wait, after, on_wait)
                    .await?
            }
            None => self.acquire_queued_async(req, wait).await?,
        };
        Ok(OwnedLockGuard::new(self.clone(), req, entry))
    }

    /// [`lock_for_party_async`](Self::lock_for_party_async) on the
    /// uncontended path alone, with no future to build: `None` when the full
    /// path must decide (the lock is busy, or the fast path does not apply).
    pub(crate) fn try_fast_for_party(
        self: &Arc<Self>,
        mode: Mode,
        party: Owner,
        blocks: bool,
    ) -> Option<OwnedLockGuard> {
        let req = party_request(mode, party, blocks);
        self.try_fast(req)
            .then(|| OwnedLockGuard::new(self.clone(), req, super::fast::Granted::First))
    }
}

/// A guard's own hold for `party`, which cannot go on while it waits when
/// `blocks` (see `Request::blocking`).
#[cfg(feature = "wasmtime")]
fn party_request(mode: Mode, party: Owner, blocks: bool) -> Request {
    let req = Request::solo(mode).held_by(party);
    if blocks {
        req.blocking(party, Wait::Forever)
    } else {
        req
    }
}
