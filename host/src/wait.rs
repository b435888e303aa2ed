//! How long to wait, in which mode, with which kind of lock.

use std::time::{Duration, Instant};

/// How long an acquisition may wait. An explicit value, never a magic number.
///
/// | seed library | value | `Wait` |
/// |---|---|---|
/// | py-filelock | `timeout=-1` | [`Wait::Forever`] |
/// | py-filelock | `timeout=0`, `blocking=False` | [`Wait::TryOnce`] |
/// | lockfile | `timeout<=0` | [`Wait::TryOnce`] |
/// | portalocker | `fail_when_locked=True` | [`Wait::TryOnce`] |
///
/// ```
/// use std::time::Duration;
/// use wasmlock::{FileLock, Mode, Wait};
/// # let dir = tempfile::tempdir().unwrap();
/// let lock = FileLock::new(dir.path().join("w.lock"))?;
/// let guard = lock.lock_with(Mode::Exclusive, Wait::Timeout(Duration::from_secs(1)))?;
/// drop(guard);
/// # Ok::<(), wasmlock::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Wait until the lock is obtained.
    Forever,
    /// Make exactly one attempt; fail with [`ErrorKind::WouldBlock`](crate::ErrorKind::WouldBlock).
    TryOnce,
    /// Wait at most this long; fail with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout).
    Timeout(Duration),
    /// Wait until this instant at the latest.
    Deadline(Instant),
}

impl Wait {
    /// The deadline this wait stands for, measured from now (`None` = forever).
    pub(crate) fn deadline(self) -> Option<Instant> {
        match self {
            Wait::Forever => None,
            Wait::TryOnce => Some(Instant::now()),
            // A duration too large to represent is forever in practice.
            Wait::Timeout(d) => Instant::now().checked_add(d),
            Wait::Deadline(at) => Some(at),
        }
    }

    /// Clamps a wait to at most `max` (used for guests whose "forever" is bounded).
    pub fn clamp(self, max: Duration) -> Wait {
        match self {
            Wait::Forever => Wait::Timeout(max),
            Wait::Timeout(d) => Wait::Timeout(d.min(max)),
            Wait::Deadline(at) => {
                let cap = Instant::now() + max;
                Wait::Deadline(at.min(cap))
            }
            Wait::TryOnce => Wait::TryOnce,
        }
    }
}

pub use wasmlock_types::{Kind, Mode};
