//! Waking on changes in a directory (inotify), for soft-lock waiters.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::DirFd;
use std::time::Duration;

/// Wakes when an entry of one directory is removed or renamed away. Where
/// inotify is missing, or changes come from another machine (NFS), only the
/// timeout of [`DirWatch::wait`] wakes the waiter: the polling fallback.
pub(crate) struct DirWatch {
    fd: Option<OwnedFd>,
}

impl DirWatch {
    pub(crate) fn new(dir: &DirFd) -> DirWatch {
        DirWatch {
            fd: Self::open(dir).ok(),
        }
    }

    #[cfg(target_os = "linux")]
    fn open(dir: &DirFd) -> io::Result<OwnedFd> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscalls; the fd is owned immediately.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: inotify_init1 returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // inotify wants a path; the directory's /proc/self/fd entry names
        // exactly the directory we hold, wherever it lives now.
        let path = std::ffi::CString::new(
            super::at::proc_fd_path(dir)
                .into_os_string()
                .into_encoded_bytes(),
        )
        .expect("no NUL in a formatted path");
        let mask = libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_DELETE_SELF | libc::IN_ATTRIB;
        // SAFETY: valid inotify fd and NUL-terminated path.
        let rc = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }

    #[cfg(not(target_os = "linux"))]
    fn open(_: &DirFd) -> io::Result<OwnedFd> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// Forgets the changes seen so far: a wait after this wakes only for
    /// what happens from now on.
    pub(crate) fn clear(&mut self) {
        if let Some(fd) = &self.fd {
            Self::drain(fd);
        }
    }

    /// Waits for a change or for `timeout`, whichever comes first.
    pub(crate) fn wait(&mut self, timeout: Duration) {
        let Some(fd) = &self.fd else {
            std::thread::sleep(timeout);
            return;
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc > 0 {
            // The events only say "look again".
            Self::drain(fd);
        }
    }

    fn drain(fd: &OwnedFd) {
        let mut buf = [0u8; 4096];
        // SAFETY: reads at most buf.len() bytes into buf from a valid
        // non-blocking fd.
        while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}
