//! `tracing` events: attempt, waiting, acquired, released, broke stale.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::{dead_pid, our_host};
use wasmlock::FileLock;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture(f: impl FnOnce()) -> String {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
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
    let log = capture(|| {
        let other = FileLock::new(&path).unwrap();
        let _ = other.lock_timeout(Duration::from_millis(30));
        drop(g);
        drop(other.lock().unwrap());
    });
    for event in ["lock attempt", "waiting", "acquired", "released"] {
        assert!(log.contains(event), "no {event:?} event in:\n{log}");
    }
    assert!(log.contains("traced.lock"), "events name the path:\n{log}");
}

#[test]
fn breaking_a_stale_soft_lock_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.lock");
    let lock = FileLock::builder(&path).soft().build().unwrap();
    let host = our_host(&path);
    let dead = dead_pid();
    std::fs::write(&path, format!("{dead}\n{host}\n")).unwrap();
    let log = capture(|| drop(lock.try_lock().unwrap()));
    assert!(log.contains("broke stale soft lock"), "{log}");
}
