//! `wasmlock exec` against util-linux `flock(1)`: the same command lines,
//! run through both, must end with the same status and print the same.
//! Each row also names the status it expects, so two tools that agree on a
//! wrong answer still fail.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_wasmlock");

#[test]
#[ignore = "helper: runs only as a child process"]
fn child_entry() {
    child_main();
}

/// Who holds the lock file while a row runs.
#[derive(Clone, Copy, Debug)]
enum Held {
    Free,
    Exclusive,
    Shared,
}

/// One command line: `$TOOL` is `flock` or `wasmlock exec`, `$L` the lock
/// file, `$D` a directory; `status` and `stdout` are what both must give.
struct Row {
    held: Held,
    script: &'static str,
    status: i32,
    stdout: &'static str,
}

const fn row(held: Held, script: &'static str, status: i32, stdout: &'static str) -> Row {
    Row {
        held,
        script,
        status,
        stdout,
    }
}

use Held::*;

const ROWS: &[Row] = &[
    // The command runs under the lock and its status is passed on.
    row(Free, r#"$TOOL "$L" true"#, 0, ""),
    row(Free, r#"$TOOL "$L" sh -c 'exit 3'"#, 3, ""),
    row(Free, r#"$TOOL "$L" -c 'echo hi; exit 4'"#, 4, "hi"),
    row(Free, r#"$TOOL "$D" -c 'exit 5'"#, 5, ""),
    row(Free, r#"$TOOL "$L" sh -c 'kill -TERM $$'"#, 143, ""),
    row(
        Free,
        r#"$TOOL "$L" sh -c 'flock -n "$L" true; echo inner=$?'"#,
        0,
        "inner=1",
    ),
    row(
        Free,
        r#"$TOOL -s "$L" sh -c 'flock -s -n "$L" true; echo inner=$?'"#,
        0,
        "inner=0",
    ),
    // Conflicts: status 1 unless -E says otherwise.
    row(Exclusive, r#"$TOOL -n "$L" true"#, 1, ""),
    row(Exclusive, r#"$TOOL --nb "$L" echo ran"#, 1, ""),
    row(Exclusive, r#"$TOOL -n -E 42 "$L" true"#, 42, ""),
    row(Exclusive, r#"$TOOL --nonblocking "$L" true"#, 1, ""),
    row(Exclusive, r#"$TOOL --non --conf 3 "$L" true"#, 3, ""),
    row(
        Free,
        r#"$TOOL --verbose "$L" true | sed -e 's/^[a-z]*: //' -e 's/took .*/took/'"#,
        0,
        "getting lock took\nexecuting true",
    ),
    row(
        Free,
        r#"ln -s "$D/made" "$D/link" && $TOOL "$D/link" true; test -f "$D/made"; echo made=$?"#,
        0,
        "made=0",
    ),
    row(
        Exclusive,
        r#"$TOOL --nonblock --conflict-exit-code 9 "$L" true"#,
        9,
        "",
    ),
    row(Exclusive, r#"$TOOL -w 0.3 "$L" true"#, 1, ""),
    row(Exclusive, r#"$TOOL --timeout .3 -E 7 "$L" true"#, 7, ""),
    row(Exclusive, r#"$TOOL -w 0 "$L" true"#, 1, ""),
    row(Exclusive, r#"$TOOL -s -n "$L" true"#, 1, ""),
    // Readers share; the last of -s and -x counts.
    row(Shared, r#"$TOOL -s -n "$L" echo ran"#, 0, "ran"),
    row(Shared, r#"$TOOL --shared --nonblock "$L" true"#, 0, ""),
    row(Shared, r#"$TOOL -n "$L" true"#, 1, ""),
    row(Shared, r#"$TOOL -x -s -n "$L" true"#, 0, ""),
    row(Shared, r#"$TOOL -s -x -n "$L" true"#, 1, ""),
    row(Shared, r#"$TOOL -e -n "$L" true"#, 1, ""),
    // -o: what the command leaves running does not keep the lock.
    row(
        Free,
        r#"$TOOL -o "$L" -c 'sleep 5 >/dev/null 2>&1 &'; flock -n "$L" true; echo after=$?"#,
        0,
        "after=0",
    ),
    row(
        Free,
        r#"$TOOL "$L" -c 'sleep 5 >/dev/null 2>&1 &'; flock -n "$L" true; echo after=$?"#,
        0,
        "after=1",
    ),
    // -F: the command replaces the tool and keeps the lock.
    row(
        Free,
        r#"$TOOL -F "$L" sh -c 'flock -n "$L" true; echo inner=$?; exit 6'"#,
        6,
        "inner=1",
    ),
    // A descriptor the shell opened: the lock outlives the tool.
    row(
        Free,
        r#"( $TOOL -n 9 || exit 1; flock -n "$L" true; echo other=$? ) 9>"$L""#,
        0,
        "other=1",
    ),
    row(
        Free,
        r#"( $TOOL 9; flock -n "$L" true; echo held=$?; $TOOL -u 9; flock -n "$L" true; echo after=$? ) 9>"$L""#,
        0,
        "held=1\nafter=0",
    ),
    row(
        Exclusive,
        r#"( $TOOL -n 9; echo got=$? ) 9>>"$L""#,
        0,
        "got=1",
    ),
    row(
        Free,
        r#": >>"$L"; ( $TOOL -s 9 && flock -n "$L" true; echo ex=$?; flock -s -n "$L" true; echo sh=$? ) 9<"$L""#,
        0,
        "ex=1\nsh=0",
    ),
    row(
        Free,
        r#"( $TOOL -u -x 9; flock -n "$L" true; echo other=$? ) 9>"$L""#,
        0,
        "other=1",
    ),
    row(Free, r#"( $TOOL -s 9 && echo got ) 9</dev/null"#, 0, "got"),
    row(
        Exclusive,
        r#"( $TOOL -w 0.2 9; echo got=$? ) 9<>"$L""#,
        0,
        "got=1",
    ),
    // Errors.
    row(Free, r#"$TOOL -n 7 7>&-"#, 65, ""),
    row(Free, r#"$TOOL "$L" /nonexistent/program"#, 69, ""),
    row(Free, r#"$TOOL "$D/missing/dir/x" true"#, 66, ""),
    row(Free, r#"$TOOL "$L" -c"#, 64, ""),
    row(Free, r#"$TOOL "$L" -c 'echo a' extra"#, 64, ""),
    row(Free, r#"$TOOL -w soon "$L" true"#, 64, ""),
    row(Free, r#"$TOOL -w 1,5 "$L" true"#, 64, ""),
    row(Free, r#"$TOOL -F -o "$L" true"#, 64, ""),
    row(Free, r#"$TOOL "$L""#, 64, ""),
    row(Free, r#"$TOOL --bogus "$L" true"#, 64, ""),
    row(Free, r#"$TOOL"#, 64, ""),
];

struct Outcome {
    status: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn run(tool: &str, script: &str, dir: &std::path::Path) -> Outcome {
    let started = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("TOOL", tool)
        .env("L", dir.join("row.lock"))
        .env("D", dir)
        .output()
        .unwrap();
    Outcome {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

fn run_row(row: &Row, tool: &str) -> Outcome {
    let dir = tmp();
    let lock = dir.path().join("row.lock");
    let holder = match row.held {
        Free => None,
        Exclusive | Shared => {
            let mode = if matches!(row.held, Shared) {
                "sh"
            } else {
                "ex"
            };
            let mut child = Child::spawn(&["hold", p(&lock), mode, "os"]);
            child.expect("LOCKED", LONG);
            Some(child)
        }
    };
    let outcome = run(tool, row.script, dir.path());
    if let Some(child) = holder {
        child.finish();
    }
    outcome
}

#[test]
fn the_same_command_lines_give_the_same_results_as_flock() {
    if !require(
        Command::new("flock").arg("--version").output().is_ok(),
        "flock(1)",
    ) {
        return;
    }
    let ours = format!("{BIN} exec");
    let mut wrong = Vec::new();
    for row in ROWS {
        let theirs = run_row(row, "flock");
        let mine = run_row(row, &ours);
        let expected = (Some(row.status), row.stdout);
        for (tool, got) in [("flock", &theirs), ("wasmlock exec", &mine)] {
            if (got.status, got.stdout.as_str()) != expected {
                wrong.push(format!(
                    "{tool}: {:?} [{:?} held]: status {:?}, stdout {:?} (want {}, {:?}); stderr: {}",
                    row.script, row.held, got.status, got.stdout, row.status, row.stdout, got.stderr
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn a_timed_wait_lasts_as_long_as_asked_in_both() {
    if !require(
        Command::new("flock").arg("--version").output().is_ok(),
        "flock(1)",
    ) {
        return;
    }
    let ours = format!("{BIN} exec");
    let timed = row(Exclusive, r#"$TOOL -w 0.4 "$L" true"#, 1, "");
    for tool in ["flock", ours.as_str()] {
        let got = run_row(&timed, tool);
        assert_eq!(got.status, Some(1), "{tool}: {}", got.stderr);
        assert!(
            got.took >= Duration::from_millis(400) && got.took < Duration::from_secs(10),
            "{tool} waited {:?}",
            got.took
        );
    }
}

/// A wait on a shell's descriptor that gives up leaves nothing of ours on
/// that open file: later readers get in as soon as the holder leaves.
#[test]
fn a_timed_out_wait_on_a_shell_descriptor_leaves_nothing_behind() {
    let dir = tmp();
    let lock = dir.path().join("row.lock");
    let mut holder = Child::spawn(&["hold", p(&lock), "ex", "os"]);
    holder.expect("LOCKED", LONG);
    // The shell keeps descriptor 9 open after the wait gave up.
    let mut shell = Command::new("sh")
        .arg("-c")
        .arg(r#"exec 9<>"$L"; $TOOL -w 0.2 9; echo got=$?; sleep 5"#)
        .env("TOOL", format!("{BIN} exec"))
        .env("L", &lock)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(shell.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "got=1");
    holder.finish();
    let reader = run(
        &format!("{BIN} exec"),
        r#"$TOOL -s -w 2 "$L" true"#,
        dir.path(),
    );
    let _ = shell.kill();
    let _ = shell.wait();
    assert_eq!(reader.status, Some(0), "{}", reader.stderr);
}

#[test]
fn a_conflict_says_nothing_unless_verbose() {
    let dir = tmp();
    let lock = dir.path().join("row.lock");
    let mut holder = Child::spawn(&["hold", p(&lock), "ex", "os"]);
    holder.expect("LOCKED", LONG);
    let quiet = run(&format!("{BIN} exec"), r#"$TOOL -n "$L" true"#, dir.path());
    assert_eq!((quiet.status, quiet.stderr.as_str()), (Some(1), ""));
    let verbose = run(
        &format!("{BIN} exec"),
        r#"$TOOL --verbose -n "$L" true"#,
        dir.path(),
    );
    assert_eq!(verbose.status, Some(1));
    assert!(
        verbose.stderr.contains(p(&lock)) && verbose.stderr.contains("held"),
        "names the lock and the problem: {}",
        verbose.stderr
    );
    holder.finish();
}
