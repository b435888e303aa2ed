//! What the crate needs to know about Windows error codes, in one place.

use std::io;

use crate::sys::{Meaning, OpenFailure};

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS, ERROR_BAD_PATHNAME, ERROR_CANT_RESOLVE_FILENAME,
    ERROR_DIRECTORY, ERROR_DISK_QUOTA_EXCEEDED, ERROR_FILE_EXISTS, ERROR_FILENAME_EXCED_RANGE,
    ERROR_INVALID_FUNCTION, ERROR_INVALID_NAME, ERROR_NOT_SUPPORTED, ERROR_POSSIBLE_DEADLOCK,
    ERROR_PRIVILEGE_NOT_HELD, ERROR_SHARING_VIOLATION, ERROR_WRITE_PROTECT,
};

/// The errors of a file system without byte-range locks.
#[cfg(test)]
pub(crate) const NO_LOCKS_ERRNOS: [i32; 2] =
    [ERROR_INVALID_FUNCTION as i32, ERROR_NOT_SUPPORTED as i32];

fn code(err: &io::Error) -> Option<u32> {
    err.raw_os_error().map(|c| c as u32)
}

pub(crate) fn meaning(err: &io::Error) -> Option<Meaning> {
    Some(match code(err)? {
        ERROR_ACCESS_DENIED | ERROR_WRITE_PROTECT | ERROR_PRIVILEGE_NOT_HELD => Meaning::Refused,
        ERROR_INVALID_NAME
        | ERROR_BAD_PATHNAME
        | ERROR_FILENAME_EXCED_RANGE
        | ERROR_DIRECTORY
        | ERROR_CANT_RESOLVE_FILENAME => Meaning::BadPath,
        ERROR_INVALID_FUNCTION | ERROR_NOT_SUPPORTED => Meaning::NoLocks,
        ERROR_POSSIBLE_DEADLOCK => Meaning::Deadlock,
        ERROR_DISK_QUOTA_EXCEEDED => Meaning::Quota,
        _ => return None,
    })
}

/// The system's policy refused, not the file's permissions.
#[cfg(feature = "wasmtime")]
pub(crate) fn is_not_permitted(err: &io::Error) -> bool {
    code(err) == Some(ERROR_PRIVILEGE_NOT_HELD)
}

/// The file to be created exists already.
pub(crate) fn is_exists(err: &io::Error) -> bool {
    matches!(code(err), Some(ERROR_FILE_EXISTS | ERROR_ALREADY_EXISTS))
}

/// Refused for lack of rights, or on a write-protected volume.
pub(crate) fn is_refusal(err: &io::Error) -> bool {
    matches!(
        code(err),
        Some(ERROR_ACCESS_DENIED | ERROR_WRITE_PROTECT | ERROR_PRIVILEGE_NOT_HELD)
    )
}

pub(crate) fn open_failure(err: &io::Error) -> Option<OpenFailure> {
    Some(match code(err)? {
        ERROR_CANT_RESOLVE_FILENAME => OpenFailure::Because("too many symbolic links"),
        ERROR_ACCESS_DENIED => OpenFailure::Because(
            "no permission to create or open the lock file for writing, or the path names a directory",
        ),
        ERROR_SHARING_VIOLATION => {
            OpenFailure::Because("another program has the file open and shares it with no one")
        }
        ERROR_WRITE_PROTECT => OpenFailure::Because("write-protected volume"),
        _ => return None,
    })
}
