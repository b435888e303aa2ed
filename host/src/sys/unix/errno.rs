//! What the crate needs to know about `errno` values, in one place.

use std::io;

use crate::sys::{Meaning, OpenFailure};

/// The errors of a file system without kernel locks.
#[cfg(test)]
pub(crate) const NO_LOCKS_ERRNOS: [i32; 3] = [libc::ENOLCK, libc::EOPNOTSUPP, libc::ENOSYS];

pub(crate) fn meaning(err: &io::Error) -> Option<Meaning> {
    Some(match err.raw_os_error()? {
        libc::EACCES | libc::EPERM | libc::EROFS => Meaning::Refused,
        libc::ELOOP | libc::EISDIR | libc::ENOTDIR | libc::ENAMETOOLONG | libc::EINVAL => {
            Meaning::BadPath
        }
        libc::ENOLCK | libc::ENOSYS | libc::EOPNOTSUPP => Meaning::NoLocks,
        libc::EDEADLK => Meaning::Deadlock,
        libc::EDQUOT => Meaning::Quota,
        _ => return None,
    })
}

/// The system's policy refused (`EPERM`), not the file's permissions.
#[cfg(feature = "wasmtime")]
pub(crate) fn is_not_permitted(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::EPERM)
}

/// The file to be created exists already.
pub(crate) fn is_exists(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::EEXIST)
}

/// Refused for lack of rights, or on a read-only file system.
pub(crate) fn is_refusal(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EACCES | libc::EPERM | libc::EROFS)
    )
}

pub(crate) fn open_failure(err: &io::Error) -> Option<OpenFailure> {
    Some(match err.raw_os_error()? {
        libc::ENXIO => OpenFailure::NotAFile,
        libc::ELOOP => OpenFailure::Because("the final component is a symbolic link"),
        libc::EISDIR => OpenFailure::Because("the path names a directory"),
        libc::EACCES => {
            OpenFailure::Because("no permission to create or open the lock file for writing")
        }
        libc::EROFS => OpenFailure::Because("read-only file system"),
        _ => return None,
    })
}
