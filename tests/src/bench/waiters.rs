//! Scenario 5: thousands of native tasks and guest instances waiting for one
//! lock in one process — threads, memory, and the order they are served in.

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use wasmlock::FileLock;

use super::{Figure, Report, Result, Sizes, scratch};
use crate::{Guest, PROBE, Runtime};

fn status_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_bytes() -> u64 {
    status_field("VmRSS:") * 1024
}

fn threads() -> u64 {
    status_field("Threads:")
}

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?;
    writeln!(f, "{line}")
}

struct Measured {
    threads: u64,
    native_bytes: f64,
    guest_bytes: f64,
    /// Waiters that were not served exactly once, in the order they queued.
    out_of_order: usize,
    served: usize,
}

async fn scenario(dir: &Path, natives: usize, guests: usize) -> Result<Measured> {
    let runtime = Arc::new(Runtime::new()?);
    runtime.component(Path::new(PROBE))?;
    let path = dir.join("w.lock");
    let log = Arc::new(dir.join("order"));
    let _ = std::fs::remove_file(&*log);

    // Held by this thread (an owner apart from every task) until all queued.
    let holder = FileLock::new(&path)?;
    let held = holder.lock()?;
    let lock = Arc::new(FileLock::new(&path)?);
    let queued = Arc::new(AtomicUsize::new(0));
    // guest index → its place in the queue
    let mut guest_place = vec![usize::MAX; guests];
    let mut tasks = tokio::task::JoinSet::new();

    // Natives, then guests, then natives again: the queue mixes both kinds,
    // and each stretch's memory growth belongs to one kind.
    let mut rss = vec![rss_bytes()];
    for stretch in [0..natives / 2, 0..0, natives / 2..natives] {
        if stretch.is_empty() {
            for (k, place) in guest_place.iter_mut().enumerate() {
                let g = Guest::new(
                    PROBE,
                    dir,
                    &[
                        "open:l:/data/w.lock:os",
                        "start:l:ex",
                        // Ready once granted: the host finishes waiting first.
                        "poll:l:600000",
                        "finish:l",
                        &format!("log:/data/order:g{k}"),
                    ],
                );
                let stdout = g.stdout.clone();
                let runtime = runtime.clone();
                tasks.spawn(async move {
                    let out = runtime.run(g).await.map_err(|e| e.to_string())?;
                    out.result.clone()?;
                    match out.step("finish:l") {
                        "ok" => Ok(()),
                        other => Err(format!("guest {k} did not get the lock: {other}")),
                    }
                });
                // The guest has queued once its start step printed.
                while !String::from_utf8_lossy(&stdout.contents()).contains("start:l:ex => ok") {
                    tokio::task::yield_now().await;
                }
                *place = queued.fetch_add(1, Ordering::SeqCst);
            }
        }
        for _ in stretch {
            let (lock, log) = (lock.clone(), log.clone());
            let counter = queued.clone();
            tasks.spawn(async move {
                let mut waiting = pin!(lock.lock_async());
                // The first poll puts the task in the queue; nothing else runs
                // on this single-threaded runtime before it takes its number.
                let first = std::future::poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx))).await;
                if first.is_ready() {
                    return Err("a waiter got a held lock".to_owned());
                }
                let place = counter.fetch_add(1, Ordering::SeqCst);
                let guard = waiting.await.map_err(|e| e.to_string())?;
                append(&log, &format!("n{place}")).map_err(|e| e.to_string())?;
                drop(guard);
                Ok(())
            });
            let want = queued.load(Ordering::SeqCst) + 1;
            while queued.load(Ordering::SeqCst) < want {
                tokio::task::yield_now().await;
            }
        }
        rss.push(rss_bytes());
    }
    let mut peak_threads = threads();
    drop(held);
    while let Some(done) = tasks.join_next().await {
        done?.map_err(|e| format!("a waiter failed: {e}"))?;
    }
    peak_threads = peak_threads.max(threads());

    let order = std::fs::read_to_string(&*log)?;
    let places: Vec<usize> = order
        .lines()
        .map(|l| {
            if let Some(n) = l.strip_prefix('n') {
                n.parse().unwrap_or(usize::MAX)
            } else if let Some(k) = l.strip_prefix('g') {
                k.parse::<usize>()
                    .ok()
                    .and_then(|k| guest_place.get(k).copied())
                    .unwrap_or(usize::MAX)
            } else {
                eprintln!("  waiters: unexpected line {l:?} in the order log");
                usize::MAX
            }
        })
        .collect();
    let out_of_order = places.iter().enumerate().filter(|(i, p)| *i != **p).count()
        + (natives + guests).abs_diff(places.len());
    let grew = |from: usize| rss[from + 1].saturating_sub(rss[from]) as f64;
    let native_growth = grew(0) + grew(2);
    Ok(Measured {
        threads: peak_threads,
        native_bytes: native_growth / natives.max(1) as f64,
        guest_bytes: grew(1) / guests.max(1) as f64,
        out_of_order,
        served: places.len(),
    })
}

pub(super) fn run(sizes: &Sizes, dir: &Path, report: &mut Report) -> Result<()> {
    let dir = scratch(dir, "waiters")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (n, g) = (sizes.native_waiters, sizes.guest_waiters);
    let m = rt.block_on(scenario(&dir, n, g))?;
    let who = format!("{n} native + {g} guest waiters");
    report.push(
        Figure::new(
            5,
            format!("{who}: OS threads, peak"),
            m.threads as f64,
            "threads",
        )
        .target("<= 16", m.threads <= 16),
    );
    report.push(
        Figure::new(
            5,
            "memory per waiting native task (RSS growth)",
            m.native_bytes,
            "B",
        )
        .target("<= 2048 B", m.native_bytes <= 2048.0),
    );
    report.push(Figure::new(
        5,
        "memory per waiting guest instance (RSS growth)",
        m.guest_bytes,
        "B",
    ));
    report.push(
        Figure::new(
            5,
            format!("{who}: served, of {}", n + g),
            m.served as f64,
            "",
        )
        .target("all", m.served == n + g),
    );
    report.push(
        Figure::new(
            5,
            "waiters not served exactly once in FIFO order",
            m.out_of_order as f64,
            "",
        )
        .target("0", m.out_of_order == 0),
    );
    Ok(())
}
