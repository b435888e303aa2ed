//! Real guest components through the `wasmlock:lock` interface, in one host
//! process, against native locks, `flock(1)` and each other.

use std::sync::Arc;
use std::time::Duration;

use wasmlock::{FileLock, Kind};
use wasmlock_tests::{
    Guest, PROBE, Script, flock_1_holding, free, probe, rt, script, steps, until_exists,
};
use wasmtime_wasi::FsPerms;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_are_holds_errors_and_deadlock_through_wit() {
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        &[
            ("open:a:/data/x.lock:os", "ok"),
            ("open:b:/data/x.lock:os", "ok"),
            ("acq:a:ex:forever", "ok"),
            // Not re-entrant: a second guard of this guest, on the same
            // handle or another, is a second hold and is kept out.
            ("acq:a:ex:try", "err WouldBlock"),
            ("acq:b:ex:try", "err WouldBlock"),
            ("acq:b:ex:50", "err Timeout"),
            // Waiting forever for its own hold would never end.
            ("acq:a:ex:forever", "err Deadlock"),
            ("acq:b:sh:forever", "err Deadlock"),
            ("locked:b", "true"),
            ("holder:b", "ThisGuest pid ?"),
            ("lost:a", "held"),
            ("rel:a", "ok"),
            ("count:a", "0"),
            ("locked:b", "false"),
            ("acq:a:sh:try", "ok"),
            ("acq:b:sh:try", "ok"),             // shared with shared
            ("acq:a:ex:try", "err WouldBlock"), // no upgrade in place
            ("rel:b", "ok"),
            ("rel:a", "ok"),
        ],
    )
    .await;
    assert!(free(&dir.path().join("x.lock")));
}

/// A pending acquisition behind a guard of the same guest is no deadlock:
/// the guest goes on and releases, and the pending one is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_acquisition_behind_the_guests_own_guard_is_granted_on_release() {
    let dir = tempfile::tempdir().unwrap();
    let out = script(
        dir.path(),
        &[
            ("open:a:/data/y.lock:os", "ok"),
            ("acq:a:ex:try", "ok"),
            ("start:a:ex", "ok"),
            ("finish:a", "err WouldBlock"), // still pending, and still queued
            ("poll:a:50", "timeout"),
            ("rel:a", "ok"),
            ("poll:a:5000", "ready"),
            ("finish:a", "ok"),
            ("count:a", "1"),
            ("finish:a", "err Other"), // the outcome is handed out once
            ("count:a", "1"),
            ("leak:a", "ok"),
        ],
    )
    .await;
    assert_eq!(out.held_at_end, 1, "one guard in the host's books, not two");
    assert!(free(&dir.path().join("y.lock")));
}

/// The pollable of a pending acquisition may be kept past `get` and past
/// the future itself (wasi-http's pattern): no "resource has children" trap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_pollable_outlives_its_pending_acquisition() {
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        &[
            ("open:a:/data/k.lock:os", "ok"),
            ("start:a:ex", "ok"),
            ("keep:a", "ok"),
            ("finish:a", "ok"),
            ("unpend:a", "ok"),
            ("rel:a", "ok"),
            ("start:a:sh", "ok"),
            ("keep:a", "ok"),
            ("unpend:a", "ok"), // dropped before it was taken
            ("acq:a:ex:try", "ok"),
        ],
    )
    .await;
    assert!(free(&dir.path().join("k.lock")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_permits_are_guards_through_wit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    script(
        dir.path(),
        &[
            ("sem:s:/data:pool:2", "ok"),
            ("permit:s:try", "slot 0"),
            ("permit:s:try", "slot 1"),
            ("permit:s:try", "err WouldBlock"),
            ("semstart:s", "ok"),
            ("finish:s", "err WouldBlock"),
            ("droppermits", "ok"),
            ("poll:s:5000", "ready"),
            ("finish:s", "ok slot 0"),
            ("permit:s:try", "slot 1"),
            // Below a preopen: the guest sends `sub/pool`.
            ("sem:t:/data/sub:pool:1", "ok"),
            ("permit:t:try", "slot 0"),
        ],
    )
    .await;
    assert!(dir.path().join("pool.01.lock").exists());
    assert!(dir.path().join("sub/pool.00.lock").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_guests_in_one_host_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("counter"), "0").unwrap();
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let d = dir.path().to_path_buf();
            tokio::spawn(async move {
                probe(
                    &d,
                    &[
                        "open:c:/data/counter.lock:os",
                        "counter:c:/data/counter:150",
                    ],
                )
                .await
            })
        })
        .collect();
    for r in runs {
        let out = r.await.unwrap();
        assert_eq!(out.result, Ok(()), "{}", out.stdout);
    }
    let total = std::fs::read_to_string(dir.path().join("counter")).unwrap();
    assert_eq!(total.trim(), "1200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_guest_does_not_block_other_guests() {
    let dir = tempfile::tempdir().unwrap();
    let native = FileLock::new(dir.path().join("w.lock")).unwrap();
    let g = native.lock().unwrap();
    // Four guests wait on the lock while another guest runs to completion.
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let d = dir.path().to_path_buf();
            tokio::spawn(
                async move { probe(&d, &["open:w:/data/w.lock:os", "acq:w:ex:forever"]).await },
            )
        })
        .collect();
    let other = probe(dir.path(), &["open:o:/data/other.lock:os", "acq:o:ex:try"]).await;
    assert_eq!(other.results(), ["ok", "ok"]);
    drop(g);
    for w in waiters {
        assert_eq!(w.await.unwrap().results(), ["ok", "ok"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_and_native_locks_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [Kind::Os, Kind::Soft] {
        let k = if kind == Kind::Os { "os" } else { "soft" };
        // An OS lock file stays after release, and an existing empty file is a
        // live soft marker: one path per kind.
        let path = dir.path().join(format!("n-{k}.lock"));
        let native = FileLock::builder(&path).kind(kind).build().unwrap();
        let g = native.lock().unwrap();
        let open = format!("open:n:/data/n-{k}.lock:{k}");
        let pid = "ThisHost pid ?".to_owned();
        script(
            dir.path(),
            &[
                (&open, "ok"),
                ("acq:n:ex:try", "err WouldBlock"),
                ("holder:n", &pid),
            ],
        )
        .await;
        drop(g);

        // The guest holds; the native handle is kept out until it finishes.
        let d = dir.path().to_path_buf();
        let open = format!("open:n:/data/n-{k}.lock:{k}");
        let guest = tokio::spawn(async move {
            probe(
                &d,
                &[
                    &open,
                    "acq:n:ex:forever",
                    "touch:/data/held",
                    "await:/data/go",
                ],
            )
            .await
        });
        until_exists(&dir.path().join("held")).await;
        assert!(
            native.try_lock().is_err(),
            "{k}: the guest's lock is respected"
        );
        std::fs::write(dir.path().join("go"), "").unwrap();
        guest.await.unwrap();
        drop(
            native
                .try_lock()
                .expect("free once the guest's store is gone"),
        );
        std::fs::remove_file(dir.path().join("held")).unwrap();
        std::fs::remove_file(dir.path().join("go")).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flock_1_excludes_a_guest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.lock");
    let mut child = flock_1_holding(&path).await;
    script(
        dir.path(),
        &[
            ("open:f:/data/f.lock:os", "ok"),
            ("acq:f:ex:try", "err WouldBlock"),
            ("acq:f:sh:50", "err Timeout"),
        ],
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pollable_wakes_on_release_and_races_a_timer() {
    let dir = tempfile::tempdir().unwrap();
    let native = Arc::new(FileLock::new(dir.path().join("p.lock")).unwrap());
    let g = native.lock().unwrap();
    let d = dir.path().to_path_buf();
    const POLLING: &Script<'_> = &[
        ("open:p:/data/p.lock:os", "ok"),
        ("start:p:ex", "ok"),
        ("poll:p:100", "timeout"), // the timer won while the lock was held
        ("touch:/data/polling", "ok"),
        ("poll:p:10000", "ready"), // the release woke the pollable
        ("finish:p", "ok"),
        ("touch:/data/holding", "ok"),
        ("await:/data/done", "ok"),
    ];
    let guest = tokio::spawn(async move { probe(&d, &steps(POLLING)).await });
    until_exists(&dir.path().join("polling")).await;
    drop(g);
    until_exists(&dir.path().join("holding")).await;
    assert!(
        native.try_lock().is_err(),
        "the guest holds it after finish"
    );
    std::fs::write(dir.path().join("done"), "").unwrap();
    guest.await.unwrap().check(POLLING);
    assert!(native.try_lock().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_pending_acquisition_leaves_nothing_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.lock");
    let native = FileLock::new(&path).unwrap();
    let g = native.lock().unwrap();
    let d = dir.path().to_path_buf();
    let guest = tokio::spawn(async move {
        probe(
            &d,
            &[
                "open:p:/data/d.lock:os",
                "start:p:ex",
                "touch:/data/started",
                "await:/data/released",
                "unpend:p",
                "touch:/data/dropped",
                "await:/data/end",
            ],
        )
        .await
    });
    until_exists(&dir.path().join("started")).await;
    drop(g); // granted to the guest's pending acquisition, never finished
    std::fs::write(dir.path().join("released"), "").unwrap();
    until_exists(&dir.path().join("dropped")).await;
    assert!(free(&path), "dropping the pending handed the lock on");
    std::fs::write(dir.path().join("end"), "").unwrap();
    guest.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_or_an_interrupt_releases_what_the_guest_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.lock");
    let out = probe(
        dir.path(),
        &["open:t:/data/t.lock:os", "acq:t:ex:forever", "trap"],
    )
    .await;
    assert!(out.result.is_err(), "the guest trapped");
    assert!(free(&path));

    // Spinning forever while holding: stopped by epoch interruption.
    let soft_path = dir.path().join("t-soft.lock");
    let mut guest = Guest::new(
        PROBE,
        dir.path(),
        &["open:t:/data/t-soft.lock:soft", "acq:t:ex:forever", "spin"],
    );
    guest.epoch_deadline = Some(1);
    let ticker = tokio::spawn(async {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            rt().tick();
        }
    });
    let out = rt().run(guest).await.unwrap();
    ticker.abort();
    assert!(out.result.is_err());
    assert!(!soft_path.exists(), "the soft marker went with the store");
    let soft = FileLock::builder(&soft_path).soft().build().unwrap();
    drop(
        soft.try_lock()
            .expect("the soft marker went with the store"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_dropped_mid_wait_leaves_no_waiter_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.lock");
    let native = FileLock::new(&path).unwrap();
    let g = native.lock().unwrap();
    let run = probe(dir.path(), &["open:m:/data/m.lock:os", "acq:m:ex:forever"]);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), run)
            .await
            .is_err()
    );
    drop(g);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(free(&path), "the abandoned wait did not take the lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_holds() {
    let outer = tempfile::tempdir().unwrap();
    let data = outer.path().join("data");
    std::fs::create_dir_all(data.join("in")).unwrap();
    std::fs::create_dir(outer.path().join("outside")).unwrap();
    std::os::unix::fs::symlink(outer.path().join("outside"), data.join("out")).unwrap();
    std::os::unix::fs::symlink("/etc", data.join("etc")).unwrap();
    let out = script(
        &data,
        &[
            ("open:a:/data/../escape.lock:os", "err Access"),
            ("open:b:/data/in/../../escape.lock:os", "err Access"),
            ("open:c:/data/out/x.lock:os", "err Access"),
            ("open:d:/data/etc/x.lock:soft", "err Access"),
            ("open:e:/etc/passwd:os", "err Access"),
            ("open:f:/data/in/ok.lock:os", "ok"),
            ("acq:f:ex:try", "ok"),
            ("open:g:/data/in:os", "err InvalidPath"), // a directory
            ("open:h:/data/etc:os", "err InvalidPath"), // a link out, as the file
        ],
    )
    .await;
    let r = out.results();
    assert_eq!(
        std::fs::read_dir(outer.path().join("outside"))
            .unwrap()
            .count(),
        0
    );
    assert!(!outer.path().join("escape.lock").exists());
    assert!(
        !r.iter().any(|l| l.contains(outer.path().to_str().unwrap())),
        "host paths stay private: {r:?}"
    );

    // A read-only preopen cannot create lock files.
    const READ_ONLY: &Script<'_> = &[("open:r:/data/new.lock:os", "err ReadOnly")];
    let mut guest = Guest::new(PROBE, &data, &steps(READ_ONLY));
    guest.dirs[0].2 = FsPerms::ReadOnly;
    rt().run(guest).await.unwrap().check(READ_ONLY);
    assert!(!data.join("new.lock").exists());
}

/// `on-file` locks the data file itself. The probe opens it read-only: by
/// default such a descriptor may hold shared locks only (an exclusive one
/// could keep every writer out of a file the guest may only read), which
/// still keeps `flock -n` writers out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locking_a_data_file_the_guest_opened_excludes_flock_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.bin"), "payload").unwrap();
    let d = dir.path().to_path_buf();
    const ON_FILE: &Script<'_> = &[
        ("onfile:f:/data/data.bin", "ok"),
        ("acq:f:ex:try", "err NotPermitted"),
        ("acq:f:sh:forever", "ok"),
        ("touch:/data/held", "ok"),
        ("await:/data/go", "ok"),
    ];
    let guest = tokio::spawn(async move { probe(&d, &steps(ON_FILE)).await });
    until_exists(&dir.path().join("held")).await;
    let flock = |args: &[&str]| {
        std::process::Command::new("flock")
            .args(args)
            .arg(dir.path().join("data.bin"))
            .arg("true")
            .status()
            .expect("flock(1) is required")
            .code()
    };
    assert_eq!(flock(&["-n"]), Some(1), "flock -n (exclusive) is kept out");
    assert_eq!(flock(&["-n", "-s"]), Some(0), "flock -n -s shares the file");
    std::fs::write(dir.path().join("go"), "").unwrap();
    guest.await.unwrap().check(ON_FILE);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("data.bin")).unwrap(),
        "payload"
    );

    // The embedder decides: nothing at all, or exclusive holds too.
    for (most, ex, sh) in [
        (None, "err NotPermitted", "err NotPermitted"),
        (Some(wasmlock::Mode::Exclusive), "ok", "err WouldBlock"),
    ] {
        let script: &Script<'_> = &[
            ("onfile:f:/data/data.bin", "ok"),
            ("acq:f:ex:try", ex),
            ("acq:f:sh:try", sh),
        ];
        let mut guest = Guest::new(PROBE, dir.path(), &steps(script));
        guest.locks = wasmlock::WasmLockCtx::builder().read_only_files(most);
        rt().run(guest).await.unwrap().check(script);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_the_wait_cap_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    const QUOTAS: &Script<'_> = &[
        ("open:a:/data/a.lock:os", "ok"),
        ("open:b:/data/b.lock:os", "ok"),
        ("open:c:/data/c.lock:os", "err Quota"), // handles
        ("acq:a:ex:try", "ok"),
        ("acq:b:ex:try", "err Quota"), // held locks
        ("rel:a", "ok"),
        ("acq:b:ex:try", "ok"), // released holds give the quota back
    ];
    let mut guest = Guest::new(PROBE, dir.path(), &steps(QUOTAS));
    guest.locks = wasmlock::WasmLockCtx::builder()
        .max_handles(2)
        .max_held_locks(1);
    rt().run(guest).await.unwrap().check(QUOTAS);

    // A guest's forever is clamped by the host.
    let native = FileLock::new(dir.path().join("cap.lock")).unwrap();
    let _g = native.lock().unwrap();
    const CAPPED: &Script<'_> = &[
        ("open:x:/data/cap.lock:os", "ok"),
        ("acq:x:ex:forever", "err Timeout"),
    ];
    let mut guest = Guest::new(PROBE, dir.path(), &steps(CAPPED));
    guest.locks = wasmlock::WasmLockCtx::builder().max_wait(Duration::from_millis(100));
    let t = std::time::Instant::now();
    rt().run(guest).await.unwrap().check(CAPPED);
    assert!(t.elapsed() < Duration::from_secs(10));

    // Breaking locks is the host's decision.
    script(
        dir.path(),
        &[
            ("open:s:/data/s.lock:soft", "ok"),
            ("break:s:force", "err NotPermitted"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_release_or_break_another_guests_lock() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    const HOLDER: &Script<'_> = &[
        ("open:h:/data/o.lock:soft", "ok"),
        ("acq:h:ex:forever", "ok"),
        ("touch:/data/held", "ok"),
        ("await:/data/go", "ok"),
        ("lost:h", "held"), // the holder still holds it
    ];
    let holder = tokio::spawn(async move { probe(&d, &steps(HOLDER)).await });
    until_exists(&dir.path().join("held")).await;
    // Another guest, even one allowed to break stale locks, gets nowhere:
    // it has no guard to release, and forcing is a separate permission.
    const OTHER: &Script<'_> = &[
        ("open:o:/data/o.lock:soft", "ok"),
        ("rel:o", "no guard"),
        ("acq:o:ex:try", "err WouldBlock"),
        ("break:o:noforce", "err WouldBlock"), // a live holder's lock is not broken
        ("break:o:force", "err NotPermitted"),
        ("holder:o", "ThisHost pid ?"),
    ];
    let mut other = Guest::new(PROBE, dir.path(), &steps(OTHER));
    other.locks = wasmlock::WasmLockCtx::builder().allow_break(true);
    rt().run(other).await.unwrap().check(OTHER);
    std::fs::write(dir.path().join("go"), "").unwrap();
    holder.await.unwrap().check(HOLDER);
}

/// Guests failing every way at once — a trap while holding two locks and a
/// permit, an endless loop stopped by epoch interruption, a store dropped
/// while waiting, a pending acquisition abandoned by a trap — while another
/// guest keeps working: it finishes, and afterwards everything is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_guests_free_everything_while_the_host_keeps_serving_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    std::fs::write(d.join("counter"), "0\n").unwrap();
    let held_natively = FileLock::new(d.join("w.lock")).unwrap();
    let g = held_natively.lock().unwrap();

    let worker = tokio::spawn({
        let d = d.clone();
        async move {
            let g = Guest::new(
                wasmlock_tests::COUNTER_PLUGIN,
                &d,
                &["/data/counter", "300"],
            );
            rt().run(g).await.unwrap()
        }
    });
    let trap = probe(
        &d,
        &[
            "open:a:/data/a.lock:os",
            "acq:a:ex:forever",
            "open:b:/data/b.lock:soft",
            "acq:b:ex:forever",
            "sem:s:/data:slots:2",
            "permit:s:forever",
            "trap",
        ],
    );
    let mut spinner = Guest::new(
        PROBE,
        &d,
        &["open:c:/data/c.lock:os", "acq:c:sh:forever", "spin"],
    );
    spinner.epoch_deadline = Some(2);
    let spin = rt().run(spinner);
    let ticker = tokio::spawn(async {
        for _ in 0..250 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            rt().tick();
        }
    });
    let waiting = tokio::time::timeout(
        Duration::from_millis(300),
        probe(&d, &["open:w:/data/w.lock:os", "acq:w:ex:forever"]),
    );
    let pending = probe(
        &d,
        &["open:p:/data/w.lock:os", "start:p:ex", "poll:p:50", "trap"],
    );
    let (trap, spin, waiting, pending) = tokio::join!(trap, spin, waiting, pending);
    ticker.abort();
    assert!(trap.result.is_err() && spin.unwrap().result.is_err() && pending.result.is_err());
    assert!(waiting.is_err(), "the waiting guest was dropped mid-wait");

    let worker = worker.await.unwrap();
    worker.result.unwrap();
    assert_eq!(
        std::fs::read_to_string(d.join("counter")).unwrap().trim(),
        "300"
    );
    for name in ["a.lock", "c.lock"] {
        assert!(free(&d.join(name)), "{name} is still held");
    }
    assert!(
        !d.join("b.lock").exists(),
        "the soft marker went with the store"
    );
    let sem = wasmlock::Semaphore::new(&d, "slots", 2).unwrap();
    assert_eq!(
        sem.available().unwrap(),
        2,
        "the permit went with the store"
    );
    drop(g);
    assert!(
        free(&d.join("w.lock")),
        "a dropped or abandoned wait took the lock"
    );
}
