//! The handle's books: who holds the lock through it, and the releases.
//!
//! A guard's own hold is booked in the file's entry only (see
//! [`Request::solo`]); a counted owner's (a re-entrant thread, a guest, a
//! semaphore slot) in the handle too, with its count.

use std::path::Path;
use std::sync::{Arc, MutexGuard};

use super::{FileLock, Request};
use crate::manager::{Entry, HolderId};
use crate::owner::OwnerMap;
use crate::{Error, ErrorKind, Kind, Mode, Owner, Result};

/// A handle's state.
pub(super) struct Inner {
    pub(super) kind: Kind,
    pub(super) entry: Option<Arc<Entry>>,
    /// The directory the path names the lock file in.
    pub(super) parent: Option<Arc<crate::sys::DirFd>>,
    pub(super) holds: OwnerMap<Held>,
    /// The lock file this handle created (device, inode), while it may still
    /// be an unused placeholder.
    pub(super) created: Option<(u64, u64)>,
}

/// One owner's hold through this handle.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    mode: Mode,
    count: u32,
    party: Option<Owner>,
}

impl Held {
    /// One more hold of the same owner; refused when the count is full.
    fn count_up(&mut self, path: &Path) -> Result<()> {
        self.count = self
            .count
            .checked_add(1)
            .ok_or_else(|| Error::new(ErrorKind::QuotaExceeded, path))?;
        Ok(())
    }
}

impl Inner {
    pub(super) fn new(kind: Kind) -> Inner {
        Inner {
            kind,
            entry: None,
            parent: None,
            holds: OwnerMap::default(),
            created: None,
        }
    }
}

impl FileLock {
    pub(super) fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    pub(super) fn hold_count_of_party(&self, party: Owner) -> u32 {
        let inner = self.inner();
        let counted: u32 = inner
            .holds
            .values()
            .filter(|h| h.party == Some(party))
            .map(|h| h.count)
            .sum();
        let solo: usize = self
            .books(inner.entry.as_ref())
            .map(|entry| {
                entry.holds_where(false, |id| {
                    id.handle == self.id
                        && id.party == Some(party)
                        && !inner.holds.contains_key(&id.owner)
                })
            })
            .sum();
        counted + u32::try_from(solo).unwrap_or(u32::MAX)
    }

    /// Whether this handle holds the lock, for any owner; with
    /// `confirmed_only`, not counting grants not yet completed and claims
    /// being tried (see `manager::Hold::confirmed`).
    pub(super) fn holds_any(&self, inner: &Inner, confirmed_only: bool) -> bool {
        !inner.holds.is_empty()
            || self
                .books(inner.entry.as_ref())
                .any(|e| e.holds_where(confirmed_only, |id| id.handle == self.id) > 0)
    }

    /// The entries this handle's holds can be booked in: its current one and
    /// its first, if that is another.
    fn books<'a>(
        &'a self,
        current: Option<&'a Arc<Entry>>,
    ) -> impl Iterator<Item = &'a Arc<Entry>> {
        current.into_iter().chain(self.first_aside(current))
    }

    pub(super) fn holder_id(&self, owner: Owner, party: Option<Owner>) -> HolderId {
        HolderId {
            handle: self.id,
            owner,
            party,
        }
    }

    /// Books a hold the entry has granted: a guard's own hold is booked in
    /// the entry only; a counted owner's in the handle too.
    pub(super) fn book(
        &self,
        holds: &mut OwnerMap<Held>,
        req: Request,
        entry: &Arc<Entry>,
    ) -> Result<()> {
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
        held.count_up(self.path())
    }

    /// Counts up if `req.owner` already holds this handle.
    pub(super) fn reenter(&self, inner: &mut Inner, req: Request) -> Result<Option<Arc<Entry>>> {
        let Some(held) = inner.holds.get_mut(&req.owner) else {
            return Ok(None);
        };
        if !held.mode.covers(req.mode) {
            return Err(Error::new(ErrorKind::Deadlock, self.path()).with_detail(
                "upgrading a shared hold to exclusive is not supported (two readers \
                 upgrading would wait for each other); release the shared hold first",
            ));
        }
        held.count_up(self.path())?;
        Ok(inner.entry.clone())
    }

    /// Releases `owner`'s hold in `entry`, the one it was granted in. A
    /// guard's own hold (see [`Request::solo`]) is released this way without
    /// the handle's lock: the entry's books are its only record, and the
    /// guard reaches the entry itself (`Granted`).
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

    /// Drops every hold through this handle (it is going away): the counted
    /// ones and those of guards that were forgotten.
    pub(super) fn release_all(&self) {
        let mut inner = self.inner();
        inner.holds.clear();
        for entry in self.books(inner.entry.as_ref()) {
            if let Err(e) = entry.release_handle(self.id) {
                tracing::warn!(path = %self.path().display(), error = %e, "releasing a dropped handle's holds failed");
            }
        }
    }
}
