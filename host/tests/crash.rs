//! Crashes and faults: holders, waiters and breakers killed with SIGKILL at
//! any moment, lock files deleted or replaced under their users. Nothing may
//! end up held by nobody, held twice, or left behind.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use wasmlock::{ErrorKind, FileLock};

#[test]
#[ignore = "helper: runs only as a child process"]
fn child_entry() {
    child_main();
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Kills a holder of `kind` while this process waits, and returns how long
/// after the kill the wait ended.
fn takeover_after_kill(dir: &Path, kind: &str) -> Duration {
    let path = dir.join(format!("{kind}.lock"));
    let mut child = Child::spawn(&["hold", p(&path), "ex", kind]);
    child.expect("LOCKED", LONG);
    let lock = open(p(&path), kind);
    assert_eq!(lock.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let g = lock.lock_timeout(LONG).unwrap();
            let at = Instant::now();
            drop(g);
            at
        });
        // Let the waiter settle into its wait.
        std::thread::sleep(Duration::from_millis(50));
        let killed = Instant::now();
        child.kill();
        waiter.join().unwrap().duration_since(killed)
    })
}

#[test]
fn a_killed_holder_frees_an_os_lock_within_100_ms() {
    let dir = tmp();
    let slowest = (0..5)
        .map(|_| takeover_after_kill(dir.path(), "os"))
        .max()
        .unwrap();
    assert!(slowest < Duration::from_millis(100), "took {slowest:?}");
    assert_eq!(names(dir.path()), ["os.lock"], "only the lock file stays");
    eprintln!("crash: 5 holders killed, OS lock taken over after at most {slowest:?}");
}

#[test]
fn a_killed_soft_holder_is_detected_and_taken_over_within_1_s() {
    let dir = tmp();
    let slowest = (0..3)
        .map(|_| takeover_after_kill(dir.path(), "soft"))
        .max()
        .unwrap();
    assert!(slowest < Duration::from_secs(1), "took {slowest:?}");
    assert!(names(dir.path()).is_empty(), "nothing left behind");
    eprintln!("crash: 3 soft holders killed, taken over after at most {slowest:?}");
}

#[test]
fn a_killed_waiter_leaves_nothing_behind() {
    for kind in ["os", "soft"] {
        let dir = tmp();
        let path = dir.path().join("w.lock");
        let lock = open(p(&path), kind);
        let g = lock.lock().unwrap();
        let mut waiters: Vec<_> = (0..3)
            .map(|_| Child::spawn(&["hold", p(&path), "ex", kind]))
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        for w in &mut waiters[..2] {
            w.kill();
        }
        drop(g);
        // The one waiter left gets it, and nobody else holds anything.
        waiters[2].expect("LOCKED", LONG);
        waiters[2].send("release");
        waiters[2].expect("RELEASED", LONG);
        drop(waiters);
        let t = Instant::now();
        drop(lock.try_lock().unwrap());
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{kind}: {:?}",
            t.elapsed()
        );
        let expected: &[&str] = if kind == "os" { &["w.lock"] } else { &[] };
        assert_eq!(names(dir.path()), expected, "{kind}");
    }
}

/// Puts a marker of a dead process (as py-filelock and we write them) at
/// `path`, unless a marker is there: a live holder's is never overwritten.
fn plant_stale_marker(path: &Path, host: &str) {
    let tmp = path.with_extension("planting");
    std::fs::write(&tmp, format!("{}\n{host}\n", dead_pid())).unwrap();
    let _ = std::fs::hard_link(&tmp, path);
    std::fs::remove_file(&tmp).unwrap();
}

#[test]
fn breakers_killed_at_random_moments_lose_and_duplicate_nothing() {
    let dir = tmp();
    let locks = dir.path().join("locks");
    std::fs::create_dir(&locks).unwrap();
    let path = locks.join("churn.lock");
    let witness = dir.path().join("witness");
    let host = our_host(&dir.path().join("probe.lock"));
    plant_stale_marker(&path, &host);
    let spawn = || Child::spawn(&["soft-churn", p(&path), p(&witness), "0"]);
    let mut kids: Vec<_> = (0..4).map(|_| spawn()).collect();
    for k in &mut kids {
        k.expect("STARTED", LONG);
    }
    // A cheap generator is enough to spread the kills.
    let mut seed = std::process::id() as u64 | 1;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let kills = 80;
    for _ in 0..kills {
        std::thread::sleep(Duration::from_micros(next(20_000)));
        let victim = next(kids.len() as u64) as usize;
        if let Some(status) = kids[victim].exited() {
            panic!("a contender failed on its own ({status}); see its ERROR line above");
        }
        kids[victim].kill();
        // Half the time the dead one's marker is left for the others to
        // break; otherwise it is planted anew right away.
        if next(2) == 0 {
            plant_stale_marker(&path, &host);
        }
        kids[victim] = spawn();
    }
    for k in &mut kids {
        assert!(k.exited().is_none(), "a contender failed on its own");
        k.kill();
    }
    // Whatever the kills left — a marker of a dead holder, markers moved
    // aside by dead breakers — the next contender clears it (leftovers once
    // they are older than any live breaker's work).
    std::thread::sleep(Duration::from_millis(2100));
    plant_stale_marker(&path, &host);
    let lock = FileLock::builder(&path).soft().build().unwrap();
    let t = Instant::now();
    let g = lock.lock_timeout(Duration::from_secs(1)).unwrap();
    let took = t.elapsed();
    // Entering fails on any live process still inside; dead ones' entries
    // are what the kills may leave.
    drop(Witness::new(&witness).enter(wasmlock::Mode::Exclusive));
    drop(g);
    assert!(
        names(&locks).is_empty(),
        "no marker is left or duplicated: {:?}",
        names(&locks)
    );
    eprintln!(
        "crash: {kills} soft-lock contenders killed at random moments (holding, breaking, \
         releasing); 0 overlaps; the survivor took over in {took:?}; nothing left behind"
    );
}

#[test]
fn a_breaker_that_dies_mid_break_holds_others_off_only_until_it_dies() {
    let dir = tmp();
    let path = dir.path().join("stale.lock");
    plant_stale_marker(&path, &our_host(&dir.path().join("probe.lock")));
    // A breaker between judging the marker and moving it holds a kernel lock
    // on it; that is where this one dies.
    let mut breaker = Child::spawn(&["hold-turn", p(&path)]);
    breaker.expect("LOCKED", LONG);
    let lock = FileLock::builder(&path).soft().build().unwrap();
    assert_eq!(
        lock.try_lock().unwrap_err().kind(),
        ErrorKind::WouldBlock,
        "a marker another process is breaking is not broken twice"
    );
    assert!(path.exists());
    breaker.kill();
    let t = Instant::now();
    drop(lock.lock_timeout(Duration::from_secs(1)).unwrap());
    eprintln!(
        "crash: breaker killed mid-break; taken over {:?} later",
        t.elapsed()
    );
    assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
}

#[test]
fn markers_dead_breakers_moved_aside_are_cleaned_up() {
    let dir = tmp();
    let path = dir.path().join("x.lock");
    let host = our_host(&dir.path().join("probe.lock"));
    let aside = |breaker: u32, hex: &str| dir.path().join(format!("x.lock.break.{breaker}.{hex}"));
    let (dead, hex) = (dead_pid(), "0f".repeat(16));
    // A dead breaker's leftover: a dead holder's marker.
    let leftover = aside(dead, &hex);
    std::fs::write(&leftover, format!("{}\n{host}\n", dead_pid())).unwrap();
    // Left alone: a live holder's marker that a dead breaker moved (only
    // its holder may remove it), a live breaker's file, look-alikes.
    let live_marker = aside(dead, &"1".repeat(32));
    std::fs::write(&live_marker, format!("{}\n{host}\n", std::process::id())).unwrap();
    let live_breaker = aside(std::process::id(), &"a".repeat(32));
    std::fs::write(&live_breaker, format!("{}\n{host}\n", dead_pid())).unwrap();
    let other = dir.path().join("x.lock.break.notes");
    std::fs::write(&other, b"").unwrap();
    let lock = FileLock::builder(&path).soft().build().unwrap();
    drop(lock.try_lock().unwrap());
    assert!(leftover.exists(), "no break happened, nothing is swept");
    // A breaker that is alive elsewhere is done within far less than this.
    std::thread::sleep(Duration::from_millis(2100));
    plant_stale_marker(&path, &host);
    drop(lock.try_lock().unwrap());
    assert!(!leftover.exists(), "the dead breaker's leftover is gone");
    assert!(live_marker.exists() && live_breaker.exists() && other.exists());
}

/// Processes that bump a counter inside a witness, started while the lock
/// is held, so that they wait on the file that is about to go.
#[cfg(unix)]
fn no_split_after(replace: impl FnOnce(&Path)) {
    let dir = tmp();
    let path = dir.path().join("r.lock");
    let counter = dir.path().join("counter");
    let witness = dir.path().join("witness");
    std::fs::write(&counter, "0").unwrap();
    let mut holder = Child::spawn(&["hold", p(&path), "ex", "os"]);
    holder.expect("LOCKED", LONG);
    let rounds = 200;
    let contender = || {
        Child::spawn(&[
            "counter-threads",
            p(&path),
            p(&counter),
            "2",
            &rounds.to_string(),
            "os",
            p(&witness),
        ])
    };
    let mut early: Vec<_> = (0..2).map(|_| contender()).collect();
    std::thread::sleep(Duration::from_millis(300));
    replace(&path);
    let mut late = contender();
    holder.send("release");
    holder.expect("RELEASED", LONG);
    for k in early.iter_mut().chain([&mut late]) {
        k.expect("DONE", Duration::from_secs(120));
    }
    assert_eq!(read_counter(&counter), 3 * 2 * rounds, "the lock split");
    for k in early.into_iter().chain([late, holder]) {
        k.finish();
    }
}

// Unix: Windows refuses to delete, replace or rename a lock file that
// someone has open, so the case cannot arise there.
#[cfg(unix)]
#[test]
fn an_unlinked_lock_file_does_not_split_the_next_acquirers() {
    no_split_after(|path| std::fs::remove_file(path).unwrap());
}

// Unix: Windows refuses to delete, replace or rename a lock file that
// someone has open, so the case cannot arise there.
#[cfg(unix)]
#[test]
fn a_replaced_lock_file_does_not_split_the_next_acquirers() {
    no_split_after(|path| {
        let fresh = path.with_extension("new");
        std::fs::write(&fresh, b"").unwrap();
        std::fs::rename(&fresh, path).unwrap();
    });
}

// Unix: Windows refuses to delete, replace or rename a lock file that
// someone has open, so the case cannot arise there.
#[cfg(unix)]
#[test]
fn a_lock_file_renamed_away_is_noticed_on_the_next_acquisition() {
    let dir = tmp();
    let path = dir.path().join("moved.lock");
    let lock = FileLock::new(&path).unwrap();
    drop(lock.lock().unwrap());
    // Old enough that its change time is trusted, and checked once more.
    std::thread::sleep(Duration::from_millis(150));
    drop(lock.lock().unwrap());
    // Renamed away (the old file keeps its one link), and a newcomer locks
    // the new file at the path.
    std::fs::rename(&path, dir.path().join("moved.old")).unwrap();
    let mut newcomer = Child::spawn(&["hold", p(&path), "ex", "os"]);
    newcomer.expect("LOCKED", LONG);
    assert_eq!(
        lock.try_lock().unwrap_err().kind(),
        ErrorKind::WouldBlock,
        "the old handle locked the file that moved away"
    );
    newcomer.send("release");
    newcomer.expect("RELEASED", LONG);
    drop(lock.try_lock().unwrap());
}
