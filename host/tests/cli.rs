//! The `wasmlock` command-line tool, run as a real process.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use wasmlock::FileLock;

const BIN: &str = env!("CARGO_BIN_EXE_wasmlock");

#[test]
#[ignore = "helper: runs only as a child process"]
fn child_entry() {
    child_main();
}

fn wasmlock(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn exec_runs_the_command_under_the_lock_and_passes_its_status_on() {
    let dir = tmp();
    let lock = dir.path().join("exec.lock");
    let l = lock.to_str().unwrap();
    // Inside, flock(1) cannot get the lock: wasmlock holds it.
    let out = wasmlock(&[
        "exec",
        l,
        "--",
        "sh",
        "-c",
        &format!("flock -n '{l}' true; echo inner=$?; exit 7"),
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "inner=1");
    assert!(lock.exists());
    let out = wasmlock(&["exec", "--shared", l, "true"]);
    assert_eq!(out.status.code(), Some(0));
    let out = wasmlock(&["exec", l, "/nonexistent/program"]);
    assert_eq!(out.status.code(), Some(69), "flock(1)'s status");
}

#[test]
fn exec_does_not_wait_with_nonblock_and_gives_up_after_wait() {
    let dir = tmp();
    let path = dir.path().join("busy.lock");
    let p = path.to_str().unwrap();
    let mut holder = Child::spawn(&["hold", p, "ex", "os"]);
    holder.expect("LOCKED", LONG);
    let t = Instant::now();
    let out = wasmlock(&["exec", "--verbose", "--nonblock", p, "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(
        text(&out.stderr).contains(p),
        "names the path: {}",
        text(&out.stderr)
    );

    let out = wasmlock(&["exec", "--verbose", "--wait", "200ms", p, "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("timed out"),
        "{}",
        text(&out.stderr)
    );
    holder.finish();
}

#[test]
fn a_long_wait_says_who_holds_the_lock() {
    let dir = tmp();
    let path = dir.path().join("slow.lock");
    let p = path.to_str().unwrap();
    let mut holder = Child::spawn(&["hold", p, "ex", "os"]);
    holder.expect("LOCKED", LONG);
    let cli = Command::new(BIN)
        .args(["exec", "--verbose", p, "echo", "got it"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    holder.send("release");
    let out = cli.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    // --verbose says on stdout, as flock(1), how long it took and what runs.
    let said = text(&out.stdout);
    let lines: Vec<&str> = said.lines().collect();
    assert!(
        lines.len() == 3
            && lines[0].starts_with("wasmlock: getting lock took ")
            && lines[1] == "wasmlock: executing echo"
            && lines[2] == "got it",
        "{said}"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "wasmlock: waiting for lock on {p} (held by pid {})",
            holder.pid
        )),
        "{err}"
    );
    holder.finish();
}

#[test]
fn status_reports_free_and_the_holder() {
    let dir = tmp();
    let path = dir.path().join("st.lock");
    let p = path.to_str().unwrap();
    let out = wasmlock(&["status", p]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("free"));
    let lock = FileLock::new(&path).unwrap();
    let g = lock.lock().unwrap();
    let out = wasmlock(&["status", p]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains(&format!("held by pid {}", std::process::id())),
        "{}",
        text(&out.stdout)
    );
    drop(g);

    let soft = dir.path().join("soft.lock");
    let s = soft.to_str().unwrap();
    let slock = FileLock::builder(&soft).soft().build().unwrap();
    let g = slock.lock().unwrap();
    let out = wasmlock(&["status", "--soft", s]);
    assert_eq!(out.status.code(), Some(1));
    let line = text(&out.stdout);
    assert!(
        line.contains(&format!("held by pid {} on ", std::process::id())) && line.contains(" for "),
        "{line}"
    );
    drop(g);
}

#[test]
fn break_removes_a_dead_holders_marker_and_refuses_a_live_one() {
    let dir = tmp();
    let path = dir.path().join("brk.lock");
    let p = path.to_str().unwrap();
    let host = our_host(&path);
    std::fs::write(&path, format!("{}\n{host}\n", dead_pid())).unwrap();
    let out = wasmlock(&["break", p]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!path.exists());

    let mut live = Child::spawn(&["hold", p, "ex", "soft"]);
    live.expect("LOCKED", LONG);
    let out = wasmlock(&["break", p]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("live process"),
        "{}",
        text(&out.stderr)
    );
    assert!(path.exists());
    live.finish();
}

#[test]
fn bad_input_gets_one_clear_line_and_a_status() {
    let dir = tmp();
    let file = dir.path().join("plain");
    std::fs::write(&file, "").unwrap();
    let under_a_file = file.join("x.lock");
    let out = wasmlock(&["exec", under_a_file.to_str().unwrap(), "true"]);
    assert_eq!(
        out.status.code(),
        Some(66),
        "cannot open: flock(1)'s status"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains(under_a_file.to_str().unwrap())
            && err.contains("Not a directory")
            && err.lines().count() == 1,
        "{err}"
    );
    let out = wasmlock(&["exec", "", "true"]);
    assert_eq!(
        out.status.code(),
        Some(66),
        "an empty path cannot be opened"
    );
    let out = wasmlock(&["exec", "--wait", "soon", "x.lock", "true"]);
    assert_eq!(out.status.code(), Some(64), "usage error");
    assert!(text(&out.stderr).contains("invalid timeout value \"soon\""));
    for sub in ["run", "exec", "status", "break", "completions"] {
        let out = wasmlock(&[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        let help = text(&out.stdout);
        assert!(
            help.contains("Usage") && help.contains("Examples:"),
            "{sub}: {help}"
        );
    }
}

#[test]
fn completions_are_scripts_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef wasmlock"),
        ("fish", "complete -c wasmlock"),
    ] {
        let out = wasmlock(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(
            script.contains(marker) && script.contains("conflict-exit-code"),
            "{shell}: {script}"
        );
    }
    let out = wasmlock(&["completions", "cmd.exe"]);
    assert_eq!(out.status.code(), Some(64));
}
