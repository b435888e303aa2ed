//! A blocking kernel wait another thread can call off
//! (`CancelSynchronousIo`), so that a waiter nobody wants any more does not
//! stay blocked until the holder lets go.

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use windows_sys::Win32::Foundation::{
    DUPLICATE_SAME_ACCESS, DuplicateHandle, ERROR_NOT_FOUND, ERROR_OPERATION_ABORTED, HANDLE,
};
use windows_sys::Win32::System::IO::CancelSynchronousIo;
use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetCurrentThread};

/// The thread in a wait, if one is, and whether the wait was called off.
#[derive(Default)]
pub(crate) struct KernelWait {
    thread: Mutex<Option<OwnedHandle>>,
    cancelled: AtomicBool,
}

impl KernelWait {
    pub(crate) fn new() -> KernelWait {
        KernelWait::default()
    }

    /// Runs `wait`, a blocking call on this thread, so that
    /// [`cancel`](Self::cancel) can end it: `Ok(true)` when it finished,
    /// `Ok(false)` when it was called off.
    pub(crate) fn run(&self, wait: impl FnOnce() -> io::Result<()>) -> io::Result<bool> {
        let Ok(me) = current_thread() else {
            // Not cancellable, but the wait itself still works.
            return wait().map(|()| true);
        };
        *self.thread.lock().unwrap() = Some(me);
        // A cancel before this point finds the flag; one after it finds the
        // thread in the wait (see `cancel` for the moment between).
        let result = if self.cancelled.load(Ordering::SeqCst) {
            Ok(false)
        } else {
            match wait() {
                Ok(()) => Ok(true),
                Err(e) if e.raw_os_error() == Some(ERROR_OPERATION_ABORTED as i32) => Ok(false),
                Err(e) => Err(e),
            }
        };
        *self.thread.lock().unwrap() = None;
        result
    }

    /// Calls off the wait under way and any started before [`reset`].
    ///
    /// [`reset`]: Self::reset
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        // Held throughout: the waiter takes it to leave `run`, so it cannot
        // have gone on to other I/O of its own, which a cancel would end.
        let thread = self.thread.lock().unwrap();
        let Some(thread) = thread.as_ref() else {
            return;
        };
        // The thread may be between its look at the flag and the kernel:
        // try again while it has not entered the wait, a few microseconds.
        // (A wait that ended by itself meanwhile is not found either.)
        for _ in 0..100 {
            // SAFETY: a thread handle we own.
            if unsafe { CancelSynchronousIo(thread.as_raw_handle() as HANDLE) } != 0 {
                return;
            }
            if io::Error::last_os_error().raw_os_error() != Some(ERROR_NOT_FOUND as i32) {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// Forgets an earlier [`cancel`](Self::cancel), before a new wait.
    pub(crate) fn reset(&self) {
        self.cancelled.store(false, Ordering::SeqCst);
    }
}

/// A real handle on this thread (`GetCurrentThread` gives a pseudo-handle
/// that means "the calling thread" wherever it is used).
fn current_thread() -> io::Result<OwnedHandle> {
    let mut h: HANDLE = std::ptr::null_mut();
    // SAFETY: duplicates this thread's pseudo-handle into a real one, owned
    // at once.
    let ok = unsafe {
        DuplicateHandle(
            GetCurrentProcess(),
            GetCurrentThread(),
            GetCurrentProcess(),
            &mut h,
            0,
            0,
            DUPLICATE_SAME_ACCESS,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle nothing else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(h as _) })
}
