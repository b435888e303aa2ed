//! The engine behind a handle: one acquisition is a [`Request`] for an
//! owner, recorded in the handle's books and in the file's [`Entry`]. The
//! public methods, the guest resources and the semaphore all come here.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use super::{FileLock, Source};
use crate::backend::{self, Key, os, soft::unsupported_shared};
use crate::manager::{self, Entry, HolderId, Pending};
use crate::owner::OwnerMap;
use crate::{Error, ErrorKind, Holder, Kind, Mode, Owner, Result, Wait, sys};

/// How often a lock file may be found unlinked or replaced right after it was
/// won before we give up (it takes a hostile peer to get there).
const MAX_REPLACED: usize = 64;

static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

/// A fresh id for a handle (a lock, or a semaphore and its slots): one
/// counter, so no two can ever share one.
pub(crate) fn next_handle_id() -> u64 {
    NEXT_HANDLE.fetch_add(1, Ordering::Relaxed)
}

/// One acquisition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request {
    /// Whose hold it is. Asking again as an owner that holds counts up.
    pub(crate) owner: Owner,
    pub(crate) mode: Mode,
    /// Who cannot go on while the hold lasts (the thread of a guard that
    /// cannot move, a guest): what deadlock detection looks for.
    pub(crate) party: Option<Owner>,
    /// The party that would wait forever, if this request waits forever.
    pub(crate) blocks: Option<Owner>,
}

impl Request {
    pub(crate) fn new(owner: Owner, mode: Mode) -> Request {
        Request {
            owner,
            mode,
            party: None,
            blocks: None,
        }
    }

    /// The hold will belong to `party` for deadlock detection.
    pub(crate) fn held_by(mut self, party: Owner) -> Request {
        self.party = Some(party);
        self
    }

    /// `party` waits for this request; checked when `wait` is forever.
    pub(crate) fn blocking(mut self, party: Owner, wait: Wait) -> Request {
        self.blocks = (wait == Wait::Forever).then_some(party);
        self
    }
}

/// A handle's state.
pub(super) struct Inner {
    pub(super) kind: Kind,
    entry: Option<Arc<Entry>>,
    parent: Option<Arc<OwnedFd>>,
    holds: OwnerMap<Held>,
    /// The lock file's change time when the path was last seen to name it.
    verified: Option<i128>,
    /// The lock file this handle created (device, inode), while it may still
    /// be an unused placeholder.
    created: Option<(u64, u64)>,
}

/// One owner's hold through this handle.
#[derive(Debug, Clone, Copy)]
struct Held {
    mode: Mode,
    count: u32,
    party: Option<Owner>,
}

impl Inner {
    pub(super) fn new(kind: Kind) -> Inner {
        Inner {
            kind,
            entry: None,
            parent: None,
            holds: OwnerMap::default(),
            verified: None,
            created: None,
        }
    }
}

/// What `begin` found.
enum Begin {
    Held(Arc<Entry>),
    Wait(Arc<Entry>),
}

impl FileLock {
    pub(super) fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    #[cfg_attr(not(feature = "wasmtime"), allow(dead_code))]
    pub(crate) fn hold_count_of(&self, owner: Owner) -> u32 {
        self.inner().holds.get(&owner).map_or(0, |h| h.count)
    }

    pub(super) fn hold_count_of_party(&self, party: Owner) -> u32 {
        self.inner()
            .holds
            .values()
            .filter(|h| h.party == Some(party))
            .map(|h| h.count)
            .sum()
    }

    fn holder_id(&self, owner: Owner, party: Option<Owner>) -> HolderId {
        HolderId {
            handle: self.id,
            owner,
            party,
        }
    }

    /// Acquires, blocking the thread while waiting. Returns the entry held.
    pub(crate) fn acquire(&self, req: Request, wait: Wait) -> Result<Arc<Entry>> {
        let (wait, deadline) = fix_deadline(wait);
        loop {
            let entry = match self.begin(req, wait)? {
                Begin::Held(entry) => return Ok(entry),
                Begin::Wait(entry) => entry,
            };
            let id = self.holder_id(req.owner, req.party);
            let pending = match deadline {
                None => Pending::start_forever(entry.clone(), req.mode, id),
                Some(_) => Pending::start(vec![entry.clone()], req.mode, id),
            };
            let settled = pending.wait(deadline);
            if self.finish(req, &entry, settled.map(drop))? {
                return Ok(entry);
            }
        }
    }

    /// Acquires without blocking a thread.
    pub(crate) async fn acquire_async(&self, req: Request, wait: Wait) -> Result<Arc<Entry>> {
        let (wait, deadline) = fix_deadline(wait);
        loop {
            let entry = match self.begin(req, wait)? {
                Begin::Held(entry) => return Ok(entry),
                Begin::Wait(entry) => entry,
            };
            let id = self.holder_id(req.owner, req.party);
            let settled = Pending::start(vec![entry.clone()], req.mode, id)
                .into_future(deadline)
                .await;
            if self.finish(req, &entry, settled.map(drop))? {
                return Ok(entry);
            }
        }
    }

    /// [`acquire`](Self::acquire), calling `on_wait` once if the wait lasts
    /// longer than `after`. Deadlock detection follows `req`, not the parts
    /// the wait is cut into.
    pub(super) fn acquire_reporting(
        &self,
        req: Request,
        wait: Wait,
        after: Duration,
        on_wait: impl FnOnce(Option<Holder>),
    ) -> Result<Arc<Entry>> {
        let (first, rest) = split_wait(wait, after);
        match self.acquire(req, first) {
            Err(e) if rest.is_some() && e.kind() == ErrorKind::Timeout => {
                on_wait(self.holder().ok().flatten());
                self.acquire(req, rest.expect("checked"))
            }
            other => other,
        }
    }

    /// Async [`acquire_reporting`](Self::acquire_reporting).
    #[cfg_attr(not(feature = "wasmtime"), allow(dead_code))]
    pub(crate) async fn acquire_reporting_async(
        &self,
        req: Request,
        wait: Wait,
        after: Duration,
        on_wait: impl FnOnce(Option<Holder>),
    ) -> Result<Arc<Entry>> {
        let (first, rest) = split_wait(wait, after);
        match self.acquire_async(req, first).await {
            Err(e) if rest.is_some() && e.kind() == ErrorKind::Timeout => {
                on_wait(self.holder().ok().flatten());
                self.acquire_async(req, rest.expect("checked")).await
            }
            other => other,
        }
    }

    /// Re-entry, or one attempt; says whether waiting is needed.
    ///
    /// This is the uncontended fast path: the handle's state stays locked
    /// from re-entry check to recorded hold, so an acquisition costs one
    /// handle lock, one entry lock, the `flock` and one `fstat`.
    fn begin(&self, req: Request, wait: Wait) -> Result<Begin> {
        let id = self.holder_id(req.owner, req.party);
        for _ in 0..MAX_REPLACED {
            let mut guard = self.inner();
            let inner = &mut *guard;
            if let Some(entry) = self.reenter(inner, req)? {
                return Ok(Begin::Held(entry));
            }
            let entry = self.open_if_needed(inner)?.clone();
            tracing::debug!(path = %self.path().display(), mode = ?req.mode, "lock attempt");
            match entry.try_acquire(id, req.mode) {
                Ok(true) => {
                    if self.record(inner, req)? {
                        return Ok(Begin::Held(entry));
                    }
                    continue;
                }
                Ok(false) => {}
                Err(e) if self.fallback_applies(&e, inner) => {
                    drop(guard);
                    self.switch_to_soft(&e);
                    continue;
                }
                Err(e) => return Err(e),
            }
            drop(guard);
            if wait == Wait::TryOnce {
                return Err(self.held_error(ErrorKind::WouldBlock, &entry));
            }
            // The request cannot be granted now; if this party holds the
            // file in a way that excludes the request, it would wait for
            // itself. (A shared request behind its own shared hold may wait
            // for a queued writer that gives up: not provable, not refused.)
            if req
                .blocks
                .is_some_and(|party| entry.held_against(party, req.mode))
            {
                return Err(Error::new(ErrorKind::Deadlock, self.path()).with_detail(
                    "the waiting thread (or guest) already holds this lock; \
                     waiting forever would never end",
                ));
            }
            tracing::debug!(path = %self.path().display(), mode = ?req.mode, "waiting");
            return Ok(Begin::Wait(entry));
        }
        Err(self.replaced_error())
    }

    /// After a wait: `Ok(true)` held, `Ok(false)` try again.
    fn finish(
        &self,
        req: Request,
        entry: &Arc<Entry>,
        settled: std::result::Result<(), Option<Error>>,
    ) -> Result<bool> {
        match settled {
            Ok(()) => self.complete(req, entry),
            Err(Some(e)) => Err(e),
            Err(None) => Err(self.held_error(ErrorKind::Timeout, entry)),
        }
    }

    /// The lock was granted after a wait: record it if `entry` is still this
    /// handle's (it is dropped if the lock file was found replaced).
    pub(crate) fn complete(&self, req: Request, entry: &Arc<Entry>) -> Result<bool> {
        let mut inner = self.inner();
        if !inner.entry.as_ref().is_some_and(|e| Arc::ptr_eq(e, entry)) {
            // Another hold of this handle found the file replaced meanwhile.
            entry.release(self.holder_id(req.owner, req.party))?;
            return Ok(false);
        }
        self.record(&mut inner, req)
    }

    /// The entry's lock was just won for `req`: check that the path still
    /// names it, then record the hold. `Ok(false)`: the lock file was
    /// replaced; the entry is given up and the caller tries again.
    fn record(&self, inner: &mut Inner, req: Request) -> Result<bool> {
        let id = self.holder_id(req.owner, req.party);
        let Some(entry) = inner.entry.as_ref() else {
            return Ok(false);
        };
        let current = match (&self.source, entry.key(), inner.parent.as_deref()) {
            (Source::Path(target), Key::Os(dev, ino), Some(parent)) if self.options.recheck => {
                match entry.backend().file() {
                    Some(file) => {
                        let named = os::PathCheck {
                            file,
                            key: (*dev, *ino),
                            parent,
                            name: &target.cname,
                        };
                        named
                            .still_named(&mut inner.verified)
                            .map_err(|e| Error::from_io(e, self.path()))
                    }
                    None => Ok(true),
                }
            }
            _ => Ok(true),
        };
        let current = match current {
            Ok(current) => current,
            Err(e) => {
                entry.release(id)?;
                return Err(e);
            }
        };
        if !current {
            // Someone unlinked or replaced the lock file: the inode we hold
            // is no longer what the path names.
            entry.release(id)?;
            if !inner.holds.is_empty() {
                // Another hold of this handle is on the old file and will
                // be released there.
                return Err(Error::new(ErrorKind::Io, self.path()).with_detail(
                    "the lock file was replaced while another guard of this handle holds it",
                ));
            }
            inner.entry = None;
            inner.verified = None;
            tracing::debug!(path = %self.path().display(), "lock file was replaced; retrying");
            return Ok(false);
        }
        if let Some(m) = self.options.file_mode
            && let Err(e) = entry.backend().set_mode(m)
        {
            entry.release(id)?;
            return Err(e);
        }
        if let Some(held) = inner.holds.get_mut(&req.owner) {
            // A second grant to an owner that holds already (a guest with two
            // waits queued on one handle): one hold in the entry is enough,
            // the count keeps the rest.
            held.count = held
                .count
                .checked_add(1)
                .ok_or_else(|| Error::new(ErrorKind::QuotaExceeded, self.path()))?;
            entry.release(id)?;
            return Ok(true);
        }
        inner.holds.insert(
            req.owner,
            Held {
                mode: req.mode,
                count: 1,
                party: req.party,
            },
        );
        tracing::debug!(path = %self.path().display(), mode = ?req.mode, "acquired");
        Ok(true)
    }

    /// Counts up if `req.owner` already holds this handle.
    fn reenter(&self, inner: &mut Inner, req: Request) -> Result<Option<Arc<Entry>>> {
        let Some(held) = inner.holds.get_mut(&req.owner) else {
            if req.mode == Mode::Shared && inner.kind == Kind::Soft {
                return Err(unsupported_shared(self.path()));
            }
            return Ok(None);
        };
        if !held.mode.covers(req.mode) {
            return Err(Error::new(ErrorKind::Deadlock, self.path()).with_detail(
                "upgrading a shared hold to exclusive is not supported (two readers \
                 upgrading would wait for each other); release the shared hold first",
            ));
        }
        held.count = held
            .count
            .checked_add(1)
            .ok_or_else(|| Error::new(ErrorKind::QuotaExceeded, self.path()))?;
        Ok(inner.entry.clone())
    }

    /// Releases one hold of `owner`.
    pub(crate) fn release(&self, owner: Owner) -> Result<()> {
        let mut inner = self.inner();
        let empty = inner.holds.is_empty();
        let std::collections::hash_map::Entry::Occupied(mut hold) = inner.holds.entry(owner) else {
            let kind = if empty {
                ErrorKind::NotHeld
            } else {
                ErrorKind::NotOwner
            };
            return Err(Error::new(kind, self.path()));
        };
        hold.get_mut().count -= 1;
        if hold.get().count > 0 {
            return Ok(());
        }
        let held = hold.remove();
        self.release_entry(&inner, owner, held)
    }

    fn release_entry(&self, inner: &Inner, owner: Owner, held: Held) -> Result<()> {
        let entry = inner
            .entry
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::NotHeld, self.path()))?;
        entry.release(self.holder_id(owner, held.party))?;
        tracing::debug!(path = %self.path().display(), "released");
        Ok(())
    }

    /// Drops every hold of `owner`; returns how many there were.
    #[cfg_attr(not(feature = "wasmtime"), allow(dead_code))]
    pub(crate) fn force_release(&self, owner: Owner) -> Result<u32> {
        let mut inner = self.inner();
        let Some(held) = inner.holds.remove(&owner) else {
            return Ok(0);
        };
        self.release_entry(&inner, owner, held)?;
        Ok(held.count)
    }

    /// Drops every hold through this handle (it is going away).
    pub(super) fn release_all(&self) {
        let mut inner = self.inner();
        let holds: Vec<(Owner, Held)> = inner.holds.drain().collect();
        for (owner, held) in holds {
            let _ = self.release_entry(&inner, owner, held);
        }
    }

    /// Whether to switch to a soft lock after `e`: never while this handle
    /// holds the OS lock (its holds would be lost with the entry).
    fn fallback_applies(&self, e: &Error, inner: &Inner) -> bool {
        self.options.fallback_to_soft
            && e.kind() == ErrorKind::Unsupported
            && matches!(self.source, Source::Path(_))
            && inner.kind == Kind::Os
            && inner.holds.is_empty()
    }

    fn switch_to_soft(&self, why: &Error) {
        tracing::warn!(path = %self.path().display(), error = %why, "kernel locks unsupported here; falling back to a soft lock");
        let mut inner = self.inner();
        // The empty file we just created would read as a live marker; only
        // ours goes; a file someone else made may be their marker.
        if let (Some(key), Some(parent), Source::Path(target)) =
            (inner.created.take(), inner.parent.clone(), &self.source)
            && sys::lstat_at(parent.as_fd(), &target.cname).is_ok_and(|st| st.key() == key)
        {
            let _ = sys::unlink_at(parent.as_fd(), &target.cname);
        }
        inner.kind = Kind::Soft;
        inner.entry = None;
        inner.verified = None;
    }

    fn held_error(&self, kind: ErrorKind, entry: &Entry) -> Error {
        let err = Error::new(kind, self.path());
        match entry.backend().holder() {
            Ok(Some(Holder { pid: Some(pid), .. })) => {
                err.with_detail(format!("held by pid {pid}"))
            }
            _ => err,
        }
    }

    fn replaced_error(&self) -> Error {
        Error::new(ErrorKind::Io, self.path())
            .with_detail("the lock file kept being replaced while locking")
    }

    /// The entry, opening (and creating) the lock file on first use.
    pub(crate) fn entry(&self) -> Result<Arc<Entry>> {
        let mut inner = self.inner();
        Ok(self.open_if_needed(&mut inner)?.clone())
    }

    fn open_if_needed<'i>(&self, inner: &'i mut Inner) -> Result<&'i Arc<Entry>> {
        if inner.entry.is_none() {
            let opened = match &self.source {
                Source::File { file, display } => backend::open_file(file, display)?,
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
            inner.entry = Some(manager::entry(opened.key, opened.make)?);
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
            match sys::lstat_at(parent.as_fd(), &target.cname) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::from_io(e, self.path())),
                Ok(_) => {}
            }
        }
        self.entry().map(Some)
    }
}

/// Splits a wait into a first part of at most `after` and what is left of it
/// (`None` if nothing is: the first part is the whole wait).
fn split_wait(wait: Wait, after: Duration) -> (Wait, Option<Wait>) {
    let soon = Instant::now() + after;
    match wait.deadline() {
        _ if wait == Wait::TryOnce => (wait, None),
        None => (Wait::Deadline(soon), Some(Wait::Forever)),
        Some(at) if at > soon => (Wait::Deadline(soon), Some(Wait::Deadline(at))),
        Some(at) => (Wait::Deadline(at), None),
    }
}

fn fix_deadline(wait: Wait) -> (Wait, Option<Instant>) {
    let deadline = wait.deadline();
    let fixed = match (wait, deadline) {
        (Wait::Timeout(_), Some(at)) => Wait::Deadline(at),
        (Wait::Timeout(_), None) => Wait::Forever,
        _ => wait,
    };
    (fixed, deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn a_wait_cut_for_reporting_still_detects_a_deadlock() {
        let dir = tempfile::tempdir().unwrap();
        let lock = FileLock::new(dir.path().join("r.lock")).unwrap();
        let _held = lock.lock().unwrap();
        let reported = std::cell::Cell::new(false);
        let err = lock
            .lock_reporting(
                Mode::Exclusive,
                Wait::Forever,
                Duration::from_millis(10),
                |_| reported.set(true),
            )
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Deadlock);
        assert!(!reported.get(), "found at once, not after the first part");
    }
}
