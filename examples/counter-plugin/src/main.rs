//! A WASI command that increments the number in a shared file N times:
//! read, add one, write back — under a `wasmlock` lock, or without one to
//! show the lost updates. One component for both WASI versions: it exports
//! WASI 0.2's `run` (`main`, through std) and 0.3's (`run` below, with the
//! async API); a host that links 0.3 runs that one.
//!
//! ```text
//! counter-plugin COUNTER_FILE N [--no-lock] [--soft] [--namespace NAME]
//! ```
//!
//! The lock is the file `COUNTER_FILE.lock`, or with `--namespace` the key
//! `counter` in the namespace the host granted as NAME (a directory of lock
//! files, or an etcd cluster: the plugin cannot tell).
//!
//! Build: `cargo build --target wasm32-wasip2 -p counter-plugin`.
//! Run:   `wasmlock run --dir /tmp/shared::/data counter_plugin.wasm -- /data/counter 1000`

use std::error::Error;

use wasmlock_guest::{Kind, Lock, Namespace, p3};

wit_bindgen::generate!({
    inline: "package example:counter; world counter { export wasi:cli/run@0.3.0; }",
    path: "../../wit/p3",
    generate_all,
});

fn bump(path: &str) -> std::io::Result<()> {
    let n: u64 = std::fs::read_to_string(path)?.trim().parse().unwrap_or(0);
    std::fs::write(path, format!("{}\n", n + 1))
}

/// The command line.
struct Args {
    counter: String,
    n: u64,
    locked: bool,
    kind: Kind,
    namespace: Option<String>,
}

fn args() -> Result<Args, Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [counter, n, flags @ ..] = args.as_slice() else {
        return Err(
            "usage: counter-plugin COUNTER_FILE N [--no-lock] [--soft] [--namespace NAME]".into(),
        );
    };
    let namespace = flags
        .iter()
        .position(|f| f == "--namespace")
        .map(|i| flags.get(i + 1).cloned().ok_or("--namespace needs a name"))
        .transpose()?;
    Ok(Args {
        counter: counter.clone(),
        n: n.parse()?,
        locked: !flags.iter().any(|f| f == "--no-lock"),
        kind: if flags.iter().any(|f| f == "--soft") {
            Kind::Soft
        } else {
            Kind::Os
        },
        namespace,
    })
}

/// WASI 0.2: the calling thread waits for the lock.
fn run() -> Result<(), Box<dyn Error>> {
    let a = args()?;
    let lock = match &a.namespace {
        Some(name) => Namespace::get(name)?.lock("counter")?,
        None => Lock::open_kind(&format!("{}.lock", a.counter), a.kind)?,
    };
    for _ in 0..a.n {
        let _guard = a.locked.then(|| lock.lock()).transpose()?;
        bump(&a.counter)?;
    }
    Ok(())
}

/// WASI 0.3: the task waits for the lock; a plugin's other tasks would run.
async fn run_p3() -> Result<(), Box<dyn Error>> {
    let a = args()?;
    let lock = match &a.namespace {
        Some(name) => p3::Namespace::get(name)?.lock("counter").await?,
        None => p3::Lock::open_kind(&format!("{}.lock", a.counter), a.kind).await?,
    };
    for _ in 0..a.n {
        let _guard = match a.locked {
            true => Some(lock.lock().await?),
            false => None,
        };
        bump(&a.counter)?;
    }
    Ok(())
}

struct Counter;

export!(Counter);

impl exports::wasi::cli::run::Guest for Counter {
    async fn run() -> Result<(), ()> {
        run_p3().await.map_err(|e| eprintln!("counter-plugin: {e}"))
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("counter-plugin: {e}");
        std::process::exit(1);
    }
}
