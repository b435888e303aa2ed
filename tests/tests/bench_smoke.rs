//! Runs every scenario of `wasmlock-bench` once at a tiny size, so that the
//! benchmark code cannot rot. It asserts what the benchmark checks for
//! correctness (everyone served, in order); never a timing.

use std::process::Command;

#[test]
fn every_benchmark_scenario_runs_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("figures.json");
    let out = Command::new(env!("CARGO_BIN_EXE_wasmlock-bench"))
        .args(["--smoke", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wasmlock-bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let figures = report["figures"].as_array().unwrap();
    for scenario in 1..=6 {
        assert!(
            figures.iter().any(|f| f["scenario"] == scenario),
            "no figure for scenario {scenario}:\n{stdout}"
        );
    }
    if !figures.iter().any(|f| f["scenario"] == 7) {
        // Skipped for want of etcd: a failure in CI, a note elsewhere.
        wasmlock_tests::require(false, "etcd for scenario 7");
    }
    for f in figures {
        let value = f["value"].as_f64().unwrap();
        assert!(value.is_finite() && value >= 0.0, "{f}");
        assert!(stdout.contains(f["figure"].as_str().unwrap()), "{f}");
    }
    let figure = |starts: &str| {
        figures
            .iter()
            .find(|f| f["figure"].as_str().unwrap().contains(starts))
            .unwrap_or_else(|| panic!("no figure {starts:?}"))
    };
    let served = figure("served, of");
    assert_eq!(served["met"], true, "not every waiter was served: {served}");
    let order = figure("not served exactly once in FIFO order");
    assert_eq!(order["value"], 0.0, "{order}");
    // Counted by etcd, not timed: an uncontended lock+unlock sends etcd no
    // more requests than its own Lock and Unlock.
    if figures.iter().any(|f| f["scenario"] == 7) {
        let requests = figure("etcd requests per uncontended");
        assert_eq!(requests["met"], true, "{requests}");
    }
    assert!(report["machine"]["cpus"].as_u64().unwrap() >= 1);
}
