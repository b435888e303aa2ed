//! The one error type of the crate.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use wasmlock_types::ErrorCode;

/// What went wrong, as a closed set of cases a caller can match on.
///
/// Each case is distinct: a lock that was found held by a try-once attempt is
/// [`WouldBlock`](ErrorKind::WouldBlock), a wait that gave up is
/// [`Timeout`](ErrorKind::Timeout), and a permission problem is never reported
/// as either.
///
/// ```
/// use wasmlock::{ErrorKind, FileLock};
/// # let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("kinds.lock");
/// let a = FileLock::new(&path)?;
/// let b = FileLock::new(&path)?;
/// let _held = a.lock()?;
/// // A try-once attempt through another handle finds it held...
/// assert_eq!(b.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
/// // ...and waiting forever for it on this thread would never end.
/// assert_eq!(b.lock().unwrap_err().kind(), ErrorKind::Deadlock);
/// # Ok::<(), wasmlock::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A try-once attempt found the lock held.
    WouldBlock,
    /// A bounded wait ran out before the lock was obtained.
    Timeout,
    /// A release was asked for a lock this owner does not hold.
    NotHeld,
    /// The lock is held by someone else, who alone may release it.
    NotOwner,
    /// Waiting would never end: the waiting thread (or guest) holds the file
    /// itself, through this handle or another, in a way that excludes the
    /// request; or a re-entrant shared hold asks to become exclusive.
    Deadlock,
    /// The file system or the sandbox refused: a read-only directory or file,
    /// or a path that leaves the granted directory.
    PermissionDenied,
    /// The path cannot name a lock file: empty, a NUL byte, `.`, a directory,
    /// a symbolic link as final component, not a regular file.
    InvalidPath,
    /// The file system does not support locking (or this lock kind does not
    /// support the requested mode).
    Unsupported,
    /// A lock that was held has been lost (a lease that expired).
    Lost,
    /// A configured limit on handles or held locks was reached.
    QuotaExceeded,
    /// The lock service (an etcd cluster) cannot be reached.
    Unavailable,
    /// Any other I/O failure.
    Io,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        // What guests are told too comes from the vocabulary they share.
        match self {
            ErrorKind::WouldBlock => ErrorCode::WouldBlock.describe(),
            ErrorKind::Timeout => ErrorCode::Timeout.describe(),
            ErrorKind::NotHeld => "lock is not held",
            ErrorKind::NotOwner => "lock is held by another owner",
            ErrorKind::Deadlock => "deadlock",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::InvalidPath => "invalid lock path",
            ErrorKind::Unsupported => ErrorCode::Unsupported.describe(),
            ErrorKind::Lost => ErrorCode::Lost.describe(),
            ErrorKind::QuotaExceeded => ErrorCode::Quota.describe(),
            ErrorKind::Unavailable => ErrorCode::Unavailable.describe(),
            ErrorKind::Io => "I/O error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// An error from a lock operation. It always names the lock path.
///
/// ```
/// use wasmlock::{ErrorKind, FileLock};
/// let err = FileLock::new("").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidPath);
/// assert!(err.to_string().contains("invalid lock path"));
/// // Converts into std::io::Error for `?` in io-returning code.
/// let io: std::io::Error = err.into();
/// assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
/// ```
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    path: PathBuf,
    detail: Option<String>,
    source: Option<std::sync::Arc<io::Error>>,
}

impl Error {
    /// An error of `kind` about the lock at `path`.
    pub fn new(kind: ErrorKind, path: impl Into<PathBuf>) -> Self {
        Error {
            kind,
            path: path.into(),
            detail: None,
            source: None,
        }
    }

    /// Adds a human-readable explanation.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Classifies an I/O error from the operating system for the lock at `path`.
    pub(crate) fn from_io(err: io::Error, path: &Path) -> Self {
        let kind = classify(&err);
        Error {
            kind,
            path: path.to_path_buf(),
            detail: None,
            source: Some(std::sync::Arc::new(err)),
        }
    }

    /// The same error, counted as another case.
    pub(crate) fn kind_to(mut self, kind: ErrorKind) -> Error {
        self.kind = kind;
        self
    }

    /// The same error, about another path.
    pub(crate) fn at(mut self, path: &Path) -> Error {
        self.path = path.to_path_buf();
        self
    }

    /// Which case this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The lock path the error is about.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The explanation, when there is one beyond the kind.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The operating system's error number, when the error came from the OS.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.as_ref().and_then(|e| e.raw_os_error())
    }
}

/// Maps an OS error to the case a caller should act on.
fn classify(err: &io::Error) -> ErrorKind {
    use crate::sys::Meaning;
    if let Some(meaning) = crate::sys::meaning(err) {
        return match meaning {
            Meaning::Refused => ErrorKind::PermissionDenied,
            Meaning::BadPath => ErrorKind::InvalidPath,
            Meaning::NoLocks => ErrorKind::Unsupported,
            Meaning::Deadlock => ErrorKind::Deadlock,
            Meaning::Quota => ErrorKind::QuotaExceeded,
        };
    }
    match err.kind() {
        // cap-std reports a path that escapes its directory this way.
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        io::ErrorKind::WouldBlock => ErrorKind::WouldBlock,
        io::ErrorKind::TimedOut => ErrorKind::Timeout,
        io::ErrorKind::Unsupported => ErrorKind::Unsupported,
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidFilename => ErrorKind::InvalidPath,
        _ => ErrorKind::Io,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.kind)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        if let Some(source) = &self.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match err.kind {
            ErrorKind::WouldBlock => io::ErrorKind::WouldBlock,
            ErrorKind::Timeout => io::ErrorKind::TimedOut,
            ErrorKind::NotHeld | ErrorKind::NotOwner | ErrorKind::Lost => io::ErrorKind::Other,
            ErrorKind::Deadlock => io::ErrorKind::Deadlock,
            ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
            ErrorKind::InvalidPath => io::ErrorKind::InvalidInput,
            ErrorKind::Unsupported => io::ErrorKind::Unsupported,
            ErrorKind::QuotaExceeded => io::ErrorKind::QuotaExceeded,
            ErrorKind::Unavailable => io::ErrorKind::NotConnected,
            ErrorKind::Io => err
                .source
                .as_ref()
                .map_or(io::ErrorKind::Other, |e| e.kind()),
        };
        io::Error::new(kind, err)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
