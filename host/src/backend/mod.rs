//! What actually holds a lock against other processes: the kernel (`os`) or a
//! marker file (`soft`). The in-process manager sits in front of a backend and
//! calls it only when the process as a whole gains or loses the lock.

#[cfg(feature = "etcd")]
pub(crate) mod etcd;
pub(crate) mod marker;
mod open;
pub(crate) mod os;
pub(crate) mod soft;

use std::ffi::OsString;
use std::path::Path;

pub(crate) use open::{open_file, open_path};

use crate::{Holder, Mode, Result};

/// See [`Backend::lost_signal`].
pub(crate) type LostFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What [`Backend::release_confirmed`] gives: ready once a release that
/// went on in the background is done, with its outcome.
pub(crate) type ReleaseFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// What identifies a lock within the process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// An OS lock on the file (device, inode).
    Os(u64, u64),
    /// A soft lock: the marker name in the directory (device, inode).
    Soft(u64, u64, OsString),
    /// A lock in a cluster: the session (one per connection) and the name.
    #[cfg(feature = "etcd")]
    Remote(u64, String),
}

impl Key {
    /// Whether the lock is a file's (not a cluster's).
    pub(crate) fn is_file(&self) -> bool {
        match self {
            Key::Os(..) | Key::Soft(..) => true,
            #[cfg(feature = "etcd")]
            Key::Remote(..) => false,
        }
    }
}

/// What a release waits for, taken before it and kept until dropped (see
/// [`Backend::release_turn`]); empty where there is nothing to wait for.
#[derive(Default)]
pub(crate) struct ReleaseTurn {
    _held: Option<Box<dyn Send>>,
}

impl ReleaseTurn {
    pub(crate) fn holding(held: impl Send + 'static) -> ReleaseTurn {
        ReleaseTurn {
            _held: Some(Box::new(held)),
        }
    }
}

/// One lock file as seen by one process.
pub(crate) trait Backend: Send + Sync + 'static {
    /// One attempt that does not wait. `Ok(false)`: another process holds it.
    fn try_acquire(&self, mode: Mode) -> Result<bool>;

    /// Waits until the lock is obtained (`Ok(true)`) or, where the backend can
    /// stop early, until `wanted` says nobody in this process wants it any
    /// more (`Ok(false)`). Runs on a dedicated thread, one per contended lock.
    fn acquire_blocking(&self, mode: Mode, wanted: &dyn Fn() -> bool) -> Result<bool>;

    /// The thread that waited has handed the lock on: what waiting needed
    /// can go now, off the hand-off path.
    fn done_waiting(&self) {}

    /// Gives the lock back to other processes.
    fn release(&self, mode: Mode) -> Result<()>;

    /// What [`release`](Backend::release) would wait for, taken before it
    /// and outside this process's books of the lock (so that nobody here
    /// waits for those books meanwhile), and kept until dropped, after the
    /// release: a soft marker's turn against breakers. Without `wait`,
    /// `None` if it is not to be had right now; with it, always `Some`,
    /// waited for only if
    /// `gives_back` (the release will give the lock back: a hand-off to
    /// another holder here leaves the marker alone). Kernel locks wait for
    /// nothing.
    fn release_turn(&self, wait: bool, gives_back: &dyn Fn() -> bool) -> Option<ReleaseTurn> {
        let _ = (wait, gives_back);
        Some(ReleaseTurn::default())
    }

    /// A remote backend (etcd): its attempts are calls across the network,
    /// made only on the entry's waiting thread (never under the entry's
    /// lock or on an async caller's executor), try-once requests included;
    /// and every hold is a grant of its own, given back when the hold ends
    /// even if others here wait (fences grow with every hold, and other
    /// processes get their turn).
    fn remote(&self) -> bool {
        false
    }

    /// After a hold's release, outside the lock's books: waits (on a thread,
    /// not in an async context) until a release that went on in the
    /// background is done, so that a thread that unlocked has let the lock
    /// go everywhere (etcd: the key deleted), and reports its failure: a
    /// hold found lost by its release too. `fence` is the released hold's
    /// [`fence`](Backend::fence), read before the release.
    fn flush_release(&self, _fence: Option<u64>) -> Result<()> {
        Ok(())
    }

    /// [`flush_release`](Backend::flush_release) for an async caller, which
    /// awaits the future; `None` if nothing goes on in the background.
    fn release_confirmed(&self, _fence: Option<u64>) -> Option<ReleaseFuture> {
        None
    }

    /// Nobody in this process waits for the lock any more: a backend whose
    /// [`acquire_blocking`](Backend::acquire_blocking) can stop early stops
    /// (and returns `Ok(false)`).
    fn interrupt(&self) {}

    /// The fencing token of this process's current grant, for backends that
    /// have one (etcd: the key's create revision).
    fn fence(&self) -> Option<u64> {
        None
    }

    /// Whether attempts may run while a waiting thread is in
    /// [`acquire_blocking`](Backend::acquire_blocking). Not for `flock`: both
    /// would act on the same open file description.
    fn attempts_while_blocking(&self) -> bool {
        false
    }

    /// Whether a process that already holds the lock in `Shared` mode may let
    /// one more local reader in, or must first let a waiting writer through.
    fn admits_reader(&self) -> Result<bool> {
        Ok(true)
    }

    /// Sets the lock file's permission bits; called by the winner only.
    fn set_mode(&self, _mode: u32) -> Result<()> {
        Ok(())
    }

    /// The open lock file, for backends that keep one (OS locks).
    fn file(&self) -> Option<&std::fs::File> {
        None
    }

    /// Whether this process's hold was taken away by someone else (a soft
    /// marker removed or replaced). Kernel locks cannot be.
    fn lost(&self) -> bool {
        false
    }

    /// A future that is ready once this process's current hold is lost, for
    /// backends that are told (etcd); `None` where nobody tells: kernel
    /// locks cannot be lost, and a soft marker's removal is only seen by
    /// looking.
    fn lost_signal(&self) -> Option<LostFuture> {
        None
    }

    /// The path used in messages.
    fn path(&self) -> &Path;

    /// Who holds the lock in another process, as far as can be known.
    fn holder(&self) -> Result<Option<Holder>>;

    /// Whether some process holds the lock, without disturbing it.
    fn is_locked(&self) -> Result<bool>;

    /// Breaks a lock whose holder is gone (soft locks); `force` breaks a live
    /// holder's lock too.
    fn break_lock(&self, force: bool) -> Result<()>;
}
