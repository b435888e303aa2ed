//! Soft locks: the marker, stale detection and safe breaking.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use wasmlock::{ErrorKind, FileLock, Kind};

#[test]
#[ignore = "helper: runs only as a child process"]
fn child_entry() {
    child_main();
}

fn soft(path: &Path) -> FileLock {
    FileLock::builder(path).soft().build().unwrap()
}

#[test]
fn the_marker_is_pid_host_token_and_goes_on_release() {
    let dir = tmp();
    let path = dir.path().join("m.lock");
    let lock = soft(&path);
    assert_eq!(lock.kind(), Kind::Soft);
    let g = lock.lock().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(text.ends_with('\n'));
    assert_eq!(lines.len(), 3, "{text:?}");
    assert_eq!(lines[0], std::process::id().to_string());
    assert!(!lines[1].is_empty());
    assert!(lines[2].bytes().all(|b| b.is_ascii_digit()));
    let holder = lock.holder().unwrap().unwrap();
    assert_eq!(holder.pid, Some(std::process::id()));
    assert_eq!(holder.host.as_deref(), Some(lines[1]));
    drop(g);
    assert!(!path.exists());
    assert!(lock.holder().unwrap().is_none());
}

#[test]
fn soft_locks_are_exclusive_only() {
    let dir = tmp();
    let lock = soft(&dir.path().join("s.lock"));
    let e = lock.lock_shared().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("exclusive"), "{e}");
    // A re-entrant holder may ask again for less than it holds: that is a
    // count, not a shared soft lock.
    let path = dir.path().join("r.lock");
    let reentrant = FileLock::builder(&path).soft().reentrant().build().unwrap();
    let outer = reentrant.lock().unwrap();
    let inner = reentrant.try_lock_shared().unwrap();
    assert_eq!(reentrant.hold_count(), 2);
    drop(inner);
    drop(outer);
    assert!(!path.exists(), "the marker goes with the last hold");
}

#[test]
fn a_dead_holders_marker_is_broken() {
    let dir = tmp();
    let path = dir.path().join("dead.lock");
    let host = our_host(&path);
    std::fs::write(&path, format!("{}\n{host}\n", dead_pid())).unwrap();
    let lock = soft(&path);
    assert!(!lock.is_locked().unwrap(), "a dead holder holds nothing");
    let g = lock.try_lock().unwrap();
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .starts_with(&std::process::id().to_string())
    );
    drop(g);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "no break files left: {left:?}");
}

#[test]
fn a_recycled_pid_is_stale_but_a_matching_token_is_live() {
    let dir = tmp();
    let path = dir.path().join("recycled.lock");
    let lock = soft(&path);
    let g = lock.lock().unwrap();
    let ours = std::fs::read_to_string(&path).unwrap();
    drop(g);
    let lines: Vec<&str> = ours.lines().collect();
    assert_token_is_this_processs_start(lines[2]);
    // A live pid (ours), same boot, started one tick later: a recycled pid.
    let token = decimal_plus_one(lines[2]);
    std::fs::write(&path, format!("{}\n{}\n{token}\n", lines[0], lines[1])).unwrap();
    let other = soft(&path);
    let g = other
        .try_lock()
        .expect("the recycled pid's marker is stale");
    drop(g);
    // The same pid with its real token is a live holder.
    std::fs::write(&path, &ours).unwrap();
    assert_eq!(other.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
    assert!(other.is_locked().unwrap());
    std::fs::remove_file(&path).unwrap();
}

/// Linux: the token is boot id × 2^64 + start time, in decimal (192 bits);
/// it must carry a boot id, or the test would exercise the missing-boot-id
/// path.
#[cfg(not(windows))]
fn assert_token_is_this_processs_start(token: &str) {
    assert!(token.len() > 20, "no boot id in the token {token:?}");
}

/// Windows: the token is the process's creation time (`GetProcessTimes`,
/// 100 ns ticks since 1601), as py-filelock writes it: this test process
/// started less than an hour ago.
#[cfg(windows)]
fn assert_token_is_this_processs_start(token: &str) {
    let ticks: u64 = token.parse().expect("a decimal FILETIME");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        / 100
        + 116_444_736_000_000_000;
    let hour = 36_000_000_000;
    assert!(
        ticks <= now && now - ticks < hour,
        "token {token} is not this process's start (now {now})"
    );
}

/// `n + 1` for a decimal string (the start-time part never overflows).
fn decimal_plus_one(n: &str) -> String {
    let mut digits: Vec<u8> = n.bytes().collect();
    for d in digits.iter_mut().rev() {
        if *d == b'9' {
            *d = b'0';
        } else {
            *d += 1;
            return String::from_utf8(digits).unwrap();
        }
    }
    format!("1{}", String::from_utf8(digits).unwrap())
}

#[test]
fn decimal_plus_one_carries() {
    assert_eq!(
        decimal_plus_one("18446744073709551623"),
        "18446744073709551624"
    );
    assert_eq!(decimal_plus_one("199"), "200");
    assert_eq!(decimal_plus_one("99"), "100");
}

#[test]
fn another_hosts_marker_is_never_broken_automatically() {
    let dir = tmp();
    let path = dir.path().join("remote.lock");
    std::fs::write(&path, format!("{}\nsome-other-host.example\n", dead_pid())).unwrap();
    let lock = soft(&path);
    assert_eq!(lock.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(
        lock.lock_timeout(Duration::from_millis(300))
            .unwrap_err()
            .kind(),
        ErrorKind::Timeout
    );
    let e = lock.break_lock(false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotOwner);
    assert!(e.to_string().contains("some-other-host.example"), "{e}");
    assert!(path.exists());
    lock.break_lock(true).unwrap();
    assert!(!path.exists());
    drop(lock.try_lock().unwrap());
}

#[test]
fn a_malformed_marker_is_broken_only_after_a_grace_period() {
    let dir = tmp();
    let path = dir.path().join("garbage.lock");
    std::fs::write(&path, "not a marker").unwrap();
    let lock = soft(&path);
    assert_eq!(lock.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
    let t = Instant::now();
    let g = lock.lock_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    drop(g);
}

#[test]
fn an_empty_marker_is_a_holder_between_create_and_write_and_is_left_alone() {
    let dir = tmp();
    let path = dir.path().join("empty.lock");
    std::fs::write(&path, "").unwrap();
    let lock = soft(&path);
    assert_eq!(
        lock.lock_timeout(Duration::from_millis(2500))
            .unwrap_err()
            .kind(),
        ErrorKind::Timeout
    );
    assert!(path.exists());
}

#[test]
fn a_live_holder_is_not_broken_without_force() {
    let dir = tmp();
    let path = dir.path().join("live.lock");
    let mut c = Child::spawn(&["hold", path.to_str().unwrap(), "ex", "soft"]);
    c.expect("LOCKED", LONG);
    let lock = soft(&path);
    let e = lock.break_lock(false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotOwner);
    assert_eq!(lock.holder().unwrap().unwrap().pid, Some(c.pid));
    assert_eq!(lock.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
    // Released: the waiter is woken by the file-system event.
    std::thread::scope(|s| {
        let h = s.spawn(|| lock.lock_timeout(LONG).map(drop));
        std::thread::sleep(Duration::from_millis(50));
        c.send("release");
        h.join().unwrap().unwrap();
    });
    c.finish();
}

#[test]
fn release_never_removes_a_successors_marker() {
    let dir = tmp();
    let path = dir.path().join("succ.lock");
    let a = soft(&path);
    let g = a.lock().unwrap();
    // Someone breaks our lock by force and another process takes it.
    soft(&path).break_lock(true).unwrap();
    let mut successor = Child::spawn(&["hold", path.to_str().unwrap(), "ex", "soft"]);
    if deleted_names_linger(dir.path()) {
        // The broken marker's name stays until our handle on it closes,
        // with the unlock: a forced break takes effect only then, so the
        // successor cannot be in while we hold. (What the unlock reports
        // there depends on how the file system shows a name that is going:
        // wine shows it as present.)
        assert!(!successor.says_within("LOCKED", Duration::from_millis(300)));
        drop(g);
        successor.expect("LOCKED", LONG);
        let marker = std::fs::read_to_string(&path).unwrap();
        assert!(marker.starts_with(&format!("{}\n", successor.pid)));
        successor.finish();
        assert!(!path.exists());
        return;
    }
    successor.expect("LOCKED", LONG);
    let marker = std::fs::read_to_string(&path).unwrap();
    assert!(marker.starts_with(&format!("{}\n", successor.pid)));
    let e = g.unlock().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Lost);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        marker,
        "left alone"
    );
    successor.finish();
    assert!(!path.exists());
}

/// Whether a name deleted while its file is open stays until the file is
/// closed: so on wine and on Windows file systems without POSIX deletes
/// (FAT, NTFS before Windows 10 1709); never on Unix.
fn deleted_names_linger(dir: &Path) -> bool {
    let probe = dir.join("linger-probe");
    let open = std::fs::File::create(&probe).unwrap();
    std::fs::remove_file(&probe).unwrap();
    let lingers = probe.exists();
    drop(open);
    assert!(!probe.exists());
    lingers
}

// Symbolic links need a privilege on Windows.
#[cfg(unix)]
#[test]
fn a_symlink_at_the_marker_path_is_not_followed() {
    let dir = tmp();
    let target = dir.path().join("target");
    std::fs::write(&target, "precious").unwrap();
    let path = dir.path().join("link.lock");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let e = soft(&path).try_lock().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidPath);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
}

#[test]
fn soft_locks_exclude_threads_and_handles_in_one_process() {
    let dir = tmp();
    let path = dir.path().join("threads.lock");
    assert_eq!(count_with_threads(dir.path(), 4, 50, || soft(&path)), 200);
}

/// A release takes turns with breakers, and a breaker that keeps its turn
/// (here a kernel lock on the marker through another open file) makes it
/// wait, up to a second. It waits before it locks the lock's books in this
/// process: another thread's attempt meanwhile answers at once (still held)
/// instead of waiting for the release to be done.
#[test]
fn a_release_waiting_for_a_breakers_turn_does_not_hold_up_attempts() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tmp();
    let path = dir.path().join("turn.lock");
    let lock = Arc::new(soft(&path));
    let guard = lock.lock_owned().unwrap();
    let breaker = std::fs::File::open(&path).unwrap();
    take_marker_turn(&breaker);
    let released = Arc::new(AtomicBool::new(false));
    let releasing = std::thread::spawn({
        let released = released.clone();
        move || {
            guard.unlock().unwrap();
            released.store(true, Ordering::SeqCst);
        }
    });
    // Inside the second the release waits for its turn.
    std::thread::sleep(Duration::from_millis(100));
    let attempt = lock.try_lock().map(drop);
    assert_eq!(attempt.unwrap_err().kind(), ErrorKind::WouldBlock);
    assert!(
        !released.load(Ordering::SeqCst) && path.exists(),
        "the attempt waited for the release"
    );
    give_back_marker_turn(&breaker);
    releasing.join().unwrap();
    // Where a file system keeps a deleted name while the file is open
    // (wine; FAT), it goes with the breaker's handle.
    drop(breaker);
    assert!(!path.exists());
    drop(lock.try_lock().unwrap());
}

/// Handing a held soft lock to the next waiter in this process does not
/// touch the marker, so it does not wait for a breaker's turn either.
#[test]
fn a_hand_off_in_this_process_does_not_wait_for_a_breakers_turn() {
    use std::sync::Arc;
    use std::sync::mpsc;

    let dir = tmp();
    let path = dir.path().join("handoff.lock");
    let lock = Arc::new(soft(&path));
    let guard = lock.lock_owned().unwrap();
    let (granted, got) = mpsc::channel();
    let waiter = std::thread::spawn({
        let lock = lock.clone();
        move || {
            let guard = lock.lock_owned().unwrap();
            granted.send(()).unwrap();
            guard
        }
    });
    // Time to queue behind the guard (a waiter not queued yet would make
    // this a release that gives the lock back, which does wait).
    std::thread::sleep(Duration::from_millis(200));
    let breaker = std::fs::File::open(&path).unwrap();
    take_marker_turn(&breaker);
    let releasing = std::thread::spawn(move || drop(guard));
    // Well inside the second (`TURN_PATIENCE`) a release would wait.
    got.recv_timeout(Duration::from_millis(700))
        .expect("the hand-off waited for the breaker's turn");
    releasing.join().unwrap();
    give_back_marker_turn(&breaker);
    drop(breaker);
    drop(waiter.join().unwrap());
    assert!(!path.exists());
}
