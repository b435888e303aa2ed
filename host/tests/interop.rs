//! Interoperation with lock tools nobody here wrote: util-linux `flock(1)`
//! and py-filelock's `FileLock` and `SoftFileLock`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use wasmlock::{ErrorKind, FileLock};

fn have_flock() -> bool {
    Command::new("flock")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn have_filelock() -> bool {
    Command::new("python3")
        .args(["-c", "import filelock"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A line-protocol holder/tryer around py-filelock.
const PY: &str = r#"
import sys, filelock
role, kind, path = sys.argv[1:4]
cls = filelock.SoftFileLock if kind == "soft" else filelock.FileLock
lock = cls(path)
if role == "hold":
    lock.acquire()
    print("LOCKED", flush=True)
    sys.stdin.readline()
    lock.release()
    print("RELEASED", flush=True)
else:
    try:
        lock.acquire(timeout=float(sys.argv[4]))
        print("RESULT ok", flush=True)
        lock.release()
    except filelock.Timeout:
        print("RESULT timeout", flush=True)
"#;

fn python(args: &[&str]) -> Child {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", PY]).args(args);
    Child::start(cmd)
}

#[test]
fn flock_1_holding_excludes_us() {
    if !require(have_flock(), "util-linux flock(1)") {
        return;
    }
    let dir = tmp();
    let path = dir.path().join("f.lock");
    let mut cmd = Command::new("flock");
    cmd.arg(&path)
        .args(["-c", "echo LOCKED; read line; echo RELEASED"]);
    let mut holder = Child::start(cmd);
    holder.expect("LOCKED", LONG);
    let lock = FileLock::new(&path).unwrap();
    assert_eq!(lock.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(
        lock.try_lock_shared().unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    std::thread::scope(|s| {
        let h = s.spawn(|| lock.lock_timeout(LONG).map(drop));
        std::thread::sleep(Duration::from_millis(50));
        holder.send("go");
        h.join().unwrap().unwrap();
    });
    holder.finish();
}

#[test]
fn we_exclude_flock_1() {
    if !require(have_flock(), "util-linux flock(1)") {
        return;
    }
    let dir = tmp();
    let path = dir.path().join("g.lock");
    let lock = FileLock::new(&path).unwrap();
    let nb = |extra: &[&str]| {
        Command::new("flock")
            .args(extra)
            .args(["-n"])
            .arg(&path)
            .arg("true")
            .status()
            .unwrap()
            .code()
    };
    let g = lock.lock().unwrap();
    assert_eq!(nb(&[]), Some(1), "flock -n must fail while we hold it");
    assert_eq!(nb(&["-s"]), Some(1));
    drop(g);
    let r = lock.lock_shared().unwrap();
    assert_eq!(nb(&["-s"]), Some(0), "readers share with flock -s");
    assert_eq!(nb(&[]), Some(1));
    drop(r);
    assert_eq!(nb(&[]), Some(0));
}

#[test]
fn py_filelock_and_our_os_lock_exclude_each_other() {
    if !require(have_filelock(), "python3 with the filelock package") {
        return;
    }
    let dir = tmp();
    let path = dir.path().join("py.lock");
    let p = path.to_str().unwrap();
    let mut holder = python(&["hold", "os", p]);
    holder.expect("LOCKED", LONG);
    let lock = FileLock::new(&path).unwrap();
    assert_eq!(lock.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
    holder.send("go");
    holder.expect("RELEASED", LONG);
    holder.finish();

    let g = lock.lock().unwrap();
    let mut t = python(&["try", "os", p, "0.3"]);
    assert_eq!(t.expect("RESULT", LONG), "timeout");
    t.finish();
    drop(g);
    let mut t = python(&["try", "os", p, "0"]);
    assert_eq!(t.expect("RESULT", LONG), "ok");
    t.finish();
}

#[test]
fn py_soft_file_lock_and_our_soft_lock_exclude_each_other() {
    if !require(have_filelock(), "python3 with the filelock package") {
        return;
    }
    let dir = tmp();
    let path = dir.path().join("soft.lock");
    let p = path.to_str().unwrap();
    let ours = FileLock::builder(&path).soft().build().unwrap();

    // Python's live marker is respected by us...
    let mut holder = python(&["hold", "soft", p]);
    holder.expect("LOCKED", LONG);
    assert_eq!(
        ours.lock_timeout(Duration::from_millis(300))
            .unwrap_err()
            .kind(),
        ErrorKind::Timeout
    );
    assert_eq!(ours.holder().unwrap().unwrap().pid, Some(holder.pid));
    assert_eq!(
        ours.break_lock(false).unwrap_err().kind(),
        ErrorKind::NotOwner
    );
    // ...and a killed Python holder's marker is recognised as stale.
    holder.kill();
    let g = ours.lock_timeout(LONG).unwrap();

    // Our live marker is respected by Python: it must not judge it stale
    // (that would mean our pid/host/start-token disagree with its own).
    let mut t = python(&["try", "soft", p, "0.5"]);
    assert_eq!(t.expect("RESULT", LONG), "timeout");
    t.finish();
    assert!(path.exists());
    drop(g);
    let mut t = python(&["try", "soft", p, "0"]);
    assert_eq!(t.expect("RESULT", LONG), "ok");
    t.finish();
}

#[test]
fn py_soft_file_lock_breaks_the_marker_of_our_dead_process() {
    if !require(have_filelock(), "python3 with the filelock package") {
        return;
    }
    let dir = tmp();
    let path = dir.path().join("ours-dead.lock");
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--ignored", "--exact", "child_entry", "--nocapture", "-q"])
        .env(
            ROLE_VAR,
            ["hold", path.to_str().unwrap(), "ex", "soft"].join("\u{1f}"),
        );
    let mut ours = Child::start(cmd);
    ours.expect("LOCKED", LONG);
    ours.kill();
    let mut t = python(&["try", "soft", path.to_str().unwrap(), "5"]);
    assert_eq!(
        t.expect("RESULT", LONG),
        "ok",
        "python understood our marker"
    );
    t.finish();
}

#[test]
#[ignore = "helper: runs only as a child process"]
fn child_entry() {
    child_main();
}
