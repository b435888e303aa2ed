//! Waking on changes in a directory, for soft-lock waiters.

use std::time::Duration;

use super::DirFd;

/// Wakes a soft-lock waiter. Not yet backed by change notifications on
/// Windows: only the timeout of [`DirWatch::wait`] wakes it, the polling
/// fallback the Unix engine has for network file systems.
pub(crate) struct DirWatch;

impl DirWatch {
    pub(crate) fn new(_dir: &DirFd) -> DirWatch {
        DirWatch
    }

    /// Forgets the changes seen so far.
    pub(crate) fn clear(&self) {}

    /// Waits for `timeout`.
    pub(crate) fn wait(&self, timeout: Duration) {
        std::thread::sleep(timeout);
    }
}
