//! `wasmlock-bench`: lock costs, hand-off latency, many waiters and fairness,
//! each next to its baseline measured in the same run. Prints one table and
//! writes the same figures as JSON with `--json PATH`.
//!
//! ```text
//! cargo run --release -p wasmlock-tests --bin wasmlock-bench -- [--json PATH] [--smoke] [--only 1,3]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use wasmlock_tests::bench::{self, Sizes};

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "kernel": kernel.trim(),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

fn main() {
    bench::child_main();
    let mut sizes = Sizes::full();
    let mut json: Option<PathBuf> = None;
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--smoke" => sizes = Sizes::smoke(),
            "--json" => json = args.next().map(PathBuf::from),
            "--only" => {
                only = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|n| n.trim().parse().ok())
                    .collect()
            }
            "-h" | "--help" => {
                println!("usage: wasmlock-bench [--json PATH] [--smoke] [--only N,N]");
                return;
            }
            other => {
                eprintln!("wasmlock-bench: unknown argument {other:?} (try --help)");
                std::process::exit(2);
            }
        }
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let started = Instant::now();
    let report = match bench::run(&sizes, &only, dir.path()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wasmlock-bench: {e}");
            std::process::exit(1);
        }
    };
    let machine = machine();
    println!(
        "wasmlock-bench on {} CPUs ({}), Linux {}, {} build; {:.0} s\n",
        machine["cpus"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?"),
        machine["profile"].as_str().unwrap_or("?"),
        started.elapsed().as_secs_f64()
    );
    print!("{}", report.table());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report.json(&machine)).expect("JSON");
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("wasmlock-bench: writing {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}
