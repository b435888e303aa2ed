//! Operating-system specifics: Unix (`unix/`) and Windows (`windows/`), and
//! what both build on (kernel locks through fs4, the identity written into
//! soft markers). The rest of the crate talks to this module, never to
//! `libc` or `windows-sys` directly.

mod file_info;
mod flock;
mod identity;
mod meaning;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as os;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as os;

pub(crate) use file_info::{Create, Stat};
pub(crate) use flock::{flock_release, flock_try, flock_wait};
pub(crate) use identity::{StartToken, host_name};
pub(crate) use meaning::{Meaning, OpenFailure};
pub(crate) use os::*;

#[cfg(not(any(unix, windows)))]
compile_error!("wasmlock supports Unix and Windows hosts");

// Where a directory can be watched (inotify, `ReadDirectoryChangesW`).
#[cfg(all(test, any(target_os = "linux", windows)))]
mod watch_tests {
    use std::time::{Duration, Instant};

    use super::DirWatch;

    fn watched() -> (tempfile::TempDir, DirWatch) {
        let tmp = tempfile::tempdir().unwrap();
        let dir =
            cap_std::fs::Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        let watch = DirWatch::new(&super::dir_fd(dir));
        (tmp, watch)
    }

    #[test]
    fn a_removal_wakes_a_waiter_long_before_its_timeout() {
        let (tmp, mut watch) = watched();
        let marker = tmp.path().join("m.lock");
        std::fs::write(&marker, "x").unwrap();
        watch.clear();
        let remover = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            std::fs::remove_file(marker).unwrap();
        });
        let t = Instant::now();
        watch.wait(Duration::from_secs(60));
        // The bound only tells a wake from the timeout running out.
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
        remover.join().unwrap();
    }

    #[test]
    fn clear_forgets_earlier_changes() {
        let (tmp, mut watch) = watched();
        std::fs::write(tmp.path().join("a"), "x").unwrap();
        std::fs::remove_file(tmp.path().join("a")).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        watch.clear();
        let t = Instant::now();
        watch.wait(Duration::from_millis(300));
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }
}
