//! Whole-file kernel locks through fs4: `flock` on Unix, `LockFileEx` over
//! every byte but the last on Windows.

use std::fs::File;
use std::io;

use fs4::{FileExt, TryLockError};

use crate::Mode;

/// One non-blocking `flock` attempt. `Ok(false)` means someone else holds it.
pub(crate) fn flock_try(file: &File, mode: Mode) -> io::Result<bool> {
    let result = match mode {
        Mode::Exclusive => FileExt::try_lock(file),
        Mode::Shared => FileExt::try_lock_shared(file),
    };
    match result {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Blocks in the kernel until the `flock` is granted.
pub(crate) fn flock_wait(file: &File, mode: Mode) -> io::Result<()> {
    retry_eintr(|| match mode {
        Mode::Exclusive => FileExt::lock(file),
        Mode::Shared => FileExt::lock_shared(file),
    })
}

pub(crate) fn flock_release(file: &File) -> io::Result<()> {
    retry_eintr(|| FileExt::unlock(file))
}

fn retry_eintr(mut f: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
