//! Waking on changes in a directory (`ReadDirectoryChangesW`), for
//! soft-lock waiters.

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    ERROR_NOTIFY_ENUM_DIR, HANDLE, INVALID_HANDLE_VALUE, WAIT_OBJECT_0,
};
use windows_sys::Win32::Storage::FileSystem::{
    FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_OVERLAPPED, FILE_LIST_DIRECTORY,
    FILE_NOTIFY_CHANGE_FILE_NAME, FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE, ReOpenFile,
    ReadDirectoryChangesW,
};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};
use windows_sys::Win32::System::Threading::{CreateEventW, ResetEvent, WaitForSingleObject};

use super::DirFd;

/// Wakes when an entry of one directory is created, removed or renamed.
/// Where the directory cannot be watched (some network redirectors), only
/// the timeout of [`DirWatch::wait`] wakes the waiter: the polling
/// fallback.
pub(crate) struct DirWatch {
    /// `None` once the directory cannot be (or can no longer be) watched.
    watch: Option<Watch>,
}

/// A read of changes kept pending on the directory: the system gathers the
/// changes between two reads, so none is missed while a waiter looks.
struct Watch {
    dir: OwnedHandle,
    event: OwnedHandle,
    /// Where the pending read writes: boxed, so it stays put while the
    /// read is pending, until `Drop` has cancelled it.
    io: Box<Pending>,
    /// Whether a read was started and has not been seen to end: only then
    /// may `Drop` wait for it (a wait for a read never started would last
    /// forever).
    pending: bool,
}

/// What a wait on the pending read saw.
enum Seen {
    /// Nothing changed within the wait.
    Quiet,
    /// Something changed; the next read is pending.
    Changed,
    /// The read failed or could not be started again (the directory went,
    /// say): the watch is of no more use.
    Broken,
}

struct Pending {
    overlapped: OVERLAPPED,
    /// The changes themselves are not read, only that there were some.
    buf: [u32; 256],
}

// SAFETY: the handles and the buffer belong to the watch alone; the system
// writes the buffer only while a read is pending, and `Drop` waits for the
// cancelled read before the buffer goes.
unsafe impl Send for Watch {}

impl DirWatch {
    pub(crate) fn new(dir: &DirFd) -> DirWatch {
        DirWatch {
            watch: Watch::open(dir).ok(),
        }
    }

    /// Forgets the changes seen so far: a wait after this wakes only for
    /// what happens from now on.
    pub(crate) fn clear(&mut self) {
        // Changes gathered since the last read come in batches; a bound,
        // should the directory never stop changing. (No watch: nothing to
        // forget, and `look` says so at once.)
        for _ in 0..64 {
            if !matches!(self.look(0), Seen::Changed) {
                break;
            }
        }
    }

    /// Waits for a change or for `timeout`, whichever comes first.
    pub(crate) fn wait(&mut self, timeout: Duration) {
        if self.watch.is_none() {
            return std::thread::sleep(timeout);
        }
        self.look(timeout.as_millis().min(u128::from(u32::MAX - 1)) as u32);
    }

    /// One wait of the watch, which goes once it is broken: back to the
    /// timer, as a broken read would otherwise end every wait at once, a
    /// busy loop.
    fn look(&mut self, ms: u32) -> Seen {
        let seen = self.watch.as_mut().map_or(Seen::Broken, |w| w.wait(ms));
        if let Seen::Broken = seen {
            self.watch = None;
        }
        seen
    }
}

impl Watch {
    fn open(dir: &DirFd) -> io::Result<Watch> {
        // A handle of our own on the same directory (not a path: the
        // directory may have moved), for overlapped reads.
        // SAFETY: reopens a valid handle; the result is owned at once.
        let h = unsafe {
            ReOpenFile(
                dir.as_raw_handle() as HANDLE,
                FILE_LIST_DIRECTORY,
                FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OVERLAPPED,
            )
        };
        if h == INVALID_HANDLE_VALUE || h.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh handle nothing else owns.
        let dir = unsafe { OwnedHandle::from_raw_handle(h as _) };
        // A manual-reset event, not signalled.
        // SAFETY: no name and no security attributes.
        let event = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        if event.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        let event = unsafe { OwnedHandle::from_raw_handle(event as _) };
        let mut io = Box::new(Pending {
            // SAFETY: plain old data; all-zero is a valid value.
            overlapped: unsafe { std::mem::zeroed() },
            buf: [0; 256],
        });
        io.overlapped.hEvent = event.as_raw_handle() as HANDLE;
        let mut watch = Watch {
            dir,
            event,
            io,
            pending: false,
        };
        watch.read()?;
        Ok(watch)
    }

    /// Starts the next pending read.
    fn read(&mut self) -> io::Result<()> {
        let io = &mut *self.io;
        // SAFETY: a directory handle opened for overlapped listing, a
        // buffer and an OVERLAPPED that outlive the read (see `Pending`).
        let ok = unsafe {
            ReadDirectoryChangesW(
                self.dir.as_raw_handle() as HANDLE,
                io.buf.as_mut_ptr().cast(),
                std::mem::size_of_val(&io.buf) as u32,
                0,
                FILE_NOTIFY_CHANGE_FILE_NAME,
                std::ptr::null_mut(),
                &mut io.overlapped,
                None,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        self.pending = true;
        Ok(())
    }

    /// Waits up to `ms` for the pending read to complete; if it did, starts
    /// the next one (the changes only say "look again").
    fn wait(&mut self, ms: u32) -> Seen {
        if !self.pending {
            return Seen::Broken;
        }
        let event = self.event.as_raw_handle() as HANDLE;
        // SAFETY: a valid event handle.
        if unsafe { WaitForSingleObject(event, ms) } != WAIT_OBJECT_0 {
            return Seen::Quiet;
        }
        let mut n = 0;
        // SAFETY: the read `self.io` describes, which the event says is
        // done: the system no longer writes `io`. The event is reset before
        // the next read starts, which sets it again when it completes.
        let failed = unsafe {
            let ok = GetOverlappedResult(
                self.dir.as_raw_handle() as HANDLE,
                &self.io.overlapped,
                &mut n,
                0,
            );
            let failed = (ok == 0).then(io::Error::last_os_error);
            ResetEvent(event);
            failed
        };
        self.pending = false;
        // A read whose changes overflowed its buffer succeeds with no
        // bytes, or (SMB, wine) fails with ERROR_NOTIFY_ENUM_DIR: still a
        // change. Any other failure (the directory deleted) would fail
        // again at once, every time.
        let broken = failed.is_some_and(|e| e.raw_os_error() != Some(ERROR_NOTIFY_ENUM_DIR as i32));
        if broken || self.read().is_err() {
            return Seen::Broken;
        }
        Seen::Changed
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.pending {
            return;
        }
        let dir = self.dir.as_raw_handle() as HANDLE;
        let mut n = 0;
        // SAFETY: cancels our own pending read, then waits for it to end,
        // so the system is done with `io` before it is freed.
        unsafe {
            CancelIoEx(dir, &self.io.overlapped);
            GetOverlappedResult(dir, &self.io.overlapped, &mut n, 1);
        }
    }
}
