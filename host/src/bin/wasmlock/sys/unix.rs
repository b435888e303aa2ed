//! Unix: descriptors the shell opened, `flock(2)` with an alarm, signals.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::status;

/// A descriptor the command inherits: the lock's open file.
pub(crate) type Inheritable = RawFd;

/// What `file` gives the command to inherit.
pub(crate) fn inheritable(file: &File) -> Inheritable {
    file.as_raw_fd()
}

/// How the command is stopped when the lock is lost, for messages.
pub(crate) const TERMINATE: &str = "SIGTERM";

/// `-c LINE` as a command: the user's shell, as flock(1) runs it.
pub(crate) fn shell_command(line: &OsString) -> Command {
    let shell = std::env::var_os("SHELL")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".into());
    let mut command = Command::new(shell);
    command.arg("-c").arg(line);
    command
}

/// Runs `cmd` in place of this process; returns only its failure.
pub(crate) fn exec(cmd: &mut Command) -> io::Error {
    cmd.exec()
}

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

/// `flock(2)` on `file` as `flock(1)` does it: at once (`timeout` zero),
/// with a deadline (a one-shot `SIGALRM` interrupts the wait), or forever.
/// `Ok(false)`: the lock is held by someone else, or the deadline passed.
/// Used for a descriptor the shell owns, where the lock must be the kernel's
/// alone: nothing of ours may outlive this process on that open file.
pub(crate) fn flock(file: &File, shared: bool, timeout: Option<Duration>) -> io::Result<bool> {
    let mut op = if shared { libc::LOCK_SH } else { libc::LOCK_EX };
    if timeout.is_some_and(|t| t.is_zero()) {
        op |= libc::LOCK_NB;
    }
    let timed = timeout.filter(|t| !t.is_zero());
    if let Some(t) = timed {
        arm_alarm(t)?;
    }
    let result = loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            break Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => break Ok(false),
            Some(libc::EINTR) if ALARM.load(Ordering::SeqCst) => break Ok(false),
            Some(libc::EINTR) => continue,
            _ => break Err(err),
        }
    };
    if timed.is_some() {
        disarm_alarm();
    }
    result
}

static ALARM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_alarm(_: libc::c_int) {
    ALARM.store(true, Ordering::SeqCst);
}

fn arm_alarm(after: Duration) -> io::Result<()> {
    // SAFETY: sigaction is plain old data; all-zero is a valid value.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // No SA_RESTART: the signal must interrupt the waiting flock.
    action.sa_flags = 0;
    // SAFETY: installs a handler that only stores to an atomic.
    if unsafe { libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: itimerval is plain old data; all-zero is a valid value.
    let mut timer: libc::itimerval = unsafe { std::mem::zeroed() };
    timer.it_value.tv_sec = after.as_secs().min(i32::MAX as u64) as libc::time_t;
    // At least one microsecond: an all-zero value would disarm the timer.
    timer.it_value.tv_usec = after.subsec_micros().max(1) as libc::suseconds_t;
    // SAFETY: a one-shot real-time timer; the old value is not wanted.
    if unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn disarm_alarm() {
    // SAFETY: all-zero itimerval stops the timer.
    let stop: libc::itimerval = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &stop, std::ptr::null_mut()) };
}

/// A caller that ignores `SIGCHLD` would have it ignored here too (the
/// setting survives exec), and then the command's status is lost; flock(1)
/// resets it as well.
pub(crate) fn default_sigchld() {
    // SAFETY: restores the default disposition of one signal.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
}

/// Asks the process `pid` to end (SIGTERM).
pub(crate) fn terminate(pid: u32) {
    // SAFETY: sends a signal; no memory is involved.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
}

/// A command's exit as `flock(1)` reports it: its status, 128+N if signal N
/// killed it.
pub(crate) fn exit_status(exit: io::Result<std::process::ExitStatus>) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match exit.map(|e| (e.code(), e.signal())) {
        Ok((Some(code), _)) => code as u8,
        Ok((None, Some(signal))) => (128 + signal) as u8,
        _ => status::OSERR,
    }
}
