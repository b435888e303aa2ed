//! Scenario 4: many guests of one host contending for one lock, next to as
//! many tokio tasks doing the same work under a `tokio::sync::Mutex`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{Figure, Report, Result, Sizes, scratch};
use crate::{COUNTER_PLUGIN, Guest, PROBE3, Runtime};

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
        let mut g = Guest::new(COUNTER_PLUGIN, dir, &["/data/counter", &rounds.to_string()]);
        // Scenario 4's figures are the 0.2 world's (the plugin has both).
        g.wasi_p2 = true;
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
    // The counter plugin is one component for both worlds, so its engine
    // supports 0.3 (with wasmtime's concurrency support) even when it runs
    // the plugin's 0.2 `run`.
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
    // The same work by tasks of one WASI 0.3 guest: one instance, its
    // tasks taking turns on the lock while the others wait in the host.
    let base = rt.block_on(tasks(&dir, n, r))?;
    let ours = rt.block_on(guest_tasks(&Runtime::new()?, &dir, n, r))?;
    report.push(
        Figure::new(
            4,
            format!("{n} tasks of one 0.3 guest x {r} lock/increment/unlock"),
            ours,
            "ops/s",
        )
        .against(format!("{n} tokio tasks, tokio::sync::Mutex"), base)
        .target(">= 0.5", ours / base >= 0.5),
    );
    Ok(())
}

/// Increments per second of `tasks` tasks of one probe3 instance, each
/// doing `rounds` lock/increment/unlock on one counter file.
async fn guest_tasks(runtime: &Runtime, dir: &Path, tasks: usize, rounds: u32) -> Result<f64> {
    std::fs::write(dir.join("counter3"), "0\n")?;
    runtime.component(Path::new(PROBE3))?;
    let step = format!("tasks:/data/tasks.lock:/data/counter3:{tasks}:{rounds}");
    let start = Instant::now();
    let out = runtime.run(Guest::new(PROBE3, dir, &[&step])).await?;
    out.result
        .map_err(|e| format!("the 0.3 guest failed: {e}"))?;
    let secs = start.elapsed().as_secs_f64();
    let total = tasks as u64 * u64::from(rounds);
    let got = read_counter(&dir.join("counter3"))?;
    if got != total {
        return Err(format!("guest tasks counted {got} of {total}: the lock failed").into());
    }
    Ok(total as f64 / secs)
}
