//! `--etcd`: the subcommands on a lock in an etcd cluster instead of a file.

use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Args;
use wasmlock::etcd::Cluster;
use wasmlock::{ErrorKind, LockGuard};

use crate::{duration, status, sys};

/// Where the cluster is, for every subcommand that takes it.
#[derive(Args, Clone, Default)]
pub(crate) struct EtcdArgs {
    /// A lock in the etcd cluster at these endpoints (comma-separated URLs)
    /// instead of a file: FILE is then the lock's name, shared with
    /// `etcdctl lock NAME`.
    #[arg(long, value_name = "URL[,URL...]")]
    pub(crate) etcd: Option<String>,
    /// With --etcd: the lease TTL (default 5s, at least 2s in etcd): how long
    /// a crashed holder keeps the lock, and how soon a holder cut off from
    /// the cluster learns it lost it.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, requires = "etcd")]
    pub(crate) ttl: Option<Duration>,
}

impl EtcdArgs {
    /// The cluster, if `--etcd` was given.
    pub(crate) fn cluster(&self) -> Option<Result<Cluster, String>> {
        let urls = self.etcd.as_ref()?;
        let mut builder = Cluster::builder();
        for url in urls.split(',').filter(|u| !u.is_empty()) {
            builder = builder.endpoint(url);
        }
        if let Some(ttl) = self.ttl {
            builder = builder.ttl(ttl);
        }
        Some(builder.connect().map_err(|e| e.to_string()))
    }
}

/// The status for a failure that is the cluster's, not the lock's.
pub(crate) fn failure_status(e: &wasmlock::Error) -> Option<u8> {
    match e.kind() {
        ErrorKind::Unavailable => Some(status::NOHOST),
        ErrorKind::Lost => Some(status::TEMPFAIL),
        _ => None,
    }
}

/// Runs `command` holding `guard`, with its fencing token in
/// `WASMLOCK_FENCE`. If the hold is lost meanwhile, the command gets SIGTERM
/// (unless `keep_running`) and the status is [`status::TEMPFAIL`].
pub(crate) fn run_holding(
    guard: &LockGuard<'_>,
    mut cmd: Command,
    keep_running: bool,
    verbose: bool,
) -> Result<u8, (u8, String)> {
    if let Some(fence) = guard.fence() {
        cmd.env("WASMLOCK_FENCE", fence.to_string());
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    if verbose {
        println!("wasmlock: executing {program}");
    }
    let mut child = cmd.spawn().map_err(|e| {
        (
            status::UNAVAILABLE,
            format!("failed to execute {program}: {e}"),
        )
    })?;
    let pid = child.id();
    // The command's end, told from a thread that waits for it; the lost
    // hold, told by the cluster. Whichever comes first.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| (status::OSERR, e.to_string()))?;
    let lock = guard.lock().path().display().to_string();
    rt.block_on(async {
        let mut done_rx = done_rx;
        let lost = tokio::select! {
            done = &mut done_rx => return Ok(sys::exit_status(done.expect("the waiting thread sends"))),
            () = guard.lost() => true,
        };
        debug_assert!(lost);
        if keep_running {
            eprintln!("wasmlock: lost the lock on {lock}; the command keeps running");
        } else {
            eprintln!(
                "wasmlock: lost the lock on {lock}; stopping the command ({})",
                sys::TERMINATE
            );
            sys::terminate(pid);
        }
        let _ = done_rx.await;
        Err((status::TEMPFAIL, format!("lost the lock on {lock} while the command ran")))
    })
}

/// `wasmlock status --etcd URL NAME`.
pub(crate) fn status(cluster: &Cluster, name: &str) -> ExitCode {
    let lock = match cluster.lock(name) {
        Ok(l) => l,
        Err(e) => return failed(&e),
    };
    match lock.holder() {
        Ok(None) => {
            println!("{name}: free");
            ExitCode::SUCCESS
        }
        Ok(Some(h)) => {
            let line = format!("{name}: held{}", crate::inspect::held_by(&h));
            println!("{line}");
            ExitCode::from(1)
        }
        Err(e) => failed(&e),
    }
}

/// `wasmlock break --etcd URL --force NAME`: deletes the holder's key.
pub(crate) fn break_lock(cluster: &Cluster, name: &str, force: bool) -> ExitCode {
    if !force {
        eprintln!(
            "wasmlock: {name}: an etcd lock has no stale holders to break (a dead \
             holder's key goes when its lease expires); --force deletes the holder's key"
        );
        return ExitCode::from(status::USAGE);
    }
    let lock = match cluster.lock(name) {
        Ok(l) => l,
        Err(e) => return failed(&e),
    };
    match lock.break_lock(true) {
        Ok(()) => {
            println!("{name}: broken");
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

fn failed(e: &wasmlock::Error) -> ExitCode {
    eprintln!("wasmlock: {e}");
    ExitCode::from(failure_status(e).unwrap_or(match e.kind() {
        ErrorKind::InvalidPath => status::USAGE,
        _ => status::DATAERR,
    }))
}
