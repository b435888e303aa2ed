//! Who holds a lock, as far as can be known.

use std::time::SystemTime;

/// The holder of a lock. Soft locks always know the pid and host (from the
/// marker) and the time it was taken; OS locks on Linux know the pid (from
/// `/proc/locks`), and the host is this one.
///
/// ```
/// use wasmlock::FileLock;
/// # let dir = tempfile::tempdir().unwrap();
/// let lock = FileLock::builder(dir.path().join("h.lock")).soft().build()?;
/// let _g = lock.lock()?;
/// let holder = lock.holder()?.expect("held");
/// assert_eq!(holder.pid, Some(std::process::id()));
/// assert!(holder.since.is_some());
/// # Ok::<(), wasmlock::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Holder {
    /// Process id of the holder.
    pub pid: Option<u32>,
    /// Host name of the holder, as py-filelock records it.
    pub host: Option<String>,
    /// When the lock was taken.
    pub since: Option<SystemTime>,
    /// The etcd lease the holder's key lives under (etcd locks).
    pub lease: Option<u64>,
    /// The holder's fencing token (etcd locks: its key's create revision).
    pub fence: Option<u64>,
}

impl Holder {
    pub(crate) fn new(pid: Option<u32>, host: Option<String>, since: Option<SystemTime>) -> Holder {
        Holder {
            pid,
            host,
            since,
            lease: None,
            fence: None,
        }
    }
}
