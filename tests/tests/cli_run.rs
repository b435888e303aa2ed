//! `wasmlock run`: the CLI hosting real plugin components.

use std::path::PathBuf;
use std::process::Command;

use wasmlock::FileLock;
use wasmlock_tests::{COUNTER_PLUGIN, PROBE, PROBE3};

/// The `wasmlock` binary of this build (built by `cargo test --workspace`).
fn bin() -> Option<PathBuf> {
    wasmlock_tests::workspace_binary("wasmlock")
}

/// `wasmlock run --dir GRANT PLUGIN ARGS...`.
fn run(bin: &std::path::Path, grant: &str, plugin: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--dir", grant, plugin]).args(args);
    cmd
}

#[test]
fn run_hosts_the_counter_plugin_with_locks() {
    let Some(bin) = bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("counter"), "0").unwrap();
    let grant = format!("{}::/data", dir.path().display());
    let kids: Vec<_> = (0..3)
        .map(|_| {
            run(&bin, &grant, COUNTER_PLUGIN, &["/data/counter", "200"])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut k in kids {
        assert!(k.wait().unwrap().success());
    }
    let n = std::fs::read_to_string(dir.path().join("counter")).unwrap();
    assert_eq!(n.trim(), "600");
}

/// A WASI 0.3 command is told from a 0.2 one and run through 0.3's
/// `run`: its tasks wait for locks while its other tasks go on, and two of
/// its processes keep a counter exact with a 0.2 plugin's.
#[test]
fn run_hosts_wasi_0_3_plugins_beside_0_2_ones() {
    let Some(bin) = bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("counter"), "0").unwrap();
    let grant = format!("{}::/data", dir.path().display());
    let piped = |plugin, args: &[&str]| {
        run(&bin, &grant, plugin, args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The counter plugin's lock is the counter's path with `.lock`.
    let count = "counter:/data/counter.lock:/data/counter:200";
    let kids = [
        piped(PROBE3, &["pair:/data/p.lock:20", count]),
        piped(PROBE3, &[count]),
        piped(COUNTER_PLUGIN, &["/data/counter", "200"]),
    ];
    let outs: Vec<_> = kids
        .into_iter()
        .map(|k| k.wait_with_output().unwrap())
        .collect();
    for out in &outs {
        assert!(out.status.success(), "{out:?}");
    }
    let first = String::from_utf8_lossy(&outs[0].stdout);
    assert!(first.contains("pair:/data/p.lock:20 => ok"), "{first}");
    let n = std::fs::read_to_string(dir.path().join("counter")).unwrap();
    assert_eq!(n.trim(), "600");
}

#[test]
fn run_reports_long_waits_and_caps_them() {
    let Some(bin) = bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let grant = format!("{}::/data", dir.path().display());
    let native = FileLock::new(dir.path().join("x.lock")).unwrap();
    let g = native.lock().unwrap();
    let out = Command::new(&bin)
        .args([
            "run",
            "--dir",
            &grant,
            "--max-wait",
            "1500ms",
            PROBE,
            "open:a:/data/x.lock:os",
            "acq:a:ex:forever",
        ])
        .output()
        .unwrap();
    drop(g);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("acq:a:ex:forever => err Timeout"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "waiting for lock on x.lock (held by pid {})",
            std::process::id()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains(dir.path().to_str().unwrap()),
        "host paths stay private: {stderr}"
    );
}

#[test]
fn run_fails_clearly_on_a_trap_or_a_bad_grant() {
    let Some(bin) = bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let grant = format!("{}::/data", dir.path().display());
    let out = Command::new(&bin)
        .args(["run", "--dir", &grant, PROBE, "trap"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = Command::new(&bin)
        .args(["run", "--dir", "nonsense", PROBE])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HOST::GUEST"));
    let out = Command::new(&bin)
        .args(["run", "/nonexistent.wasm"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// `--namespace NAME=DIR`: plugins in separate processes coordinate through
/// named locks in a directory none of them was granted.
#[test]
fn run_grants_namespaces_to_plugins_in_separate_processes() {
    let Some(bin) = bin() else { return };
    let data = tempfile::tempdir().unwrap();
    let ns = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("counter"), "0").unwrap();
    let grant = format!("{}::/data", data.path().display());
    let namespace = format!("jobs={}", ns.path().display());
    let kids: Vec<_> = (0..3)
        .map(|_| {
            Command::new(&bin)
                .args(["run", "--dir", &grant, "--namespace", &namespace])
                .arg(wasmlock_tests::PROBE)
                .args(["ns:c:jobs:the counter", "counter:c:/data/counter:150"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for k in kids {
        let out = k.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("=> ok"));
    }
    let n = std::fs::read_to_string(data.path().join("counter")).unwrap();
    assert_eq!(n.trim(), "450");
    let files: Vec<_> = std::fs::read_dir(ns.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["the%20counter.lock"]);

    let bad = Command::new(&bin)
        .args(["run", "--namespace", "nodir"])
        .arg(wasmlock_tests::PROBE)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("NAME=HOST_DIR"));
}
