//! The engine behind a handle: one acquisition is a [`Request`] for an
//! owner, booked in the file's [`Entry`] (and, for counted owners, in the
//! handle's books). The public methods, the guest resources and the
//! semaphore all come here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::FileLock;
use super::fast::Granted;
use crate::backend::soft::unsupported_shared;
use crate::manager::{Attempt, Entry, Pending};
use crate::{Error, ErrorKind, Holder, Kind, Mode, Owner, Result, Wait};

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
        Request::solo_of(Owner::unique(), mode)
    }

    /// [`solo`](Self::solo) for a fresh `owner` the caller made.
    pub(crate) fn solo_of(owner: Owner, mode: Mode) -> Request {
        Request {
            solo: true,
            ..Request::new(owner, mode)
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

/// What `begin` found.
enum Begin {
    Held(Granted),
    Wait(Arc<Entry>),
    /// A remote backend's try-once request: one attempt by the waiting
    /// thread decides ([`Pending::start_once`]).
    AskOnce(Arc<Entry>),
}

impl FileLock {
    /// Acquires, blocking the thread while waiting. Says where it was granted.
    pub(crate) fn acquire(&self, req: Request, wait: Wait) -> Result<Granted> {
        if self.try_fast(req) {
            return Ok(Granted::First);
        }
        let (wait, deadline) = fix_deadline(wait);
        loop {
            let id = self.holder_id(req.owner, req.party);
            let pending = match self.begin(req, wait)? {
                Begin::Held(entry) => return Ok(entry),
                Begin::AskOnce(entry) => {
                    let once = Pending::start_once(entry, req.mode, id);
                    let entry = once.entry().clone();
                    // One attempt decides; the backend's calls are bounded.
                    let settled = once.wait(None);
                    if self.finish(req, &entry, settled.map(drop))? {
                        return Ok(Granted::In(entry));
                    }
                    continue;
                }
                Begin::Wait(entry) if deadline.is_none() => {
                    Pending::start_forever(entry, req.mode, id, req.blocks)
                }
                Begin::Wait(entry) => Pending::start_stuck(entry, req.mode, id, req.blocks),
            };
            let entry = pending.entry().clone();
            let settled = pending.wait(deadline);
            if self.finish(req, &entry, settled.map(drop))? {
                return Ok(Granted::In(entry));
            }
        }
    }

    /// Acquires without blocking a thread.
    pub(crate) async fn acquire_async(&self, req: Request, wait: Wait) -> Result<Granted> {
        if self.try_fast(req) {
            return Ok(Granted::First);
        }
        self.acquire_queued_async(req, wait).await
    }

    /// [`acquire_async`](Self::acquire_async) without its uncontended
    /// attempt, for callers that made it already (or need not).
    pub(crate) async fn acquire_queued_async(&self, req: Request, wait: Wait) -> Result<Granted> {
        let (wait, deadline) = fix_deadline(wait);
        loop {
            let id = self.holder_id(req.owner, req.party);
            let pending = match self.begin(req, wait)? {
                Begin::Held(entry) => return Ok(entry),
                Begin::AskOnce(entry) => Pending::start_once(entry, req.mode, id),
                Begin::Wait(entry) => Pending::start_stuck(entry, req.mode, id, req.blocks),
            };
            let entry = pending.entry().clone();
            let deadline = deadline.filter(|_| wait != Wait::TryOnce);
            let settled = pending.into_future(deadline).await;
            if self.finish(req, &entry, settled.map(drop))? {
                return Ok(Granted::In(entry));
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
    ) -> Result<Granted> {
        let (first, rest) = split_wait(wait, after);
        match self.acquire(req, first) {
            Err(e) if rest.is_some() && e.kind() == ErrorKind::Timeout => {
                on_wait(self.holder().ok().flatten());
                self.acquire(req, rest.expect("checked"))
            }
            other => other,
        }
    }

    /// Async [`acquire_reporting`](Self::acquire_reporting), after an
    /// uncontended attempt failed (its first part is queued at once).
    #[cfg_attr(not(feature = "wasmtime"), allow(dead_code))]
    pub(crate) async fn acquire_reporting_async(
        &self,
        req: Request,
        wait: Wait,
        after: Duration,
        on_wait: impl FnOnce(Option<Holder>),
    ) -> Result<Granted> {
        let (first, rest) = split_wait(wait, after);
        match self.acquire_queued_async(req, first).await {
            Err(e) if rest.is_some() && e.kind() == ErrorKind::Timeout => {
                // Not from a remote backend: that would be a call across
                // the network on the caller's executor.
                let local = self.existing_entry().ok().flatten();
                let holder = match local {
                    Some(entry) if !entry.backend().remote() => self.holder().ok().flatten(),
                    _ => None,
                };
                on_wait(holder);
                self.acquire_async(req, rest.expect("checked")).await
            }
            other => other,
        }
    }

    /// Re-entry, or one attempt; says whether waiting is needed.
    ///
    /// The full path, under the handle's lock from re-entry check to booked
    /// hold: what the uncontended path in `fast.rs` leaves to it (counted
    /// owners, a busy lock, a replaced file, errors, the first open).
    fn begin(&self, req: Request, wait: Wait) -> Result<Begin> {
        let id = self.holder_id(req.owner, req.party);
        for _ in 0..MAX_REPLACED {
            let mut guard = self.inner();
            let inner = &mut *guard;
            if !req.solo
                && let Some(entry) = self.reenter(inner, req)?
            {
                return Ok(Begin::Held(Granted::In(entry)));
            }
            if req.mode == Mode::Shared && inner.kind == Kind::Soft {
                return Err(unsupported_shared(self.path()));
            }
            #[cfg(feature = "etcd")]
            if req.mode == Mode::Shared && self.is_remote() {
                return Err(Error::new(ErrorKind::Unsupported, self.path())
                    .with_detail("etcd locks are exclusive only"));
            }
            self.open_if_needed(inner)?;
            let entry = inner.entry.as_ref().expect("opened above");
            tracing::debug!(path = %self.path().display(), mode = ?req.mode, "lock attempt");
            let parent = inner.parent.as_deref();
            match entry.try_acquire(id, req.mode, || self.confirm(entry, parent)) {
                Ok(Attempt::Held) => {
                    self.book(&mut inner.holds, req, entry)?;
                    return Ok(Begin::Held(Granted::In(entry.clone())));
                }
                Ok(Attempt::Refused) => {
                    self.forget_replaced(inner)?;
                    continue;
                }
                Ok(Attempt::Busy) => {}
                Ok(Attempt::Untried) if wait == Wait::TryOnce => {
                    return Ok(Begin::AskOnce(entry.clone()));
                }
                Ok(Attempt::Untried) => return Ok(Begin::Wait(entry.clone())),
                Err(e) if self.fallback_applies(&e, inner) => {
                    self.switch_to_soft(inner, e)?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let entry = entry.clone();
            drop(guard);
            if wait == Wait::TryOnce {
                return Err(self.held_error(ErrorKind::WouldBlock, &entry));
            }
            // A party that would wait for its own hold is refused when the
            // waiter is queued (`Waiter::stuck`), under the entry's lock.
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
        match self.confirm(entry, inner.parent.as_deref()) {
            Ok(true) => {
                entry.confirm_hold(id);
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

    fn held_error(&self, kind: ErrorKind, entry: &Entry) -> Error {
        let err = Error::new(kind, self.path());
        // Asking a remote backend is a call across the network, and this
        // may run on an async caller's executor.
        if entry.backend().remote() {
            return err;
        }
        match entry.backend().holder() {
            Ok(Some(Holder { pid: Some(pid), .. })) => {
                err.with_detail(format!("held by pid {pid}"))
            }
            _ => err,
        }
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
