//! File operations on one name inside a directory we hold open (`*at`
//! syscalls). The name is a single path component, so nothing here can leave
//! the directory.

use std::ffi::CStr;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

use super::DirFd;
use crate::sys::{Create, Stat};

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens `name` in `dir` without following a symbolic link and without
/// blocking on a FIFO.
pub(crate) fn open_at(dir: &DirFd, name: &CStr, how: Create, mode: u32) -> io::Result<File> {
    let base = libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    let flags = match how {
        Create::Existing | Create::MarkerOpen => base | libc::O_RDWR,
        Create::New | Create::Marker => base | libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
        Create::ReadOnly => base | libc::O_RDONLY,
    };
    loop {
        // SAFETY: valid dir fd and NUL-terminated name.
        let fd =
            unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint) };
        if fd >= 0 {
            // SAFETY: we own the fresh fd.
            return Ok(unsafe { File::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// A file in `dir` that has no name yet (`O_TMPFILE`): whatever is written
/// to it appears all at once when [`link_at`] names it. Fails with
/// `Unsupported` where the file system or the platform cannot do that.
/// (`name`, the name it will get, and `private`, the start of a private
/// name, are for systems where a private name stands in for none.)
#[cfg(target_os = "linux")]
pub(crate) fn open_unnamed_at(
    dir: &DirFd,
    _name: &CStr,
    _private: &str,
    mode: u32,
) -> io::Result<File> {
    let flags = libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC;
    loop {
        // SAFETY: valid dir fd and a NUL-terminated name ("." is the dir).
        let fd =
            unsafe { libc::openat(dir.as_raw_fd(), c".".as_ptr(), flags, mode as libc::c_uint) };
        if fd >= 0 {
            // SAFETY: we own the fresh fd.
            return Ok(unsafe { File::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            // Kernels and file systems without it say so in several ways.
            Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL) => {
                return Err(io::Error::new(io::ErrorKind::Unsupported, err));
            }
            _ => return Err(err),
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn open_unnamed_at(_: &DirFd, _: &CStr, _: &str, _: u32) -> io::Result<File> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Lets go of a file from [`open_unnamed_at`] that will not be named
/// after all: nothing to do, a file without a name goes when it is closed.
pub(crate) fn discard_unnamed(_: &File) {}

/// Gives a file from [`open_unnamed_at`] the name `name` in `dir`; fails
/// with `AlreadyExists` if the name is taken, and never replaces anything.
/// `Unsupported` without `/proc` (the unprivileged way to name an open file).
pub(crate) fn link_at(file: &File, dir: &DirFd, name: &CStr) -> io::Result<()> {
    let fd_path = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .expect("no NUL in a formatted path");
    // SAFETY: NUL-terminated paths and a valid dir fd.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            fd_path.as_ptr(),
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    match cvt(rc) {
        Ok(_) => Ok(()),
        Err(e)
            if e.raw_os_error() == Some(libc::ENOENT)
                && !std::path::Path::new("/proc/self/fd").exists() =>
        {
            Err(io::Error::new(io::ErrorKind::Unsupported, e))
        }
        Err(e) => Err(e),
    }
}

fn to_stat(st: &libc::stat) -> Stat {
    Stat {
        // dev_t is i32 on macOS.
        #[allow(clippy::unnecessary_cast)]
        dev: st.st_dev as u64,
        ino: st.st_ino,
        mtime_ns: i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec),
        ctime_ns: i128::from(st.st_ctime) * 1_000_000_000 + i128::from(st.st_ctime_nsec),
        #[allow(clippy::useless_conversion)] // nlink_t is u32 on some targets
        nlink: u64::from(st.st_nlink),
        is_file: (st.st_mode & libc::S_IFMT) == libc::S_IFREG,
    }
}

/// `lstat` of `name` in `dir`.
pub(crate) fn lstat_at(dir: &DirFd, name: &CStr) -> io::Result<Stat> {
    // SAFETY: stat is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid dir fd, NUL-terminated name, and a stat to fill.
    cvt(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(to_stat(&st))
}

/// `fstat` of an open file.
pub(crate) fn fstat(file: &File) -> io::Result<Stat> {
    // SAFETY: stat is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    fstat_raw(file.as_raw_fd(), &mut st)?;
    Ok(to_stat(&st))
}

/// The `fstat` system call itself: glibc's `fstat` is `fstatat(fd, "",
/// AT_EMPTY_PATH)`, which copies and looks up an empty path first and costs
/// twice as much — and the engine calls it on every acquisition.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn fstat_raw(fd: libc::c_int, st: &mut libc::stat) -> io::Result<()> {
    // SAFETY: SYS_fstat with a valid fd and a pointer to a stat to fill; on
    // these targets the kernel's struct stat is libc's.
    let rc = unsafe { libc::syscall(libc::SYS_fstat, fd, st as *mut libc::stat) };
    cvt(rc as libc::c_int).map(drop)
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
fn fstat_raw(fd: libc::c_int, st: &mut libc::stat) -> io::Result<()> {
    // SAFETY: valid fd and a stat to fill.
    cvt(unsafe { libc::fstat(fd, st) }).map(drop)
}

/// Renames within `dir`. With `noreplace` the target must not exist.
pub(crate) fn rename_at(dir: &DirFd, from: &CStr, to: &CStr, noreplace: bool) -> io::Result<()> {
    let fd = dir.as_raw_fd();
    #[cfg(target_os = "linux")]
    {
        let flags = if noreplace { libc::RENAME_NOREPLACE } else { 0 };
        // SAFETY: valid fds and NUL-terminated names.
        cvt(unsafe { libc::renameat2(fd, from.as_ptr(), fd, to.as_ptr(), flags) }).map(drop)
    }
    #[cfg(not(target_os = "linux"))]
    {
        if noreplace && lstat_at(dir, to).is_ok() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        // SAFETY: valid fds and NUL-terminated names.
        cvt(unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) }).map(drop)
    }
}

pub(crate) fn unlink_at(dir: &DirFd, name: &CStr) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(drop)
}

pub(crate) fn fchmod(file: &File, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    cvt(unsafe { libc::fchmod(file.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

/// A path that names the directory open as `dir`, wherever it lives now,
/// for the calls that want a path (Linux `/proc`).
pub(super) fn proc_fd_path(dir: &DirFd) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
}

/// The names in the directory open as `dir`.
pub(crate) fn dir_names(dir: &DirFd) -> io::Result<Vec<OsString>> {
    std::fs::read_dir(proc_fd_path(dir))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect()
}

/// `fstat` of the directory open as `dir`.
pub(crate) fn dir_stat(dir: &DirFd) -> io::Result<Stat> {
    // SAFETY: stat is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    fstat_raw(dir.as_raw_fd(), &mut st)?;
    Ok(to_stat(&st))
}

/// A name for a file given by descriptor, for messages.
pub(crate) fn fd_path(file: &File) -> std::path::PathBuf {
    let fd = file.as_raw_fd();
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .unwrap_or_else(|_| std::path::PathBuf::from(format!("<fd {fd}>")))
}

/// 32 random hex digits for private file names.
pub(crate) fn random_hex() -> String {
    let mut buf = [0u8; 16];
    if !fill_random(&mut buf) {
        // Uniqueness, not secrecy, is what matters here.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        buf.copy_from_slice(&(t ^ u128::from(std::process::id())).to_le_bytes());
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(target_os = "linux")]
fn fill_random(buf: &mut [u8]) -> bool {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: writes at most the remaining length into buf.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
    true
}

#[cfg(not(target_os = "linux"))]
fn fill_random(buf: &mut [u8]) -> bool {
    // SAFETY: writes exactly buf.len() (at most 256) bytes into buf.
    unsafe { libc::getentropy(buf.as_mut_ptr().cast(), buf.len()) == 0 }
}
