//! The uncontended path: a guard's own hold on the handle's first lock file,
//! taken without the handle's lock.
//!
//! A handle keeps the entry of the first lock file it opens for as long as
//! it lives ([`First`]), so a guard reaches it through the handle alone,
//! without a lock or a reference count of its own. While that entry is still
//! the one the handle uses (`FileLock::fast`), a guard's request tries it
//! directly: an exclusive one claims it (`Entry::try_claim`: the entry's lock
//! is taken and released before the `flock` and the path re-check), a
//! shared one takes the entry's lock around them. Anything else
//! (a busy lock, a replaced file, an error, re-entrant and counted owners)
//! takes the full path through `begin`, which decides again under the
//! handle's lock.
//!
//! Keeping the first entry costs a handle whose lock file was replaced (or
//! that fell back to a soft lock) one open file until the handle drops.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{FileLock, Request};
use crate::Mode;
use crate::manager::{Attempt, Entry};

/// The first lock file a handle opened, and the directory its path names it
/// in.
pub(super) struct First {
    pub(super) entry: Arc<Entry>,
    pub(super) parent: Option<Arc<crate::sys::DirFd>>,
}

/// Where a hold was granted: the handle's first entry, or another one the
/// guard keeps alive itself.
pub(crate) enum Granted {
    First,
    In(Arc<Entry>),
}

impl FileLock {
    /// Takes `req` on the uncontended path if it applies and the lock is
    /// free; `false` when the full path must decide.
    pub(super) fn try_fast(&self, req: Request) -> bool {
        if !req.solo || !self.fast.load(Ordering::Acquire) {
            return false;
        }
        let Some(first) = self.first.get() else {
            return false;
        };
        let id = self.holder_id(req.owner, req.party);
        // Whoever gives the first entry up clears `fast` before it looks for
        // holds in it (under the entry's lock): a request booked after that
        // look sees `fast` cleared here, under the same lock, and backs off.
        let still_first = || self.fast.load(Ordering::Acquire);
        let confirm = || self.confirm(&first.entry, first.parent.as_deref());
        // Errors are not final here: the full path meets them again and
        // decides (a fallback, a replaced file) under the handle's lock.
        let attempt = match req.mode {
            Mode::Exclusive => first.entry.try_claim(id, still_first, confirm),
            // The check runs under the entry's lock, where it counts.
            Mode::Shared => {
                let confirm = || if still_first() { confirm() } else { Ok(false) };
                first.entry.try_acquire(id, req.mode, confirm)
            }
        };
        let held = matches!(attempt, Ok(Attempt::Held));
        if held {
            tracing::debug!(path = %self.path().display(), mode = ?req.mode, "acquired");
        }
        held
    }

    /// The entry a hold was granted in.
    pub(super) fn granted<'a>(&'a self, granted: &'a Granted) -> &'a Arc<Entry> {
        match granted {
            Granted::First => &self.first.get().expect("granted in it").entry,
            Granted::In(entry) => entry,
        }
    }

    /// The first entry, when the handle no longer uses it: holds may still
    /// be booked there.
    pub(super) fn first_aside(&self, current: Option<&Arc<Entry>>) -> Option<&Arc<Entry>> {
        let first = &self.first.get()?.entry;
        (!current.is_some_and(|c| Arc::ptr_eq(c, first))).then_some(first)
    }

    /// Records the handle's first entry, and opens the uncontended path to
    /// it for OS locks.
    pub(super) fn remember_first(
        &self,
        entry: &Arc<Entry>,
        parent: Option<&Arc<crate::sys::DirFd>>,
        os: bool,
    ) {
        let first = First {
            entry: entry.clone(),
            parent: parent.cloned(),
        };
        if self.first.set(first).is_ok() && os {
            self.fast.store(true, Ordering::Release);
        }
    }
}
