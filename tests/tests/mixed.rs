//! One counter file, one lock file, every kind of user at once: native
//! processes, guest instances in this host (WASI 0.3 and 0.2 ones: the
//! counter plugin exports both worlds' `run`), native threads beside them,
//! a `flock(1)` shell loop and a `wasmlock exec` shell loop. Not one update
//! may be lost.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use wasmlock::FileLock;
use wasmlock_tests::{
    COUNTER_PLUGIN, Guest, Runtime, bump, read_counter, require, shell_loop, spawn_each,
    workspace_binary,
};

fn have_flock() -> bool {
    require(
        Command::new("flock").arg("--version").output().is_ok(),
        "flock(1)",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natives_guests_threads_and_flock_1_lose_no_update() {
    if !have_flock() {
        eprintln!("SKIPPED: flock(1) is not available here");
        return;
    }
    let Some(cli) = workspace_binary("wasmlock") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("counter");
    // The counter plugin locks `COUNTER.lock`.
    let lock = dir.path().join("counter.lock");
    std::fs::write(&counter, "0\n").unwrap();
    let t = Instant::now();

    let (natives, native_n) = (3, 300);
    let n = native_n.to_string();
    let mut processes = spawn_each(
        natives,
        env!("CARGO_BIN_EXE_wasmlock-counter"),
        &[lock.as_ref(), counter.as_ref(), n.as_ref()],
    );
    let (flock_n, exec_n) = (100, 40);
    processes.push(shell_loop(
        &["flock"],
        lock.to_str().unwrap(),
        &counter,
        flock_n,
    ));
    let exec = [cli.to_str().unwrap(), "exec"];
    processes.push(shell_loop(&exec, lock.to_str().unwrap(), &counter, exec_n));

    let (threads, thread_n) = (2, 200);
    let native_threads: Vec<_> = (0..threads)
        .map(|_| {
            let (lock, counter) = (lock.clone(), counter.clone());
            std::thread::spawn(move || {
                let l = FileLock::new(&lock).unwrap();
                for _ in 0..thread_n {
                    let _g = l.lock().unwrap();
                    bump(&counter).unwrap();
                }
            })
        })
        .collect();

    let runtime = Arc::new(Runtime::new().unwrap());
    let (guests, guest_n) = (4, 150);
    let mut instances = tokio::task::JoinSet::new();
    for i in 0..guests {
        let runtime = runtime.clone();
        let mut g = Guest::new(
            COUNTER_PLUGIN,
            dir.path(),
            &["/data/counter", &guest_n.to_string()],
        );
        // Half through wasmlock:lock@0.2.0, half through 0.3.0.
        g.wasi_p2 = i % 2 == 0;
        instances.spawn(async move { runtime.run(g).await });
    }
    while let Some(done) = instances.join_next().await {
        let out = done.unwrap().unwrap();
        out.result
            .unwrap_or_else(|e| panic!("a guest failed: {e}\n{}", out.stdout));
    }
    for t in native_threads {
        t.join().unwrap();
    }
    for mut p in processes {
        assert!(p.wait().unwrap().success());
    }

    let total = natives * native_n + flock_n + exec_n + threads * thread_n + guests * guest_n;
    assert_eq!(read_counter(&counter), total, "updates were lost");
    eprintln!(
        "mixed: {natives} native processes x {native_n}, {guests} guests (0.2 and 0.3) x {guest_n}, \
         {threads} threads x {thread_n}, flock(1) x {flock_n}, wasmlock exec x {exec_n}: \
         {total} increments exact in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}
