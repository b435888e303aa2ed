//! `FileLockBuilder`: the options of a lock on a path.

use super::engine::next_handle_id;
use super::{FileLock, Source};
use crate::target::Target;
use crate::{Kind, Result};

/// What a builder configures beyond the path and kind.
#[derive(Debug, Clone, Copy)]
pub(super) struct Options {
    pub(super) file_mode: Option<u32>,
    pub(super) fallback_to_soft: bool,
    pub(super) recheck: bool,
    pub(super) reentrant: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            file_mode: None,
            fallback_to_soft: false,
            recheck: true,
            reentrant: false,
        }
    }
}

/// Builds a [`FileLock`] with options.
///
/// ```
/// use wasmlock::{FileLock, Kind};
/// # let dir = tempfile::tempdir().unwrap();
/// let lock = FileLock::builder(dir.path().join("shared.lock"))
///     .mode(0o660)            // applied by the winner, after it holds the lock
///     .fallback_to_soft(true) // on file systems without kernel locks
///     .build()?;
/// assert_eq!(lock.kind(), Kind::Os);
/// # Ok::<(), wasmlock::Error>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct FileLockBuilder {
    target: Result<Target>,
    kind: Kind,
    options: Options,
}

impl FileLockBuilder {
    pub(crate) fn new(target: Result<Target>) -> FileLockBuilder {
        FileLockBuilder {
            target,
            kind: Kind::Os,
            options: Options::default(),
        }
    }

    /// Uses a soft lock (a marker file) instead of a kernel lock.
    pub fn soft(self) -> Self {
        self.kind(Kind::Soft)
    }

    /// Chooses the kind of lock.
    pub fn kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    /// Permission bits for the lock file. Without it the umask decides and the
    /// file is never `chmod`ed. With it, the process that wins the lock sets
    /// them — never a contender, so a holder's file is never touched.
    pub fn mode(mut self, mode: u32) -> Self {
        self.options.file_mode = Some(mode & 0o7777);
        self
    }

    /// Falls back to a soft lock when the file system has no kernel locks
    /// (`ENOLCK`, `ENOTSUP`, `ENOSYS`) instead of failing with
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported). Unix only
    /// for now: on Windows the error is returned.
    pub fn fallback_to_soft(mut self, yes: bool) -> Self {
        self.options.fallback_to_soft = yes;
        self
    }

    /// Whether each acquisition checks that the path still names the file it
    /// locked (default: yes). A peer that deletes or replaces the lock file —
    /// `rm`, portalocker's `TemporaryFileLock`, a cleanup script — would
    /// otherwise leave this handle locking an orphaned file while newcomers
    /// lock the new one. The check is one `fstat` per acquisition (a full
    /// `lstat` only after the file's change time moved). Turn it off only for
    /// a lock file that nothing ever deletes; it saves that system call.
    ///
    /// ```
    /// use wasmlock::FileLock;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = FileLock::builder(dir.path().join("private.lock"))
    ///     .recheck_path(false)
    ///     .build()?;
    /// drop(lock.lock()?);
    /// # Ok::<(), wasmlock::Error>(())
    /// ```
    pub fn recheck_path(mut self, yes: bool) -> Self {
        self.options.recheck = yes;
        self
    }

    /// Lets a thread that holds this handle lock it again, counting, as
    /// py-filelock's locks do (`with lock: with lock:`): the lock is released
    /// when the last of that thread's guards goes. Only the blocking methods
    /// re-enter, and their guards cannot leave the thread, so "this thread
    /// holds it" stays true for as long as the count says so. The async and
    /// owned methods always take a hold of their own: a task is no owner
    /// that can be re-entered safely (two futures joined in one task would
    /// both be inside).
    ///
    /// The thread is trusted to be one caller: two futures on one thread
    /// (`join!`, a `LocalSet`) that both hold a re-entrant guard across
    /// `.await` count up on each other and are both inside. Use re-entrant
    /// handles only in code that does not hold their guards across `.await`.
    ///
    /// Upgrading a shared hold to exclusive by re-entry fails with
    /// [`ErrorKind::Deadlock`](crate::ErrorKind::Deadlock); an exclusive hold
    /// re-enters in either mode.
    ///
    /// ```
    /// use wasmlock::FileLock;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = FileLock::builder(dir.path().join("nested.lock")).reentrant().build()?;
    /// let outer = lock.lock()?;
    /// let inner = lock.lock()?;               // same thread: counts up
    /// assert_eq!(lock.hold_count(), 2);
    /// drop(outer);
    /// assert!(lock.is_locked()?);             // still held by `inner`
    /// drop(inner);
    /// assert!(!lock.is_locked()?);
    /// # Ok::<(), wasmlock::Error>(())
    /// ```
    pub fn reentrant(mut self) -> Self {
        self.options.reentrant = true;
        self
    }

    /// Creates the handle. Nothing is opened or created until the first lock.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidPath`](crate::ErrorKind::InvalidPath) or
    /// [`ErrorKind::PermissionDenied`](crate::ErrorKind::PermissionDenied)
    /// when the path was refused.
    pub fn build(self) -> Result<FileLock> {
        Ok(FileLock::with_source(
            Source::Path(self.target?),
            self.kind,
            self.options,
            next_handle_id(),
        ))
    }
}
