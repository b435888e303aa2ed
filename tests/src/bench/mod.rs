//! `wasmlock-bench`: the figures criterion cannot take — several processes,
//! latency percentiles, thousands of waiters — each next to the baseline it
//! is judged against, measured in the same run.
//!
//! ```text
//! cargo run --release -p wasmlock-tests --bin wasmlock-bench -- [--json PATH] [--smoke] [--only N,N]
//! ```

mod etcd;
mod fairness;
mod handoff;
mod inhost;
mod report;
mod uncontended;
mod waiters;

use std::path::PathBuf;
use std::time::Duration;

pub use report::{Figure, Report};

/// How big each scenario is.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Lock+unlock pairs per timed round (scenarios 1 and 2).
    pub pairs: u32,
    /// Hand-offs between two processes (scenario 3).
    pub handoffs: u32,
    /// Guest instances and lock/increment/unlock rounds each (scenario 4).
    pub guests: usize,
    pub rounds: u32,
    /// Waiting native tasks and guest instances (scenario 5).
    pub native_waiters: usize,
    pub guest_waiters: usize,
    /// Processes and how long they contend (scenario 6).
    pub procs: usize,
    pub contend: Duration,
    /// Hand-offs through etcd, and uncontended pairs (scenario 7).
    pub etcd_handoffs: u32,
    pub etcd_pairs: u32,
}

impl Sizes {
    /// The sizes the issue asks for.
    pub fn full() -> Sizes {
        Sizes {
            pairs: 200_000,
            handoffs: 1000,
            guests: 64,
            rounds: 1000,
            native_waiters: 10_000,
            guest_waiters: 1000,
            procs: 8,
            contend: Duration::from_secs(10),
            etcd_handoffs: 100,
            etcd_pairs: 1000,
        }
    }

    /// Every scenario once, tiny, so that the code cannot rot (`cargo test`).
    pub fn smoke() -> Sizes {
        Sizes {
            pairs: 2000,
            handoffs: 20,
            guests: 4,
            rounds: 10,
            native_waiters: 200,
            guest_waiters: 10,
            procs: 3,
            contend: Duration::from_millis(300),
            etcd_handoffs: 8,
            etcd_pairs: 20,
        }
    }
}

/// Runs the scenarios in `only` (all when empty) and returns their figures.
pub fn run(sizes: &Sizes, only: &[u32], dir: &std::path::Path) -> Result<Report> {
    let mut report = Report::new();
    let wanted = |n: u32| only.is_empty() || only.contains(&n);
    if wanted(1) {
        uncontended::native(sizes, dir, &mut report)?;
    }
    if wanted(2) {
        uncontended::guest(sizes, dir, &mut report)?;
    }
    if wanted(3) {
        handoff::run(sizes, dir, &mut report)?;
    }
    if wanted(4) {
        inhost::run(sizes, dir, &mut report)?;
    }
    if wanted(5) {
        waiters::run(sizes, dir, &mut report)?;
    }
    if wanted(6) {
        fairness::run(sizes, dir, &mut report)?;
    }
    if wanted(7) {
        etcd::run(sizes, &mut report)?;
    }
    Ok(report)
}

/// If this process was started as one of the benchmark's helper processes,
/// does that job and exits.
pub fn child_main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("--child") {
        return;
    }
    let result = match args.get(1).map(String::as_str) {
        Some("handoff") => handoff::child(&args[2..]),
        Some("contend") => fairness::child(&args[2..]),
        other => Err(format!("unknown child role {other:?}").into()),
    };
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("wasmlock-bench child: {e}");
            std::process::exit(1);
        }
    }
}

/// Starts this same program as a helper process.
fn spawn_child(args: &[String]) -> std::io::Result<std::process::Child> {
    std::process::Command::new(std::env::current_exe()?)
        .arg("--child")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
}

/// CLOCK_MONOTONIC in nanoseconds: comparable between processes, unlike
/// `Instant`, whose value cannot be sent to another process.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A directory for one scenario's files.
fn scratch(dir: &std::path::Path, name: &str) -> std::io::Result<PathBuf> {
    let d = dir.join(name);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Any error, with its message.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
