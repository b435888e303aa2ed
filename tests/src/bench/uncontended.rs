//! Scenarios 1 and 2: what an uncontended lock costs natively and from a
//! guest, next to the raw `flock` pair and a bare system call.

use std::fs::File;
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use fs4::FileExt;
use wasmlock::FileLock;

use super::{Figure, Report, Result, Sizes, scratch};
use crate::{Guest, PROBE, PROBE3, Runtime};

/// Rounds per variant; the median is reported. Variants take turns so that
/// a slow moment of the machine does not land on one of them only.
const ROUNDS: usize = 5;

/// Native rounds are cut this much finer (more, shorter turns): a turn of a
/// few hundred milliseconds caught the VM in a fast or a slow phase as a
/// whole, and moved the ratios against the raw pair by ±0.1 from run to run.
const NATIVE_SPLIT: u32 = 8;

fn ns_per_op(pairs: u32, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..pairs {
        op();
    }
    start.elapsed().as_nanos() as f64 / f64::from(pairs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(super) fn native(sizes: &Sizes, dir: &Path, report: &mut Report) -> Result<()> {
    let dir = scratch(dir, "uncontended")?;
    let raw = File::create(dir.join("raw.lock"))?;
    let lock = FileLock::new(dir.join("native.lock"))?;
    let trusting = FileLock::builder(dir.join("trusting.lock"))
        .recheck_path(false)
        .build()?;
    let reentrant = FileLock::builder(dir.join("reentrant.lock"))
        .reentrant()
        .build()?;
    let _outer = reentrant.lock()?;

    let mut t: [Vec<f64>; 6] = Default::default();
    let pairs = (sizes.pairs / NATIVE_SPLIT).max(1);
    for _ in 0..ROUNDS * NATIVE_SPLIT as usize {
        // SAFETY: getppid has no preconditions.
        t[0].push(ns_per_op(pairs, || {
            black_box(unsafe { libc::getppid() });
        }));
        t[1].push(ns_per_op(pairs, || {
            FileExt::lock(&raw).unwrap();
            FileExt::unlock(&raw).unwrap();
        }));
        t[2].push(ns_per_op(pairs, || drop(lock.lock().unwrap())));
        t[3].push(ns_per_op(pairs, || drop(trusting.lock().unwrap())));
        t[4].push(ns_per_op(pairs, || drop(reentrant.lock().unwrap())));
        t[5].push(ns_per_op(pairs, || {
            FileExt::lock(&raw).unwrap();
            black_box(fstat(&raw));
            FileExt::unlock(&raw).unwrap();
        }));
    }
    let [syscall, raw, native, trusting, reentrant, checked] = t.map(median);
    let pair = "raw fs4 lock+unlock, open file";
    report.push(
        Figure::new(
            1,
            "native lock+unlock (path re-check on, default)",
            native,
            "ns",
        )
        .against("raw fs4 lock+unlock + one fstat", checked)
        .target("<= 1.25", native / checked <= 1.25),
    );
    report.push(
        Figure::new(1, "native lock+unlock, recheck_path(false)", trusting, "ns")
            .against(pair, raw)
            .target("<= 1.25", trusting / raw <= 1.25),
    );
    report.push(
        Figure::new(
            1,
            "re-entrant lock+unlock of a held handle",
            reentrant,
            "ns",
        )
        .against("one system call (getppid)", syscall)
        .target("< 1 (no syscall)", reentrant < syscall),
    );
    Ok(())
}

/// The safety work the default lock adds to the raw pair: one `fstat`.
fn fstat(file: &File) -> libc::dev_t {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // The system call itself, as the engine makes it (glibc's `fstat` goes
    // through `fstatat` with an empty path and costs more).
    // SAFETY: a valid descriptor and a pointer to a stat buffer to fill.
    let rc = unsafe { libc::syscall(libc::SYS_fstat, file.as_raw_fd(), &mut st) };
    assert_eq!(rc, 0, "fstat failed");
    st.st_dev
}

pub(super) fn guest(sizes: &Sizes, dir: &Path, report: &mut Report) -> Result<()> {
    let dir = scratch(dir, "guest")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The 0.2 figure as an embedder that runs 0.2 components only has it;
    // the 0.3 one needs wasmtime's concurrency support.
    let runtime = Runtime::wasi_p2_only()?;
    let lock = FileLock::new(dir.join("native.lock"))?;
    let step = format!("bench:l:{}", sizes.pairs);
    let (mut guest_ns, mut native_ns) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let g = Guest::new(PROBE, &dir, &["open:l:/data/guest.lock:os", &step]);
        let out = rt.block_on(runtime.run(g))?;
        guest_ns.push(guest_ns_per_pair(&out, &step, sizes.pairs)?);
        native_ns.push(ns_per_op(sizes.pairs, || drop(lock.lock().unwrap())));
    }
    let (g, n) = (median(guest_ns), median(native_ns));
    report.push(
        Figure::new(2, "guest lock+unlock through WIT", g, "ns")
            .against("native lock+unlock, same process", n)
            .target("<= 2.0", g / n <= 2.0),
    );
    // The same through the WASI 0.3 world (an async call each way), in
    // turns with native as above.
    let runtime3 = Runtime::new()?;
    // Beside it, the floor any 0.3 host import has in this wasmtime: two
    // calls of an async import that returns at once (`wait-for(0)`), as
    // many as a lock+unlock makes.
    let step = format!("bench:/data/guest3.lock:{}", sizes.pairs);
    let calls = format!("call:{}", 2 * sizes.pairs);
    let (mut guest_ns, mut floor_ns, mut native_ns) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let out = rt.block_on(runtime3.run(Guest::new(PROBE3, &dir, &[&step, &calls])))?;
        guest_ns.push(guest_ns_per_pair(&out, &step, sizes.pairs)?);
        floor_ns.push(guest_ns_per_pair(&out, &calls, sizes.pairs)?);
        native_ns.push(ns_per_op(sizes.pairs, || drop(lock.lock().unwrap())));
    }
    let (g, floor, n) = (median(guest_ns), median(floor_ns), median(native_ns));
    report.push(
        Figure::new(2, "guest lock+unlock through WIT, WASI 0.3", g, "ns")
            .against("native lock+unlock, same process", n)
            .target("<= 2.0", g / n <= 2.0),
    );
    report.push(
        Figure::new(
            2,
            "two empty WASI 0.3 async host calls (the floor)",
            floor,
            "ns",
        )
        .against("native lock+unlock, same process", n),
    );
    report.push(
        Figure::new(
            2,
            "guest lock+unlock, WASI 0.3, above the floor",
            g - floor,
            "ns",
        )
        .against("native lock+unlock, same process", n),
    );
    Ok(())
}

/// The nanoseconds per lock+unlock a guest's `bench` step printed.
fn guest_ns_per_pair(out: &crate::Outcome, step: &str, pairs: u32) -> Result<f64> {
    out.result
        .clone()
        .map_err(|e| format!("guest failed: {e}"))?;
    let total: f64 = out
        .step(step)
        .strip_prefix("ns ")
        .ok_or("the guest printed no time")?
        .parse()?;
    Ok(total / f64::from(pairs))
}
