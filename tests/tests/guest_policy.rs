//! Interface 0.2.0 with real guest components: what a hostile guest must not
//! be able to do, holds that end without a release (and say so), named locks
//! in granted namespaces, and guards that belong to guards, not stores.

use std::path::Path;
use std::time::Duration;

use wasmlock::{FileLock, Kind, Namespace, WasmLockCtx};
use wasmlock_tests::{
    Guest, PROBE, Script, flock_1_holding, free, rt, spawn_script, steps, until_exists,
};

/// Runs `script` in the probe with the host's limits set by `locks`.
async fn with_ctx(dir: &Path, locks: wasmlock::WasmLockCtxBuilder, script: &Script<'_>) {
    let mut guest = Guest::new(PROBE, dir, &steps(script));
    guest.locks = locks;
    let out = rt().run(guest).await.unwrap();
    assert_eq!(out.result, Ok(()), "{}", out.stdout);
    out.check(script);
}

/// Every file and directory under `dir` but the probe's own bookkeeping.
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            found.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    found.sort();
    found
}

/// A guest asking for four billion semaphore slots (each a lock file and an
/// open file) is refused before one file is made, through a directory and
/// through a namespace alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_semaphores_are_refused_before_any_file_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let ns = tempfile::tempdir().unwrap();
    let ctx = WasmLockCtx::builder()
        .max_semaphore_slots(8)
        .namespace("pool", Namespace::directory(ns.path()).unwrap());
    with_ctx(
        dir.path(),
        ctx,
        &[
            ("sem:s:/data:big:4000000000", "err Quota"),
            ("sem:s:/data/deep:big:9", "err Quota"),
            ("nssem:n:pool:big:4000000000", "err Quota"),
            ("sem:s:/data:small:8", "ok"),
            ("permit:s:try", "slot 0"),
        ],
    )
    .await;
    // Slot files are made when a semaphore opens.
    let small: Vec<_> = (0..8).map(|n| format!("small.{n:02}.lock")).collect();
    assert_eq!(tree(dir.path()), small);
    assert!(tree(ns.path()).is_empty());
}

/// Limits are checked before the file system is touched: a guest at its
/// handle quota creates no lock file and no directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_over_its_quota_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    with_ctx(
        dir.path(),
        WasmLockCtx::builder().max_handles(1),
        &[
            ("open:a:/data/a.lock:os", "ok"),
            ("open:b:/data/new/dirs/b.lock:os", "err Quota"),
            ("open:c:/data/c.lock:soft", "err Quota"),
            ("sem:s:/data/semdir:s:2", "err Quota"),
            ("onfile:f:/data/a.lock", "err Quota"),
        ],
    )
    .await;
    assert_eq!(tree(dir.path()), ["a.lock"]);
}

/// Lost pollables cost the host memory, so they count as handles; the call
/// has no error to return, so past the limit the guest traps, and nothing
/// it held stays held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_pollables_past_the_handle_limit_trap() {
    let dir = tempfile::tempdir().unwrap();
    let within = &[
        ("open:a:/data/a.lock:os", "ok"),
        ("acq:a:ex:try", "ok"),
        ("lostmany:a:7", "kept 7"),
    ];
    with_ctx(dir.path(), WasmLockCtx::builder().max_handles(8), within).await;
    let past = [
        ("open:a:/data/a.lock:os", "ok"),
        ("acq:a:ex:try", "ok"),
        ("lostmany:a:8", "never"),
    ];
    let mut guest = Guest::new(PROBE, dir.path(), &steps(&past));
    guest.locks = WasmLockCtx::builder().max_handles(8);
    let out = rt().run(guest).await.unwrap();
    let trap = out.result.expect_err("no trap past the limit");
    assert!(trap.contains("open-handle limit"), "{trap}");
    assert!(!out.stdout.contains("lostmany:a:8 =>"), "{}", out.stdout);
    assert!(
        free(&dir.path().join("a.lock")),
        "the trapped guest's hold stayed"
    );
}

/// Policy refusals: a kind the host forbids (also for `on-file`, which is an
/// OS lock), and breaking: stale breaking and forced breaking are separate
/// permissions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_and_breaking_follow_the_hosts_policy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.bin"), "x").unwrap();
    with_ctx(
        dir.path(),
        WasmLockCtx::builder().allow_kind(Kind::Os, false),
        &[
            ("open:a:/data/a.lock:os", "err NotPermitted"),
            ("onfile:f:/data/data.bin", "err NotPermitted"),
            ("sem:s:/data:s:1", "err NotPermitted"),
            ("open:b:/data/b.lock:soft", "ok"),
        ],
    )
    .await;
    assert!(!dir.path().join("a.lock").exists());

    // A live holder's soft lock (this process), a guest allowed to break
    // stale locks only: refused; allowed to force: broken.
    let soft = FileLock::builder(dir.path().join("live.lock"))
        .soft()
        .build()
        .unwrap();
    let held = soft.lock().unwrap();
    with_ctx(
        dir.path(),
        WasmLockCtx::builder().allow_break(true),
        &[
            ("open:l:/data/live.lock:soft", "ok"),
            ("break:l:noforce", "err WouldBlock"),
            ("break:l:force", "err NotPermitted"),
        ],
    )
    .await;
    assert!(!held.is_lost());
    with_ctx(
        dir.path(),
        WasmLockCtx::builder().allow_force_break(true),
        &[
            ("open:l:/data/live.lock:soft", "ok"),
            ("break:l:noforce", "err NotPermitted"),
            ("break:l:force", "ok"),
        ],
    )
    .await;
    assert!(held.is_lost(), "the forced break took the live lock");
}

/// By default a guest learns only where the holder is; the embedder can
/// reveal the pid too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_are_private_unless_the_host_reveals_them() {
    let dir = tempfile::tempdir().unwrap();
    let soft = FileLock::builder(dir.path().join("h.lock"))
        .soft()
        .build()
        .unwrap();
    let _held = soft.lock().unwrap();
    let pid = format!("ThisHost pid {}", std::process::id());
    with_ctx(
        dir.path(),
        WasmLockCtx::builder(),
        &[
            ("open:h:/data/h.lock:soft", "ok"),
            ("holder:h", "ThisHost pid ?"),
        ],
    )
    .await;
    with_ctx(
        dir.path(),
        WasmLockCtx::builder().reveal_holders(true),
        &[("open:h:/data/h.lock:soft", "ok"), ("holder:h", &pid)],
    )
    .await;

    // Another process: `elsewhere`, and its pid only when revealed.
    let path = dir.path().join("f.lock");
    let mut child = flock_1_holding(&path).await;
    with_ctx(
        dir.path(),
        WasmLockCtx::builder(),
        &[
            ("open:f:/data/f.lock:os", "ok"),
            ("holder:f", "Elsewhere pid ?"),
        ],
    )
    .await;
    let mut guest = Guest::new(PROBE, dir.path(), &["open:f:/data/f.lock:os", "holder:f"]);
    guest.locks = WasmLockCtx::builder().reveal_holders(true);
    let out = rt().run(guest).await.unwrap();
    let seen = out.step("holder:f");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        seen.starts_with("Elsewhere pid ") && !seen.ends_with('?'),
        "revealed: {seen}"
    );
}

/// The host's maximum hold time ends a guard's hold: the lock is free, the
/// guard's lost pollable fires and its status says lost; releasing it then
/// reports `lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_past_the_hosts_maximum_is_lost_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.lock");
    const HOLD: &Script<'_> = &[
        ("open:m:/data/m.lock:os", "ok"),
        ("acq:m:ex:forever", "ok"),
        ("lost:m", "held"),
        ("waitlost:m:10000", "lost"),
        ("lost:m", "lost"),
        ("touch:/data/lost", "ok"),
        ("await:/data/checked", "ok"),
        ("rel:m", "err Lost"),
        ("acq:m:ex:try", "ok"),
    ];
    let guest = spawn_script(
        dir.path(),
        HOLD,
        WasmLockCtx::builder().max_hold(Duration::from_millis(200)),
    );
    until_exists(&dir.path().join("lost")).await;
    assert!(free(&path), "the host released the lock it ended");
    std::fs::write(dir.path().join("checked"), "").unwrap();
    guest.await.unwrap().check(HOLD);
}

/// A lock granted to a pending acquisition the guest never collects is
/// released after the maximum hold time — while the guest does not poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncollected_grant_is_released_after_the_maximum_hold() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.lock");
    let native = FileLock::new(&path).unwrap();
    let held = native.lock().unwrap();
    const UNCOLLECTED: &Script<'_> = &[
        ("open:u:/data/u.lock:os", "ok"),
        ("start:u:ex", "ok"),
        ("touch:/data/started", "ok"),
        ("await:/data/expired", "ok"),
        ("finish:u", "err Lost"),
    ];
    let guest = spawn_script(
        dir.path(),
        UNCOLLECTED,
        WasmLockCtx::builder().max_hold(Duration::from_millis(300)),
    );
    until_exists(&dir.path().join("started")).await;
    drop(held); // granted to the pending acquisition; the guest is asleep
    let mut waited = Duration::ZERO;
    while !free(&path) {
        assert!(
            waited < Duration::from_secs(10),
            "the grant was never given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    std::fs::write(dir.path().join("expired"), "").unwrap();
    guest.await.unwrap().check(UNCOLLECTED);
}

/// A soft marker removed under a guest's guard (someone broke it): the
/// lost pollable fires and the status says so, without any other call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_soft_marker_is_reported_lost() {
    let dir = tempfile::tempdir().unwrap();
    const SOFT: &Script<'_> = &[
        ("open:s:/data/s.lock:soft", "ok"),
        ("acq:s:ex:forever", "ok"),
        ("touch:/data/held", "ok"),
        ("waitlost:s:10000", "lost"),
        ("lost:s", "lost"),
        ("rel:s", "err Lost"),
    ];
    let guest = spawn_script(dir.path(), SOFT, WasmLockCtx::builder());
    until_exists(&dir.path().join("held")).await;
    std::fs::remove_file(dir.path().join("s.lock")).unwrap();
    let out = guest.await.unwrap();
    assert_eq!(out.result, Ok(()), "{}", out.stdout);
    out.check(SOFT);
}

/// Named locks in a granted namespace: listed like preopens, keys mapped to
/// lock files in a directory the guest has no preopen for, excluding native
/// holders of the same file; hostile keys stay inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_map_keys_to_locks_the_guest_cannot_otherwise_reach() {
    let data = tempfile::tempdir().unwrap();
    let ns = tempfile::tempdir().unwrap();
    let native = FileLock::new(ns.path().join("job-1.lock")).unwrap();
    let held = native.lock().unwrap();
    let ctx = WasmLockCtx::builder()
        .namespace("jobs", Namespace::directory(ns.path()).unwrap())
        .namespace(
            "soft",
            Namespace::directory(ns.path()).unwrap().kind(Kind::Soft),
        );
    with_ctx(
        data.path(),
        ctx,
        &[
            ("nslist", "jobs,soft"),
            ("ns:a:jobs:job-1", "ok"),
            ("acq:a:ex:try", "err WouldBlock"),
            ("ns:b:jobs:../../etc/passwd", "ok"),
            ("acq:b:ex:try", "ok"),
            ("ns:c:jobs:", "err InvalidPath"),
            ("ns:d:nope:x", "err Access"),
            ("ns:e:soft:m", "ok"),
            ("acq:e:sh:try", "err Unsupported"),
            ("acq:e:ex:try", "ok"),
            ("nssem:p:jobs:pool:2", "ok"),
            ("permit:p:try", "slot 0"),
        ],
    )
    .await;
    drop(held);
    let made = tree(ns.path());
    assert_eq!(
        made,
        [
            "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd.lock",
            "job-1.lock",
            "pool.00.lock",
            "pool.01.lock"
        ],
        "nothing but escaped keys, and soft markers gone with their guards"
    );
    assert!(tree(data.path()).is_empty());
}

/// Two components in one store (one guest context: one party for deadlock
/// detection) hold through guards, not through the store: the first leaves
/// its guard in the store, the second is kept out — and waiting forever for
/// a lock its own store holds, which the store could never release while it
/// waits, is a deadlock, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_components_in_one_store_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let script: &Script<'_> = &[
        ("open:a:/data/one.lock:os", "ok"),
        ("acq:a:ex:forever", "ok"),
        ("leak:a", "ok"),
        ("--then", ""),
        ("open:b:/data/one.lock:os", "ok"),
        ("acq:b:ex:try", "err WouldBlock"),
        ("acq:b:sh:50", "err Timeout"),
        ("acq:b:ex:forever", "err Deadlock"),
        ("holder:b", "ThisGuest pid ?"),
    ];
    let mut guest = Guest::new(PROBE, dir.path(), &steps(script));
    guest.instances = 2;
    let out = rt().run(guest).await.unwrap();
    assert_eq!(out.result, Ok(()), "{}", out.stdout);
    out.check(
        &script
            .iter()
            .copied()
            .filter(|(s, _)| *s != "--then")
            .collect::<Vec<_>>(),
    );
    assert!(
        free(&dir.path().join("one.lock")),
        "the store took the guard with it"
    );
}

/// A forever wait the host caps is still judged as forever: a guest waiting
/// for its own hold gets `deadlock` at once, not `timeout` after the cap.
/// And what fails at once fails in `start-acquire`, not later in `get`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlock_is_found_under_the_wait_cap_and_start_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    with_ctx(
        dir.path(),
        WasmLockCtx::builder().max_wait(Duration::from_secs(30)),
        &[
            ("open:a:/data/d.lock:os", "ok"),
            ("open:b:/data/d.lock:os", "ok"),
            ("acq:a:ex:forever", "ok"),
            ("acq:b:ex:forever", "err Deadlock"),
            ("acq:b:ex:100", "err Timeout"),
            ("open:s:/data/s.lock:soft", "ok"),
            ("start:s:sh", "err Unsupported"),
            ("start:s:ex", "ok"),
            ("finish:s", "ok"),
        ],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the capped forever wait was waited out instead of refused"
    );
}

/// A guest blocked in `acquire(forever)` behind its own pending acquisition:
/// when that is granted, the blocked call can never be (the guest cannot
/// take or drop the grant while it waits), so it fails as a deadlock at the
/// grant instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_wait_behind_the_guests_own_pending_grant_is_a_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let native = FileLock::new(dir.path().join("b.lock")).unwrap();
    let held = native.lock().unwrap();
    const BEHIND: &Script<'_> = &[
        ("open:a:/data/b.lock:os", "ok"),
        ("start:a:ex", "ok"),
        ("touch:/data/queued", "ok"),
        ("acq:a:ex:forever", "err Deadlock"),
        // Granted: it completes on the host's task, which may not have run.
        ("poll:a:10000", "ready"),
        ("finish:a", "ok"),
        ("rel:a", "ok"),
    ];
    let guest = spawn_script(dir.path(), BEHIND, WasmLockCtx::builder());
    until_exists(&dir.path().join("queued")).await;
    // Long enough for the blocking call to queue behind the pending one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(held);
    let out = tokio::time::timeout(Duration::from_secs(30), guest)
        .await
        .expect("the blocked guest hung")
        .unwrap();
    out.check(BEHIND);
    assert!(free(&dir.path().join("b.lock")));
}

/// Permits are holds too: a guest waiting forever for a permit of a
/// semaphore whose every slot it holds itself (through any handle) gets
/// `deadlock`; while someone else holds a slot, the same wait is just a
/// wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_permit_while_holding_every_slot_is_a_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    with_ctx(
        dir.path(),
        WasmLockCtx::builder().max_wait(Duration::from_secs(30)),
        &[
            ("sem:s:/data:pool:2", "ok"),
            ("permit:s:forever", "slot 0"),
            ("permit:s:forever", "slot 1"),
            ("permit:s:forever", "err Deadlock"),
            ("sem:t:/data:pool:2", "ok"),
            ("permit:t:forever", "err Deadlock"),
            ("permit:t:try", "err WouldBlock"),
        ],
    )
    .await;
    let sem = wasmlock::Semaphore::new(dir.path(), "pool", 2).unwrap();
    let native = sem.acquire().unwrap();
    const SHARED: &Script<'_> = &[
        ("sem:s:/data:pool:2", "ok"),
        ("permit:s:forever", "slot 1"),
        ("touch:/data/waiting", "ok"),
        ("permit:s:forever", "slot 0"),
    ];
    let guest = spawn_script(dir.path(), SHARED, WasmLockCtx::builder());
    until_exists(&dir.path().join("waiting")).await;
    // The guest waits behind the native permit, not refused.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !guest.is_finished(),
        "the wait ended while the slot was held"
    );
    drop(native);
    let out = guest.await.unwrap();
    assert_eq!(out.result, Ok(()), "{}", out.stdout);
    out.check(SHARED);
}
