//! Where lock files may live: a directory the caller grants (cap-std), and
//! the checks that keep every lock path inside it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::fs::Dir;

use crate::target::{Refusal, Target, open_ambient_dir};
use crate::{Error, FileLock, FileLockBuilder, Result, Semaphore};

/// A directory that lock files are created in, and never outside of.
///
/// Paths given to a `LockDir` are relative to it. Paths that would leave it —
/// `..` above the top, absolute paths, symbolic links that point out — are
/// refused with [`ErrorKind::PermissionDenied`](crate::ErrorKind::PermissionDenied), before anything is created.
/// Paths that would mean something else on another system — backslashes,
/// drive letters — and paths that are not UTF-8 are refused with
/// [`ErrorKind::InvalidPath`](crate::ErrorKind::InvalidPath), as are symbolic links that lead nowhere.
/// Missing directories inside it are created.
///
/// ```
/// use wasmlock::{ErrorKind, LockDir};
/// # let tmp = tempfile::tempdir().unwrap();
/// let locks = LockDir::open_ambient(tmp.path())?;
/// let job = locks.file_lock("jobs/42.lock")?;
/// let _guard = job.lock()?;
/// assert!(tmp.path().join("jobs/42.lock").exists());
///
/// let escape = locks.file_lock("../elsewhere.lock").unwrap_err();
/// assert_eq!(escape.kind(), ErrorKind::PermissionDenied);
/// # Ok::<(), wasmlock::Error>(())
/// ```
#[derive(Clone)]
pub struct LockDir {
    dir: Arc<Dir>,
    display: PathBuf,
}

impl std::fmt::Debug for LockDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockDir")
            .field("path", &self.display)
            .finish()
    }
}

impl LockDir {
    /// Opens (creating it if missing) a directory by its ambient path. This is
    /// the one place ambient authority is used; everything below is relative.
    pub fn open_ambient(path: impl AsRef<Path>) -> Result<LockDir> {
        let path = path.as_ref();
        let dir = open_ambient_dir(path)?;
        Ok(LockDir {
            dir: Arc::new(dir),
            display: path.to_path_buf(),
        })
    }

    /// Wraps a directory capability the caller already holds. `display` is
    /// only used to name paths in errors and logs.
    ///
    /// ```
    /// use cap_std::{ambient_authority, fs::Dir};
    /// use wasmlock::LockDir;
    /// # let tmp = tempfile::tempdir().unwrap();
    /// let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
    /// let locks = LockDir::from_cap_std(dir, "/srv/locks");
    /// let lock = locks.file_lock("a.lock")?;
    /// assert_eq!(lock.path(), std::path::Path::new("/srv/locks/a.lock"));
    /// # Ok::<(), wasmlock::Error>(())
    /// ```
    pub fn from_cap_std(dir: Dir, display: impl Into<PathBuf>) -> LockDir {
        LockDir {
            dir: Arc::new(dir),
            display: display.into(),
        }
    }

    /// The same directory, shown as `display` in errors and logs.
    #[cfg(feature = "wasmtime")]
    pub(crate) fn shown_as(&self, display: impl Into<PathBuf>) -> LockDir {
        LockDir {
            dir: self.dir.clone(),
            display: display.into(),
        }
    }

    /// The path this directory is shown as.
    pub fn path(&self) -> &Path {
        &self.display
    }

    /// An OS lock on `rel` inside this directory.
    pub fn file_lock(&self, rel: impl AsRef<Path>) -> Result<FileLock> {
        self.builder(rel).build()
    }

    /// A builder for a lock on `rel` inside this directory (kind, mode, ...).
    ///
    /// ```
    /// use wasmlock::LockDir;
    /// # let tmp = tempfile::tempdir().unwrap();
    /// let locks = LockDir::open_ambient(tmp.path())?;
    /// let soft = locks.builder("soft.lock").soft().build()?;
    /// let _g = soft.lock()?;
    /// # Ok::<(), wasmlock::Error>(())
    /// ```
    pub fn builder(&self, rel: impl AsRef<Path>) -> FileLockBuilder {
        let rel = rel.as_ref();
        FileLockBuilder::new(
            Target::inside(&self.dir, &self.display, rel)
                .map_err(|refusal| self.error(rel, refusal)),
        )
    }

    /// A semaphore of `slots` permits named `name` inside this directory.
    pub fn semaphore(&self, name: &str, slots: usize) -> Result<Semaphore> {
        Semaphore::in_dir(&self.dir, &self.display, name, slots)
    }

    fn error(&self, rel: &Path, (kind, detail): Refusal) -> Error {
        Error::new(kind, self.display.join(rel)).with_detail(detail)
    }
}
