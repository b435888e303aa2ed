//! Several real processes on one lock: exclusion, shared mode, writer
//! non-starvation, semaphores. Load tests are in
//! `stress.rs`, crash and fault tests in `crash.rs`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use wasmlock::{ErrorKind, FileLock, Semaphore};

#[test]
#[ignore = "helper: runs only as a child process"]
fn child_entry() {
    child_main();
}

#[test]
fn another_process_holding_excludes_us_until_it_releases() {
    let dir = tmp();
    let path = dir.path().join("x.lock");
    let mut child = Child::spawn(&["hold", p(&path), "ex", "os"]);
    child.expect("LOCKED", LONG);
    let lock = FileLock::new(&path).unwrap();
    assert_eq!(lock.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
    let e = lock.lock_timeout(SHORT).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(lock.is_locked().unwrap());
    // Linux names a kernel lock's holder (/proc/locks); Windows has no way
    // to ask, and says nothing rather than guess.
    if cfg!(windows) {
        assert!(!e.to_string().contains("pid"), "{e}");
        assert_eq!(lock.holder().unwrap(), None);
    } else {
        assert!(e.to_string().contains(&format!("pid {}", child.pid)), "{e}");
        let holder = lock.holder().unwrap().unwrap();
        assert_eq!(holder.pid, Some(child.pid));
    }

    // A blocked waiter wakes when the other process lets go.
    std::thread::scope(|s| {
        let waiter = s.spawn(|| lock.lock_timeout(LONG).map(drop));
        std::thread::sleep(Duration::from_millis(50));
        child.send("release");
        waiter.join().unwrap().unwrap();
    });
    child.finish();
    assert!(!lock.is_locked().unwrap());
}

#[test]
fn we_exclude_another_process() {
    let dir = tmp();
    let path = dir.path().join("y.lock");
    let lock = FileLock::new(&path).unwrap();
    let g = lock.lock().unwrap();
    let mut c = Child::spawn(&["try", p(&path), "ex", "os"]);
    assert_eq!(c.expect("RESULT", LONG), "WouldBlock");
    c.finish();
    let mut c = Child::spawn(&["try", p(&path), "sh", "os"]);
    assert_eq!(c.expect("RESULT", LONG), "WouldBlock");
    c.finish();
    drop(g);
    let mut c = Child::spawn(&["try", p(&path), "ex", "os"]);
    assert_eq!(c.expect("RESULT", LONG), "ok");
    c.finish();
}

#[test]
fn shared_holders_in_several_processes_coexist_and_exclude_writers() {
    let dir = tmp();
    let path = dir.path().join("rw.lock");
    let mut r1 = Child::spawn(&["hold", p(&path), "sh", "os"]);
    let mut r2 = Child::spawn(&["hold", p(&path), "sh", "os"]);
    r1.expect("LOCKED", LONG);
    r2.expect("LOCKED", LONG);
    let lock = FileLock::new(&path).unwrap();
    let _r = lock.try_lock_shared().unwrap();
    let mut w = Child::spawn(&["try", p(&path), "ex", "os"]);
    assert_eq!(w.expect("RESULT", LONG), "WouldBlock");
    w.finish();
    r1.finish();
    r2.finish();
}

#[test]
fn a_writer_is_not_starved_by_readers_in_other_processes() {
    let dir = tmp();
    let path = dir.path().join("starve.lock");
    // Three processes, each 40 back-to-back shared holds of 25 ms, started
    // staggered so that some reader always holds the lock.
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(Child::spawn(&["reader-chain", p(&path), "40", "25"]));
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let lock = FileLock::new(&path).unwrap();
    let t = Instant::now();
    let g = lock.lock_timeout(LONG).unwrap();
    let writer_at = now_us();
    let waited = t.elapsed();
    drop(g);
    let done: Vec<u128> = readers
        .iter_mut()
        .map(|r| r.expect("DONE", LONG).parse().unwrap())
        .collect();
    assert!(
        done.iter().all(|&d| d > writer_at),
        "the writer (after {waited:?}) only got in once the readers drained"
    );
    for r in readers {
        r.finish();
    }
}

#[test]
fn from_file_excludes_a_path_lock_in_another_process() {
    let dir = tmp();
    let path = dir.path().join("data.bin");
    std::fs::write(&path, b"payload").unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let lock = FileLock::from_file(file).unwrap();
    let g = lock.lock().unwrap();
    let mut c = Child::spawn(&["try", p(&path), "ex", "os"]);
    assert_eq!(c.expect("RESULT", LONG), "WouldBlock");
    c.finish();
    drop(g);
    assert_eq!(std::fs::read(&path).unwrap(), b"payload");
}

#[test]
fn semaphore_slots_are_shared_across_processes() {
    let dir = tmp();
    let d = p(dir.path());
    let mut a = Child::spawn(&["permit", d, "sem", "2"]);
    let mut b = Child::spawn(&["permit", d, "sem", "2"]);
    let sa: usize = a.expect("PERMIT", LONG).parse().unwrap();
    let sb: usize = b.expect("PERMIT", LONG).parse().unwrap();
    assert_ne!(sa, sb);
    let sem = Semaphore::new(dir.path(), "sem", 2).unwrap();
    assert_eq!(sem.try_acquire().unwrap_err().kind(), ErrorKind::WouldBlock);
    std::thread::scope(|s| {
        let h = s.spawn(|| sem.acquire_timeout(LONG).map(|p| p.slot()));
        std::thread::sleep(Duration::from_millis(50));
        a.kill(); // a crashed holder's slot comes back
        assert_eq!(h.join().unwrap().unwrap(), sa);
    });
    b.finish();
}

#[test]
fn semaphore_under_load_never_has_two_holders_of_a_slot() {
    let dir = tmp();
    let witness = tmp();
    let kids: Vec<_> = (0..4)
        .map(|_| {
            Child::spawn(&[
                "permit-load",
                p(dir.path()),
                "load",
                "2",
                "100",
                p(witness.path()),
            ])
        })
        .collect();
    for mut k in kids {
        k.expect("DONE", Duration::from_secs(120));
        k.finish();
    }
    assert_eq!(
        Semaphore::new(dir.path(), "load", 2)
            .unwrap()
            .available()
            .unwrap(),
        2
    );
}
