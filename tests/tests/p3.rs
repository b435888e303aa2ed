//! The WASI 0.3 world: real `wasmlock:lock@0.3.0` components (the probe3
//! guest) lock, wait, give up and learn of lost holds, beside 0.2 guests,
//! native threads and `flock(1)`.

use std::time::Duration;

use wasmlock_tests::{Guest, PROBE, PROBE3, read_counter, rt};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

async fn probe3(dir: &std::path::Path, steps: &[&str]) -> wasmlock_tests::Outcome {
    rt().run(Guest::new(PROBE3, dir, steps)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tasks_of_one_guest_never_hold_at_once() {
    let dir = tmp();
    let out = probe3(dir.path(), &["pair:/data/pair.lock:50"]).await;
    assert_eq!(out.result, Ok(()), "{}", out.stdout);
    assert_eq!(out.step("pair:/data/pair.lock:50"), "ok");
    assert_eq!(out.held_at_end, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_wait_gives_up_and_leaves_the_lock_free() {
    let dir = tmp();
    let step = "givesup:/data/g.lock:100";
    let out = probe3(dir.path(), &[step, "timeout:/data/free.lock:10"]).await;
    assert_eq!(out.result, Ok(()), "{}", out.stdout);
    assert_eq!(out.step(step), "timeout then ok");
    assert_eq!(out.step("timeout:/data/free.lock:10"), "ok");
    assert_eq!(out.held_at_end, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_that_races_a_grant_leaks_nothing() {
    let dir = tmp();
    let step = "race:/data/r.lock:200";
    let out = probe3(dir.path(), &[step]).await;
    assert_eq!(out.result, Ok(()), "{}", out.stdout);
    let result = out.step(step);
    assert!(result.starts_with("ok "), "{result}");
    eprintln!("race: {result}");
    assert_eq!(out.held_at_end, 0);
    // Nothing of the guest's is held once it is gone.
    let lock = wasmlock::FileLock::new(dir.path().join("r.lock")).unwrap();
    let _free = lock.try_lock().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lost_future_fires_when_the_host_ends_a_hold() {
    let dir = tmp();
    let mut guest = Guest::new(PROBE3, dir.path(), &["lost:/data/l.lock"]);
    guest.locks = guest.locks.max_hold(Duration::from_millis(200));
    let out = rt().run(guest).await.unwrap();
    assert_eq!(out.result, Ok(()), "{}", out.stdout);
    assert_eq!(out.step("lost:/data/l.lock"), "lost true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_of_both_worlds_native_threads_and_flock_keep_a_counter_exact() {
    let dir = tmp();
    let counter = dir.path().join("counter");
    let lock = dir.path().join("c.lock");
    let n = 100;
    std::fs::write(&counter, "0\n").unwrap();
    let p3_step = format!("counter:/data/c.lock:/data/counter:{n}");
    let p2_steps = [
        "open:c:/data/c.lock:os".to_owned(),
        format!("counter:c:/data/counter:{n}"),
    ];
    let p2_steps: Vec<&str> = p2_steps.iter().map(String::as_str).collect();
    let flock = wasmlock_tests::shell_loop(&["flock"], lock.to_str().unwrap(), &counter, n as u32);
    let native = {
        let (lock, counter) = (lock.clone(), counter.clone());
        std::thread::spawn(move || {
            let lock = wasmlock::FileLock::new(&lock).unwrap();
            for _ in 0..n {
                let _g = lock.lock().unwrap();
                wasmlock_tests::bump(&counter).unwrap();
            }
        })
    };
    let p3_steps = [p3_step.as_str()];
    let (a, b, c) = tokio::join!(
        probe3(dir.path(), &p3_steps),
        probe3(dir.path(), &p3_steps),
        rt().run(Guest::new(PROBE, dir.path(), &p2_steps)),
    );
    let c = c.unwrap();
    for out in [&a, &b, &c] {
        assert_eq!(out.result, Ok(()), "{}", out.stdout);
    }
    native.join().unwrap();
    let mut flock = flock;
    assert!(flock.wait().unwrap().success());
    assert_eq!(read_counter(&counter), 5 * n as u32);
}

/// The sandbox and the limits hold for 0.3 guests as for 0.2 ones: they
/// are checked in the steps both worlds share, before any file is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_0_3_guest_stays_inside_its_grant_and_limits() {
    let dir = tmp();
    let escapes = [
        "open:/data/../outside.lock",
        "open:/data/sub/../../outside.lock",
        "open:/etc/passwd",
    ];
    let out = probe3(dir.path(), &escapes).await;
    assert_eq!(out.result, Ok(()), "{}", out.stdout);
    for step in escapes {
        assert!(
            out.step(step).starts_with("err Access"),
            "{step}: {}",
            out.step(step)
        );
    }
    assert!(!dir.path().parent().unwrap().join("outside.lock").exists());
    let mut guest = Guest::new(
        PROBE3,
        dir.path(),
        &["guards:/data/h:5", "guards:/data/g:50"],
    );
    guest.locks = guest.locks.max_held_locks(3).max_handles(8);
    let out = rt().run(guest).await.unwrap();
    assert_eq!(out.result, Ok(()), "{}", out.stdout);
    assert_eq!(out.step("guards:/data/h:5"), "lock 3: err Quota");
    // The first script's handles and guards went with its locks.
    assert_eq!(out.step("guards:/data/g:50"), "lock 3: err Quota");
    assert_eq!(out.held_at_end, 0);
    let mut guest = Guest::new(PROBE3, dir.path(), &["guards:/data/k:50"]);
    guest.locks = guest.locks.max_handles(4);
    let out = rt().run(guest).await.unwrap();
    assert_eq!(out.step("guards:/data/k:50"), "open 4: err Quota");
    // Nothing was created past the limit.
    assert!(!dir.path().join("k/4.lock").exists());
}
