//! File operations on one name inside a directory we hold open. cap-std
//! opens the name relative to the directory's handle; the name is a single
//! path component, so nothing here can leave the directory.

use std::ffi::{OsString, c_void};
use std::fs::File;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::AsRawHandle;

use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{OpenOptions, OpenOptionsExt};
use windows_sys::Wdk::Storage::FileSystem::{
    FILE_MODE_INFORMATION, FILE_RENAME_INFORMATION, FILE_SYNCHRONOUS_IO_ALERT,
    FILE_SYNCHRONOUS_IO_NONALERT, FileModeInformation, FileRenameInformation,
    NtQueryInformationFile, NtSetInformationFile,
};
use windows_sys::Win32::Foundation::{
    ERROR_INVALID_PARAMETER, ERROR_NOT_SUPPORTED, GENERIC_READ, GENERIC_WRITE, HANDLE,
    RtlNtStatusToDosError,
};
use windows_sys::Win32::Storage::FileSystem::{
    BY_HANDLE_FILE_INFORMATION, DELETE, FILE_ATTRIBUTE_DEVICE, FILE_ATTRIBUTE_DIRECTORY,
    FILE_ATTRIBUTE_REPARSE_POINT, FILE_BASIC_INFO, FILE_DISPOSITION_FLAG_DELETE,
    FILE_DISPOSITION_FLAG_IGNORE_READONLY_ATTRIBUTE, FILE_DISPOSITION_FLAG_POSIX_SEMANTICS,
    FILE_DISPOSITION_INFO, FILE_DISPOSITION_INFO_EX, FILE_FLAG_BACKUP_SEMANTICS,
    FILE_FLAG_OPEN_REPARSE_POINT, FILE_READ_ATTRIBUTES, FILE_SHARE_DELETE, FILE_SHARE_READ,
    FILE_SHARE_WRITE, FileBasicInfo, FileDispositionInfo, FileDispositionInfoEx,
    GetFileInformationByHandle, GetFileInformationByHandleEx, SetFileInformationByHandle,
};
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

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

/// Windows has no unnamed files: the file is made under a private name
/// beside `name`, `{private}{pid}.{32 hex}` (`private` is the start of the
/// names breakers use for markers they move aside, which the sweep for
/// stranded files knows, and leaves room for the rest), to be written and
/// then renamed to `name` by [`link_at`]. A process killed before that
/// leaves only the private name, never a half-written `name`.
/// `AlreadyExists` if `name` is taken already: a waiter that tries again
/// and again makes no private files meanwhile, so one killed while waiting
/// most likely leaves none (and the sweep takes any it does).
pub(crate) fn open_unnamed_at(
    dir: &DirFd,
    name: &Name,
    private: &str,
    _mode: u32,
) -> io::Result<File> {
    match lstat_at(dir, name) {
        Ok(_) => return Err(io::ErrorKind::AlreadyExists.into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let private = Name(OsString::from(format!(
        "{private}{}.{}",
        std::process::id(),
        random_hex()
    )));
    let mut opts = OpenOptions::new();
    opts.read(true)
        .write(true)
        .create_new(true)
        .access_mode(GENERIC_READ | GENERIC_WRITE | DELETE)
        .share_mode(SHARE_ALL)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .follow(FollowSymlinks::No);
    Ok(dir.open_with(private.as_os_str(), &opts)?.into_std())
}

/// Deletes a file from [`open_unnamed_at`] that will not be named after
/// all (writing it failed): nobody else knows its private name.
pub(crate) fn discard_unnamed(file: &File) {
    let _ = set_delete(file);
}

/// Gives a file from [`open_unnamed_at`] the name `name` in `dir`: a rename
/// of the open file relative to `dir`'s handle that never replaces anything
/// (`AlreadyExists` if the name is taken; the file is deleted then). Through
/// `NtSetInformationFile`: the Win32 wrapper takes the name for a path of
/// the current directory.
pub(crate) fn link_at(file: &File, dir: &DirFd, name: &Name) -> io::Result<()> {
    let wide: Vec<u16> = name.as_os_str().encode_wide().collect();
    let header = std::mem::offset_of!(FILE_RENAME_INFORMATION, FileName);
    let bytes = header + (wide.len() + 1) * 2;
    // u64 units: the structure holds a handle, so it is 8-aligned.
    let mut buf = vec![0u64; bytes.div_ceil(8)];
    let info = buf.as_mut_ptr().cast::<FILE_RENAME_INFORMATION>();
    // SAFETY: `buf` is zeroed, 8-aligned and `bytes` long: the header and
    // the name with a NUL after it fit.
    unsafe {
        (*info).Anonymous.ReplaceIfExists = false;
        (*info).RootDirectory = dir.as_raw_handle() as HANDLE;
        (*info).FileNameLength = (wide.len() * 2) as u32;
        std::ptr::copy_nonoverlapping(
            wide.as_ptr(),
            std::ptr::addr_of_mut!((*info).FileName).cast::<u16>(),
            wide.len(),
        );
    }
    // SAFETY: plain old data; all-zero is a valid value.
    let mut status: IO_STATUS_BLOCK = unsafe { std::mem::zeroed() };
    // SAFETY: a handle opened with DELETE access, a status block and the
    // structure above.
    let rc = unsafe {
        NtSetInformationFile(
            file.as_raw_handle() as HANDLE,
            &mut status,
            info.cast::<c_void>(),
            bytes as u32,
            FileRenameInformation,
        )
    };
    if rc >= 0 {
        return Ok(());
    }
    let err = nt_error(rc);
    // Nobody else knows the private name: it goes with our handle.
    let _ = set_delete(file);
    // A file system that cannot rename by handle (some network
    // redirectors): markers are created, then written.
    match err.raw_os_error().map(|e| e as u32) {
        Some(ERROR_INVALID_PARAMETER | ERROR_NOT_SUPPORTED) => {
            Err(io::Error::new(io::ErrorKind::Unsupported, err))
        }
        _ => Err(err),
    }
}

/// A failed `Nt*` call's status as the Win32 error it stands for.
fn nt_error(status: i32) -> io::Error {
    // SAFETY: maps a status code; no memory is involved.
    io::Error::from_raw_os_error(unsafe { RtlNtStatusToDosError(status) } as i32)
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

/// Whether `file` was opened for synchronous I/O, as `std` opens files.
/// One opened for overlapped I/O cannot be locked by us: `LockFileEx` on it
/// returns before the lock is granted, and the system would write to the
/// call's `OVERLAPPED` after it has gone.
pub(crate) fn is_synchronous(file: &File) -> io::Result<bool> {
    let mut info = FILE_MODE_INFORMATION::default();
    // SAFETY: plain old data; all-zero is a valid value.
    let mut status: IO_STATUS_BLOCK = unsafe { std::mem::zeroed() };
    // SAFETY: a valid handle, a status block and a structure of the size
    // given.
    let rc = unsafe {
        NtQueryInformationFile(
            file.as_raw_handle() as HANDLE,
            &mut status,
            (&mut info as *mut FILE_MODE_INFORMATION).cast::<c_void>(),
            std::mem::size_of::<FILE_MODE_INFORMATION>() as u32,
            FileModeInformation,
        )
    };
    if rc < 0 {
        return Err(nt_error(rc));
    }
    Ok(info.Mode & (FILE_SYNCHRONOUS_IO_ALERT | FILE_SYNCHRONOUS_IO_NONALERT) != 0)
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
        unlink_at(dir, from)
    } else {
        dir.rename(from.as_os_str(), dir, to.as_os_str())
    }
}

/// Removes `name` from `dir` (a link itself, not what it points to), by a
/// handle opened relative to `dir`. With POSIX semantics, where the file
/// system has them (NTFS since Windows 10 1709), the name goes at once even
/// while others have the file open; elsewhere it stays, pending deletion,
/// until they close it, and creating a file under it is refused meanwhile.
pub(crate) fn unlink_at(dir: &DirFd, name: &Name) -> io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.access_mode(DELETE)
        .share_mode(SHARE_ALL)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT | FILE_FLAG_BACKUP_SEMANTICS)
        .follow(FollowSymlinks::No);
    let file = dir.open_with(name.as_os_str(), &opts)?.into_std();
    set_delete(&file)
}

/// Deletes the file open as `file` (opened with DELETE access): at once
/// with POSIX semantics, else once every handle on it is closed.
fn set_delete(file: &File) -> io::Result<()> {
    let h = file.as_raw_handle() as HANDLE;
    let posix = FILE_DISPOSITION_INFO_EX {
        Flags: FILE_DISPOSITION_FLAG_DELETE
            | FILE_DISPOSITION_FLAG_POSIX_SEMANTICS
            | FILE_DISPOSITION_FLAG_IGNORE_READONLY_ATTRIBUTE,
    };
    // SAFETY: a handle opened with DELETE access and a structure of the
    // size given.
    let done = unsafe {
        SetFileInformationByHandle(
            h,
            FileDispositionInfoEx,
            (&posix as *const FILE_DISPOSITION_INFO_EX).cast::<c_void>(),
            std::mem::size_of::<FILE_DISPOSITION_INFO_EX>() as u32,
        )
    };
    if done != 0 {
        return Ok(());
    }
    let legacy = FILE_DISPOSITION_INFO { DeleteFile: true };
    // SAFETY: as above.
    let done = unsafe {
        SetFileInformationByHandle(
            h,
            FileDispositionInfo,
            (&legacy as *const FILE_DISPOSITION_INFO).cast::<c_void>(),
            std::mem::size_of::<FILE_DISPOSITION_INFO>() as u32,
        )
    };
    if done == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
