//! Kernel advisory locks (`flock`) on a lock file that is never deleted.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::Backend;
use crate::sys::{self, Turnstile};
use crate::{Error, ErrorKind, Holder, Mode, Result};

pub(crate) struct OsBackend {
    file: File,
    path: PathBuf,
    turnstile: bool,
}

impl OsBackend {
    pub(crate) fn new(file: File, path: PathBuf) -> OsBackend {
        let turnstile = Turnstile::usable(&file);
        OsBackend {
            file,
            path,
            turnstile,
        }
    }

    fn err(&self, e: std::io::Error) -> Error {
        Error::from_io(e, &self.path)
    }
}

#[cfg(test)]
thread_local! {
    /// Makes `try_acquire` fail with this errno, as a file system without
    /// kernel locks would (there is no such file system to mount here).
    pub(crate) static INJECT_ERRNO: std::cell::Cell<Option<i32>> = const { std::cell::Cell::new(None) };
}

impl Backend for OsBackend {
    fn try_acquire(&self, mode: Mode) -> Result<bool> {
        #[cfg(test)]
        if let Some(errno) = INJECT_ERRNO.with(|e| e.get()) {
            return Err(self.err(std::io::Error::from_raw_os_error(errno)));
        }
        // Writers skip the turnstile when the lock is free; only a writer
        // that has to wait closes it, so readers are never held up needlessly.
        if mode == Mode::Shared && !self.admits_reader()? {
            return Ok(false);
        }
        sys::flock_try(&self.file, mode).map_err(|e| self.err(e))
    }

    fn acquire_blocking(&self, mode: Mode, _wanted: &dyn Fn() -> bool) -> Result<bool> {
        // A kernel wait cannot be called off; if nobody wants the lock once it
        // arrives, the manager gives it straight back.
        if self.turnstile {
            Turnstile::enter(&self.file, mode).map_err(|e| self.err(e))?;
        }
        let got = sys::flock_wait(&self.file, mode);
        if self.turnstile {
            Turnstile::leave(&self.file).map_err(|e| self.err(e))?;
        }
        got.map_err(|e| self.err(e))?;
        Ok(true)
    }

    fn release(&self, _mode: Mode) -> Result<()> {
        sys::flock_release(&self.file).map_err(|e| self.err(e))
    }

    fn admits_reader(&self) -> Result<bool> {
        if !self.turnstile {
            return Ok(true);
        }
        Turnstile::is_open(&self.file).map_err(|e| self.err(e))
    }

    fn set_mode(&self, mode: u32) -> Result<()> {
        sys::fchmod(&self.file, mode).map_err(|e| self.err(e))
    }

    fn file(&self) -> Option<&File> {
        Some(&self.file)
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn holder(&self) -> Result<Option<Holder>> {
        let st = sys::fstat(&self.file).map_err(|e| self.err(e))?;
        let pids = sys::flock_holders(st.dev, st.ino);
        Ok(pids
            .first()
            .map(|&pid| Holder::new(Some(pid), Some(sys::host_name().to_owned()), None)))
    }

    fn is_locked(&self) -> Result<bool> {
        if cfg!(target_os = "linux") {
            let st = sys::fstat(&self.file).map_err(|e| self.err(e))?;
            return Ok(!sys::flock_holders(st.dev, st.ino).is_empty());
        }
        Err(Error::new(ErrorKind::Unsupported, &self.path)
            .with_detail("asking whether an OS lock is held needs /proc/locks (Linux)"))
    }

    fn break_lock(&self, _force: bool) -> Result<()> {
        Err(Error::new(ErrorKind::Unsupported, &self.path).with_detail(
            "an OS lock is freed by the kernel when its holder exits; it cannot be broken",
        ))
    }
}
