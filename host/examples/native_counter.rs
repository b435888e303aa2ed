//! Several processes increment one counter file, with and without a lock.
//!
//! ```text
//! cargo run --release --example native_counter -- [--soft] [--procs N] [--iters N]
//! ```
//!
//! Each worker process reads the number in the file, adds one and writes it
//! back, `iters` times. Under the lock no update is lost; without it, the
//! processes overwrite each other's updates.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wasmlock::{FileLock, Kind};

struct Options {
    kind: Kind,
    procs: usize,
    iters: u64,
}

fn parse_args() -> Result<(Options, Option<(bool, PathBuf)>), String> {
    let mut opts = Options {
        kind: Kind::Os,
        procs: 4,
        iters: 2000,
    };
    let mut worker = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--soft" => opts.kind = Kind::Soft,
            "--procs" => {
                opts.procs = value("--procs")?
                    .parse()
                    .map_err(|e| format!("--procs: {e}"))?
            }
            "--iters" => {
                opts.iters = value("--iters")?
                    .parse()
                    .map_err(|e| format!("--iters: {e}"))?
            }
            // Internal: run as one worker process.
            "--worker" => {
                let locked = value("--worker")? == "locked";
                worker = Some((locked, PathBuf::from(value("--worker")?)));
            }
            "-h" | "--help" => {
                println!("usage: native_counter [--soft] [--procs N] [--iters N]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok((opts, worker))
}

fn bump(counter: &Path) -> std::io::Result<()> {
    let n: u64 = std::fs::read_to_string(counter)?
        .trim()
        .parse()
        .unwrap_or(0);
    std::fs::write(counter, format!("{}\n", n + 1))
}

fn work(opts: &Options, locked: bool, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let counter = dir.join("counter");
    let lock = FileLock::builder(dir.join("counter.lock"))
        .kind(opts.kind)
        .build()?;
    for _ in 0..opts.iters {
        if locked {
            let _guard = lock.lock()?;
            bump(&counter)?;
        } else {
            bump(&counter)?;
        }
    }
    Ok(())
}

/// Runs `procs` worker processes on one counter; returns (total, wall time).
fn round(opts: &Options, locked: bool) -> Result<(u64, Duration), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("counter"), "0\n")?;
    let exe = std::env::current_exe()?;
    let start = Instant::now();
    let children = (0..opts.procs)
        .map(|_| {
            let mut cmd = Command::new(&exe);
            cmd.args(["--iters", &opts.iters.to_string()]);
            if opts.kind == Kind::Soft {
                cmd.arg("--soft");
            }
            cmd.args(["--worker", if locked { "locked" } else { "unlocked" }])
                .arg(dir.path())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    for mut c in children {
        let status = c.wait()?;
        if !status.success() {
            return Err(format!("a worker failed: {status}").into());
        }
    }
    let wall = start.elapsed();
    let total = std::fs::read_to_string(dir.path().join("counter"))?
        .trim()
        .parse()?;
    Ok((total, wall))
}

fn main() {
    let (opts, worker) = match parse_args() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if let Some((locked, dir)) = worker {
        if let Err(e) = work(&opts, locked, &dir) {
            eprintln!("worker error: {e}");
            std::process::exit(1);
        }
        return;
    }
    let expected = opts.procs as u64 * opts.iters;
    let run = || -> Result<_, Box<dyn std::error::Error>> {
        Ok((round(&opts, true)?, round(&opts, false)?))
    };
    let ((with, with_wall), (without, without_wall)) = match run() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let kind = if opts.kind == Kind::Soft {
        "soft"
    } else {
        "os"
    };
    println!(
        "{} processes x {} increments of one counter file ({kind} lock)\n",
        opts.procs, opts.iters
    );
    println!(
        "{:<16} {:>10} {:>12} {:>10} {:>16}",
        "", "total", "lost", "wall", "hand-offs/s"
    );
    println!(
        "{:<16} {:>10} {:>12} {:>10} {:>16}",
        "expected", expected, "", "", ""
    );
    let row = |name: &str, total: u64, wall: Duration, rate: bool| {
        let lost = expected.saturating_sub(total);
        let per_s = if rate {
            format!("{:.0}", total as f64 / wall.as_secs_f64())
        } else {
            "-".into()
        };
        println!(
            "{name:<16} {total:>10} {lost:>12} {:>9.0?} {per_s:>16}",
            wall
        );
    };
    row("with the lock", with, with_wall, true);
    row("without a lock", without, without_wall, false);
    if with != expected {
        eprintln!("\nBUG: updates were lost under the lock");
        std::process::exit(1);
    }
}
