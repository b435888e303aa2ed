//! Windows: no descriptor numbers of a shell, no `exec`, no signals. The
//! lock is this process's alone (`LockFileEx` locks belong to the handle
//! that took them and the process that holds it), so it lasts while this
//! process waits for the command.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::windows::process::CommandExt;
use std::process::Command;

use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_DISK_FULL, ERROR_HANDLE_DISK_FULL, ERROR_NOT_ENOUGH_MEMORY,
    ERROR_OUTOFMEMORY, ERROR_TOO_MANY_OPEN_FILES, ERROR_WRITE_PROTECT,
};
use windows_sys::Win32::System::Threading::{OpenProcess, PROCESS_TERMINATE, TerminateProcess};

use crate::status;

/// Nothing is inherited: a child's copy of the handle would not hold the
/// lock.
#[derive(Clone, Copy)]
pub(crate) struct Inheritable;

/// See [`Inheritable`].
pub(crate) fn inheritable(_: &File) -> Inheritable {
    Inheritable
}

/// See [`Inheritable`].
pub(crate) fn pass_on(_: &mut Command, _: Inheritable) {}

/// How the command is stopped when the lock is lost, for messages.
pub(crate) const TERMINATE: &str = "TerminateProcess";

/// `-c LINE` as a command: `%COMSPEC% /D /S /C "LINE"`, the line passed as
/// it was written. cmd.exe does not read its command line by the rules
/// other programs do, so the quoting `Command::arg` adds would reach the
/// line (`\"` for a quote); with `/S` it drops just the outer quotes. (`/D`:
/// no AutoRun commands, as `sh -c` reads no profile.)
pub(crate) fn shell_command(line: &OsString) -> Command {
    let shell = std::env::var_os("COMSPEC")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cmd.exe".into());
    let mut raw = OsString::from("/D /S /C \"");
    raw.push(line);
    raw.push("\"");
    let mut command = Command::new(shell);
    command.raw_arg(raw);
    command
}

/// There is no `exec` on Windows.
pub(crate) fn exec(_: &mut Command) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "Windows cannot run a command in place of a process (-F)",
    )
}

/// flock(1)'s status for a lock file that could not be opened.
pub(crate) fn open_failure(e: &io::Error) -> u8 {
    match e.raw_os_error().map(|code| code as u32) {
        Some(ERROR_WRITE_PROTECT | ERROR_DISK_FULL | ERROR_HANDLE_DISK_FULL) => status::CANTCREAT,
        Some(ERROR_NOT_ENOUGH_MEMORY | ERROR_OUTOFMEMORY | ERROR_TOO_MANY_OPEN_FILES) => {
            status::OSERR
        }
        _ => status::NOINPUT,
    }
}

/// Whether a lock failed for want of system resources (flock(1)'s 71).
pub(crate) fn out_of_resources(code: Option<i32>) -> bool {
    matches!(
        code.map(|code| code as u32),
        Some(ERROR_NOT_ENOUGH_MEMORY | ERROR_OUTOFMEMORY)
    )
}

/// Nothing to reset: Windows has no `SIGCHLD`.
pub(crate) fn default_sigchld() {}

/// Ends the process `pid` (`TerminateProcess`, status 1): Windows cannot
/// ask a console program to end. `pid` is a child we have not waited for,
/// so its handle keeps the number from being reused.
pub(crate) fn terminate(pid: u32) {
    // SAFETY: opens a process handle that is closed below.
    let h = unsafe { OpenProcess(PROCESS_TERMINATE, 0, pid) };
    if h.is_null() {
        return;
    }
    // SAFETY: a handle opened with PROCESS_TERMINATE, closed once.
    unsafe {
        TerminateProcess(h, 1);
        CloseHandle(h);
    }
}

/// A command's exit status. Windows statuses are 32 bits (an exception
/// ends a program with 0xC0000005, say): those that do not fit in the
/// shell's byte become 255, never a 0 that would read as success.
pub(crate) fn exit_status(exit: io::Result<std::process::ExitStatus>) -> u8 {
    match exit.map(|e| e.code()) {
        Ok(Some(code)) => u8::try_from(code).unwrap_or(u8::MAX),
        _ => status::OSERR,
    }
}
