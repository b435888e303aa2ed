//! Kernel advisory locks (`flock`) on a lock file that is never deleted.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::Backend;
use crate::sys::{self, KernelWait, Turnstile};
use crate::{Error, ErrorKind, Holder, Mode, Result};

pub(crate) struct OsBackend {
    file: File,
    path: PathBuf,
    turnstile: bool,
    /// The waiting thread's kernel wait, which `interrupt` calls off where
    /// the system can (Windows).
    waiting: KernelWait,
}

impl OsBackend {
    pub(crate) fn new(file: File, path: PathBuf) -> OsBackend {
        let turnstile = Turnstile::usable(&file);
        OsBackend {
            file,
            path,
            turnstile,
            waiting: KernelWait::new(),
        }
    }

    fn err(&self, e: std::io::Error) -> Error {
        Error::from_io(e, &self.path)
    }

    fn leave_turnstile(&self) -> std::io::Result<()> {
        #[cfg(test)]
        if INJECT_LEAVE_FAILURE.with(|e| e.get()) {
            return Err(std::io::Error::other("injected turnstile failure"));
        }
        Turnstile::leave(&self.file)
    }
}

#[cfg(test)]
thread_local! {
    /// Makes `try_acquire` and the look at the turnstile fail with this
    /// errno, as a file system without kernel locks would (there is no such
    /// file system to mount here).
    pub(crate) static INJECT_ERRNO: std::cell::Cell<Option<i32>> = const { std::cell::Cell::new(None) };
    /// Makes leaving the turnstile fail.
    static INJECT_LEAVE_FAILURE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
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

    fn acquire_blocking(&self, mode: Mode, wanted: &dyn Fn() -> bool) -> Result<bool> {
        // Where a kernel wait cannot be called off (Unix), a lock that
        // arrives for nobody is given straight back by the manager.
        self.waiting.reset();
        if !wanted() {
            return Ok(false);
        }
        if self.turnstile
            && !self
                .waiting
                .run(|| Turnstile::enter(&self.file, mode))
                .map_err(|e| self.err(e))?
        {
            return Ok(false);
        }
        let got = self.waiting.run(|| sys::flock_wait(&self.file, mode));
        if self.turnstile
            && let Err(e) = self.leave_turnstile()
        {
            // Nobody will record a lock reported as failed: give it back
            // rather than hold it until the process exits.
            if matches!(got, Ok(true)) {
                let _ = sys::flock_release(&self.file);
            }
            return Err(self.err(e));
        }
        got.map_err(|e| self.err(e))
    }

    fn interrupt(&self) {
        self.waiting.cancel();
    }

    fn release(&self, _mode: Mode) -> Result<()> {
        sys::flock_release(&self.file).map_err(|e| self.err(e))
    }

    fn admits_reader(&self) -> Result<bool> {
        #[cfg(test)]
        if let Some(errno) = INJECT_ERRNO.with(|e| e.get()) {
            return Err(self.err(std::io::Error::from_raw_os_error(errno)));
        }
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
        match sys::lock_held(&self.file) {
            Ok(Some(held)) => Ok(held),
            Ok(None) => Err(Error::new(ErrorKind::Unsupported, &self.path).with_detail(
                "asking whether an OS lock is held needs /proc/locks (Linux) or Windows",
            )),
            Err(e) => Err(self.err(e)),
        }
    }

    fn break_lock(&self, _force: bool) -> Result<()> {
        Err(Error::new(ErrorKind::Unsupported, &self.path).with_detail(
            "an OS lock is freed by the kernel when its holder exits; it cannot be broken",
        ))
    }
}

/// The check that a lock path still names the open lock file it locked.
pub(crate) struct PathCheck<'a> {
    pub(crate) file: &'a File,
    /// The locked file (device, inode).
    pub(crate) key: (u64, u64),
    pub(crate) parent: &'a sys::DirFd,
    pub(crate) name: &'a sys::Name,
}

impl PathCheck<'_> {
    /// Whether the path still names the file.
    ///
    /// A full check (`lstat` of the name) costs more than the lock itself, so
    /// it runs only when the file's change time moved since the last one
    /// (`verified`): an `fstat` of the open file shows an unlink or a rename
    /// over it (no links left) and any other rename (it changes the change
    /// time) at once. See [`trustworthy`] for the change times that cannot
    /// vouch for that.
    pub(crate) fn still_named(&self, verified: &Verified) -> std::io::Result<bool> {
        let st = sys::fstat(self.file)?;
        if st.nlink == 0 {
            return Ok(false);
        }
        if verified.get() == Some(st.ctime_ns) {
            return Ok(true);
        }
        let current = match sys::lstat_at(self.parent, self.name) {
            Ok(named) => named.key() == self.key,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        verified.set((current && trustworthy(st.ctime_ns)).then_some(st.ctime_ns));
        Ok(current)
    }
}

/// The lock file's change time when the path was last seen to name it.
///
/// An atomic, so that the uncontended path can read and keep it without the
/// handle's lock. Checks that race may store each other's findings in any
/// order: each says "at this change time the path named the file", which
/// stays true, and a later change moves the change time.
#[derive(Debug, Default)]
pub(crate) struct Verified(AtomicU64);

impl Verified {
    /// Nothing verified (0 is no trustworthy change time: it has no fraction).
    const NONE: u64 = 0;

    pub(crate) fn get(&self) -> Option<i128> {
        match self.0.load(Ordering::Relaxed) {
            Self::NONE => None,
            ns => Some(i128::from(ns)),
        }
    }

    pub(crate) fn set(&self, ctime_ns: Option<i128>) {
        let ns = ctime_ns.and_then(|ns| u64::try_from(ns).ok());
        self.0.store(ns.unwrap_or(Self::NONE), Ordering::Relaxed);
    }
}

/// How old a change time must be before it is trusted to move on the next
/// change: far more than the timestamp granularity of a file system with
/// fine timestamps (a clock tick).
const SETTLED: Duration = Duration::from_millis(100);

/// Whether a change time (nanoseconds since the epoch) will surely differ
/// after the file's next change, so that an unchanged one vouches for the
/// path. A change within the same clock tick would leave it as it is: it
/// must be older than [`SETTLED`]. And file systems that keep whole seconds
/// (ext4 with small inodes, FAT, many FUSE and NFS servers) betray it with a
/// zero fraction: their files are checked in full every time.
fn trustworthy(ctime_ns: i128) -> bool {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    ctime_ns % 1_000_000_000 != 0 && now - ctime_ns > SETTLED.as_nanos() as i128
}

// Linux and Windows have a turnstile.
#[cfg(all(test, any(target_os = "linux", windows)))]
mod tests {
    use super::*;

    #[test]
    fn a_failed_turnstile_exit_does_not_keep_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.lock");
        let open = || open_rw(&path);
        let backend = OsBackend::new(open(), path.clone());
        assert!(backend.turnstile, "the test needs a turnstile");
        INJECT_LEAVE_FAILURE.with(|e| e.set(true));
        let err = backend.acquire_blocking(Mode::Exclusive, &|| true);
        INJECT_LEAVE_FAILURE.with(|e| e.set(false));
        assert!(err.is_err(), "the injected failure is reported");
        // The failure was reported, so no one recorded the lock: another
        // open file must be able to take it.
        let other = open();
        assert!(
            sys::flock_try(&other, Mode::Exclusive).unwrap(),
            "the flock stayed held after a reported failure"
        );
    }

    #[cfg(windows)]
    #[test]
    #[ignore = "wine 8 does not cancel a blocked LockFileEx; run on Windows with --ignored"]
    fn an_interrupted_kernel_wait_ends_while_the_holder_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.lock");
        let open = || open_rw(&path);
        let holder = open();
        assert!(sys::flock_try(&holder, Mode::Exclusive).unwrap());
        let waiter = std::sync::Arc::new(OsBackend::new(open(), path.clone()));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn({
            let waiter = waiter.clone();
            move || {
                tx.send(
                    waiter
                        .acquire_blocking(Mode::Exclusive, &|| true)
                        .map_err(drop),
                )
            }
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "it waits"
        );
        waiter.interrupt();
        let ended = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the wait was not called off");
        assert_eq!(ended, Ok(false));
        // Called off, not granted: the holder still holds, and the waiter
        // left the turnstile open for readers.
        assert!(!sys::flock_try(&open(), Mode::Exclusive).unwrap());
        assert!(Turnstile::is_open(&open()).unwrap());
    }

    fn open_rw(path: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap()
    }
}
