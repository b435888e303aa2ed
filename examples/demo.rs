//! The wasmlock demo: several OS processes, each hosting several instances
//! of the counter plugin (a WebAssembly component), all incrementing one
//! counter file — once through `wasmlock:lock`, once without a lock.
//! With `--etcd URL` the plugins lock through a namespace their hosts grant
//! in that etcd cluster instead of a lock file. The plugins run as WASI 0.3
//! commands (`wasmlock:lock@0.3.0`, async); `--p2` runs the same component
//! through its WASI 0.2 `run` (`wasmlock:lock@0.2.0`).
//!
//! ```text
//! cargo run --release --example demo -- [--soft | --etcd URL] [--p2] [--procs N] [--instances N] [--iters N]
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wasmlock::etcd::Cluster;
use wasmlock::{Namespace, WasmLockCtx};
use wasmlock_tests::{COUNTER_PLUGIN, Guest, Runtime};

/// What the plugins' hosts prefix the namespace's keys with in etcd.
const ETCD_PREFIX: &str = "wasmlock-demo/";

struct Options {
    soft: bool,
    p2: bool,
    etcd: Option<String>,
    procs: usize,
    instances: usize,
    iters: u64,
}

fn parse() -> Result<(Options, Option<(PathBuf, bool)>), String> {
    let mut o = Options {
        soft: false,
        p2: false,
        etcd: None,
        procs: 4,
        instances: 4,
        iters: 250,
    };
    let mut worker = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            args.next()
                .ok_or(format!("{name} needs a value"))?
                .parse()
                .map_err(|e| format!("{name}: {e}"))
        };
        match a.as_str() {
            "--soft" => o.soft = true,
            "--p2" => o.p2 = true,
            "--etcd" => o.etcd = Some(args.next().ok_or("--etcd needs a URL")?),
            "--procs" => o.procs = num("--procs")? as usize,
            "--instances" => o.instances = num("--instances")? as usize,
            "--iters" => o.iters = num("--iters")?,
            "--worker" => {
                let dir = args.next().ok_or("--worker needs a directory")?;
                let locked = args.next().ok_or("--worker needs locked|unlocked")? == "locked";
                worker = Some((PathBuf::from(dir), locked));
            }
            "-h" | "--help" => {
                println!(
                    "usage: demo [--soft | --etcd URL] [--p2] [--procs N] [--instances N] [--iters N]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if o.soft && o.etcd.is_some() {
        return Err("--soft and --etcd choose different locks: give one".into());
    }
    Ok((o, worker))
}

/// One worker process: `instances` plugin instances at once in one host.
fn work(o: &Options, dir: &Path, locked: bool) -> wasmtime::Result<()> {
    let tokio = tokio::runtime::Runtime::new()?;
    let rt = Runtime::new()?;
    rt.component(Path::new(COUNTER_PLUGIN))?; // compile before the clock starts
    // One connection (and lease) for every instance this process hosts.
    let cluster = o
        .etcd
        .as_ref()
        .map(|url| Cluster::connect([url]))
        .transpose()?;
    let start = Instant::now();
    tokio.block_on(async {
        let mut args = vec!["/data/counter".to_string(), o.iters.to_string()];
        if !locked {
            args.push("--no-lock".into());
        }
        if o.soft {
            args.push("--soft".into());
        }
        if cluster.is_some() {
            args.extend(["--namespace".into(), "counter".into()]);
        }
        let rt = &rt;
        let runs = (0..o.instances).map(|_| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut guest = Guest::new(COUNTER_PLUGIN, dir, &args);
            guest.wasi_p2 = o.p2;
            if let Some(cluster) = &cluster {
                let counter = Namespace::etcd(cluster, ETCD_PREFIX);
                guest.locks = WasmLockCtx::builder().namespace("counter", counter);
            }
            async move { rt.run(guest).await }
        });
        for outcome in futures_join(runs).await {
            if let Err(e) = outcome?.result {
                return Err(wasmtime::Error::msg(e));
            }
        }
        Ok(())
    })?;
    println!("ELAPSED {}", start.elapsed().as_secs_f64());
    Ok(())
}

/// Runs futures concurrently on the current task (no spawn: they borrow).
async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|v| v.expect("completed")).collect()
}

/// Runs the worker processes; returns (final count, slowest worker's time).
fn round(o: &Options, locked: bool) -> Result<(u64, Duration), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("counter"), "0\n")?;
    let exe = std::env::current_exe()?;
    let mut kids = Vec::new();
    for _ in 0..o.procs {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--iters",
            &o.iters.to_string(),
            "--instances",
            &o.instances.to_string(),
        ]);
        if o.soft {
            cmd.arg("--soft");
        }
        if o.p2 {
            cmd.arg("--p2");
        }
        if let Some(url) = &o.etcd {
            cmd.args(["--etcd", url]);
        }
        cmd.arg("--worker")
            .arg(dir.path())
            .arg(if locked { "locked" } else { "unlocked" });
        kids.push(cmd.stdout(Stdio::piped()).spawn()?);
    }
    let mut slowest = Duration::ZERO;
    for k in kids {
        let out = k.wait_with_output()?;
        if !out.status.success() {
            return Err(format!("a worker process failed ({})", out.status).into());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let secs: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("ELAPSED "))
            .ok_or("a worker did not report its time")?
            .parse()?;
        slowest = slowest.max(Duration::from_secs_f64(secs));
    }
    let total = std::fs::read_to_string(dir.path().join("counter"))?
        .trim()
        .parse()
        .unwrap_or(0);
    Ok((total, slowest))
}

fn main() {
    let (o, worker) = match parse() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if let Some((dir, locked)) = worker {
        if let Err(e) = work(&o, &dir, locked) {
            eprintln!("worker error: {e:?}");
            std::process::exit(1);
        }
        return;
    }
    let rounds = round(&o, true).and_then(|a| Ok((a, round(&o, false)?)));
    let ((with, with_t), (without, without_t)) = match rounds {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let expected = (o.procs * o.instances) as u64 * o.iters;
    let kind = match (&o.etcd, o.soft) {
        (Some(_), _) => "etcd",
        (None, true) => "soft",
        (None, false) => "os",
    };
    let wasi = if o.p2 { "0.2" } else { "0.3" };
    println!(
        "{} processes x {} plugin instances (WASI {wasi}) x {} increments of one counter file ({kind} lock)\n",
        o.procs, o.instances, o.iters,
    );
    println!(
        "{:<16} {:>9} {:>9} {:>10} {:>14}",
        "", "total", "lost", "wall", "hand-offs/s"
    );
    println!("{:<16} {:>9}", "expected", expected);
    println!(
        "{:<16} {:>9} {:>9} {:>7} ms {:>14.0}",
        "with the lock",
        with,
        expected - with.min(expected),
        with_t.as_millis(),
        with as f64 / with_t.as_secs_f64()
    );
    println!(
        "{:<16} {:>9} {:>9} {:>7} ms {:>14}",
        "without a lock",
        without,
        expected - without.min(expected),
        without_t.as_millis(),
        "-"
    );
    if with != expected {
        eprintln!("\nBUG: updates were lost under the lock");
        std::process::exit(1);
    }
}
