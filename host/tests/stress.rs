//! Mutual exclusion under load, with real processes and threads: a counter
//! that would lose updates, witnesses that see any overlap, semaphores that
//! must never admit more holders than slots. Each test prints its figures.

mod common;

use std::time::{Duration, Instant};

use common::*;
use wasmlock::Semaphore;

#[test]
#[ignore = "helper: runs only as a child process"]
fn child_entry() {
    child_main();
}

const PROCS: usize = 8;
const THREADS: usize = 4;
const CYCLES: u64 = 2000;
/// Long enough for the slowest run seen on 2 cores, many times over.
const PATIENCE: Duration = Duration::from_secs(600);

fn counter_is_exact(kind: &str) {
    let dir = tmp();
    let path = dir.path().join("counter.lock");
    let counter = dir.path().join("counter");
    let witness = dir.path().join("witness");
    std::fs::write(&counter, "0").unwrap();
    let t = Instant::now();
    let kids: Vec<_> = (0..PROCS)
        .map(|_| {
            Child::spawn(&[
                "counter-threads",
                p(&path),
                p(&counter),
                &THREADS.to_string(),
                &CYCLES.to_string(),
                kind,
                p(&witness),
            ])
        })
        .collect();
    for mut k in kids {
        k.expect("DONE", PATIENCE);
        k.finish();
    }
    let total = PROCS as u64 * THREADS as u64 * CYCLES;
    assert_eq!(read_counter(&counter), total, "{kind} lock lost updates");
    assert!(Witness::new(&witness).is_empty());
    eprintln!(
        "stress: {kind}: {PROCS} processes x {THREADS} threads x {CYCLES} cycles = {total} \
         increments exact, 0 overlaps, {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn the_counter_is_exact_under_os_locks() {
    counter_is_exact("os");
}

#[test]
fn the_counter_is_exact_under_soft_locks() {
    counter_is_exact("soft");
}

#[test]
fn readers_share_writers_are_alone_and_never_starved() {
    let dir = tmp();
    let path = dir.path().join("rw.lock");
    let witness = dir.path().join("witness");
    let stop = dir.path().join("stop");
    let rw = |m: &str, threads: &str, n: &str, hold_us: &str| {
        Child::spawn(&[
            "rw",
            p(&path),
            m,
            threads,
            n,
            hold_us,
            p(&witness),
            p(&stop),
        ])
    };
    // Readers in 4 processes keep the lock shared without a gap: one of
    // them always holds it while another arrives.
    let mut readers: Vec<_> = (0..4).map(|_| rw("sh", "2", "0", "2000")).collect();
    std::thread::sleep(Duration::from_millis(300));
    let writes = 25;
    let mut writers: Vec<_> = (0..3)
        .map(|_| rw("ex", "2", &writes.to_string(), "500"))
        .collect();
    let mut slowest_write = Duration::ZERO;
    for w in &mut writers {
        let done = w.expect("DONE", PATIENCE);
        let (rounds, slowest_us) = done.split_once(' ').unwrap();
        assert_eq!(rounds.parse::<u32>().unwrap(), 2 * writes);
        slowest_write = slowest_write.max(Duration::from_micros(slowest_us.parse().unwrap()));
    }
    std::fs::write(&stop, b"").unwrap();
    let mut reads = 0;
    for r in &mut readers {
        let done = r.expect("DONE", PATIENCE);
        reads += done.split_once(' ').unwrap().0.parse::<u64>().unwrap();
    }
    for c in readers.into_iter().chain(writers) {
        c.finish();
    }
    assert!(reads > 0);
    assert!(Witness::new(&witness).is_empty());
    eprintln!(
        "stress: shared/exclusive: 8 reader threads in 4 processes read {reads} times while \
         6 writer threads in 3 processes wrote {} times; 0 overlaps; the slowest write waited {:?}",
        3 * 2 * writes,
        slowest_write
    );
}

#[test]
fn a_semaphore_never_admits_more_holders_than_slots_and_loses_none() {
    let dir = tmp();
    let witness = tmp();
    let (slots, rounds) = (3, 150);
    let t = Instant::now();
    let kids: Vec<_> = (0..PROCS)
        .map(|_| {
            Child::spawn(&[
                "permit-threads",
                p(dir.path()),
                "load",
                &slots.to_string(),
                &THREADS.to_string(),
                &rounds.to_string(),
                p(witness.path()),
            ])
        })
        .collect();
    for mut k in kids {
        k.expect("DONE", PATIENCE);
        k.finish();
    }
    let sem = Semaphore::new(dir.path(), "load", slots).unwrap();
    assert_eq!(sem.available().unwrap(), slots, "a slot was lost");
    // Every slot can be taken again, and there is not one more.
    let all: Vec<_> = (0..slots).map(|_| sem.try_acquire().unwrap()).collect();
    assert_eq!(
        sem.try_acquire().unwrap_err().kind(),
        wasmlock::ErrorKind::WouldBlock,
        "a slot too many"
    );
    drop(all);
    eprintln!(
        "stress: semaphore: {PROCS} processes x {THREADS} threads x {rounds} permits of {slots} \
         slots, never more than {slots} holders, no slot lost, {:.1} s",
        t.elapsed().as_secs_f64()
    );
}
