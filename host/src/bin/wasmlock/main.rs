//! `wasmlock`: run plugins with locks, run commands under a lock the way
//! `flock(1)` does, inspect and break locks.

mod duration;
mod exec;
mod inspect;
mod remote;
mod run;
mod sys;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Exit statuses shared by the subcommands, from `sysexits.h` as `flock(1)`
/// uses them, so scripts that check them keep working.
mod status {
    /// The command line could not be parsed.
    pub(crate) const USAGE: u8 = 64;
    /// A file descriptor number that is not open, or a lock error that is
    /// not about opening the file.
    pub(crate) const DATAERR: u8 = 65;
    /// The lock file could not be opened.
    pub(crate) const NOINPUT: u8 = 66;
    /// The lock service (an etcd cluster) could not be reached.
    pub(crate) const NOHOST: u8 = 68;
    /// The command could not be started.
    pub(crate) const UNAVAILABLE: u8 = 69;
    /// The system ran out of something (memory, file descriptors, locks).
    pub(crate) const OSERR: u8 = 71;
    /// The lock file could not be created (read-only file system, disk full).
    pub(crate) const CANTCREAT: u8 = 73;
    /// The lock was lost while the command ran (an etcd lease expired).
    pub(crate) const TEMPFAIL: u8 = 75;
}

#[derive(Parser)]
#[command(
    name = "wasmlock",
    version,
    about = "Real file locks for WebAssembly plugins and shell scripts",
    after_help = "Examples:\n  \
        wasmlock exec /var/lock/backup.lock rsync -a src/ dst/\n  \
        wasmlock run --dir ./data::/data plugin.wasm\n  \
        wasmlock status /var/lock/backup.lock\n  \
        wasmlock completions bash > /etc/bash_completion.d/wasmlock"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(run::RunArgs),
    Exec(exec::ExecArgs),
    Status(inspect::StatusArgs),
    Break(inspect::BreakArgs),
    /// Print a shell completion script for SHELL to standard output.
    #[command(after_help = "Examples:\n  \
        wasmlock completions bash > ~/.local/share/bash-completion/completions/wasmlock\n  \
        wasmlock completions zsh > ~/.zfunc/_wasmlock\n  \
        wasmlock completions fish > ~/.config/fish/completions/wasmlock.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout and succeed; anything else is a
            // usage error, with flock(1)'s status rather than clap's 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(status::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Exec(args) => exec::main(args),
        Command::Status(args) => inspect::status(args),
        Command::Break(args) => inspect::break_lock(args),
        Command::Run(args) => run::main(args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "wasmlock",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    }
}

/// " (held by pid N)" when the holder is known.
fn describe(holder: &Option<wasmlock::Holder>) -> String {
    match holder {
        Some(wasmlock::Holder { pid: Some(pid), .. }) => format!(" (held by pid {pid})"),
        _ => String::new(),
    }
}
