//! Who holds a lock inside this process.
//!
//! A lock handle counts re-entrant holds per owner: the thread for the sync
//! API, the tokio task for the async API, the guest instance for WebAssembly.

use std::hash::{Hash, Hasher};
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
