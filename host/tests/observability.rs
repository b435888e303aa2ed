//! `tracing` events: attempt, waiting, acquired, released, broke stale.

use std::io::Write;
use std::sync::{Mutex, Once};
use std::time::Duration;

mod common;

use common::{dead_pid, our_host};
use wasmlock::FileLock;

/// Where the events of every thread go: one subscriber for the whole
/// test process. (Scoped subscribers on parallel test threads lost events
/// under wine: tracing caches per event site whether anyone listens.)
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Captured;

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The events while `f` runs that name `file`: any thread's (the lock's
/// waiting thread's too), and no other test's.
fn capture(file: &str, f: impl FnOnce()) -> String {
    static INSTALL: Once = Once::new();
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(|| Captured)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    LOG.lock().unwrap().clear();
    f();
    let log = String::from_utf8(std::mem::take(&mut *LOG.lock().unwrap())).unwrap();
    log.lines()
        .filter(|line| line.contains(file))
        .map(|line| format!("{line}\n"))
        .collect()
}

#[test]
#[ignore = "helper: runs only as a child process"]
fn child_entry() {
    common::child_main();
}

#[test]
fn debug_events_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traced.lock");
    let holder = FileLock::new(&path).unwrap();
    let g = holder.lock().unwrap();
    let log = capture("traced.lock", || {
        let other = FileLock::new(&path).unwrap();
        let _ = other.lock_timeout(Duration::from_millis(30));
        drop(g);
        drop(other.lock().unwrap());
    });
    for event in ["lock attempt", "waiting", "acquired", "released"] {
        assert!(log.contains(event), "no {event:?} event in:\n{log}");
    }
}

#[test]
fn breaking_a_stale_soft_lock_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.lock");
    let lock = FileLock::builder(&path).soft().build().unwrap();
    let host = our_host(&path);
    let dead = dead_pid();
    std::fs::write(&path, format!("{dead}\n{host}\n")).unwrap();
    let log = capture("stale.lock", || drop(lock.try_lock().unwrap()));
    assert!(log.contains("broke stale soft lock"), "{log}");
}
