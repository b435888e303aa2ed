//! `wasmlock exec`: `flock(1)`'s command line on wasmlock's engine, so a
//! script can switch from one to the other without rewriting.

use std::ffi::OsString;
use std::fs::File;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use clap::Args;
use wasmlock::{ErrorKind, FileLock, LockGuard, Mode, Wait};

use crate::remote::{self, EtcdArgs};
use crate::{describe, duration, status, sys};
use wasmlock::etcd::Cluster;

/// Run COMMAND while holding a lock on FILE, like flock(1).
///
/// The forms and options are flock(1)'s: `FILE COMMAND [ARG...]`,
/// `FILE -c 'SHELL COMMAND'`, or a file descriptor number the shell opened
/// (`exec 9>FILE; wasmlock exec -n 9`). Options go before FILE.
///
/// Exit status: the command's (128+N if signal N killed it); 1, or the
/// value of -E, if the lock was held (-n) or the wait ran out (-w); 64 for
/// a usage error; 65 for a file descriptor that is not open or another lock
/// error; 66 if the lock file cannot be opened (73 on a read-only or full
/// file system); 69 if the command cannot be started; 71 if the system ran
/// out of resources. All as flock(1) has them. With --etcd: 68 if the
/// cluster cannot be reached, 75 if the lock was lost while the command ran.
#[derive(Args)]
#[command(
    version,
    infer_long_args = true,
    after_help = "Examples:\n  \
    wasmlock exec /var/lock/cron.lock ./nightly.sh        wait for the lock, run the script\n  \
    wasmlock exec -n /var/lock/cron.lock ./nightly.sh     give up at once if it is held (status 1)\n  \
    wasmlock exec -w 2.5 -E 75 app.lock -c 'make all'     wait 2.5 s at most; status 75 if that ran out\n  \
    wasmlock exec -s db.lock ./read-report                a shared lock: readers run together\n  \
    ( wasmlock exec -n 9 || exit 1; ./critical ) 9>app.lock   lock a descriptor of the shell\n  \
    wasmlock exec --soft /shared/nfs/job.lock ./job      a marker file, as py-filelock's SoftFileLock\n  \
    wasmlock exec --etcd http://10.0.0.5:2379 -w 10s jobs/nightly ./nightly.sh   across machines; $WASMLOCK_FENCE set"
)]
pub(crate) struct ExecArgs {
    /// Take a shared (reader) lock.
    #[arg(short = 's', long, overrides_with_all = ["exclusive", "unlock"])]
    shared: bool,
    /// Take an exclusive (writer) lock; the default.
    #[arg(short = 'x', short_alias = 'e', long, overrides_with_all = ["shared", "unlock"])]
    exclusive: bool,
    /// Remove a lock (on a file descriptor: `wasmlock exec -u 9`).
    #[arg(short = 'u', long, overrides_with_all = ["shared", "exclusive"])]
    unlock: bool,
    /// Fail rather than wait if the lock is held.
    #[arg(short = 'n', long, visible_aliases = ["nb", "nonblocking"])]
    nonblock: bool,
    /// Wait at most this long: seconds as flock takes them (2, 0.5), or 250ms, 1m 30s.
    #[arg(short = 'w', long, visible_alias = "timeout", value_name = "SECS", value_parser = duration::parse)]
    wait: Option<Duration>,
    /// The exit status when the lock was held or the wait ran out.
    #[arg(short = 'E', long, value_name = "N", default_value_t = 1)]
    conflict_exit_code: u8,
    /// Do not pass the lock file descriptor to the command, so nothing it
    /// leaves running keeps the lock after it exits.
    #[arg(short = 'o', long)]
    close: bool,
    /// Run the command in place of this process (it keeps the lock).
    #[arg(short = 'F', long, conflicts_with = "close")]
    no_fork: bool,
    /// A soft lock (a marker file, as py-filelock's SoftFileLock) instead of a kernel lock.
    #[arg(long, conflicts_with_all = ["no_fork", "unlock"])]
    soft: bool,
    /// Say how long getting the lock took and what runs; report a wait for a holder.
    #[arg(long)]
    verbose: bool,
    #[command(flatten)]
    remote: EtcdArgs,
    /// With --etcd: if the lock is lost while the command runs, let it
    /// run on (the status is still 75) instead of sending it SIGTERM.
    #[arg(long, requires = "etcd")]
    keep_running: bool,
    /// FILE COMMAND [ARG...], FILE -c COMMAND, or FD.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "FILE|FD"
    )]
    args: Vec<OsString>,
}

/// What to lock and what to run, from the positional arguments.
enum Target {
    /// Boxed: a `Command` is large beside a descriptor number.
    Path(PathBuf, Box<Command>),
    Fd(i32),
}

/// How `exec` ended, if not with the command's own status.
struct Exit {
    status: u8,
    message: Option<String>,
}

impl Exit {
    fn new(status: u8, message: impl Into<String>) -> Exit {
        Exit {
            status,
            message: Some(message.into()),
        }
    }
}

pub(crate) fn main(args: ExecArgs) -> ExitCode {
    sys::default_sigchld();
    let code = match exec(&args) {
        Ok(code) => code,
        Err(Exit { status, message }) => {
            if let Some(message) = message {
                eprintln!("wasmlock: {message}");
            }
            status
        }
    };
    ExitCode::from(code)
}

fn exec(args: &ExecArgs) -> Result<u8, Exit> {
    if let Some(cluster) = args.remote.cluster() {
        let cluster = cluster.map_err(|e| Exit::new(status::USAGE, e))?;
        return exec_remote(args, &cluster);
    }
    if args.no_fork && cfg!(windows) {
        return Err(Exit::new(
            status::USAGE,
            "-F: Windows cannot run a command in place of a process",
        ));
    }
    match target(&args.args)? {
        #[cfg(unix)]
        Target::Fd(fd) => lock_fd(args, fd),
        #[cfg(windows)]
        Target::Fd(fd) => Err(Exit::new(
            status::USAGE,
            format!(
                "{fd}: file descriptor numbers are a Unix shell's; \
                 on Windows give FILE COMMAND [ARG...] or FILE -c COMMAND"
            ),
        )),
        Target::Path(path, command) if args.soft => {
            let lock = FileLock::builder(&path)
                .soft()
                .build()
                .map_err(|e| lock_error(args, &e))?;
            let guard = acquire(args, &lock)?;
            let code = run(args, *command, None);
            drop(guard);
            code
        }
        Target::Path(path, command) => {
            let file = open(&path)?;
            if args.unlock {
                // As flock(1): unlocking a file this process just opened
                // changes nothing; the command runs without a lock.
                return run(args, *command, None);
            }
            let fd = sys::inheritable(&file);
            let lock = FileLock::from_file(file).map_err(|e| lock_error(args, &e))?;
            let guard = acquire(args, &lock)?;
            if args.close {
                let code = run(args, *command, None);
                drop(guard);
                return code;
            }
            // The command shares the lock's open file description, as with
            // flock(1): the lock lasts while the command, or anything it left
            // running with the descriptor, has it. So it is not released
            // here; exiting closes our descriptor and the kernel does the rest.
            // (On Windows the lock is this process's alone: it ends with the
            // command's run, when this process exits.)
            let code = run(args, *command, Some(fd))?;
            std::mem::forget(guard);
            std::process::exit(code.into());
        }
    }
}

/// `exec --etcd`: NAME COMMAND with a lock in the cluster.
fn exec_remote(args: &ExecArgs, cluster: &Cluster) -> Result<u8, Exit> {
    let usage = |message: &str| Exit::new(status::USAGE, message);
    let (name, command) = match target(&args.args)? {
        Target::Path(name, command) => (name, command),
        Target::Fd(_) => return Err(usage("--etcd needs a lock name and a command")),
    };
    if args.shared || args.unlock || args.soft || args.no_fork {
        return Err(usage(
            "--etcd locks are exclusive and held by this process: no -s, -u, -F or --soft",
        ));
    }
    let name = name
        .to_str()
        .ok_or_else(|| usage("an etcd lock name is UTF-8"))?;
    let lock = cluster.lock(name).map_err(|e| lock_error(args, &e))?;
    let guard = acquire(args, &lock)?;
    let code = remote::run_holding(&guard, *command, args.keep_running, args.verbose)
        .map_err(|(status, message)| Exit::new(status, message));
    if let Err(e) = guard.unlock()
        && code.is_ok()
    {
        return Err(lock_error(args, &e));
    }
    code
}

fn target(args: &[OsString]) -> Result<Target, Exit> {
    let usage = |message: &str| Exit::new(status::USAGE, message);
    let (first, rest) = args
        .split_first()
        .ok_or_else(|| usage("not enough arguments"))?;
    // Every option we know was taken before FILE; what is left is a typo,
    // not a file name (getopt would refuse it too).
    if first
        .to_str()
        .is_some_and(|s| s.len() > 1 && s.starts_with('-'))
    {
        return Err(usage(&format!(
            "unrecognized option {:?}; see wasmlock exec --help",
            first.to_string_lossy()
        )));
    }
    if rest.is_empty() {
        let fd = first
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
            .filter(|&fd| fd >= 0)
            .ok_or_else(|| {
                usage(&format!(
                    "{}: not a file descriptor number; to run a command give \
                     FILE COMMAND [ARG...] or FILE -c COMMAND",
                    first.to_string_lossy()
                ))
            })?;
        return Ok(Target::Fd(fd));
    }
    // `--` before the command is accepted (flock would run a command named `--`).
    let rest = match rest.split_first() {
        Some((dashes, command)) if dashes == "--" && !command.is_empty() => command,
        _ => rest,
    };
    let command = if rest[0] == "-c" || rest[0] == "--command" {
        let [_, line] = rest else {
            return Err(usage("-c requires exactly one command argument"));
        };
        sys::shell_command(line)
    } else {
        let mut command = Command::new(&rest[0]);
        command.args(&rest[1..]);
        command
    };
    Ok(Target::Path(PathBuf::from(first), Box::new(command)))
}

/// Opens FILE as flock(1) does: created if missing (through a dangling
/// symbolic link too; parents are not created), never truncated, read-only
/// where we may not write (a directory, another user's file). When
/// `O_CREAT` itself is refused on an existing file (another user's file in a
/// sticky directory, `fs.protected_regular`), it is opened without it.
fn open(path: &PathBuf) -> Result<File, Exit> {
    let refused = |e: std::io::Error| {
        Exit::new(
            sys::open_failure(&e),
            format!("cannot open lock file {}: {e}", path.display()),
        )
    };
    if path.as_os_str().is_empty() {
        return Err(refused(std::io::ErrorKind::NotFound.into()));
    }
    let first = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path);
    match first {
        Ok(file) => Ok(file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(refused(e)),
        Err(e) => File::options()
            .read(true)
            .write(true)
            .open(path)
            .or_else(|_| File::open(path))
            .map_err(|_| refused(e)),
    }
}

fn wait(args: &ExecArgs) -> Wait {
    match args.wait {
        _ if args.nonblock => Wait::TryOnce,
        Some(d) if d.is_zero() => Wait::TryOnce,
        Some(d) => Wait::Timeout(d),
        None => Wait::Forever,
    }
}

fn acquire<'a>(args: &ExecArgs, lock: &'a FileLock) -> Result<LockGuard<'a>, Exit> {
    let mode = if args.shared {
        Mode::Shared
    } else {
        Mode::Exclusive
    };
    let started = Instant::now();
    // flock(1) is silent while it waits; we say who holds the lock when a
    // person is watching, or when asked to.
    let report = args.verbose || std::io::stderr().is_terminal();
    let guard = lock
        .lock_reporting(mode, wait(args), Duration::from_secs(1), |holder| {
            if report {
                eprintln!(
                    "wasmlock: waiting for lock on {}{}",
                    lock.path().display(),
                    describe(&holder)
                );
            }
        })
        .map_err(|e| lock_error(args, &e))?;
    if args.verbose {
        println!(
            "wasmlock: getting lock took {:.6} seconds",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(guard)
}

/// The status for a lock that was not obtained, and its message.
fn lock_error(args: &ExecArgs, e: &wasmlock::Error) -> Exit {
    if let Some(status) = remote::failure_status(e) {
        return Exit::new(status, e.to_string());
    }
    match e.kind() {
        // flock(1) says nothing about a conflict unless asked to.
        ErrorKind::WouldBlock | ErrorKind::Timeout => Exit {
            status: args.conflict_exit_code,
            message: args.verbose.then(|| e.to_string()),
        },
        ErrorKind::PermissionDenied | ErrorKind::InvalidPath => {
            Exit::new(status::NOINPUT, e.to_string())
        }
        _ if sys::out_of_resources(e.raw_os_error()) => Exit::new(status::OSERR, e.to_string()),
        _ => Exit::new(status::DATAERR, e.to_string()),
    }
}

/// `wasmlock exec [-u] FD`: lock (or unlock) a descriptor the shell opened.
/// The lock belongs to the shell's open file description and outlives this
/// process, exactly as with flock(1). It is the kernel's lock alone: the
/// engine would put its own state (the writers' turnstile) on that open
/// file too, and a wait given up would leave it behind in the shell.
#[cfg(unix)]
fn lock_fd(args: &ExecArgs, fd: i32) -> Result<u8, Exit> {
    if args.soft {
        return Err(Exit::new(
            status::USAGE,
            "--soft needs a lock file path, not a file descriptor",
        ));
    }
    let failed = |e: std::io::Error| {
        let status = if sys::out_of_resources(e.raw_os_error()) {
            status::OSERR
        } else {
            status::DATAERR
        };
        Exit::new(status, format!("{fd}: {e}"))
    };
    let file = sys::dup_inherited(fd).map_err(failed)?;
    if args.unlock {
        file.unlock().map_err(failed)?;
        return Ok(0);
    }
    let timeout = match wait(args) {
        Wait::Forever => None,
        Wait::Timeout(d) => Some(d),
        _ => Some(Duration::ZERO),
    };
    let started = Instant::now();
    if !sys::flock(&file, args.shared, timeout).map_err(failed)? {
        return Err(Exit {
            status: args.conflict_exit_code,
            message: args.verbose.then(|| format!("{fd}: failed to get lock")),
        });
    }
    if args.verbose {
        println!(
            "wasmlock: getting lock took {:.6} seconds",
            started.elapsed().as_secs_f64()
        );
    }
    // Closing our duplicate leaves the lock to the shell's descriptor.
    Ok(0)
}

/// Runs the command and returns its status; `inherit` is a lock descriptor
/// to pass on to it.
fn run(args: &ExecArgs, mut cmd: Command, inherit: Option<sys::Inheritable>) -> Result<u8, Exit> {
    if let Some(fd) = inherit {
        sys::pass_on(&mut cmd, fd);
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    if args.verbose {
        println!("wasmlock: executing {program}");
    }
    let failed = |e: std::io::Error| {
        Exit::new(
            status::UNAVAILABLE,
            format!("failed to execute {program}: {e}"),
        )
    };
    if args.no_fork {
        return Err(failed(sys::exec(&mut cmd)));
    }
    let exit = cmd.status().map_err(failed)?;
    Ok(sys::exit_status(Ok(exit)))
}
