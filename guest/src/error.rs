//! Errors: one kind per failure (the WIT `error-code`, shared with the host
//! through `wasmlock-types`), and a message naming the lock.

use std::fmt;

/// Which failure it was: the cases of the WIT `error-code`.
pub use wasmlock_types::ErrorCode as ErrorKind;

/// An error from a lock operation: its kind, and a message that names the
/// lock (the path or key this plugin gave) and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// An error about the lock `name`.
    pub(crate) fn about(name: &str, raw: impl WitCode) -> Error {
        let (kind, detail) = raw.split();
        let message = match detail {
            // The host's own words already name the lock.
            Some(detail) => detail,
            None => format!("{name}: {kind}"),
        };
        Error { kind, message }
    }

    pub(crate) fn new(kind: ErrorKind, message: String) -> Error {
        Error { kind, message }
    }

    /// Which case this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What happened, naming the lock.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A WIT `error-code` of either interface version.
pub(crate) trait WitCode {
    /// Its kind, and the host's description if it gave one.
    fn split(self) -> (ErrorKind, Option<String>);
}

/// The `error-code` cases are the same in every interface version.
macro_rules! wit_code {
    ($raw:path) => {
        impl WitCode for $raw {
            fn split(self) -> (ErrorKind, Option<String>) {
                use $raw as Raw;
                let kind = match self {
                    Raw::WouldBlock => ErrorKind::WouldBlock,
                    Raw::Timeout => ErrorKind::Timeout,
                    Raw::Deadlock => ErrorKind::Deadlock,
                    Raw::ReadOnly => ErrorKind::ReadOnly,
                    Raw::NotPermitted => ErrorKind::NotPermitted,
                    Raw::Access => ErrorKind::Access,
                    Raw::InvalidPath => ErrorKind::InvalidPath,
                    Raw::Quota => ErrorKind::Quota,
                    Raw::Unsupported => ErrorKind::Unsupported,
                    Raw::Lost => ErrorKind::Lost,
                    Raw::Unavailable => ErrorKind::Unavailable,
                    Raw::Other(detail) => return (ErrorKind::Other, detail),
                };
                (kind, None)
            }
        }
    };
}

wit_code!(crate::bindings::wasmlock::lock::types::ErrorCode);
#[cfg(feature = "p3")]
wit_code!(crate::p3::bindings::wasmlock::lock::types::ErrorCode);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
