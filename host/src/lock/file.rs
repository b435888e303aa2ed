//! The lock file behind a handle: opening it, checking after a grant that
//! the path still names it, and what happens when it was replaced or the
//! file system has no kernel locks.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::books::Inner;
use super::{FileLock, Source};
use crate::backend::{self, Key, os};
use crate::manager::{self, Entry};
use crate::{Error, ErrorKind, Kind, Result, sys};

impl FileLock {
    /// The safety work after the lock is won, before it is booked: that the
    /// path still names the file locked (`Ok(false)`: someone unlinked or
    /// replaced it), and the file mode asked for. It runs right after the
    /// `flock`: outside any lock for a claim (which keeps everyone else
    /// out), under the entry's lock otherwise.
    pub(super) fn confirm(&self, entry: &Entry, parent: Option<&sys::DirFd>) -> Result<bool> {
        if let (Source::Path(target), Key::Os(dev, ino), Some(parent)) =
            (&self.source, entry.key(), parent)
            && self.options.recheck
            && let Some(file) = entry.backend().file()
        {
            let check = os::PathCheck {
                file,
                key: (*dev, *ino),
                parent,
                name: &target.cname,
            };
            let current = check
                .still_named(&self.verified)
                .map_err(|e| Error::from_io(e, self.path()))?;
            if !current {
                return Ok(false);
            }
        }
        if let Some(m) = self.options.file_mode {
            entry.backend().set_mode(m)?;
        }
        Ok(true)
    }

    /// The lock file was found replaced after the lock was given back: drop
    /// the entry so that the next attempt opens what the path names now.
    pub(super) fn forget_replaced(&self, inner: &mut Inner) -> Result<()> {
        // No guard may take the old file by the uncontended path after the
        // look below.
        self.fast.store(false, Ordering::Release);
        // A grant on the old file not completed yet will find it replaced
        // and try again, as this one does; a guard that holds it stays.
        if self.holds_any(inner, true) {
            // Another hold of this handle is on the old file and will be
            // released there.
            return Err(Error::new(ErrorKind::Io, self.path()).with_detail(
                "the lock file was replaced while another guard of this handle holds it",
            ));
        }
        inner.entry = None;
        self.verified.set(None);
        tracing::debug!(path = %self.path().display(), "lock file was replaced; retrying");
        Ok(())
    }

    /// Whether to switch to a soft lock after `e`: never while this handle
    /// holds the OS lock or is trying to (those holds would go on beside
    /// the soft lock). Asking closes the uncontended path first, so that no
    /// claim starts after the look.
    pub(super) fn fallback_applies(&self, e: &Error, inner: &Inner) -> bool {
        let wanted = self.options.fallback_to_soft
            && e.kind() == ErrorKind::Unsupported
            && matches!(self.source, Source::Path(_))
            && inner.kind == Kind::Os;
        if !wanted {
            return false;
        }
        self.fast.store(false, Ordering::Release);
        !self.holds_any(inner, false)
    }

    /// Switches this handle to a soft lock after `why`, or returns `why`
    /// if the empty lock file this handle made cannot be removed: it would
    /// read as a live holder's marker. (Windows refuses to delete a file
    /// that is open: another handle of this process on the same lock file
    /// keeps it.)
    pub(super) fn switch_to_soft(&self, inner: &mut Inner, why: Error) -> Result<()> {
        // Our handle on the lock file goes first: Windows does not delete a
        // lock file that is open.
        inner.entry = None;
        self.fast.store(false, Ordering::Release);
        self.verified.set(None);
        // Only ours goes; a file someone else made may be their marker.
        // `created` is kept until its file is gone: a failed switch is tried
        // again, and that try must still know the file is ours.
        if let (Some(key), Some(parent), Source::Path(target)) =
            (inner.created, inner.parent.clone(), &self.source)
            && sys::lstat_at(&parent, &target.cname).is_ok_and(|st| st.key() == key)
            && let Err(e) = sys::unlink_at(&parent, &target.cname)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(why.with_detail(format!(
                "kernel locks are unsupported here, and the empty lock file could not be \
                 removed to make way for a soft lock: {e}"
            )));
        }
        inner.created = None;
        tracing::warn!(path = %self.path().display(), error = %why, "kernel locks unsupported here; falling back to a soft lock");
        inner.kind = Kind::Soft;
        Ok(())
    }

    pub(super) fn replaced_error(&self) -> Error {
        Error::new(ErrorKind::Io, self.path())
            .with_detail("the lock file kept being replaced while locking")
    }

    /// The entry, opening (and creating) the lock file on first use.
    pub(crate) fn entry(&self) -> Result<Arc<Entry>> {
        let mut inner = self.inner();
        Ok(self.open_if_needed(&mut inner)?.clone())
    }

    pub(super) fn open_if_needed<'i>(&self, inner: &'i mut Inner) -> Result<&'i Arc<Entry>> {
        if inner.entry.is_none() {
            let opened = match &self.source {
                Source::File { file, display } => backend::open_file(file, display)?,
                #[cfg(feature = "etcd")]
                Source::Remote {
                    session,
                    name,
                    display,
                    service,
                } => backend::etcd::open(session, name, display, service),
                Source::Path(target) => {
                    let parent = target.open_parent()?;
                    inner.parent = Some(parent.clone());
                    let opened =
                        backend::open_path(target, parent, inner.kind, self.options.file_mode)?;
                    if opened.created.is_some() {
                        inner.created = opened.created;
                    }
                    opened
                }
            };
            let entry = manager::entry(opened.key, opened.make)?;
            // The uncontended path asks the backend on the caller's thread:
            // for kernel locks only (a remote backend is asked by its
            // waiting thread alone).
            let fast = inner.kind == Kind::Os && entry.key().is_file();
            // Windows deletes no open file: a handle that may fall back to
            // a soft lock keeps no lock file open beyond its entry, so that
            // the empty lock file can make way for the marker.
            if !(cfg!(windows) && self.options.fallback_to_soft) {
                self.remember_first(&entry, inner.parent.as_ref(), fast);
            }
            inner.entry = Some(entry);
        }
        Ok(inner.entry.as_ref().expect("set above"))
    }

    /// The entry if the lock file exists; never creates it.
    pub(super) fn existing_entry(&self) -> Result<Option<Arc<Entry>>> {
        if let Some(e) = &self.inner().entry {
            return Ok(Some(e.clone()));
        }
        if let Source::Path(target) = &self.source {
            let parent = match target.open_parent_existing() {
                Some(p) => p,
                None => return Ok(None),
            };
            match sys::lstat_at(&parent, &target.cname) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::from_io(e, self.path())),
                Ok(_) => {}
            }
        }
        self.entry().map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Mode;
    use crate::backend::os::INJECT_ERRNO;

    #[test]
    fn file_systems_without_locks_are_unsupported_or_fall_back_to_soft() {
        let dir = tempfile::tempdir().unwrap();
        for errno in sys::NO_LOCKS_ERRNOS {
            INJECT_ERRNO.with(|e| e.set(Some(errno)));
            let path = dir.path().join(format!("nolocks-{errno}.lock"));
            let strict = FileLock::new(&path).unwrap();
            let err = strict.try_lock().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unsupported, "errno {errno}");
            assert_eq!(err.path(), path.as_path());

            let soft_path = dir.path().join(format!("fallback-{errno}.lock"));
            let lenient = FileLock::builder(&soft_path)
                .fallback_to_soft(true)
                .build()
                .unwrap();
            let g = lenient.lock().unwrap();
            assert_eq!(lenient.kind(), Kind::Soft);
            let marker = std::fs::read_to_string(&soft_path).unwrap();
            assert!(
                marker.starts_with(&format!("{}\n", std::process::id())),
                "{marker:?}"
            );
            drop(g);
            assert!(!soft_path.exists(), "the soft marker is removed on release");
            INJECT_ERRNO.with(|e| e.set(None));
        }
    }

    #[test]
    fn a_handle_that_holds_never_falls_back_to_soft() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held.lock");
        let lock = FileLock::builder(&path)
            .fallback_to_soft(true)
            .build()
            .unwrap();
        let first = lock.lock_shared().unwrap();
        // A second reader looks at the writers' turnstile, and that look
        // fails as on a file system without locks.
        for errno in sys::NO_LOCKS_ERRNOS {
            INJECT_ERRNO.with(|e| e.set(Some(errno)));
            let err = lock.try_lock_shared().unwrap_err();
            INJECT_ERRNO.with(|e| e.set(None));
            assert_eq!(err.kind(), ErrorKind::Unsupported, "errno {errno}");
            assert_eq!(
                lock.kind(),
                Kind::Os,
                "errno {errno}: switched while holding"
            );
        }
        let other = std::fs::File::open(&path).unwrap();
        assert!(
            !sys::flock_try(&other, Mode::Exclusive).unwrap(),
            "the first guard's kernel lock was given up"
        );
        drop(first);
        assert!(sys::flock_try(&other, Mode::Exclusive).unwrap());
    }
}
