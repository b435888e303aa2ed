//! Errors as the guest sees them: host errors mapped once to the WIT
//! `error-code`, in the manner of wasmtime-wasi's `FsError`.

use std::io;

use wasmlock_types::ErrorCode as Code;
use wasmtime_wasi::ResourceTableError;

use super::bindings::wasmlock::lock::types::ErrorCode;
use crate::{Error, ErrorKind, sys};

/// A failed lock operation: an `error-code` for the guest, or a trap (a
/// stale resource handle, a host failure). What `bindgen!`'s
/// `trappable_error_type` maps `error-code` results through, as
/// wasmtime-wasi's `FsError` does.
#[derive(Debug)]
pub struct LockError(Inner);

#[derive(Debug)]
enum Inner {
    Code(ErrorCode),
    Trap(wasmtime::Error),
}

impl LockError {
    /// An error that traps the guest instead of reaching it.
    pub fn trap(err: impl Into<wasmtime::Error>) -> LockError {
        LockError(Inner::Trap(err.into()))
    }

    /// The error code for the guest, or the trap.
    pub fn downcast(self) -> wasmtime::Result<ErrorCode> {
        match self.0 {
            Inner::Code(code) => Ok(code),
            Inner::Trap(e) => Err(e),
        }
    }
}

impl From<ErrorCode> for LockError {
    fn from(code: ErrorCode) -> LockError {
        LockError(Inner::Code(code))
    }
}

impl From<ResourceTableError> for LockError {
    fn from(e: ResourceTableError) -> LockError {
        LockError::trap(e)
    }
}

impl From<wasmtime::Error> for LockError {
    fn from(e: wasmtime::Error) -> LockError {
        LockError::trap(e)
    }
}

/// What host functions return.
pub(crate) type LockResult<T> = Result<T, LockError>;

impl From<Code> for ErrorCode {
    fn from(code: Code) -> ErrorCode {
        match code {
            Code::WouldBlock => ErrorCode::WouldBlock,
            Code::Timeout => ErrorCode::Timeout,
            Code::Deadlock => ErrorCode::Deadlock,
            Code::ReadOnly => ErrorCode::ReadOnly,
            Code::NotPermitted => ErrorCode::NotPermitted,
            Code::Access => ErrorCode::Access,
            Code::InvalidPath => ErrorCode::InvalidPath,
            Code::Quota => ErrorCode::Quota,
            Code::Unsupported => ErrorCode::Unsupported,
            Code::Lost => ErrorCode::Lost,
            Code::Unavailable => ErrorCode::Unavailable,
            _ => ErrorCode::Other(None),
        }
    }
}

impl From<Code> for LockError {
    fn from(code: Code) -> LockError {
        ErrorCode::from(code).into()
    }
}

impl From<&Error> for ErrorCode {
    fn from(e: &Error) -> ErrorCode {
        match e.kind() {
            ErrorKind::WouldBlock => ErrorCode::WouldBlock,
            ErrorKind::Timeout => ErrorCode::Timeout,
            ErrorKind::Deadlock => ErrorCode::Deadlock,
            ErrorKind::PermissionDenied => match e.raw_os_error().map(io::Error::from_raw_os_error)
            {
                Some(os) if os.kind() == io::ErrorKind::ReadOnlyFilesystem => ErrorCode::ReadOnly,
                // EPERM: the file system's policy, as wasi-filesystem maps it.
                Some(os) if sys::is_not_permitted(&os) => ErrorCode::NotPermitted,
                // EACCES, and every path the sandbox refused.
                _ => ErrorCode::Access,
            },
            ErrorKind::InvalidPath => ErrorCode::InvalidPath,
            ErrorKind::Unsupported => ErrorCode::Unsupported,
            ErrorKind::Lost => ErrorCode::Lost,
            ErrorKind::QuotaExceeded => ErrorCode::Quota,
            ErrorKind::Unavailable => ErrorCode::Unavailable,
            // Not-held and not-owner cannot reach a guest: only guards
            // release. The message names the path as the guest gave it.
            _ => ErrorCode::Other(Some(e.to_string())),
        }
    }
}

impl From<Error> for LockError {
    fn from(e: Error) -> LockError {
        ErrorCode::from(&e).into()
    }
}
