//! The guards: each one is a hold, and releases it when dropped.

use std::fs::File;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use super::fast::Granted;
use super::{FileLock, Request};
use crate::{Mode, Result};

/// One hold and the handle it was taken through; `L` borrows or owns it.
struct Hold<L: Deref<Target = FileLock>> {
    lock: L,
    req: Request,
    /// Where the hold was granted: where a guard's own hold is released, and
    /// what [`Hold::file`] reads.
    entry: Granted,
    released: bool,
}

impl<L: Deref<Target = FileLock>> Hold<L> {
    fn new(lock: L, req: Request, entry: Granted) -> Self {
        Hold {
            lock,
            req,
            entry,
            released: false,
        }
    }

    fn release(&mut self) -> Result<()> {
        let fence = self.release_books()?;
        self.backend().flush_release(fence)
    }

    /// [`release`](Self::release), then awaits what the backend does in the
    /// background (an etcd key's deletion) instead of blocking on it.
    async fn release_async(&mut self) -> Result<()> {
        let fence = self.release_books()?;
        match self.backend().release_confirmed(fence) {
            Some(confirmed) => confirmed.await,
            None => Ok(()),
        }
    }

    /// Releases, waiting for whatever that takes but not for what the
    /// backend does in the background; returns the hold's fence, which
    /// names the release to the backend.
    fn release_books(&mut self) -> Result<Option<u64>> {
        let fence = self.backend().fence();
        self.release_if(true)
            .expect("a release that may wait always goes ahead")?;
        Ok(fence)
    }

    fn backend(&self) -> &dyn crate::backend::Backend {
        self.lock.granted(&self.entry).backend()
    }

    /// Releases. What the release may wait for (a breaker's turn on a soft
    /// marker) is taken first, before the lock's books are locked, so that
    /// other attempts on it in this process do not wait too, and kept until
    /// the release is done. Without `wait`, releases only if that needs no
    /// waiting (`None`: nothing was done). Counted holds keep the old way:
    /// the turn is waited for in the release.
    fn release_if(&mut self, wait: bool) -> Option<Result<()>> {
        let entry = self.lock.granted(&self.entry);
        let _turn = match self.req.solo {
            true => Some(
                entry
                    .backend()
                    .release_turn(wait, &|| entry.last_one_here())?,
            ),
            false => None,
        };
        self.released = true;
        let Request { owner, party, .. } = self.req;
        let released = if self.req.solo {
            self.lock.release_in(entry, owner, party)
        } else {
            self.lock.release(owner)
        };
        Some(released)
    }

    fn is_lost(&self) -> bool {
        !self.released && self.lock.granted(&self.entry).backend().lost()
    }

    /// Ready once the hold is lost (never for kernel locks).
    async fn lost(&self) {
        // How often a soft marker is looked at: its removal is not told.
        const SOFT_CHECK: std::time::Duration = std::time::Duration::from_millis(100);
        let backend = self.lock.granted(&self.entry).backend();
        loop {
            if self.is_lost() {
                return;
            }
            match backend.lost_signal() {
                Some(signal) => signal.await,
                None if self.lock.kind() == crate::Kind::Soft => {
                    tokio::time::sleep(SOFT_CHECK).await;
                }
                None => std::future::pending().await,
            }
        }
    }

    fn fence(&self) -> Option<u64> {
        if self.released {
            return None;
        }
        self.lock.granted(&self.entry).backend().fence()
    }

    fn file(&self) -> Option<&File> {
        self.lock
            .file()
            .or_else(|| self.lock.granted(&self.entry).backend().file())
    }
}

impl<L: Deref<Target = FileLock>> Drop for Hold<L> {
    #[inline]
    fn drop(&mut self) {
        if !self.released
            && let Err(e) = self.release()
        {
            tracing::warn!(path = %self.lock.path().display(), error = %e, "unlock on drop failed");
        }
    }
}

/// What every guard offers, written once.
macro_rules! guard_api {
    ($guard:ident $(<$a:lifetime>)?, $lock:ty) => {
        impl$(<$a>)? $guard$(<$a>)? {
            /// The mode this guard was granted in.
            pub fn mode(&self) -> Mode {
                self.hold.req.mode
            }

            /// The lock this guard holds.
            pub fn lock(&self) -> &$lock {
                &self.hold.lock
            }

            /// The locked file: the one given to
            /// [`FileLock::from_file`], or the lock file of an OS lock on a
            /// path (opened read-write, never truncated). `None` for soft
            /// locks, whose marker is not the caller's to write.
            pub fn file(&self) -> Option<&File> {
                self.hold.file()
            }

            /// Whether the hold was taken away without a release: a soft
            /// lock's marker removed or replaced by someone else (a forced
            /// break); an etcd lock's lease lost or its key deleted. Kernel
            /// locks cannot be lost. An etcd hold starts watching its key
            /// the first time it is asked (here or by [`lost`](Self::lost)),
            /// so that holds nobody asks about cost no watch. The watch
            /// looks at the key first: on a thread, the first question
            /// waits for that look (one round trip, at most the cluster's
            /// call timeout) and knows of a deletion from before it; in
            /// async code it does not wait, and the answer is known a round
            /// trip later ([`lost`](Self::lost) and
            /// [`unlock_async`](Self::unlock_async) tell for sure).
            ///
            /// ```
            /// use wasmlock::FileLock;
            /// # let dir = tempfile::tempdir().unwrap();
            /// let path = dir.path().join("lost.lock");
            /// let lock = FileLock::builder(&path).soft().build()?;
            /// let guard = lock.lock()?;
            /// assert!(!guard.is_lost());
            /// std::fs::remove_file(&path).unwrap();    // someone breaks it
            /// assert!(guard.is_lost());
            /// assert_eq!(guard.unlock().unwrap_err().kind(), wasmlock::ErrorKind::Lost);
            /// # Ok::<(), wasmlock::Error>(())
            /// ```
            pub fn is_lost(&self) -> bool {
                self.hold.is_lost()
            }

            /// Waits until the hold is lost (see
            /// [`is_lost`](Self::is_lost)); never ready for a kernel lock.
            /// An etcd hold is told at once when its key is deleted or its
            /// lease is lost (at the latest a TTL after the last keep-alive
            /// that got through); a soft marker's removal is looked for
            /// every 100 ms.
            ///
            /// # Cancel safety
            ///
            /// Cancel safe: dropping the future changes nothing.
            pub async fn lost(&self) {
                self.hold.lost().await
            }

            /// The hold's fencing token, for locks that have one: an etcd
            /// lock's is its key's create revision, greater for every later
            /// hold of that name anywhere in the cluster. Pass it along with
            /// every write the lock protects and have the resource refuse
            /// writes with a lower token than it has seen: a holder that
            /// was paused past its lease cannot tell it lost the lock in
            /// time, but its token is stale. `None` for file locks.
            pub fn fence(&self) -> Option<u64> {
                self.hold.fence()
            }

            /// Releases this hold now and reports any error (dropping the
            /// guard only logs it). An etcd hold is given back by deleting
            /// its key, which this waits for (at most the cluster's call
            /// timeout) on a thread; inside a tokio runtime (its blocking
            /// threads included) it does not wait, and reports only a loss
            /// already known ([`unlock_async`](Self::unlock_async) waits).
            /// A hold found
            /// lost by its release is an error of kind
            /// [`Lost`](crate::ErrorKind::Lost).
            pub fn unlock(mut self) -> Result<()> {
                self.hold.release()
            }

            /// [`unlock`](Self::unlock) for async code: an etcd hold's
            /// release is awaited until the cluster confirms it (at most
            /// the cluster's call timeout), and a hold that its release
            /// found lost (its key deleted by someone else, its lease
            /// expired) is an error of kind
            /// [`Lost`](crate::ErrorKind::Lost). For file locks it is
            /// [`unlock`](Self::unlock).
            ///
            /// ```
            /// use wasmlock::FileLock;
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> wasmlock::Result<()> {
            /// # let dir = tempfile::tempdir().unwrap();
            /// let lock = FileLock::new(dir.path().join("job.lock"))?;
            /// let guard = lock.lock_async().await?;
            /// guard.unlock_async().await?;
            /// # Ok(())
            /// # }
            /// ```
            ///
            /// # Cancel safety
            ///
            /// The hold is released when the call starts; dropping the
            /// future gives up only waiting for the confirmation.
            pub async fn unlock_async(mut self) -> Result<()> {
                self.hold.release_async().await
            }
        }

        impl$(<$a>)? std::fmt::Debug for $guard$(<$a>)? {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($guard))
                    .field("path", &self.hold.lock.path())
                    .field("mode", &self.hold.req.mode)
                    .finish()
            }
        }
    };
}

/// A hold taken by a thread; released when dropped (or
/// [`unlock`](LockGuard::unlock)ed).
///
/// It is not `Send`: it stays on the thread that took it, which is what lets
/// a thread that would wait forever for its own lock get
/// [`ErrorKind::Deadlock`](crate::ErrorKind::Deadlock) instead of hanging.
/// To hold a lock across `.await` in a task that may move, or to hand it to
/// another thread, use the async or owned methods.
///
/// ```compile_fail
/// # let dir = tempfile::tempdir().unwrap();
/// let lock = wasmlock::FileLock::new(dir.path().join("x.lock")).unwrap();
/// let guard = lock.lock().unwrap();
/// std::thread::scope(|s| {
///     s.spawn(move || drop(guard)); // error: `LockGuard` cannot be sent
/// });
/// ```
///
/// ```
/// use wasmlock::{FileLock, Mode};
/// # let dir = tempfile::tempdir().unwrap();
/// let lock = FileLock::new(dir.path().join("g.lock"))?;
/// let guard = lock.lock_shared()?;
/// assert_eq!(guard.mode(), Mode::Shared);
/// drop(guard);
/// assert_eq!(lock.hold_count(), 0);
/// # Ok::<(), wasmlock::Error>(())
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard<'a> {
    hold: Hold<&'a FileLock>,
    _thread_bound: PhantomData<*const ()>,
}

impl<'a> LockGuard<'a> {
    pub(super) fn new(lock: &'a FileLock, req: Request, entry: Granted) -> Self {
        LockGuard {
            hold: Hold::new(lock, req, entry),
            _thread_bound: PhantomData,
        }
    }
}

guard_api!(LockGuard<'a>, FileLock);

/// A hold taken by an async method; `Send`, so a task may keep it across
/// `.await` and move between threads. Released when dropped.
///
/// ```
/// use wasmlock::FileLock;
/// # #[tokio::main]
/// # async fn main() -> Result<(), wasmlock::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let lock = std::sync::Arc::new(FileLock::new(dir.path().join("a.lock"))?);
/// let task = tokio::spawn({
///     let lock = lock.clone();
///     async move {
///         let _g = lock.lock_async().await?;
///         tokio::task::yield_now().await;      // held across an await
///         Ok::<_, wasmlock::Error>(())
///     }
/// });
/// task.await.unwrap()?;
/// # Ok(()) }
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct AsyncLockGuard<'a> {
    hold: Hold<&'a FileLock>,
}

impl<'a> AsyncLockGuard<'a> {
    pub(super) fn new(lock: &'a FileLock, req: Request, entry: Granted) -> Self {
        AsyncLockGuard {
            hold: Hold::new(lock, req, entry),
        }
    }
}

guard_api!(AsyncLockGuard<'a>, FileLock);

/// A hold that owns its handle (an `Arc<FileLock>`): `Send + 'static`, so
/// it can be moved into a spawned task, a thread or a struct. Released when
/// dropped.
///
/// ```
/// use std::sync::Arc;
/// use wasmlock::{FileLock, OwnedLockGuard};
/// # let dir = tempfile::tempdir().unwrap();
/// struct Job { _lock: OwnedLockGuard }
/// let lock = Arc::new(FileLock::new(dir.path().join("job.lock"))?);
/// let job = Job { _lock: lock.lock_owned()? };
/// assert!(lock.try_lock().is_err());
/// drop(job);
/// assert!(lock.try_lock().is_ok());
/// # Ok::<(), wasmlock::Error>(())
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct OwnedLockGuard {
    hold: Hold<Arc<FileLock>>,
}

impl OwnedLockGuard {
    pub(super) fn new(lock: Arc<FileLock>, req: Request, entry: Granted) -> Self {
        OwnedLockGuard {
            hold: Hold::new(lock, req, entry),
        }
    }
}

guard_api!(OwnedLockGuard, Arc<FileLock>);

#[cfg(feature = "wasmtime")]
impl OwnedLockGuard {
    /// Ready when the hold is lost, where the backend tells (etcd).
    pub(crate) fn lost_signal(&self) -> Option<crate::backend::LostFuture> {
        self.hold
            .lock
            .granted(&self.hold.entry)
            .backend()
            .lost_signal()
    }

    /// Releases now if that needs no wait; else gives the guard back (a
    /// breaker holds a soft marker's turn right now): the host then
    /// releases it off the executor.
    pub(crate) fn unlock_now(mut self) -> std::result::Result<Result<()>, Self> {
        match self.hold.release_if(false) {
            Some(done) => Ok(done),
            None => Err(self),
        }
    }
}
