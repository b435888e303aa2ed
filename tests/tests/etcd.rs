//! Guests locking in a real etcd through a cluster namespace: one counter
//! kept exact by guest instances (WASI 0.2 and 0.3), native processes, `wasmlock exec` and
//! `etcdctl lock`; fences, lost holds and errors as a guest sees them, with
//! nothing of the cluster (endpoints, prefix, lease) in what it sees.

use std::process::Command;
use std::time::{Duration, Instant};

use wasmlock::etcd::Cluster;
use wasmlock::{Namespace, WasmLockCtx};
use wasmlock_tests::etcd::Etcd;
use wasmlock_tests::{
    COUNTER_PLUGIN, Guest, Outcome, PROBE, PROBE3, Script, read_counter, shell_loop, spawn_each,
    steps, until_exists,
};

/// The tenant's prefix: the guests' key `counter` is the lock every other
/// client names `tenant-a/counter`.
const PREFIX: &str = "tenant-a/";

fn cluster(url: &str) -> Cluster {
    Cluster::builder()
        .endpoint(url)
        .ttl(Duration::from_secs(2))
        .connect()
        .unwrap()
}

/// The probe running `script` with the namespace `jobs` granted on
/// `cluster` under [`PREFIX`].
fn guest(dir: &std::path::Path, script: &[&str], cluster: &Cluster) -> Guest {
    let mut guest = Guest::new(PROBE, dir, script);
    guest.locks = WasmLockCtx::builder().namespace("jobs", Namespace::etcd(cluster, PREFIX));
    guest
}

/// Nothing the guest printed names the cluster, the tenant's prefix or a
/// lease.
fn reveals_nothing(out: &Outcome, etcd: &Etcd) {
    let port = etcd.url.rsplit(':').next().unwrap();
    for secret in [
        etcd.url.as_str(),
        "127.0.0.1",
        port,
        PREFIX,
        "tenant",
        "lease",
    ] {
        assert!(
            !out.stdout.contains(secret),
            "the guest saw {secret:?}:\n{}",
            out.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_natives_exec_and_etcdctl_keep_one_counter_exact() {
    let Some(etcd) = Etcd::start() else { return };
    let Some(cli) = wasmlock_tests::workspace_binary("wasmlock") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("counter");
    std::fs::write(&counter, "0\n").unwrap();
    let name = format!("{PREFIX}counter");

    let (natives, native_n) = (4, 25);
    let (n, kind) = (native_n.to_string(), format!("etcd={}", etcd.url));
    let mut processes = spawn_each(
        natives,
        env!("CARGO_BIN_EXE_wasmlock-counter"),
        &[name.as_ref(), counter.as_ref(), n.as_ref(), kind.as_ref()],
    );
    let (etcdctl_n, exec_n) = (15, 15);
    let endpoints = format!("--endpoints={}", etcd.url);
    let etcdctl = ["env", "ETCDCTL_API=3", "etcdctl", &endpoints, "lock"];
    processes.push(shell_loop(&etcdctl, &name, &counter, etcdctl_n));
    let exec = [cli.to_str().unwrap(), "exec", "--etcd", &etcd.url];
    processes.push(shell_loop(&exec, &name, &counter, exec_n));

    let cluster = cluster(&etcd.url);
    let (guests, guest_n) = (4, 25);
    let count = format!("counter:c:/data/counter:{guest_n}");
    let mut instances = tokio::task::JoinSet::new();
    for _ in 0..guests {
        let g = guest(dir.path(), &["ns:c:jobs:counter", &count], &cluster);
        instances.spawn(wasmlock_tests::rt().run(g));
    }
    // WASI 0.3 guests: the counter plugin's 0.3 `run`, on the key `counter`
    // of the same namespace.
    let (guests3, guest3_n) = (2, 25);
    let n3 = guest3_n.to_string();
    for _ in 0..guests3 {
        let args = ["/data/counter", &n3, "--namespace", "jobs"];
        let mut g = Guest::new(COUNTER_PLUGIN, dir.path(), &args);
        g.locks = WasmLockCtx::builder().namespace("jobs", Namespace::etcd(&cluster, PREFIX));
        instances.spawn(wasmlock_tests::rt().run(g));
    }
    while let Some(done) = instances.join_next().await {
        let out = done.unwrap().unwrap();
        out.result
            .unwrap_or_else(|e| panic!("a guest failed: {e}\n{}", out.stdout));
    }
    for mut p in processes {
        assert!(p.wait().unwrap().success());
    }

    let total = natives * native_n + guests * guest_n + guests3 * guest3_n + etcdctl_n + exec_n;
    assert_eq!(read_counter(&counter), total, "updates were lost");
    // Releases delete their keys in the background.
    etcd.until_keys(PREFIX, 0);
}

/// The `fence N` results of a run, in order.
fn fences(out: &Outcome) -> Vec<u64> {
    out.results()
        .iter()
        .filter_map(|r| r.strip_prefix("fence "))
        .map(|f| f.parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_sees_fences_waits_and_a_lost_hold_but_not_the_cluster() {
    let Some(etcd) = Etcd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(&etcd.url);
    static SCRIPT: &Script<'static> = &[
        ("ns:a:jobs:report", "ok"),
        ("ns:b:jobs:report", "ok"),
        ("acq:a:ex:try", "ok"),
        ("fence:a", "fence"),
        // Two holds in one guest are two grants: they exclude each other.
        ("acq:b:ex:try", "err WouldBlock"),
        ("acq:b:ex:300", "err Timeout"),
        ("acq:b:sh:try", "err Unsupported"),
        ("rel:a", "ok"),
        ("acq:b:ex:forever", "ok"),
        ("fence:b", "fence"),
        ("locked:a", "true"),
        ("touch:/data/held", "ok"),
        // The test deletes the key, as an operator would.
        ("waitlost:b:10000", "lost"),
        ("lost:b", "lost"),
        ("rel:b", "err Lost"),
        ("acq:a:ex:try", "ok"),
        ("fence:a", "fence"),
        // Deleted again; nobody asks before the release, which finds out.
        ("touch:/data/held2", "ok"),
        ("await:/data/deleted2", "ok"),
        ("rel:a", "err Lost"),
        ("nssem:s:jobs:pool:2", "err Unsupported"),
    ];
    let run = {
        let g = guest(dir.path(), &steps(SCRIPT), &cluster);
        tokio::spawn(async move { wasmlock_tests::rt().run(g).await.unwrap() })
    };
    until_exists(&dir.path().join("held")).await;
    let key = format!("{PREFIX}report/");
    let deleted = etcd.ctl(&["del", "--prefix", &key]);
    assert!(deleted.status.success());
    assert_eq!(String::from_utf8_lossy(&deleted.stdout).trim(), "1");
    until_exists(&dir.path().join("held2")).await;
    let deleted = etcd.ctl(&["del", "--prefix", &key]);
    assert_eq!(String::from_utf8_lossy(&deleted.stdout).trim(), "1");
    std::fs::write(dir.path().join("deleted2"), "").unwrap();

    let out = run.await.unwrap();
    assert_eq!(out.result, Ok(()), "{}", out.stdout);
    out.check(SCRIPT);
    let f = fences(&out);
    assert!(
        f[0] < f[1] && f[1] < f[2],
        "fences must grow with every grant: {f:?}"
    );
    reveals_nothing(&out, &etcd);
    // The guest's keys go with its holds; the cluster's lease stays.
    // Releases delete their keys in the background.
    etcd.until_keys(PREFIX, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_gets_unavailable_from_an_unreachable_cluster_and_nothing_more() {
    // A cluster nobody serves: the port of a listener we closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let dead = Cluster::builder()
        .endpoint(&url)
        .timeout(Duration::from_millis(300))
        .connect()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    static SCRIPT: &Script<'static> = &[
        ("ns:d:jobs:x", "ok"),
        ("acq:d:ex:try", "err Unavailable"),
        ("acq:d:ex:5000", "err Unavailable"),
        ("acq:d:ex:forever", "err Unavailable"),
        ("locked:d", "err Unavailable"),
    ];
    let started = Instant::now();
    let out = wasmlock_tests::rt()
        .run(guest(dir.path(), &steps(SCRIPT), &dead))
        .await
        .unwrap();
    assert_eq!(out.result, Ok(()), "{}", out.stdout);
    out.check(SCRIPT);
    // Four calls, each bounded by the cluster's timeout, not by the wait.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited {:?} for an unreachable cluster",
        started.elapsed()
    );
    for secret in [url.as_str(), "127.0.0.1", &port.to_string(), PREFIX] {
        assert!(!out.stdout.contains(secret), "the guest saw {secret:?}");
    }
}

#[test]
fn the_demo_keeps_its_count_through_etcd() {
    let Some(etcd) = Etcd::start() else { return };
    // `cargo test` builds the examples beside the test executables' directory.
    let exe = std::env::current_exe().unwrap();
    let demo = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/demo");
    if !wasmlock_tests::require(demo.exists(), "the demo example (cargo test --workspace)") {
        return;
    }
    let out = Command::new(&demo)
        .args([
            "--etcd",
            &etcd.url,
            "--procs",
            "2",
            "--instances",
            "2",
            "--iters",
            "20",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("(etcd lock)"), "{stdout}");
    let with_lock: Vec<&str> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("with the lock"))
        .unwrap_or_else(|| panic!("no row for the locked round:\n{stdout}"))
        .split_whitespace()
        .collect();
    assert_eq!(&with_lock[..2], ["80", "0"], "total and lost:\n{stdout}");
}

/// A 0.3 guest cancels an unlock whose release waits for the cluster: the
/// release goes on, and the guest's next lock call finds the key free (it
/// waits for the releases the guest began before it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_unlock_still_releases_before_the_next_call() {
    let Some(etcd) = Etcd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(&etcd.url);
    let step = "unlockcancel:jobs";
    for _ in 0..5 {
        let mut g = Guest::new(PROBE3, dir.path(), &[step]);
        g.locks = WasmLockCtx::builder().namespace("jobs", Namespace::etcd(&cluster, PREFIX));
        let out = wasmlock_tests::rt().run(g).await.unwrap();
        assert_eq!(out.result, Ok(()), "{}", out.stdout);
        assert_eq!(out.step(step), "k2 ok, k1 ok");
    }
    etcd.until_keys(PREFIX, 0);
}
