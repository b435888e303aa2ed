//! The engine behind a handle: one acquisition is a [`Request`] for an
//! owner, recorded in the handle's books and in the file's [`Entry`]. The
//! public methods, the guest resources and the semaphore all come here.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use super::{FileLock, Source};
use crate::backend::{self, Key, os, soft::unsupported_shared};
use crate::manager::{self, Attempt, Entry, HolderId, Pending};
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
    /// The hold is a guard's alone: a fresh owner that never asks again and
    /// is released through the entry the guard keeps. It is booked in the
    /// entry only, which keeps the handle's lock off the release path (see
    /// [`FileLock::release_in`]). Other owners (a re-entrant thread, a
    /// guest, a semaphore slot) are counted in the handle's books.
    pub(crate) solo: bool,
    /// Who cannot go on while the hold lasts (the thread of a guard that
    /// cannot move, a guest): what deadlock detection looks for.
    pub(crate) party: Option<Owner>,
    /// The party that would wait forever, if this request waits forever.
    pub(crate) blocks: Option<Owner>,
}

impl Request {
    /// A request of `owner`, counted in the handle's books.
    pub(crate) fn new(owner: Owner, mode: Mode) -> Request {
        Request {
            owner,
            mode,
            solo: false,
            party: None,
            blocks: None,
        }
    }

    /// A request for a guard of its own: a fresh owner, booked in the entry.
    pub(crate) fn solo(mode: Mode) -> Request {
        Request {
            solo: true,
            ..Request::new(Owner::unique(), mode)
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
    named: Named,
    holds: OwnerMap<Held>,
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

/// What checking that the path still names the lock file needs.
#[derive(Default)]
struct Named {
    /// The directory the path names the file in.
    parent: Option<Arc<OwnedFd>>,
    /// The lock file's change time when the path was last seen to name it.
    verified: Option<i128>,
}

impl Inner {
    pub(super) fn new(kind: Kind) -> Inner {
        Inner {
            kind,
            entry: None,
            named: Named::default(),
            holds: OwnerMap::default(),
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
        let inner = self.inner();
        let counted: u32 = inner
            .holds
            .values()
            .filter(|h| h.party == Some(party))
            .map(|h| h.count)
            .sum();
        let solo = inner.entry.as_ref().map_or(0, |entry| {
            entry.holds_where(|id| {
                id.handle == self.id
                    && id.party == Some(party)
                    && !inner.holds.contains_key(&id.owner)
            })
        });
        counted + u32::try_from(solo).unwrap_or(u32::MAX)
    }

    /// Whether this handle holds the lock, for any owner. Only a handle that
    /// holds nothing may give up its entry.
    fn holds_any(&self, inner: &Inner) -> bool {
        !inner.holds.is_empty()
            || inner
                .entry
                .as_ref()
                .is_some_and(|e| e.holds_where(|id| id.handle == self.id) > 0)
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
            if req.mode == Mode::Shared && inner.kind == Kind::Soft {
                return Err(unsupported_shared(self.path()));
            }
            if !req.solo
                && let Some(entry) = self.reenter(inner, req)?
            {
                return Ok(Begin::Held(entry));
            }
            self.open_if_needed(inner)?;
            let entry = inner.entry.as_ref().expect("opened above");
            tracing::debug!(path = %self.path().display(), mode = ?req.mode, "lock attempt");
            let named = &mut inner.named;
            match entry.try_acquire(id, req.mode, || self.confirm(entry, named)) {
                Ok(Attempt::Held) => {
                    self.book(&mut inner.holds, req, entry)?;
                    return Ok(Begin::Held(entry.clone()));
                }
                Ok(Attempt::Refused) => {
                    self.forget_replaced(inner)?;
                    continue;
                }
                Ok(Attempt::Busy) => {}
                Err(e) if self.fallback_applies(&e, inner) => {
                    self.switch_to_soft(inner, &e);
                    continue;
                }
                Err(e) => return Err(e),
            }
            let entry = entry.clone();
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

    /// The lock was granted after a wait: book it if `entry` is still this
    /// handle's and the path still names its file. `Ok(false)`: it was given
    /// back and the caller tries again.
    pub(crate) fn complete(&self, req: Request, entry: &Arc<Entry>) -> Result<bool> {
        let mut inner = self.inner();
        let id = self.holder_id(req.owner, req.party);
        if !inner.entry.as_ref().is_some_and(|e| Arc::ptr_eq(e, entry)) {
            // Another hold of this handle found the file replaced meanwhile.
            entry.release(id)?;
            return Ok(false);
        }
        match self.confirm(entry, &mut inner.named) {
            Ok(true) => {
                self.book(&mut inner.holds, req, entry)?;
                Ok(true)
            }
            Ok(false) => {
                entry.release(id)?;
                self.forget_replaced(&mut inner)?;
                Ok(false)
            }
            Err(e) => {
                entry.release(id)?;
                Err(e)
            }
        }
    }

    /// The safety work after the lock is won, before it is booked: that the
    /// path still names the file locked (`Ok(false)`: someone unlinked or
    /// replaced it), and the file mode asked for. On the fast path it runs
    /// under the entry's lock, right after the `flock`, so that the lock
    /// costs one release of a lock after the system calls rather than two.
    fn confirm(&self, entry: &Entry, named: &mut Named) -> Result<bool> {
        let Named { parent, verified } = named;
        if let (Source::Path(target), Key::Os(dev, ino), Some(parent)) =
            (&self.source, entry.key(), parent.as_deref())
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
                .still_named(verified)
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
    fn forget_replaced(&self, inner: &mut Inner) -> Result<()> {
        if self.holds_any(inner) {
            // Another hold of this handle is on the old file and will be
            // released there.
            return Err(Error::new(ErrorKind::Io, self.path()).with_detail(
                "the lock file was replaced while another guard of this handle holds it",
            ));
        }
        inner.entry = None;
        inner.named.verified = None;
        tracing::debug!(path = %self.path().display(), "lock file was replaced; retrying");
        Ok(())
    }

    /// Books a hold the entry has granted: a guard's own hold is booked in
    /// the entry only; a counted owner's in the handle too.
    fn book(&self, holds: &mut OwnerMap<Held>, req: Request, entry: &Arc<Entry>) -> Result<()> {
        tracing::debug!(path = %self.path().display(), mode = ?req.mode, "acquired");
        if req.solo {
            return Ok(());
        }
        let Some(held) = holds.get_mut(&req.owner) else {
            holds.insert(
                req.owner,
                Held {
                    mode: req.mode,
                    count: 1,
                    party: req.party,
                },
            );
            return Ok(());
        };
        // A second grant to an owner that holds already (a guest with two
        // waits queued on one handle): one hold in the entry is enough, the
        // count keeps the rest.
        entry.release(self.holder_id(req.owner, req.party))?;
        held.count = held
            .count
            .checked_add(1)
            .ok_or_else(|| Error::new(ErrorKind::QuotaExceeded, self.path()))?;
        Ok(())
    }

    /// Counts up if `req.owner` already holds this handle.
    fn reenter(&self, inner: &mut Inner, req: Request) -> Result<Option<Arc<Entry>>> {
        let Some(held) = inner.holds.get_mut(&req.owner) else {
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

    /// Releases `owner`'s hold in `entry`, the one it was granted in. A
    /// guard's own hold (see [`Request::solo`]) is released this way without
    /// the handle's lock: the entry's books are its only record, and the
    /// handle keeps that entry while it holds.
    pub(crate) fn release_in(
        &self,
        entry: &Arc<Entry>,
        owner: Owner,
        party: Option<Owner>,
    ) -> Result<()> {
        entry.release(self.holder_id(owner, party))?;
        tracing::debug!(path = %self.path().display(), "released");
        Ok(())
    }

    /// Releases one hold of a counted `owner`.
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
        self.release_in(entry, owner, held.party)
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

    /// Drops every hold through this handle (it is going away): the counted
    /// ones and those of guards that were forgotten.
    pub(super) fn release_all(&self) {
        let mut inner = self.inner();
        inner.holds.clear();
        if let Some(entry) = &inner.entry
            && let Err(e) = entry.release_handle(self.id)
        {
            tracing::warn!(path = %self.path().display(), error = %e, "releasing a dropped handle's holds failed");
        }
    }

    /// Whether to switch to a soft lock after `e`: never while this handle
    /// holds the OS lock (its holds would be lost with the entry).
    fn fallback_applies(&self, e: &Error, inner: &Inner) -> bool {
        self.options.fallback_to_soft
            && e.kind() == ErrorKind::Unsupported
            && matches!(self.source, Source::Path(_))
            && inner.kind == Kind::Os
            && !self.holds_any(inner)
    }

    fn switch_to_soft(&self, inner: &mut Inner, why: &Error) {
        tracing::warn!(path = %self.path().display(), error = %why, "kernel locks unsupported here; falling back to a soft lock");
        // The empty file we just created would read as a live marker; only
        // ours goes; a file someone else made may be their marker.
        if let (Some(key), Some(parent), Source::Path(target)) = (
            inner.created.take(),
            inner.named.parent.clone(),
            &self.source,
        ) && sys::lstat_at(parent.as_fd(), &target.cname).is_ok_and(|st| st.key() == key)
        {
            let _ = sys::unlink_at(parent.as_fd(), &target.cname);
        }
        inner.kind = Kind::Soft;
        inner.entry = None;
        inner.named.verified = None;
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
                    inner.named.parent = Some(parent.clone());
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
