//! The few system calls the command-line tool makes itself.

use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::status;

/// A descriptor of our own for `fd`, which the shell opened for us; an
/// error if `fd` is not open.
pub(crate) fn dup_inherited(fd: RawFd) -> io::Result<File> {
    // SAFETY: F_GETFD only asks whether `fd` is open; it changes nothing.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is open (checked above) and stays open while we borrow
    // it: nothing in this process closes descriptors it did not open.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok(File::from(borrowed.try_clone_to_owned()?))
}

/// Lets the command inherit `fd`, which Rust opened close-on-exec.
pub(crate) fn pass_on(cmd: &mut Command, fd: RawFd) {
    // SAFETY: the closure runs in the forked child before exec and calls
    // only fcntl, which is async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// flock(1)'s status for a lock file that could not be opened.
pub(crate) fn open_failure(e: &io::Error) -> u8 {
    match e.raw_os_error() {
        Some(libc::EROFS | libc::ENOSPC) => status::CANTCREAT,
        Some(libc::ENOMEM | libc::EMFILE | libc::ENFILE) => status::OSERR,
        _ => status::NOINPUT,
    }
}

/// Whether a lock failed for want of system resources (flock(1)'s 71).
pub(crate) fn out_of_resources(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::ENOLCK | libc::ENOMEM))
}
