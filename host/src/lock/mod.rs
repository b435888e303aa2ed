//! `FileLock`: a lock on a path or on an open file. Every acquisition is a
//! hold of its own, owned by the guard it returns.

mod books;
mod builder;
mod engine;
mod fast;
mod file;
mod guard;
mod owned;
mod task;
mod thread;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, OnceLock};

use books::Inner;
pub use builder::FileLockBuilder;
use builder::Options;
pub(crate) use engine::Request;
pub(crate) use engine::next_handle_id;
pub use guard::{AsyncLockGuard, LockGuard, OwnedLockGuard};

use crate::backend::os::Verified;
use crate::target::Target;
use crate::{Error, ErrorKind, Holder, Kind, Result, sys};
#[cfg(doc)]
use crate::{Mode, Wait};

/// A lock on a file, for threads, tasks and processes alike.
///
/// Every successful acquisition returns a guard, and that guard *is* the
/// hold: only it releases, dropping it releases, and two acquisitions are
/// two holds that exclude each other — whether they come from two threads,
/// two tasks, two futures joined in one task, or one thread twice. Two
/// handles on the same file, in this process or another, exclude each other
/// too; files are identified by device and inode, not by spelling.
///
/// ```
/// use wasmlock::{ErrorKind, FileLock};
/// # let dir = tempfile::tempdir().unwrap();
/// let lock = FileLock::new(dir.path().join("data.lock"))?;
/// let guard = lock.lock()?;                     // exclusive, waits as long as needed
/// assert_eq!(lock.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
/// drop(guard);                                  // unlocks
///
/// let reader = lock.lock_shared()?;
/// let another = lock.try_lock_shared()?;        // readers share
/// reader.unlock()?;                             // explicit unlock reports errors
/// # drop(another);
/// # Ok::<(), wasmlock::Error>(())
/// ```
///
/// # Which method
///
/// | you have | exclusive | shared | guard |
/// |---|---|---|---|
/// | a thread | [`lock`](Self::lock), [`try_lock`](Self::try_lock), [`lock_timeout`](Self::lock_timeout) | [`lock_shared`](Self::lock_shared), … | [`LockGuard`] (stays on the thread) |
/// | an async task | [`lock_async`](Self::lock_async), [`lock_timeout_async`](Self::lock_timeout_async) | [`lock_shared_async`](Self::lock_shared_async), … | [`AsyncLockGuard`] (`Send`) |
/// | an `Arc<FileLock>` | [`lock_owned`](Self::lock_owned), [`lock_owned_async`](Self::lock_owned_async) | [`lock_shared_owned`](Self::lock_shared_owned), … | [`OwnedLockGuard`] (`Send + 'static`) |
///
/// Each family has a `…_with` form taking a [`Mode`] and a [`Wait`].
///
/// # Deadlocks
///
/// A [`LockGuard`] cannot leave the thread that took it, so the lock knows
/// which thread holds it. A thread that would wait forever for a file it
/// holds that way — through this handle or any other — in a mode that
/// excludes the request gets [`ErrorKind::Deadlock`] at once instead of
/// hanging. Holds that can move
/// ([`AsyncLockGuard`], [`OwnedLockGuard`]) prove nothing about who will
/// release them, so waiting behind them is never called a deadlock; an async
/// waiter never blocks its thread anyway.
///
/// # Re-entrancy
///
/// There is none by default: locking again while holding waits for the
/// first hold (or fails as above), exactly like `std::sync::Mutex`. Code
/// written for py-filelock's counted locks (`with lock: with lock:`) can opt
/// in with [`FileLockBuilder::reentrant`]: then a thread that holds the
/// handle counts up instead, and every guard of that thread must go before
/// the lock is released. Only threads are re-entrant owners: a task may hop
/// threads and two futures of one task run interleaved, so the async and
/// owned methods always take a hold of their own.
pub struct FileLock {
    id: u64,
    source: Source,
    options: Options,
    inner: Mutex<Inner>,
    /// The first lock file's entry, kept for the handle's life.
    first: OnceLock<fast::First>,
    /// Whether the handle still uses `first`, so that a guard may take it
    /// without the handle's lock.
    fast: AtomicBool,
    /// When the path was last seen to name the lock file.
    verified: Verified,
}

/// What the lock is on.
enum Source {
    Path(Target),
    File {
        file: File,
        display: PathBuf,
    },
    /// A name in an etcd cluster.
    #[cfg(feature = "etcd")]
    Remote {
        session: std::sync::Arc<crate::etcd::session::Session>,
        name: String,
        display: PathBuf,
        /// How errors name the cluster.
        service: String,
    },
}

impl std::fmt::Debug for FileLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileLock")
            .field("path", &self.path())
            .field("kind", &self.kind())
            .field("reentrant", &self.options.reentrant)
            .finish()
    }
}

impl FileLock {
    /// An OS lock on `path`. Missing parent directories are created at the
    /// first lock.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidPath`] when `path` cannot name a lock file (empty,
    /// a directory, a NUL byte, too long). Nothing is opened yet.
    pub fn new(path: impl AsRef<Path>) -> Result<FileLock> {
        Self::builder(path).build()
    }

    /// A builder for a lock on `path` (kind, file mode, fallback, re-entrancy).
    pub fn builder(path: impl AsRef<Path>) -> FileLockBuilder {
        let path = path.as_ref();
        FileLockBuilder::new(
            Target::ambient(path)
                .map_err(|(kind, detail)| Error::new(kind, path).with_detail(detail)),
        )
    }

    /// An OS lock on a file the caller already opened (like portalocker's
    /// `lock(file, flags)` or py-filelock's `lock_descriptor`). It contends
    /// with path-based locks on the same file, in this process and others,
    /// and the file stays usable: [`file`](Self::file) and every guard's
    /// `file()` give it back, so the data file can be the lock.
    ///
    /// Like `flock(1)`, any open file will do: a directory, `/dev/null`, a
    /// file opened read-only (writers are then not protected from a stream
    /// of readers in other processes: the turnstile needs a read-write file).
    ///
    /// ```
    /// use std::io::Write;
    /// use wasmlock::FileLock;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("data.txt");
    /// let lock = FileLock::from_file(std::fs::File::create(&path).unwrap())?;
    /// let by_path = FileLock::new(&path)?;
    /// let guard = lock.lock()?;
    /// assert!(by_path.try_lock().is_err());
    /// writeln!(guard.file().unwrap(), "written under the lock").unwrap();
    /// drop(guard);
    /// assert_eq!(std::fs::read_to_string(&path).unwrap(), "written under the lock\n");
    /// # Ok::<(), wasmlock::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for checks a platform may need.
    pub fn from_file(file: File) -> Result<FileLock> {
        let display = sys::fd_path(&file);
        Ok(Self::on_open_file(file, display))
    }

    /// [`from_file`](Self::from_file) for a guest's file, named `display` in
    /// errors (guests must not learn host paths), and only a regular file.
    #[cfg_attr(not(feature = "wasmtime"), allow(dead_code))]
    pub(crate) fn from_file_as(file: File, display: PathBuf) -> Result<FileLock> {
        let st = sys::fstat(&file).map_err(|e| Error::from_io(e, &display))?;
        if !st.is_file {
            return Err(
                Error::new(ErrorKind::InvalidPath, &display).with_detail("not a regular file")
            );
        }
        Ok(Self::on_open_file(file, display))
    }

    fn on_open_file(file: File, display: PathBuf) -> FileLock {
        FileLock::with_source(
            Source::File { file, display },
            Kind::Os,
            Options::default(),
            next_handle_id(),
        )
    }

    fn with_source(source: Source, kind: Kind, options: Options, id: u64) -> FileLock {
        FileLock {
            id,
            source,
            options,
            inner: Mutex::new(Inner::new(kind)),
            first: OnceLock::new(),
            fast: AtomicBool::new(false),
            verified: Verified::default(),
        }
    }

    /// The lock `name` in the cluster `session` is connected to.
    #[cfg(feature = "etcd")]
    pub(crate) fn remote(
        session: std::sync::Arc<crate::etcd::session::Session>,
        name: String,
        display: PathBuf,
        service: String,
    ) -> FileLock {
        let source = Source::Remote {
            session,
            name,
            display,
            service,
        };
        FileLock::with_source(source, Kind::Os, Options::default(), next_handle_id())
    }

    /// Whether the lock lives in a cluster, not in a file.
    #[cfg(feature = "etcd")]
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self.source, Source::Remote { .. })
    }

    /// A semaphore slot: every slot of one semaphore shares its handle id,
    /// since one waiter queues on all of them at once.
    pub(crate) fn for_semaphore(target: Target, id: u64) -> FileLock {
        FileLock::with_source(Source::Path(target), Kind::Os, Options::default(), id)
    }

    /// The lock path, as given.
    pub fn path(&self) -> &Path {
        match &self.source {
            Source::Path(t) => &t.display,
            Source::File { display, .. } => display,
            #[cfg(feature = "etcd")]
            Source::Remote { display, .. } => display,
        }
    }

    /// The kind in use (soft after a fallback). An etcd lock, which has no
    /// file, says [`Kind::Os`].
    pub fn kind(&self) -> Kind {
        self.inner().kind
    }

    /// The file this lock was made from with [`from_file`](Self::from_file);
    /// `None` for a lock on a path (a guard's `file()` gives the lock file).
    pub fn file(&self) -> Option<&File> {
        match &self.source {
            Source::File { file, .. } => Some(file),
            _ => None,
        }
    }

    // ----- looking without locking ------------------------------------------

    /// Whether anyone — this process or another — holds the lock, found
    /// without disturbing the holder. Does not create the lock file.
    ///
    /// ```
    /// use wasmlock::FileLock;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = FileLock::new(dir.path().join("q.lock"))?;
    /// assert!(!lock.is_locked()?);
    /// let g = lock.lock()?;
    /// assert!(lock.is_locked()?);
    /// drop(g);
    /// assert!(!lock.is_locked()?);
    /// # Ok::<(), wasmlock::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unsupported`] for OS locks held elsewhere where the
    /// platform cannot tell (Linux reads `/proc/locks`, Windows probes one
    /// byte no holder's data uses; other Unixes cannot); I/O errors name
    /// the path.
    pub fn is_locked(&self) -> Result<bool> {
        let Some(entry) = self.existing_entry()? else {
            return Ok(false);
        };
        if entry.held_locally() {
            return Ok(true);
        }
        entry.backend().is_locked()
    }

    /// Who holds the lock, if anyone (see [`Holder`] for what is known).
    ///
    /// # Errors
    ///
    /// I/O errors reading the marker or `/proc/locks`, naming the path.
    pub fn holder(&self) -> Result<Option<Holder>> {
        let Some(entry) = self.existing_entry()? else {
            return Ok(None);
        };
        // A kernel lock held here: the kernel's books say no more than ours.
        if entry.held_locally() && entry.backend().file().is_some() {
            return Ok(Some(Holder::new(
                Some(sys::pid()),
                Some(sys::host_name().to_owned()),
                None,
            )));
        }
        entry.backend().holder()
    }

    /// Where the holder is, as a guest may know it: `party` itself, someone
    /// else in this process, or elsewhere.
    #[cfg(feature = "wasmtime")]
    pub(crate) fn holder_kind(
        &self,
        party: crate::Owner,
    ) -> Result<Option<wasmlock_types::HolderKind>> {
        use wasmlock_types::HolderKind;
        let Some(entry) = self.existing_entry()? else {
            return Ok(None);
        };
        if entry.holds_where(false, |id| id.party == Some(party)) > 0 {
            return Ok(Some(HolderKind::ThisGuest));
        }
        if entry.held_locally() {
            return Ok(Some(HolderKind::ThisHost));
        }
        Ok(entry
            .backend()
            .is_locked()?
            .then_some(HolderKind::Elsewhere))
    }

    /// Breaks a stale soft lock: one whose holder is provably gone (same
    /// host, process dead or its pid recycled), or a malformed marker. With
    /// `force`, breaks a live holder's lock too.
    ///
    /// ```
    /// use wasmlock::FileLock;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("stale.lock");
    /// // A marker that is no marker at all (py-filelock would break it too).
    /// std::fs::write(&path, "not a pid\n")?;
    /// let lock = FileLock::builder(&path).soft().build()?;
    /// lock.break_lock(false)?;
    /// assert!(!path.exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unsupported`] for OS locks (the kernel frees them when
    /// the holder dies); [`ErrorKind::NotOwner`] for a live holder without
    /// `force`.
    pub fn break_lock(&self, force: bool) -> Result<()> {
        let entry = self.entry()?;
        entry.backend().break_lock(force)?;
        tracing::debug!(path = %self.path().display(), force, "broke lock");
        Ok(())
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // A borrowed guard cannot outlive its handle, but a forgotten one
        // can: no hold may outlive the handle that took it.
        self.release_all();
    }
}
