//! Scenario 6: processes contending for one lock for a while — does each get
//! its share? Each one locks, works briefly, unlocks and comes straight back.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use fs4::FileExt;
use wasmlock::FileLock;

use super::{Figure, Report, Result, Sizes, now_ns, scratch, spawn_child};

/// Work inside the lock.
const WORK: Duration = Duration::from_micros(2);

fn spin(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// One contender: counts its acquisitions between `start` and `end`.
pub(super) fn child(args: &[String]) -> Result<()> {
    let [variant, path, start, end] = args else {
        return Err("contend VARIANT PATH START_NS END_NS".into());
    };
    let (start, end): (u64, u64) = (start.parse()?, end.parse()?);
    let raw = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let lock = FileLock::new(path)?;
    while now_ns() < start {
        std::thread::sleep(Duration::from_micros(100));
    }
    let mut count = 0u64;
    while now_ns() < end {
        if variant == "raw" {
            FileExt::lock(&raw)?;
            spin(WORK);
            FileExt::unlock(&raw)?;
        } else {
            let _g = lock.lock()?;
            spin(WORK);
        }
        count += 1;
    }
    println!("{count}");
    Ok(())
}

/// Acquisitions per process.
fn contend(variant: &str, path: &Path, procs: usize, how_long: Duration) -> Result<Vec<u64>> {
    let start = now_ns() + 300_000_000;
    let end = start + how_long.as_nanos() as u64;
    let children: Vec<_> = (0..procs)
        .map(|_| {
            spawn_child(&[
                "contend".into(),
                variant.into(),
                path.display().to_string(),
                start.to_string(),
                end.to_string(),
            ])
        })
        .collect::<std::io::Result<_>>()?;
    let mut counts = Vec::new();
    for mut c in children {
        let mut out = String::new();
        c.stdout
            .take()
            .ok_or("no stdout")?
            .read_to_string(&mut out)?;
        if !c.wait()?.success() {
            return Err("a contender failed".into());
        }
        counts.push(out.trim().parse()?);
    }
    Ok(counts)
}

fn spread(counts: &[u64]) -> (u64, u64, f64) {
    let min = counts.iter().copied().min().unwrap_or(0);
    let max = counts.iter().copied().max().unwrap_or(0);
    (min, max, min as f64 / max.max(1) as f64)
}

pub(super) fn run(sizes: &Sizes, dir: &Path, report: &mut Report) -> Result<()> {
    let dir = scratch(dir, "fairness")?;
    let (p, t) = (sizes.procs, sizes.contend);
    let raw = contend("raw", &dir.join("raw.lock"), p, t)?;
    let ours = contend("os", &dir.join("os.lock"), p, t)?;
    let (rmin, rmax, rratio) = spread(&raw);
    let (omin, omax, oratio) = spread(&ours);
    eprintln!("  fairness: raw flock per process {raw:?}; wasmlock {ours:?}");
    report.push(
        Figure::new(
            6,
            format!(
                "{p} processes x {:.0} s: slowest / fastest ({omin}/{omax})",
                t.as_secs_f64()
            ),
            oratio,
            "",
        )
        .against(format!("raw flock ({rmin}/{rmax})"), rratio)
        .target(">= 0.5", oratio >= 0.5),
    );
    let total: u64 = ours.iter().sum();
    let raw_total: u64 = raw.iter().sum();
    report.push(
        Figure::new(
            6,
            "acquisitions per second, all processes",
            total as f64 / t.as_secs_f64(),
            "/s",
        )
        .against("raw flock", raw_total as f64 / t.as_secs_f64()),
    );
    Ok(())
}
