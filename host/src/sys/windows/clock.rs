//! A clock that goes on while the machine sleeps.

use std::time::Duration;

use windows_sys::Win32::System::SystemInformation::GetTickCount64;

/// Time since boot, counting the time the machine was suspended (as an
/// etcd lease runs out on the cluster while this machine sleeps).
pub(crate) fn since_boot() -> Duration {
    // SAFETY: no arguments, no failure.
    Duration::from_millis(unsafe { GetTickCount64() })
}
