//! Soft locks: a marker file that exists while the lock is held.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::Backend;
use super::marker::{self, Content, Marker};
use crate::sys::{self, Create, DirWatch, Stat};
use crate::{Error, ErrorKind, Holder, Mode, Result};

/// py-filelock's grace before a malformed marker may be replaced: long enough
/// that a peer between create and write is never mistaken for garbage.
const MALFORMED_GRACE: Duration = Duration::from_secs(2);

/// How often a waiter looks again when no file-system event arrives: the
/// fallback for network file systems, and how a dead holder is noticed.
const POLL_FALLBACK: Duration = Duration::from_millis(100);

pub(crate) struct SoftBackend {
    dir: Arc<OwnedFd>,
    name: CString,
    path: PathBuf,
    mode: u32,
    /// The marker we created, while we hold it. Keeping it open pins its
    /// inode number: no successor's marker can carry it while we check.
    mine: Mutex<Option<(File, (u64, u64))>>,
    /// A malformed marker first seen at this instant, identified by inode and times.
    malformed: Mutex<Option<(Stat, Instant)>>,
}

impl SoftBackend {
    pub(crate) fn new(
        dir: Arc<OwnedFd>,
        name: CString,
        path: PathBuf,
        mode: Option<u32>,
    ) -> SoftBackend {
        SoftBackend {
            dir,
            name,
            path,
            // Like py-filelock: nobody but the owner's group may rewrite a marker.
            mode: mode.unwrap_or(0o664),
            mine: Mutex::new(None),
            malformed: Mutex::new(None),
        }
    }

    fn err(&self, e: io::Error) -> Error {
        Error::from_io(e, &self.path)
    }

    fn create(&self) -> Result<bool> {
        let dir = self.dir.as_fd();
        let mut file = match sys::open_at(dir, &self.name, Create::New, self.mode) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Ok(false),
            Err(e) => return Err(self.err(e)),
        };
        let written = sys::fstat(&file).and_then(|st| {
            file.write_all(&Marker::ours().to_bytes())?;
            Ok(st)
        });
        match written {
            Ok(st) => {
                *self.mine.lock().unwrap() = Some((file, st.key()));
                Ok(true)
            }
            Err(e) => {
                // A half-written marker of ours must not block everyone.
                if let Ok(st) = sys::fstat(&file) {
                    self.unlink_if(st.key());
                }
                Err(self.err(e))
            }
        }
    }

    /// Removes the marker if the name still points at inode `key`.
    fn unlink_if(&self, key: (u64, u64)) -> bool {
        let dir = self.dir.as_fd();
        match sys::lstat_at(dir, &self.name) {
            Ok(st) if st.key() == key => sys::unlink_at(dir, &self.name).is_ok(),
            _ => false,
        }
    }

    /// Reads the marker; `None` when it vanished meanwhile. The open file
    /// comes back too: holding it pins the inode number being judged.
    fn read(&self) -> Result<Option<(Stat, Content, File)>> {
        let dir = self.dir.as_fd();
        let st = match sys::lstat_at(dir, &self.name) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        if !st.is_file {
            return Err(Error::new(ErrorKind::InvalidPath, &self.path)
                .with_detail("exists and is not a regular file"));
        }
        let mut file = match sys::open_at(dir, &self.name, Create::ReadOnly, 0) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        let opened = sys::fstat(&file).map_err(|e| self.err(e))?;
        if opened.key() != st.key() {
            // Replaced between the two looks; the caller simply looks again.
            return Ok(None);
        }
        let mut buf = Vec::with_capacity(128);
        Read::by_ref(&mut file)
            .take(4096)
            .read_to_end(&mut buf)
            .map_err(|e| self.err(e))?;
        Ok(Some((opened, marker::parse(&buf), file)))
    }

    /// Breaks the marker if its holder is provably gone. `Ok(true)`: the path
    /// is free now (or was already), try again.
    fn break_if_stale(&self) -> Result<bool> {
        let Some((st, content, _pin)) = self.read()? else {
            return Ok(true);
        };
        let stale = match &content {
            Content::Holder(m) => m.is_stale(),
            Content::Empty | Content::Sentinel => false,
            Content::Malformed => self.malformed_for_long(st),
        };
        if stale {
            self.take_over(st, &content)
        } else {
            Ok(false)
        }
    }

    fn malformed_for_long(&self, st: Stat) -> bool {
        let mut seen = self.malformed.lock().unwrap();
        match *seen {
            Some((old, since)) if old == st => since.elapsed() >= MALFORMED_GRACE,
            _ => {
                *seen = Some((st, Instant::now()));
                false
            }
        }
    }

    /// Moves the judged marker to a private name, then checks that what moved
    /// is the inode that was judged; a live marker that slipped in is put back.
    fn take_over(&self, judged: Stat, content: &Content) -> Result<bool> {
        let dir = self.dir.as_fd();
        // The same pattern as py-filelock, so its recovery of stranded markers
        // also recognises ours.
        let aside = format!(
            "{}.break.{}.{}",
            self.name.to_string_lossy(),
            sys::pid(),
            sys::random_hex()
        );
        let aside = CString::new(aside).expect("no NUL");
        match sys::rename_at(dir, &self.name, &aside, true) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(self.err(e)),
        }
        let moved = sys::lstat_at(dir, &aside).map_err(|e| self.err(e))?;
        if moved.key() == judged.key() && moved.mtime_ns == judged.mtime_ns {
            let _ = sys::unlink_at(dir, &aside);
            tracing::debug!(path = %self.path.display(), marker = ?content, "broke stale soft lock");
            return Ok(true);
        }
        if let Err(e) = sys::rename_at(dir, &aside, &self.name, true) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not put back a live marker moved while breaking a stale one");
        }
        Ok(false)
    }

    fn wait_once(&self) -> Result<bool> {
        if self.create()? {
            return Ok(true);
        }
        if self.break_if_stale()? {
            return self.create();
        }
        Ok(false)
    }
}

impl Backend for SoftBackend {
    fn try_acquire(&self, mode: Mode) -> Result<bool> {
        if mode == Mode::Shared {
            return Err(unsupported_shared(&self.path));
        }
        self.wait_once()
    }

    fn acquire_blocking(&self, mode: Mode, wanted: &dyn Fn() -> bool) -> Result<bool> {
        // Watch first, then try: a release between the two is not missed.
        let watch = DirWatch::new(self.dir.as_fd());
        // Checking `wanted` first: a marker taken for nobody would block
        // others until the manager noticed and gave it back.
        while wanted() {
            if self.try_acquire(mode)? {
                return Ok(true);
            }
            watch.wait(POLL_FALLBACK);
        }
        Ok(false)
    }

    fn attempts_while_blocking(&self) -> bool {
        // Exclusive creation arbitrates between any number of attempts.
        true
    }

    fn release(&self, _mode: Mode) -> Result<()> {
        let Some((_pin, key)) = self.mine.lock().unwrap().take() else {
            return Ok(());
        };
        if self.unlink_if(key) {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::Lost, &self.path)
                .with_detail("the marker was removed or replaced by someone else while held"))
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn holder(&self) -> Result<Option<Holder>> {
        Ok(match self.read()? {
            Some((st, Content::Holder(m), _)) => Some(Holder::new(
                Some(m.pid),
                Some(m.host),
                Some(system_time(st.mtime_ns)),
            )),
            Some((st, _, _)) => Some(Holder::new(None, None, Some(system_time(st.mtime_ns)))),
            None => None,
        })
    }

    /// Whether a marker exists whose holder is not provably gone.
    fn is_locked(&self) -> Result<bool> {
        Ok(match self.read()? {
            Some((_, Content::Holder(m), _)) => !m.is_stale(),
            Some(_) => true,
            None => false,
        })
    }

    /// Breaks the marker. Without `force`, only a marker whose holder is
    /// provably gone (or a malformed one) is broken.
    fn break_lock(&self, force: bool) -> Result<()> {
        let Some((st, content, _pin)) = self.read()? else {
            return Err(
                Error::new(ErrorKind::NotHeld, &self.path).with_detail("no marker to break")
            );
        };
        if !force
            && let Content::Holder(m) = &content
            && !m.is_stale()
        {
            return Err(
                Error::new(ErrorKind::NotOwner, &self.path).with_detail(format!(
                    "held by live process {} on {}; pass force to break it anyway",
                    m.pid, m.host
                )),
            );
        }
        if self.take_over(st, &content)? {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::WouldBlock, &self.path)
                .with_detail("the marker changed while breaking it; look again"))
        }
    }
}

pub(crate) fn unsupported_shared(path: &Path) -> Error {
    Error::new(ErrorKind::Unsupported, path).with_detail("soft locks are exclusive only")
}

fn system_time(ns: i128) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs().min(u64::MAX as u128) as u64);
    if ns >= 0 {
        SystemTime::UNIX_EPOCH + d
    } else {
        SystemTime::UNIX_EPOCH - d
    }
}
