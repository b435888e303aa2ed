//! `wasmlock status` and `wasmlock break`: look at a lock, break a stale one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use wasmlock::{ErrorKind, FileLock, Kind};

use crate::remote::EtcdArgs;
use crate::status;
use wasmlock::etcd::Cluster;

/// Show whether LOCKFILE is held, and by whom. Exits 0 if free, 1 if held.
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    wasmlock status /var/lock/cron.lock          a kernel lock: free, or held by pid N\n  \
    wasmlock status --soft build/.lock           a marker file: pid, host and since when\n  \
    wasmlock status app.lock || echo busy        the status tells it to scripts\n  \
    wasmlock status --etcd http://10.0.0.5:2379 jobs/nightly   lease, fence, pid, host, since")]
pub(crate) struct StatusArgs {
    /// Read it as a soft lock (marker file).
    #[arg(long, conflicts_with = "etcd")]
    soft: bool,
    #[command(flatten)]
    remote: EtcdArgs,
    /// The lock file (with --etcd: the lock's name).
    lockfile: PathBuf,
}

/// Break a stale soft lock (its holder is gone). Exits 1 if it is held by a live process.
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    wasmlock break build/.lock             remove a marker whose process is gone\n  \
    wasmlock break --force build/.lock     remove it even if its holder lives")]
pub(crate) struct BreakArgs {
    /// Break it even if its holder is alive.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    remote: EtcdArgs,
    /// The marker file (with --etcd: the lock's name).
    lockfile: PathBuf,
}

fn failed(e: &wasmlock::Error) -> ExitCode {
    eprintln!("wasmlock: {e}");
    ExitCode::from(match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::InvalidPath => status::NOINPUT,
        _ => status::DATAERR,
    })
}

/// The cluster and lock name of `--etcd` subcommands.
fn remote(args: &EtcdArgs, name: &std::path::Path) -> Option<Result<(Cluster, String), ExitCode>> {
    let cluster = args.cluster()?;
    Some(
        cluster
            .and_then(|c| {
                Ok((
                    c,
                    name.to_str()
                        .ok_or("an etcd lock name is UTF-8")?
                        .to_owned(),
                ))
            })
            .map_err(|e| {
                eprintln!("wasmlock: {e}");
                ExitCode::from(status::USAGE)
            }),
    )
}

pub(crate) fn status(args: StatusArgs) -> ExitCode {
    match remote(&args.remote, &args.lockfile) {
        Some(Ok((cluster, name))) => return crate::remote::status(&cluster, &name),
        Some(Err(code)) => return code,
        None => {}
    }
    let kind = if args.soft { Kind::Soft } else { Kind::Os };
    let path = &args.lockfile;
    let lock = match FileLock::builder(path).kind(kind).build() {
        Ok(l) => l,
        Err(e) => return failed(&e),
    };
    let held = match lock.is_locked() {
        Ok(h) => h,
        Err(e) => return failed(&e),
    };
    if !held {
        println!("{}: free", path.display());
        return ExitCode::SUCCESS;
    }
    let mut line = format!("{}: held", path.display());
    if let Ok(Some(h)) = lock.holder() {
        line.push_str(&held_by(&h));
    }
    println!("{line}");
    ExitCode::from(1)
}

/// What is known of a holder, as `status` prints it: ` under lease L with
/// fence F by pid P on HOST for S`.
pub(crate) fn held_by(h: &wasmlock::Holder) -> String {
    let mut line = String::new();
    if let Some(lease) = h.lease {
        line.push_str(&format!(" under lease {lease:x}"));
    }
    if let Some(fence) = h.fence {
        line.push_str(&format!(" with fence {fence}"));
    }
    if let Some(pid) = h.pid {
        line.push_str(&format!(" by pid {pid}"));
    }
    if let Some(host) = &h.host {
        line.push_str(&format!(" on {host}"));
    }
    if let Some(since) = h.since.and_then(|t| t.elapsed().ok()) {
        line.push_str(&format!(" for {:.1}s", since.as_secs_f64()));
    }
    line
}

pub(crate) fn break_lock(args: BreakArgs) -> ExitCode {
    match remote(&args.remote, &args.lockfile) {
        Some(Ok((cluster, name))) => return crate::remote::break_lock(&cluster, &name, args.force),
        Some(Err(code)) => return code,
        None => {}
    }
    let path = &args.lockfile;
    let lock = match FileLock::builder(path).soft().build() {
        Ok(l) => l,
        Err(e) => return failed(&e),
    };
    match lock.break_lock(args.force) {
        Ok(()) => {
            println!("{}: broken", path.display());
            ExitCode::SUCCESS
        }
        Err(e) if e.kind() == ErrorKind::NotOwner => {
            eprintln!("wasmlock: {e}");
            ExitCode::from(1)
        }
        Err(e) => failed(&e),
    }
}
