//! `wasmlock exec / status / break --etcd`.

use std::process::Command;

use super::*;

const BIN: &str = env!("CARGO_BIN_EXE_wasmlock");

#[test]
fn exec_runs_the_command_holding_the_lock_with_its_fence() {
    let Some(etcd) = Etcd::start() else { return };
    let out = Command::new(BIN)
        .args(["exec", "--etcd", &etcd.url, "--ttl", "2s", "cli-job", "--"])
        .args(["sh", "-c", "echo FENCE=$WASMLOCK_FENCE"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fence: u64 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .strip_prefix("FENCE=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(fence > 0);
    assert!(etcd.keys("cli-job/").is_empty(), "exec left its key");

    // Held by us: -n gives up with 1; status tells who holds it.
    let cluster = cluster(&etcd.url);
    let lock = cluster.lock("cli-job").unwrap();
    let guard = lock.lock().unwrap();
    let busy = Command::new(BIN)
        .args(["exec", "--etcd", &etcd.url, "-n", "cli-job", "true"])
        .status()
        .unwrap();
    assert_eq!(busy.code(), Some(1));
    let status = Command::new(BIN)
        .args(["status", "--etcd", &etcd.url, "cli-job"])
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(1));
    let line = String::from_utf8(status.stdout).unwrap();
    let fence = guard.fence().unwrap();
    assert!(line.contains(&format!("fence {fence}")), "{line}");
    assert!(
        line.contains(&format!("pid {}", std::process::id())),
        "{line}"
    );
    drop(guard);
    let free = Command::new(BIN)
        .args(["status", "--etcd", &etcd.url, "cli-job"])
        .output()
        .unwrap();
    assert_eq!(
        free.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&free.stdout)
    );
}

#[test]
fn exec_stops_the_command_when_the_lock_is_lost_and_says_so() {
    let Some(etcd) = Etcd::start() else { return };
    let mut exec = Command::new(BIN)
        .args([
            "exec", "--etcd", &etcd.url, "--ttl", "2s", "lost-job", "--", "sleep", "60",
        ])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LONG;
    while etcd.keys("lost-job/").is_empty() {
        assert!(Instant::now() < deadline, "exec did not take the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    // An operator breaks it.
    let broke = Command::new(BIN)
        .args(["break", "--etcd", &etcd.url, "--force", "lost-job"])
        .status()
        .unwrap();
    assert!(broke.success());
    let status = exec.wait().unwrap();
    assert_eq!(status.code(), Some(75), "exec's status for a lost lock");
}

#[test]
fn exec_against_an_unreachable_cluster_exits_68() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(BIN)
        .args([
            "exec",
            "--etcd",
            &format!("http://127.0.0.1:{port}"),
            "nowhere",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(68),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("etcd:nowhere"));
}
