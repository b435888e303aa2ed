//! Locks on single bytes past fs4's range: fs4 locks every byte of a file
//! but the very last (offset 2^64-1), so that byte is the writers'
//! turnstile (and, on a soft-lock marker, the breakers' turn), and the one
//! before it, which every hold covers, answers whether the lock is held.

use std::fs::File;
use std::io;
use std::os::windows::io::AsRawHandle;

use windows_sys::Win32::Foundation::{ERROR_LOCK_VIOLATION, HANDLE};
use windows_sys::Win32::Storage::FileSystem::{
    LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY, LockFileEx, UnlockFileEx,
};
use windows_sys::Win32::System::IO::OVERLAPPED;

use crate::Mode;

/// The byte fs4 leaves free.
const TURNSTILE: u64 = u64::MAX;
/// The last byte every fs4 hold covers.
const LAST_HELD: u64 = u64::MAX - 1;

fn at(offset: u64) -> OVERLAPPED {
    // SAFETY: plain old data; all-zero is a valid value.
    let mut o: OVERLAPPED = unsafe { std::mem::zeroed() };
    o.Anonymous.Anonymous.Offset = offset as u32;
    o.Anonymous.Anonymous.OffsetHigh = (offset >> 32) as u32;
    o
}

fn handle(file: &File) -> HANDLE {
    file.as_raw_handle() as HANDLE
}

/// Locks the byte at `offset` through `file`; `wait` blocks until it is
/// granted. `Ok(false)`: without `wait`, someone holds it.
fn lock(file: &File, offset: u64, mode: Mode, wait: bool) -> io::Result<bool> {
    let mut flags = match mode {
        Mode::Exclusive => LOCKFILE_EXCLUSIVE_LOCK,
        Mode::Shared => 0,
    };
    if !wait {
        flags |= LOCKFILE_FAIL_IMMEDIATELY;
    }
    let mut o = at(offset);
    // SAFETY: a valid handle and an OVERLAPPED naming one byte; the handle
    // is synchronous, so the call returns only when it is done.
    if unsafe { LockFileEx(handle(file), flags, 0, 1, 0, &mut o) } != 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(code) if !wait && code == ERROR_LOCK_VIOLATION as i32 => Ok(false),
        _ => Err(err),
    }
}

fn unlock(file: &File, offset: u64) -> io::Result<()> {
    let mut o = at(offset);
    // SAFETY: a valid handle and the byte a `lock` through it took.
    if unsafe { UnlockFileEx(handle(file), 0, 1, 0, &mut o) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `mode` could be had on the byte at `offset` right now: taken
/// and given back at once.
fn free_for(file: &File, offset: u64, mode: Mode) -> io::Result<bool> {
    if !lock(file, offset, mode, false)? {
        return Ok(false);
    }
    unlock(file, offset)?;
    Ok(true)
}

/// Whether anyone holds a lock on `file`: an exclusive probe of the last
/// byte every holder's range covers. A holder is not disturbed; another
/// process's `try` in the same microseconds may be refused, and a wait
/// waits those microseconds longer. A hold through `file` itself counts
/// too.
pub(crate) fn lock_held(file: &File) -> io::Result<Option<bool>> {
    free_for(file, LAST_HELD, Mode::Exclusive).map(|free| Some(!free))
}

/// Takes a soft-lock marker's turn (see `SoftBackend::take_over`) unless
/// someone has it. Not fs4's whole-file lock: `LockFileEx` locks are
/// mandatory, and that one would fail every read of the marker by others
/// while a turn lasts. `Ok(false)`: someone has it.
pub(crate) fn marker_turn_try(file: &File) -> io::Result<bool> {
    lock(file, TURNSTILE, Mode::Exclusive, false)
}

/// Gives back a turn [`marker_turn_try`] took.
pub(crate) fn marker_turn_release(file: &File) -> io::Result<()> {
    unlock(file, TURNSTILE)
}

/// The turnstile keeps a stream of readers from starving a writer across
/// processes: a writer that has to wait holds it (exclusive) while it waits
/// for the lock, and readers pass through it (shared) before taking theirs.
/// A `LockFileEx` lock on the byte fs4 never covers, owned like the lock
/// itself (by the open file).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Turnstile;

impl Turnstile {
    /// Whether no writer of another process waits at the turnstile: one
    /// look (a shared lock taken and given back), not a pass.
    pub(crate) fn is_open(file: &File) -> io::Result<bool> {
        free_for(file, TURNSTILE, Mode::Shared)
    }

    pub(crate) fn enter(file: &File, mode: Mode) -> io::Result<()> {
        lock(file, TURNSTILE, mode, true).map(drop)
    }

    pub(crate) fn leave(file: &File) -> io::Result<()> {
        unlock(file, TURNSTILE)
    }

    /// Every file can have one: `LockFileEx` needs only read or write
    /// access, and fs4's locks are `LockFileEx` locks too, also on network
    /// shares.
    pub(crate) fn usable(_: &File) -> bool {
        true
    }
}
