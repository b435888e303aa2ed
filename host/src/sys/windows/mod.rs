//! Windows: names opened relative to a directory handle (cap-std, which
//! opens with `NtCreateFile` and a root directory), `LockFileEx` through
//! fs4, process identity from `OpenProcess` and `GetProcessTimes`.

mod at;
mod byte_lock;
#[cfg(feature = "etcd")]
mod clock;
mod errno;
mod identity;
mod kernel_wait;
mod watch;

pub(crate) use at::{
    dir_names, dir_stat, discard_unnamed, fchmod, fd_path, fstat, is_synchronous, link_at,
    lstat_at, open_at, open_unnamed_at, random_hex, rename_at, unlink_at,
};
pub(crate) use byte_lock::{Turnstile, lock_held, marker_turn_release, marker_turn_try};
#[cfg(feature = "etcd")]
pub(crate) use clock::since_boot;
#[cfg(test)]
pub(crate) use errno::NO_LOCKS_ERRNOS;
#[cfg(feature = "wasmtime")]
pub(crate) use errno::is_not_permitted;
pub(crate) use errno::{is_exists, is_refusal, meaning, open_failure};
pub(crate) use identity::{pid_alive, process_start_token};
pub(super) use identity::{pid_namespace, raw_hostname};
pub(crate) use kernel_wait::KernelWait;
pub(crate) use watch::DirWatch;

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};

/// A directory held open, for the calls on names inside it. The handle
/// keeps the directory from being renamed or removed while it is open.
pub(crate) type DirFd = cap_std::fs::Dir;

/// One file name inside a [`DirFd`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name(OsString);

impl Name {
    /// The name as text, for messages and derived names.
    pub(crate) fn to_string_lossy(&self) -> Cow<'_, str> {
        self.0.to_string_lossy()
    }

    fn as_os_str(&self) -> &OsStr {
        &self.0
    }
}

/// `name` as a [`Name`]; `None` if it has a NUL (no file name has).
pub(crate) fn name(name: &OsStr) -> Option<Name> {
    (!name.as_encoded_bytes().contains(&0)).then(|| Name(name.to_owned()))
}

/// The directory a capability stands for, held open.
pub(crate) fn dir_fd(dir: cap_std::fs::Dir) -> DirFd {
    dir
}

/// Who holds a kernel lock on a file: Windows does not say.
pub(crate) fn flock_holders(_dev: u64, _ino: u64) -> Vec<u32> {
    Vec::new()
}

/// This process's id.
pub(crate) fn pid() -> u32 {
    std::process::id()
}
