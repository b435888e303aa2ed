//! The words `wasmlock` (the host) and `wasmlock-guest` (plugins) share,
//! written once: the modes and kinds of a lock, and the error codes of the
//! `wasmlock:lock` WIT interface (`wit/types.wit`) with what each one means.
//!
//! It has no dependencies and builds for every target, `wasm32-wasip2`
//! included.
//!
//! ```
//! use wasmlock_types::{ErrorCode, Mode};
//! assert!(Mode::Exclusive.covers(Mode::Shared));
//! assert_eq!(ErrorCode::WouldBlock.to_string(), "lock is held by someone else");
//! ```
#![no_std]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]

use core::fmt;

/// Exclusive (one writer) or shared (many readers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// One holder at a time.
    Exclusive,
    /// Any number of shared holders, and no exclusive one.
    Shared,
}

impl Mode {
    /// Whether a hold in `self` already grants what a request for `wanted`
    /// asks: exclusive covers both, shared covers shared.
    ///
    /// ```
    /// use wasmlock_types::Mode;
    /// assert!(!Mode::Shared.covers(Mode::Exclusive));
    /// ```
    pub fn covers(self, wanted: Mode) -> bool {
        self == Mode::Exclusive || wanted == Mode::Shared
    }
}

/// The mechanism behind a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Kind {
    /// A kernel advisory lock (`flock` on Unix) on a lock file that is never
    /// deleted. The kernel frees it when the holder dies.
    #[default]
    Os,
    /// A marker file created exclusively (`O_CREAT|O_EXCL`), holding
    /// `pid\nhostname\nstart-token\n` like py-filelock's `SoftFileLock`.
    /// Works where kernel locks do not; stale markers of dead holders on this
    /// host are broken safely. Exclusive mode only.
    Soft,
}

/// Why a guest's lock operation failed: the cases of the WIT `error-code`,
/// in the manner of `wasi:filesystem` (each case one kind of failure, none
/// reported as another).
///
/// ```
/// use wasmlock_types::ErrorCode;
/// assert_eq!(ErrorCode::Access.to_string(), "access outside the granted directory, or denied");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A try-once attempt found the lock held (the guest crate also says so
    /// for an outcome asked for before the acquisition completed).
    WouldBlock,
    /// A bounded wait ran out (also when the host caps a "forever" wait).
    Timeout,
    /// Waiting would never end: the waiter holds the lock through another
    /// guard in a mode that excludes the request.
    Deadlock,
    /// The directory or file is read-only for the caller.
    ReadOnly,
    /// The host's policy forbids it.
    NotPermitted,
    /// The path leads outside the granted directory, or access was denied.
    Access,
    /// The path or key cannot name a lock.
    InvalidPath,
    /// A host limit was reached (handles, held locks, semaphore slots).
    Quota,
    /// No locks on that file system, or not for this kind or mode.
    Unsupported,
    /// The hold ended without a release.
    Lost,
    /// The lock service cannot be reached.
    Unavailable,
    /// Any other failure.
    Other,
}

impl ErrorCode {
    /// What the code means, in a few words (the `Display` text).
    pub fn describe(self) -> &'static str {
        match self {
            ErrorCode::WouldBlock => "lock is held by someone else",
            ErrorCode::Timeout => "timed out waiting for lock",
            ErrorCode::Deadlock => "deadlock: the waiter holds the lock itself",
            ErrorCode::ReadOnly => "read-only",
            ErrorCode::NotPermitted => "not permitted by the host",
            ErrorCode::Access => "access outside the granted directory, or denied",
            ErrorCode::InvalidPath => "invalid lock path or key",
            ErrorCode::Quota => "quota exceeded",
            ErrorCode::Unsupported => "locking not supported",
            ErrorCode::Lost => "lock lost",
            ErrorCode::Unavailable => "lock service unavailable",
            ErrorCode::Other => "error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Where a lock's holder is, as far as a guest may know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HolderKind {
    /// A guard of the asking guest.
    ThisGuest,
    /// Someone else in the host process (another guest, the host itself).
    ThisHost,
    /// Another process or machine.
    Elsewhere,
}
