//! `wasmlock`: run plugins with locks, run commands under a lock, inspect
//! and break locks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use wasmlock::{ErrorKind, FileLock, Holder, Kind, Mode, Wait, WasiLockHost, WasmLockCtx};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

/// Exit status when the lock was not obtained (held, or the wait ran out).
const EXIT_BUSY: u8 = 75;
/// Exit status for any other lock error (bad path, permission, ...).
const EXIT_LOCK_ERROR: u8 = 74;
/// Exit status when the command could not be started.
const EXIT_NO_COMMAND: u8 = 127;

#[derive(Parser)]
#[command(
    name = "wasmlock",
    version,
    about = "Real file locks for WebAssembly plugins and shell scripts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a WASI command component with WASI and the wasmlock:lock interface linked.
    Run {
        /// Grant a host directory to the plugin as HOST::GUEST (read-write), or HOST::GUEST::ro.
        #[arg(long = "dir", value_name = "HOST::GUEST")]
        dirs: Vec<String>,
        /// Cap every wait of the plugin (its "forever" ends here), e.g. 30s, 500ms.
        #[arg(long, value_parser = parse_duration)]
        max_wait: Option<Duration>,
        /// Let the plugin break soft locks.
        #[arg(long)]
        allow_break: bool,
        /// The component (.wasm).
        plugin: PathBuf,
        /// Arguments for the plugin.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run COMMAND while holding a lock on LOCKFILE, like flock(1).
    ///
    /// Exits with the command's status; 75 if the lock was not obtained
    /// (--nonblock, or --wait ran out); 74 on other lock errors; 127 if the
    /// command could not be started.
    Exec {
        /// A shared (reader) lock instead of an exclusive one.
        #[arg(long, short = 's')]
        shared: bool,
        /// A soft (marker-file) lock instead of a kernel lock.
        #[arg(long)]
        soft: bool,
        /// Wait at most this long, e.g. 10s, 250ms.
        #[arg(long, short = 'w', value_parser = parse_duration, conflicts_with = "nonblock")]
        wait: Option<Duration>,
        /// Do not wait: fail at once if the lock is held.
        #[arg(long, short = 'n')]
        nonblock: bool,
        /// The lock file (created if missing, never deleted).
        lockfile: PathBuf,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Show whether LOCKFILE is held, and by whom. Exits 0 if free, 1 if held.
    Status {
        /// Read it as a soft lock (marker file).
        #[arg(long)]
        soft: bool,
        /// The lock file.
        lockfile: PathBuf,
    },
    /// Break a stale soft lock (its holder is gone). Exits 1 if it is held by a live process.
    Break {
        /// Break it even if its holder is alive.
        #[arg(long)]
        force: bool,
        /// The marker file.
        lockfile: PathBuf,
    },
}

/// Parses `1.5s`, `250ms`, `2m`, `1h` or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 10s, 250ms)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn describe(holder: &Option<Holder>) -> String {
    match holder {
        Some(Holder { pid: Some(pid), .. }) => format!(" (held by pid {pid})"),
        _ => String::new(),
    }
}

fn lock_error(e: &wasmlock::Error) -> ExitCode {
    eprintln!("wasmlock: {e}");
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::Timeout => ExitCode::from(EXIT_BUSY),
        _ => ExitCode::from(EXIT_LOCK_ERROR),
    }
}

fn exec(shared: bool, soft: bool, wait: Wait, lockfile: PathBuf, command: Vec<String>) -> ExitCode {
    let kind = if soft { Kind::Soft } else { Kind::Os };
    let mode = if shared {
        Mode::Shared
    } else {
        Mode::Exclusive
    };
    let lock = match FileLock::builder(&lockfile).kind(kind).build() {
        Ok(l) => l,
        Err(e) => return lock_error(&e),
    };
    let guard = lock.lock_reporting(mode, wait, Duration::from_secs(1), |holder| {
        eprintln!(
            "waiting for lock on {}{}",
            lockfile.display(),
            describe(&holder)
        );
    });
    let guard = match guard {
        Ok(g) => g,
        Err(e) => return lock_error(&e),
    };
    let status = std::process::Command::new(&command[0])
        .args(&command[1..])
        .status();
    drop(guard);
    match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            let code = s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0));
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        Err(e) => {
            eprintln!("wasmlock: cannot run {:?}: {e}", command[0]);
            ExitCode::from(EXIT_NO_COMMAND)
        }
    }
}

fn status(soft: bool, lockfile: PathBuf) -> ExitCode {
    let kind = if soft { Kind::Soft } else { Kind::Os };
    let lock = match FileLock::builder(&lockfile).kind(kind).build() {
        Ok(l) => l,
        Err(e) => return lock_error(&e),
    };
    let held = match lock.is_locked() {
        Ok(h) => h,
        Err(e) => return lock_error(&e),
    };
    if !held {
        println!("{}: free", lockfile.display());
        return ExitCode::SUCCESS;
    }
    let mut line = format!("{}: held", lockfile.display());
    if let Ok(Some(h)) = lock.holder() {
        if let Some(pid) = h.pid {
            line.push_str(&format!(" by pid {pid}"));
        }
        if let Some(host) = h.host {
            line.push_str(&format!(" on {host}"));
        }
        if let Some(since) = h.since.and_then(|t| t.elapsed().ok()) {
            line.push_str(&format!(" for {:.1}s", since.as_secs_f64()));
        }
    }
    println!("{line}");
    ExitCode::from(1)
}

fn break_lock(force: bool, lockfile: PathBuf) -> ExitCode {
    let lock = match FileLock::builder(&lockfile).soft().build() {
        Ok(l) => l,
        Err(e) => return lock_error(&e),
    };
    match lock.break_lock(force) {
        Ok(()) => {
            println!("{}: broken", lockfile.display());
            ExitCode::SUCCESS
        }
        Err(e) if e.kind() == ErrorKind::NotOwner => {
            eprintln!("wasmlock: {e}");
            ExitCode::from(1)
        }
        Err(e) => lock_error(&e),
    }
}

async fn run(
    dirs: Vec<String>,
    max_wait: Option<Duration>,
    allow_break: bool,
    plugin: PathBuf,
    args: Vec<String>,
) -> Result<ExitCode, String> {
    let engine = Engine::default();
    let component = Component::from_file(&engine, &plugin)
        .map_err(|e| format!("{}: cannot load component: {e}", plugin.display()))?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| e.to_string())?;
    wasmlock::add_to_linker(&mut linker).map_err(|e| e.to_string())?;

    let mut wasi = WasiCtxBuilder::new();
    wasi.inherit_stdio()
        .inherit_env()
        .arg(plugin.display().to_string())
        .args(&args);
    for spec in &dirs {
        let parts: Vec<&str> = spec.split("::").collect();
        let (host, guest, perms) = match parts.as_slice() {
            [host, guest] => (host, guest, FsPerms::ReadWrite),
            [host, guest, "ro"] => (host, guest, FsPerms::ReadOnly),
            _ => {
                return Err(format!(
                    "--dir {spec:?}: expected HOST::GUEST or HOST::GUEST::ro"
                ));
            }
        };
        wasi.preopened_dir(host, guest, perms)
            .map_err(|e| format!("--dir {spec:?}: {e}"))?;
    }
    let mut locks = WasmLockCtx::builder()
        .allow_break(allow_break)
        .on_slow_wait(Duration::from_secs(1), |path, holder| {
            eprintln!(
                "waiting for lock on {}{}",
                path.display(),
                describe(&holder)
            );
        });
    if let Some(max) = max_wait {
        locks = locks.max_wait(max);
    }
    let mut store = Store::new(&engine, WasiLockHost::new(wasi.build(), locks.build()));
    let result = async {
        let command = wasmtime_wasi::p2::bindings::Command::instantiate_async(
            &mut store, &component, &linker,
        )
        .await?;
        command.wasi_cli_run().call_run(&mut store).await
    }
    .await;
    Ok(match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(())) => ExitCode::from(1),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => ExitCode::from(exit.0.clamp(0, 255) as u8),
            None => {
                eprintln!("wasmlock: {}: {e:?}", plugin.display());
                ExitCode::from(1)
            }
        },
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Exec {
            shared,
            soft,
            wait,
            nonblock,
            lockfile,
            command,
        } => {
            let wait = match (nonblock, wait) {
                (true, _) => Wait::TryOnce,
                (false, Some(d)) => Wait::Timeout(d),
                (false, None) => Wait::Forever,
            };
            exec(shared, soft, wait, lockfile, command)
        }
        Command::Status { soft, lockfile } => status(soft, lockfile),
        Command::Break { force, lockfile } => break_lock(force, lockfile),
        Command::Run {
            dirs,
            max_wait,
            allow_break,
            plugin,
            args,
        } => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("wasmlock: {e}");
                    return ExitCode::from(1);
                }
            };
            rt.block_on(run(dirs, max_wait, allow_break, plugin, args))
                .unwrap_or_else(|e| {
                    eprintln!("wasmlock: {e}");
                    ExitCode::from(2)
                })
        }
    }
}
