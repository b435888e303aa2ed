//! A WASI command that increments the number in a shared file N times:
//! read, add one, write back — under a `wasmlock` lock, or without one to
//! show the lost updates.
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

use wasmlock_guest::{Kind, Lock, Namespace};

fn bump(path: &str) -> std::io::Result<()> {
    let n: u64 = std::fs::read_to_string(path)?.trim().parse().unwrap_or(0);
    std::fs::write(path, format!("{}\n", n + 1))
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [counter, n, flags @ ..] = args.as_slice() else {
        return Err(
            "usage: counter-plugin COUNTER_FILE N [--no-lock] [--soft] [--namespace NAME]".into(),
        );
    };
    let n: u64 = n.parse()?;
    let locked = !flags.iter().any(|f| f == "--no-lock");
    let kind = if flags.iter().any(|f| f == "--soft") {
        Kind::Soft
    } else {
        Kind::Os
    };
    let namespace = flags
        .iter()
        .position(|f| f == "--namespace")
        .map(|i| flags.get(i + 1).ok_or("--namespace needs a name"))
        .transpose()?;
    let lock = match namespace {
        Some(name) => Namespace::get(name)?.lock("counter")?,
        None => Lock::open_kind(&format!("{counter}.lock"), kind)?,
    };
    for _ in 0..n {
        if locked {
            let _guard = lock.lock()?;
            bump(counter)?;
        } else {
            bump(counter)?;
        }
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("counter-plugin: {e}");
        std::process::exit(1);
    }
}
