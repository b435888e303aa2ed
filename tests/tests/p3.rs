//! The WASI 0.3 world: real `wasmlock:lock@0.3.0` components (the probe3
//! guest) lock, wait, give up and learn of lost holds, and stay inside
//! their grant and limits. (`mixed.rs` has 0.3 and 0.2 guests beside
//! native processes and `flock(1)` on one counter.)

use std::time::Duration;

use wasmlock_tests::{Guest, PROBE3, rt};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_traps_while_holding_frees_the_lock() {
    let dir = tmp();
    let out = probe3(dir.path(), &["trap:/data/t.lock"]).await;
    assert_eq!(out.step("trap:/data/t.lock"), "holding");
    assert!(
        out.result.is_err(),
        "the guest did not trap:\n{}",
        out.stdout
    );
    let lock = wasmlock::FileLock::new(dir.path().join("t.lock")).unwrap();
    let _free = lock.try_lock().unwrap();
}

/// Lost futures count as handles; past the limit the guest traps (the
/// call has no error to return), and nothing it held stays held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_futures_past_the_handle_limit_trap() {
    let dir = tmp();
    let mut guest = Guest::new(PROBE3, dir.path(), &["lostmany:/data/a.lock:7"]);
    guest.locks = guest.locks.max_handles(8);
    let out = rt().run(guest).await.unwrap();
    assert_eq!(out.result, Ok(()), "{}", out.stdout);
    assert_eq!(out.step("lostmany:/data/a.lock:7"), "kept 7");
    let mut guest = Guest::new(PROBE3, dir.path(), &["lostmany:/data/a.lock:8"]);
    guest.locks = guest.locks.max_handles(8);
    let out = rt().run(guest).await.unwrap();
    let trap = out.result.expect_err("no trap past the limit");
    assert!(trap.contains("open-handle limit"), "{trap}");
    let lock = wasmlock::FileLock::new(dir.path().join("a.lock")).unwrap();
    let _free = lock.try_lock().unwrap();
}
