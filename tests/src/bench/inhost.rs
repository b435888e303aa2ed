//! Scenario 4: many guests of one host contending for one lock, next to as
//! many tokio tasks doing the same work under a `tokio::sync::Mutex`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{Figure, Report, Result, Sizes, scratch};
use crate::{COUNTER_PLUGIN, Guest, Runtime};

fn read_counter(path: &Path) -> Result<u64> {
    Ok(std::fs::read_to_string(path)?.trim().parse().unwrap_or(0))
}

/// Increments per second of `guests` counter-plugin instances, each doing
/// `rounds` lock/increment/unlock on one counter file.
async fn guests(runtime: Arc<Runtime>, dir: &Path, guests: usize, rounds: u32) -> Result<f64> {
    std::fs::write(dir.join("counter"), "0\n")?;
    runtime.component(Path::new(COUNTER_PLUGIN))?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..guests {
        let runtime = runtime.clone();
        let g = Guest::new(COUNTER_PLUGIN, dir, &["/data/counter", &rounds.to_string()]);
        tasks.spawn(async move { runtime.run(g).await });
    }
    while let Some(done) = tasks.join_next().await {
        let out = done??;
        out.result
            .map_err(|e| format!("counter plugin failed: {e}"))?;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = guests as u64 * u64::from(rounds);
    let got = read_counter(&dir.join("counter"))?;
    if got != total {
        return Err(format!("guests counted {got} of {total}: the lock failed").into());
    }
    Ok(total as f64 / secs)
}

/// The same work by tokio tasks: the file is read and written through
/// `tokio::fs`, the blocking-pool file I/O that wasmtime-wasi also uses.
async fn tasks(dir: &Path, tasks: usize, rounds: u32) -> Result<f64> {
    let counter = Arc::new(dir.join("tokio-counter"));
    std::fs::write(&*counter, "0\n")?;
    let mutex = Arc::new(tokio::sync::Mutex::new(()));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (mutex, counter) = (mutex.clone(), counter.clone());
        set.spawn(async move {
            for _ in 0..rounds {
                let _g = mutex.lock().await;
                let text = tokio::fs::read_to_string(&*counter).await?;
                let n: u64 = text.trim().parse().unwrap_or(0);
                tokio::fs::write(&*counter, format!("{}\n", n + 1)).await?;
            }
            Ok::<_, std::io::Error>(())
        });
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = tasks as u64 * u64::from(rounds);
    let got = read_counter(&counter)?;
    if got != total {
        return Err(format!("tasks counted {got} of {total}").into());
    }
    Ok(total as f64 / secs)
}

pub(super) fn run(sizes: &Sizes, dir: &Path, report: &mut Report) -> Result<()> {
    let dir = scratch(dir, "inhost")?;
    let rt = tokio::runtime::Runtime::new()?;
    let runtime = Arc::new(Runtime::new()?);
    let (n, r) = (sizes.guests, sizes.rounds);
    let base = rt.block_on(tasks(&dir, n, r))?;
    let ours = rt.block_on(guests(runtime, &dir, n, r))?;
    report.push(
        Figure::new(
            4,
            format!("{n} guests x {r} lock/increment/unlock, one host"),
            ours,
            "ops/s",
        )
        .against(format!("{n} tokio tasks, tokio::sync::Mutex"), base)
        .target(">= 0.5", ours / base >= 0.5),
    );
    Ok(())
}
