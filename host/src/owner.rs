//! Who holds a lock inside this process.
//!
//! An owner names a hold: every guard is a fresh owner, so two acquisitions
//! never share one. The exceptions count re-entry on purpose: a re-entrant
//! handle's owner is the thread, and a guest instance (WIT 0.1.0) is one
//! owner. The thread is also the *party* of a guard that cannot move, which
//! is what deadlock detection looks for.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// An identity that can hold locks. Distinct owners exclude each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Owner(u64);

static NEXT: AtomicU64 = AtomicU64::new(1);

/// Owners a thread takes from [`NEXT`] at a time: every guard is a fresh
/// owner, and a shared counter per guard would cost the uncontended lock an
/// atomic operation that a thread's own block of numbers does not.
const BLOCK: u64 = 1 << 16;

/// What a thread keeps to name owners: itself (0 until first asked), and
/// its block of fresh owners.
#[derive(Clone, Copy)]
struct Local {
    me: u64,
    next: u64,
    end: u64,
}

thread_local! {
    static LOCAL: Cell<Local> = const { Cell::new(Local { me: 0, next: 0, end: 0 }) };
}

impl Local {
    fn with<R>(f: impl FnOnce(&mut Local) -> R) -> R {
        LOCAL.with(|cell| {
            let mut local = cell.get();
            let r = f(&mut local);
            cell.set(local);
            r
        })
    }

    fn fresh(&mut self) -> Owner {
        if self.next == self.end {
            self.next = NEXT.fetch_add(BLOCK, Ordering::Relaxed);
            self.end = self.next + BLOCK;
        }
        self.next += 1;
        Owner(self.next - 1)
    }

    fn me(&mut self) -> Owner {
        if self.me == 0 {
            self.me = self.fresh().0;
        }
        Owner(self.me)
    }
}

impl Owner {
    /// A fresh owner that no one else has.
    pub(crate) fn unique() -> Owner {
        Local::with(Local::fresh)
    }

    /// The calling thread.
    pub(crate) fn current_thread() -> Owner {
        Local::with(Local::me)
    }

    /// A fresh owner and the calling thread, in one look at the thread's
    /// state (every blocking acquisition needs both).
    pub(crate) fn unique_and_thread() -> (Owner, Owner) {
        Local::with(|local| (local.fresh(), local.me()))
    }
}

/// A map keyed by owner. Owners are already well spread (a counter or a
/// hash), so a multiplication is all the hashing they need; the default
/// SipHash would cost more than the rest of an uncontended lock's bookkeeping.
pub(crate) type OwnerMap<V> = HashMap<Owner, V, BuildHasherDefault<OwnerHasher>>;

#[derive(Default)]
pub(crate) struct OwnerHasher(u64);

impl Hasher for OwnerHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the high bits, which hashbrown uses, mix well.
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}
