//! Errors, one case per failure, each naming the lock path.

use std::fmt;

use crate::bindings::wasmlock::lock::types::Error as Raw;

/// Which failure it was; the same cases as the host's `wasmlock::ErrorKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A try-once attempt found the lock held.
    WouldBlock,
    /// A bounded wait ran out (also when the host caps a "forever" wait).
    Timeout,
    /// Release without holding.
    NotHeld,
    /// Held by someone else, who alone may release it.
    NotOwner,
    /// Waiting forever for a lock this plugin already holds through another
    /// handle, or upgrading shared to exclusive.
    Deadlock,
    /// A read-only directory or file, a path out of the granted directory,
    /// or something the host does not allow.
    PermissionDenied,
    /// The path cannot name a lock file.
    InvalidPath,
    /// No locks on that file system, or not for this kind or mode.
    Unsupported,
    /// A held lock was lost.
    Lost,
    /// The host's limit on handles or held locks was reached.
    QuotaExceeded,
    /// Any other failure.
    Io,
}

/// An error from a lock operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// Which case this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The host's description, naming the path.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<Raw> for Error {
    fn from(raw: Raw) -> Error {
        let (kind, message) = match raw {
            Raw::WouldBlock => (ErrorKind::WouldBlock, "lock is held by someone else".into()),
            Raw::Timeout => (ErrorKind::Timeout, "timed out waiting for lock".into()),
            Raw::NotHeld => (ErrorKind::NotHeld, "lock is not held".into()),
            Raw::NotOwner => (ErrorKind::NotOwner, "lock is held by another owner".into()),
            Raw::Deadlock => (ErrorKind::Deadlock, "deadlock".into()),
            Raw::PermissionDenied(m) => (ErrorKind::PermissionDenied, m),
            Raw::InvalidPath(m) => (ErrorKind::InvalidPath, m),
            Raw::Unsupported(m) => (ErrorKind::Unsupported, m),
            Raw::Lost => (ErrorKind::Lost, "lock lost".into()),
            Raw::QuotaExceeded => (ErrorKind::QuotaExceeded, "quota exceeded".into()),
            Raw::Io(m) => (ErrorKind::Io, m),
        };
        Error { kind, message }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
