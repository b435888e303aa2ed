//! Acquiring for a task: async methods whose guards are `Send`.

use std::time::Duration;

use super::{AsyncLockGuard, FileLock, Request};
use crate::{Mode, Result, Wait};

#[cfg(doc)]
use crate::ErrorKind;

impl FileLock {
    /// Async [`lock`](Self::lock): waits without blocking a thread.
    ///
    /// ```
    /// use wasmlock::FileLock;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), wasmlock::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = FileLock::new(dir.path().join("async.lock"))?;
    /// let guard = lock.lock_async().await?;
    /// guard.unlock()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`lock_with_async`](Self::lock_with_async).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future leaves the queue, and a lock granted
    /// to it in the meantime is passed on.
    pub async fn lock_async(&self) -> Result<AsyncLockGuard<'_>> {
        self.lock_with_async(Mode::Exclusive, Wait::Forever).await
    }

    /// Async [`lock_shared`](Self::lock_shared).
    ///
    /// # Errors
    ///
    /// As for [`lock_with_async`](Self::lock_with_async).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`lock_async`](Self::lock_async).
    pub async fn lock_shared_async(&self) -> Result<AsyncLockGuard<'_>> {
        self.lock_with_async(Mode::Shared, Wait::Forever).await
    }

    /// Async [`lock_timeout`](Self::lock_timeout).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`]; the rest as for [`lock_with_async`](Self::lock_with_async).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`lock_async`](Self::lock_async).
    pub async fn lock_timeout_async(&self, timeout: Duration) -> Result<AsyncLockGuard<'_>> {
        self.lock_with_async(Mode::Exclusive, Wait::Timeout(timeout))
            .await
    }

    /// Async [`lock_shared_timeout`](Self::lock_shared_timeout).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`]; the rest as for [`lock_with_async`](Self::lock_with_async).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`lock_async`](Self::lock_async).
    pub async fn lock_shared_timeout_async(&self, timeout: Duration) -> Result<AsyncLockGuard<'_>> {
        self.lock_with_async(Mode::Shared, Wait::Timeout(timeout))
            .await
    }

    /// Async [`lock_with`](Self::lock_with). Needs a tokio runtime with time
    /// enabled when `wait` is bounded. Two of these in one task — under
    /// `tokio::join!` or `select!` — are two holds and exclude each other.
    ///
    /// ```
    /// use std::time::Duration;
    /// use wasmlock::{FileLock, Mode, Wait};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), wasmlock::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = FileLock::new(dir.path().join("j.lock"))?;
    /// let inside = std::sync::atomic::AtomicU32::new(0);
    /// let work = || async {
    ///     let _g = lock.lock_with_async(Mode::Exclusive, Wait::Forever).await?;
    ///     assert_eq!(inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0);
    ///     tokio::time::sleep(Duration::from_millis(10)).await;
    ///     inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    ///     Ok::<_, wasmlock::Error>(())
    /// };
    /// let (a, b) = tokio::join!(work(), work());
    /// a?; b?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`lock_with`](Self::lock_with), except that waiting is never
    /// called a deadlock: the holder may be another task of this thread.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`lock_async`](Self::lock_async).
    pub async fn lock_with_async(&self, mode: Mode, wait: Wait) -> Result<AsyncLockGuard<'_>> {
        let req = Request::solo(mode);
        let entry = self.acquire_async(req, wait).await?;
        Ok(AsyncLockGuard::new(self, req, entry))
    }
}
