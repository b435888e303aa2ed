//! A guest must not stall the host's async executor: on a runtime with one
//! thread, other guests and host tasks go on while a guest waits for a lock,
//! while its soft marker's release waits for its turn, and a semaphore's
//! slot files are made when it opens, not on the executor when it is used.

use std::path::Path;
use std::time::Duration;

use wasmlock_tests::{Guest, Outcome, PROBE, Script, flock_1_holding, rt, steps, until_exists};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

/// Starts the probe with `script` in a task; its output can be read while
/// it runs.
fn start(
    dir: &Path,
    script: &'static Script<'static>,
) -> (tokio::task::JoinHandle<Outcome>, MemoryOutputPipe) {
    let guest = Guest::new(PROBE, dir, &steps(script));
    let stdout = guest.stdout.clone();
    (
        tokio::spawn(async move { rt().run(guest).await.unwrap() }),
        stdout,
    )
}

/// One guest waits forever for a lock `flock(1)` holds; on the same single
/// thread another guest runs from start to end meanwhile.
#[tokio::test(flavor = "current_thread")]
async fn a_guest_waiting_for_a_lock_leaves_the_thread_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let mut holder = flock_1_holding(&dir.path().join("x.lock")).await;
    const WAITS: &Script<'_> = &[
        ("open:x:/data/x.lock:os", "ok"),
        ("touch:/data/waiting", "ok"),
        ("acq:x:ex:forever", "ok"),
        ("rel:x", "ok"),
    ];
    let (waiting, _) = start(dir.path(), WAITS);
    until_exists(&dir.path().join("waiting")).await;
    const OTHER: &Script<'_> = &[
        ("open:y:/data/y.lock:os", "ok"),
        ("counter:y:/data/counter:10", "ok"),
        ("acq:y:ex:forever", "ok"),
        ("rel:y", "ok"),
    ];
    let (other, _) = start(dir.path(), OTHER);
    let out = other.await.unwrap();
    assert_eq!(out.result, Ok(()), "{}", out.stdout);
    out.check(OTHER);
    assert!(!waiting.is_finished(), "the first guest got a held lock");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = waiting.await.unwrap();
    assert_eq!(out.result, Ok(()), "{}", out.stdout);
    out.check(WAITS);
}

/// Releasing a soft marker takes turns with anyone breaking it; a breaker
/// that keeps its turn (here `flock(1)`, holding the kernel lock on the
/// marker that breakers take) makes the release wait, up to a second. That
/// wait happens off the executor: a host task on the guest's only thread
/// runs meanwhile, sees the release still pending, and ends the turn.
#[tokio::test(flavor = "current_thread")]
async fn a_soft_release_waiting_for_its_turn_leaves_the_thread_to_others() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("s.lock");
    const SCRIPT: &Script<'_> = &[
        ("open:s:/data/s.lock:soft", "ok"),
        ("acq:s:ex:forever", "ok"),
        ("touch:/data/held", "ok"),
        ("await:/data/go", "ok"),
        ("rel:s", "ok"),
    ];
    let (guest, stdout) = start(dir.path(), SCRIPT);
    until_exists(&dir.path().join("held")).await;
    let mut breaker = flock_1_holding(&marker).await;
    std::fs::write(dir.path().join("go"), b"").unwrap();
    // Well inside the second the release waits for its turn (`TURN_PATIENCE`
    // in host/src/backend/soft.rs). Had it waited on this thread, this task
    // would run only after it gave up waiting.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let printed = String::from_utf8_lossy(&stdout.contents()).into_owned();
    assert!(
        printed.contains("await:/data/go => ok") && !printed.contains("rel:s =>"),
        "the release should be waiting for its turn now:\n{printed}"
    );
    assert!(marker.exists(), "released before its turn");
    breaker.kill().unwrap();
    breaker.wait().unwrap();
    let out = guest.await.unwrap();
    assert_eq!(out.result, Ok(()), "{}", out.stdout);
    out.check(SCRIPT);
    assert!(!marker.exists(), "the marker outlived its release");
}

/// Opening a semaphore makes its slot files (on a blocking thread), so the
/// acquisitions that follow only lock files that are open already.
#[tokio::test(flavor = "current_thread")]
async fn a_semaphores_slot_files_are_made_when_it_opens() {
    let dir = tempfile::tempdir().unwrap();
    const SCRIPT: &Script<'_> = &[
        ("sem:0:/data/sub:jobs:3", "ok"),
        ("touch:/data/opened", "ok"),
        ("await:/data/go", "ok"),
        ("permit:0:try", "slot 0"),
    ];
    let (guest, _) = start(dir.path(), SCRIPT);
    until_exists(&dir.path().join("opened")).await;
    let mut made: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    made.sort();
    assert_eq!(made, ["jobs.00.lock", "jobs.01.lock", "jobs.02.lock"]);
    std::fs::write(dir.path().join("go"), b"").unwrap();
    let out = guest.await.unwrap();
    assert_eq!(out.result, Ok(()), "{}", out.stdout);
    out.check(SCRIPT);
}
