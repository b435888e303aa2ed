//! Windows: names opened relative to a directory handle (cap-std, which
//! opens with `NtCreateFile` and a root directory), `LockFileEx` through
//! fs4, process identity from `OpenProcess` and `GetProcessTimes`.

mod at;
#[cfg(feature = "etcd")]
mod clock;
mod errno;
mod identity;
mod watch;

pub(crate) use at::{
    dir_names, dir_stat, fchmod, fd_path, fstat, link_at, lstat_at, open_at, open_unnamed_at,
    random_hex, rename_at, unlink_at,
};
#[cfg(feature = "etcd")]
pub(crate) use clock::since_boot;
#[cfg(test)]
pub(crate) use errno::NO_LOCKS_ERRNOS;
#[cfg(feature = "wasmtime")]
pub(crate) use errno::is_not_permitted;
pub(crate) use errno::{is_exists, is_refusal, meaning, open_failure};
pub(crate) use identity::{pid_alive, process_start_token};
pub(super) use identity::{pid_namespace, raw_hostname};
pub(crate) use watch::DirWatch;

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;

use crate::Mode;

/// A directory held open, for the calls on names inside it. The handle
/// keeps the directory from being renamed or removed while it is open.
pub(crate) type DirFd = cap_std::fs::Dir;

/// One file name inside a [`DirFd`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name(OsString);

impl Name {
    /// The name as text, for messages and derived names.
    pub(crate) fn to_string_lossy(&self) -> Cow<'_, str> {
        self.0.to_string_lossy()
    }

    fn as_os_str(&self) -> &OsStr {
        &self.0
    }
}

/// `name` as a [`Name`]; `None` if it has a NUL (no file name has).
pub(crate) fn name(name: &OsStr) -> Option<Name> {
    (!name.as_encoded_bytes().contains(&0)).then(|| Name(name.to_owned()))
}

/// The directory a capability stands for, held open.
pub(crate) fn dir_fd(dir: cap_std::fs::Dir) -> DirFd {
    dir
}

/// The writers' turnstile of the Unix engine (a record lock on a byte far
/// past the data). Not yet on Windows: a stream of readers in other
/// processes can keep a writer waiting there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Turnstile;

impl Turnstile {
    pub(crate) fn is_open(_: &File) -> io::Result<bool> {
        Ok(true)
    }
    pub(crate) fn enter(_: &File, _: Mode) -> io::Result<()> {
        Ok(())
    }
    pub(crate) fn leave(_: &File) -> io::Result<()> {
        Ok(())
    }
    pub(crate) fn usable(_: &File) -> bool {
        false
    }
}

/// Who holds a kernel lock on a file: Windows does not say.
pub(crate) fn flock_holders(_dev: u64, _ino: u64) -> Vec<u32> {
    Vec::new()
}

/// Whether anyone holds a lock on `file`: a probe of the last byte every
/// holder's range covers (fs4 locks all bytes but the very last), taken
/// and given back at once. A holder is not disturbed; another process's
/// `try` in the same microseconds may be refused, and a wait waits those
/// microseconds longer. A hold through `file` itself counts too.
pub(crate) fn lock_held(file: &File) -> io::Result<Option<bool>> {
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::Foundation::{ERROR_LOCK_VIOLATION, HANDLE};
    use windows_sys::Win32::Storage::FileSystem::{
        LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY, LockFileEx, UnlockFileEx,
    };
    use windows_sys::Win32::System::IO::OVERLAPPED;
    let h = file.as_raw_handle() as HANDLE;
    let at = || {
        // SAFETY: plain old data; all-zero is a valid value.
        let mut o: OVERLAPPED = unsafe { std::mem::zeroed() };
        o.Anonymous.Anonymous.Offset = 0xFFFF_FFFE;
        o.Anonymous.Anonymous.OffsetHigh = 0xFFFF_FFFF;
        o
    };
    let flags = LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY;
    let mut probe = at();
    // SAFETY: a valid handle and an OVERLAPPED naming one byte.
    if unsafe { LockFileEx(h, flags, 0, 1, 0, &mut probe) } == 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(code) if code == ERROR_LOCK_VIOLATION as i32 => Ok(Some(true)),
            _ => Err(err),
        };
    }
    let mut probe = at();
    // SAFETY: the byte just locked through the same handle.
    if unsafe { UnlockFileEx(h, 0, 1, 0, &mut probe) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some(false))
}

/// This process's id.
pub(crate) fn pid() -> u32 {
    std::process::id()
}
