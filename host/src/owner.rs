//! Who holds a lock inside this process.
//!
//! A lock handle counts re-entrant holds per owner: the thread for the sync
//! API, the tokio task for the async API, the guest instance for WebAssembly.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// An identity that can hold locks. Distinct owners exclude each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Owner(u64);

static NEXT: AtomicU64 = AtomicU64::new(1);

// Tagging keeps task hashes from ever colliding with counter-issued ids.
const TASK_TAG: u64 = 1 << 63;

impl Owner {
    /// A fresh owner that no one else has.
    pub(crate) fn unique() -> Owner {
        Owner(NEXT.fetch_add(1, Ordering::Relaxed) & !TASK_TAG)
    }

    /// The calling thread.
    pub(crate) fn current_thread() -> Owner {
        thread_local! {
            static ME: Owner = Owner::unique();
        }
        ME.with(|me| *me)
    }

    /// The calling tokio task, or the thread when not inside a task.
    pub(crate) fn current_task() -> Owner {
        match tokio::task::try_id() {
            Some(id) => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                id.hash(&mut h);
                Owner(h.finish() | TASK_TAG)
            }
            None => Owner::current_thread(),
        }
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
