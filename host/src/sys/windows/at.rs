//! File operations on one name inside a directory we hold open. cap-std
//! opens the name relative to the directory's handle; the name is a single
//! path component, so nothing here can leave the directory.

use std::ffi::{OsString, c_void};
use std::fs::File;
use std::io;
use std::os::windows::io::AsRawHandle;

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{OpenOptions, OpenOptionsExt};
use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::Storage::FileSystem::{
    BY_HANDLE_FILE_INFORMATION, FILE_ATTRIBUTE_DEVICE, FILE_ATTRIBUTE_DIRECTORY,
    FILE_ATTRIBUTE_REPARSE_POINT, FILE_BASIC_INFO, FILE_FLAG_BACKUP_SEMANTICS,
    FILE_FLAG_OPEN_REPARSE_POINT, FILE_READ_ATTRIBUTES, FILE_SHARE_DELETE, FILE_SHARE_READ,
    FILE_SHARE_WRITE, FileBasicInfo, GetFileInformationByHandle, GetFileInformationByHandleEx,
};

use super::{DirFd, Name};
use crate::sys::{Create, Stat};

/// Everyone may go on reading and writing the file: a lock file's readers
/// and writers are other programs. Deleting, renaming or replacing a lock
/// file while it is open is refused, as py-filelock opens it: the name
/// cannot come to stand for another file under a holder.
const SHARE_LOCK_FILE: u32 = FILE_SHARE_READ | FILE_SHARE_WRITE;

/// A soft marker is deleted while its holder has it open, and markers are
/// read and judged without disturbing anyone.
const SHARE_ALL: u32 = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;

/// Opens `name` in `dir` without following a symbolic link or junction
/// (the link itself is opened, and is no regular file).
pub(crate) fn open_at(dir: &DirFd, name: &Name, how: Create, _mode: u32) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    let share = match how {
        Create::Existing => {
            opts.read(true).write(true);
            SHARE_LOCK_FILE
        }
        Create::New => {
            opts.read(true).write(true).create_new(true);
            SHARE_LOCK_FILE
        }
        Create::Marker => {
            opts.read(true).write(true).create_new(true);
            SHARE_ALL
        }
        Create::MarkerOpen => {
            opts.read(true).write(true);
            SHARE_ALL
        }
        Create::ReadOnly => {
            opts.read(true);
            SHARE_ALL
        }
    };
    opts.share_mode(share)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .follow(FollowSymlinks::No);
    Ok(dir.open_with(name.as_os_str(), &opts)?.into_std())
}

/// Unnamed files do not exist on Windows: markers are created, then written.
pub(crate) fn open_unnamed_at(_: &DirFd, _: u32) -> io::Result<File> {
    Err(io::ErrorKind::Unsupported.into())
}

/// See [`open_unnamed_at`].
pub(crate) fn link_at(_: &File, _: &DirFd, _: &Name) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// 100-nanosecond ticks since 1601 to nanoseconds since 1970.
fn filetime_ns(ticks: i64) -> i128 {
    (i128::from(ticks) - 116_444_736_000_000_000) * 100
}

fn stat_handle(h: HANDLE) -> io::Result<Stat> {
    // SAFETY: plain old data; all-zero is a valid value.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: a valid handle and a structure to fill.
    if unsafe { GetFileInformationByHandle(h, &mut info) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain old data; all-zero is a valid value.
    let mut basic: FILE_BASIC_INFO = unsafe { std::mem::zeroed() };
    // SAFETY: a valid handle, and a FILE_BASIC_INFO of the size given.
    let ok = unsafe {
        GetFileInformationByHandleEx(
            h,
            FileBasicInfo,
            (&mut basic as *mut FILE_BASIC_INFO).cast::<c_void>(),
            std::mem::size_of::<FILE_BASIC_INFO>() as u32,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let not_a_file =
        FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_REPARSE_POINT | FILE_ATTRIBUTE_DEVICE;
    Ok(Stat {
        dev: u64::from(info.dwVolumeSerialNumber),
        ino: (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow),
        mtime_ns: filetime_ns(basic.LastWriteTime),
        ctime_ns: filetime_ns(basic.ChangeTime),
        nlink: u64::from(info.nNumberOfLinks),
        is_file: info.dwFileAttributes & not_a_file == 0,
    })
}

/// The information of `name` in `dir`, of a link itself rather than what it
/// points to. Opens it for its attributes only, sharing everything, so
/// nobody is disturbed.
pub(crate) fn lstat_at(dir: &DirFd, name: &Name) -> io::Result<Stat> {
    let mut opts = OpenOptions::new();
    opts.access_mode(FILE_READ_ATTRIBUTES)
        .share_mode(SHARE_ALL)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT | FILE_FLAG_BACKUP_SEMANTICS)
        .follow(FollowSymlinks::No);
    let file = dir.open_with(name.as_os_str(), &opts)?.into_std();
    fstat(&file)
}

/// The information of an open file.
pub(crate) fn fstat(file: &File) -> io::Result<Stat> {
    stat_handle(file.as_raw_handle() as HANDLE)
}

/// The information of the directory open as `dir`.
pub(crate) fn dir_stat(dir: &DirFd) -> io::Result<Stat> {
    stat_handle(dir.as_raw_handle() as HANDLE)
}

/// The names in the directory open as `dir`.
pub(crate) fn dir_names(dir: &DirFd) -> io::Result<Vec<OsString>> {
    dir.entries()?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect()
}

/// Renames within `dir`. With `noreplace` the target must not exist: a hard
/// link under the new name (which fails if it is taken), then the old name
/// removed — the same file under the same index, as a rename leaves it.
pub(crate) fn rename_at(dir: &DirFd, from: &Name, to: &Name, noreplace: bool) -> io::Result<()> {
    if noreplace {
        dir.hard_link(from.as_os_str(), dir, to.as_os_str())?;
        dir.remove_file(from.as_os_str())
    } else {
        dir.rename(from.as_os_str(), dir, to.as_os_str())
    }
}

pub(crate) fn unlink_at(dir: &DirFd, name: &Name) -> io::Result<()> {
    dir.remove_file(name.as_os_str())
}

/// Unix permission bits mean nothing here.
pub(crate) fn fchmod(_: &File, _: u32) -> io::Result<()> {
    Ok(())
}

/// A name for a file given by handle, for messages.
pub(crate) fn fd_path(file: &File) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("<handle {:?}>", file.as_raw_handle()))
}

/// 32 random hex digits for private file names: std's per-process random
/// keys, a counter and the clock (uniqueness, not secrecy, is what matters).
pub(crate) fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u64(n);
        h.write_u128(t);
        h.write_u32(std::process::id());
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}
