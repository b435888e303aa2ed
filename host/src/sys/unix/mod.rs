//! Unix: `*at` calls on a directory held open, an OFD record lock as
//! turnstile, inotify, process identity.

mod at;
#[cfg(feature = "etcd")]
mod clock;
mod errno;
mod identity;
mod proc_locks;
mod watch;

pub(crate) use at::{
    dir_names, dir_stat, discard_unnamed, fchmod, fd_path, fstat, link_at, lstat_at, open_at,
    open_unnamed_at, random_hex, rename_at, unlink_at,
};
pub(crate) use watch::DirWatch;

#[cfg(feature = "etcd")]
pub(crate) use clock::since_boot;

#[cfg(test)]
pub(crate) use errno::NO_LOCKS_ERRNOS;
#[cfg(feature = "wasmtime")]
pub(crate) use errno::is_not_permitted;
pub(crate) use errno::{is_exists, is_refusal, meaning, open_failure};

pub(crate) use identity::{pid_alive, process_start_token};
pub(super) use identity::{pid_namespace, raw_hostname};
pub(crate) use proc_locks::flock_holders;

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;

use crate::Mode;

/// A directory held open, for the `*at` calls on names inside it.
pub(crate) type DirFd = OwnedFd;

/// One file name inside a [`DirFd`], as the `*at` calls take it.
pub(crate) type Name = CString;

/// `name` as a [`Name`]; `None` if it has a NUL byte (no file name has).
pub(crate) fn name(name: &OsStr) -> Option<Name> {
    CString::new(name.as_encoded_bytes()).ok()
}

/// The directory a capability stands for, held open.
pub(crate) fn dir_fd(dir: cap_std::fs::Dir) -> DirFd {
    OwnedFd::from(dir.into_std_file())
}

/// Whether `file` can be locked with a call that returns once the lock is
/// granted: always, on Unix (see the Windows one).
pub(crate) fn is_synchronous(_: &File) -> io::Result<bool> {
    Ok(true)
}

/// Takes a soft-lock marker's turn (see `SoftBackend::take_over`) unless
/// someone has it: the whole-file `flock`, which keeps no one from reading
/// the marker. `Ok(false)`: someone has it.
pub(crate) fn marker_turn_try(file: &File) -> io::Result<bool> {
    super::flock_try(file, Mode::Exclusive)
}

/// Gives back a turn [`marker_turn_try`] took.
pub(crate) fn marker_turn_release(file: &File) -> io::Result<()> {
    super::flock_release(file)
}

/// The turnstile keeps a stream of readers from starving a writer across
/// processes: a writer that has to wait holds it (exclusive) while it waits
/// for the `flock`, and readers pass through it (shared) before taking theirs.
/// It is an open-file-description record lock on one byte far past any data,
/// which on Linux is independent of `flock` and owned like it (per open file).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Turnstile;

#[cfg(target_os = "linux")]
impl Turnstile {
    const OFFSET: libc::off_t = libc::off_t::MAX - 1;

    /// The turnstile's byte, for a record lock of type `ty`.
    fn byte(ty: libc::c_int) -> libc::flock {
        // SAFETY: flock is plain old data; all-zero is a valid value (and
        // OFD locks require l_pid to be 0).
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = ty as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = Self::OFFSET;
        fl.l_len = 1;
        fl
    }

    fn op(file: &File, ty: libc::c_int, cmd: libc::c_int) -> io::Result<bool> {
        let mut fl = Self::byte(ty);
        loop {
            // SAFETY: fcntl with a valid fd and a pointer to an initialised flock struct.
            let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
            if rc == 0 {
                return Ok(true);
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::EACCES) if cmd == libc::F_OFD_SETLK => {
                    return Ok(false);
                }
                _ => return Err(err),
            }
        }
    }

    fn ty(mode: Mode) -> libc::c_int {
        match mode {
            Mode::Exclusive => libc::F_WRLCK,
            Mode::Shared => libc::F_RDLCK,
        }
    }

    /// Whether no writer of another process waits at the turnstile: one
    /// look, not a pass. A writer that closes it right after may see one
    /// more reader in ahead of it, as it would a reader already passing.
    pub(crate) fn is_open(file: &File) -> io::Result<bool> {
        let mut fl = Self::byte(libc::F_RDLCK);
        // SAFETY: fcntl with a valid fd and a pointer to an initialised flock struct.
        let rc = unsafe {
            libc::fcntl(
                file.as_raw_fd(),
                libc::F_OFD_GETLK,
                &mut fl as *mut libc::flock,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fl.l_type == libc::F_UNLCK as libc::c_short)
    }

    pub(crate) fn enter(file: &File, mode: Mode) -> io::Result<()> {
        Self::op(file, Self::ty(mode), libc::F_OFD_SETLKW).map(drop)
    }

    pub(crate) fn leave(file: &File) -> io::Result<()> {
        Self::op(file, libc::F_UNLCK, libc::F_OFD_SETLK).map(drop)
    }

    /// Whether the turnstile can be used on this file: open for reading and
    /// writing (a writer's record lock needs write access, a reader's read
    /// access), and not on NFS, where `flock` is emulated with record locks
    /// that would collide with it.
    pub(crate) fn usable(file: &File) -> bool {
        // SAFETY: F_GETFL on a valid fd takes no argument.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        if flags < 0 || flags & libc::O_ACCMODE != libc::O_RDWR {
            return false;
        }
        // SAFETY: statfs is plain old data; all-zero is a valid value.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and a statfs to fill.
        let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) };
        const NFS_SUPER_MAGIC: i64 = 0x6969;
        const SMB_SUPER_MAGIC: i64 = 0x517b;
        const CIFS_MAGIC_NUMBER: i64 = 0xff53_4d42;
        rc == 0
            && !matches!(
                st.f_type as i64,
                NFS_SUPER_MAGIC | SMB_SUPER_MAGIC | CIFS_MAGIC_NUMBER
            )
    }
}

#[cfg(not(target_os = "linux"))]
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

/// A blocking kernel wait. A `flock` wait cannot be called off here: a
/// waiter nobody wants any more gets the lock and gives it straight back.
pub(crate) struct KernelWait;

impl KernelWait {
    pub(crate) fn new() -> KernelWait {
        KernelWait
    }

    /// Runs `wait`; `Ok(true)` when it finished (it is never called off).
    pub(crate) fn run(&self, wait: impl FnOnce() -> io::Result<()>) -> io::Result<bool> {
        wait().map(|()| true)
    }

    pub(crate) fn cancel(&self) {}

    pub(crate) fn reset(&self) {}
}

/// Whether anyone holds a kernel lock on `file`, without touching it;
/// `None` where the system cannot tell (no `/proc/locks`).
pub(crate) fn lock_held(file: &File) -> io::Result<Option<bool>> {
    if !cfg!(target_os = "linux") {
        return Ok(None);
    }
    let st = fstat(file)?;
    Ok(Some(!flock_holders(st.dev, st.ino).is_empty()))
}

/// This process's id.
pub(crate) fn pid() -> u32 {
    std::process::id()
}
