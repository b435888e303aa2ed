//! A clock that goes on while the machine sleeps.

use std::time::Duration;

/// Time since an unspecified start, counting the time the machine was
/// suspended: an etcd lease runs out on the cluster while this machine
/// sleeps, and `Instant` (`CLOCK_MONOTONIC` on Linux) stands still then.
pub(crate) fn since_boot() -> Duration {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const CLOCK: libc::clockid_t = libc::CLOCK_BOOTTIME;
    // macOS's CLOCK_MONOTONIC counts sleep; elsewhere it is the best there is.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a timespec to write to.
    let r = unsafe { libc::clock_gettime(CLOCK, &mut now) };
    assert_eq!(r, 0, "clock_gettime({CLOCK}) failed");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_on_at_least_as_fast_as_instant() {
        let (boot, instant) = (since_boot(), std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        // Read around the Instant's reads: it cannot have passed less.
        let instant_passed = instant.elapsed();
        let boot_passed = since_boot() - boot;
        assert!(boot_passed >= Duration::from_millis(20), "{boot_passed:?}");
        assert!(
            boot_passed >= instant_passed,
            "{boot_passed:?} < {instant_passed:?}"
        );
    }
}
