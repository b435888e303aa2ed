//! A guest must not stall the host's async executor: on a runtime with one
//! thread, other guests and host tasks go on while a guest waits for a lock,
//! while its soft marker's release waits for its turn (after a release or a
//! drop), and a semaphore's slot files are made when it opens, not on the
//! executor when it is used.

use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmlock::{WasmLockCtx, WasmLockCtxBuilder};
use wasmlock_tests::{Guest, Outcome, PROBE, Script, flock_1_holding, rt, steps, until_exists};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

/// Starts the probe with `script` in a task; its output can be read while
/// it runs.
fn start(
    dir: &Path,
    script: &'static Script<'static>,
) -> (tokio::task::JoinHandle<Outcome>, MemoryOutputPipe) {
    start_with(dir, script, WasmLockCtx::builder())
}

/// [`start`], with `locks` as the host's limits.
fn start_with(
    dir: &Path,
    script: &'static Script<'static>,
    locks: WasmLockCtxBuilder,
) -> (tokio::task::JoinHandle<Outcome>, MemoryOutputPipe) {
    let mut guest = Guest::new(PROBE, dir, &steps(script));
    guest.locks = locks;
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

/// A soft-lock guest under way, a breaker keeping its turn on the marker.
struct Turn {
    guest: tokio::task::JoinHandle<Outcome>,
    stdout: MemoryOutputPipe,
    marker: PathBuf,
    breaker: std::process::Child,
}

impl Turn {
    /// Runs `script`, which takes `/data/s.lock` soft, touches `held`, then
    /// awaits `go`: `go` is given once a breaker (`flock(1)`, holding the
    /// kernel lock on the marker that breakers take) keeps its turn.
    async fn start(
        dir: &Path,
        script: &'static Script<'static>,
        locks: WasmLockCtxBuilder,
    ) -> Turn {
        let marker = dir.join("s.lock");
        let (guest, stdout) = start_with(dir, script, locks);
        until_exists(&dir.join("held")).await;
        let breaker = flock_1_holding(&marker).await;
        std::fs::write(dir.join("go"), b"").unwrap();
        Turn {
            guest,
            stdout,
            marker,
            breaker,
        }
    }

    fn printed(&self) -> String {
        String::from_utf8_lossy(&self.stdout.contents()).into_owned()
    }

    /// Once the guest has dropped its guard (and touched `dropped`), the
    /// marker is still there, and the guest's next call (`acq:s:ex:try`)
    /// waits for the release rather than failing on its own old hold.
    async fn after_the_drop_the_next_call_waits(&self, dir: &Path) {
        until_exists(&dir.join("dropped")).await;
        assert!(self.marker.exists(), "released before its turn");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let printed = self.printed();
        assert!(
            !printed.contains("acq:s:ex:try =>"),
            "the next call should wait for the release:\n{printed}"
        );
    }

    /// Ends the breaker's turn; the guest's script then runs to its end.
    async fn finish(mut self, script: &Script<'_>) {
        self.breaker.kill().unwrap();
        self.breaker.wait().unwrap();
        let out = self.guest.await.unwrap();
        assert_eq!(out.result, Ok(()), "{}", out.stdout);
        out.check(script);
        assert!(!self.marker.exists(), "the marker outlived its release");
    }
}

/// Releasing a soft marker takes turns with anyone breaking it; a breaker
/// that keeps its turn makes the release wait, up to a second. That wait
/// happens off the executor: a host task on the guest's only thread runs
/// meanwhile, sees the release still pending, and ends the turn.
#[tokio::test(flavor = "current_thread")]
async fn a_soft_release_waiting_for_its_turn_leaves_the_thread_to_others() {
    let dir = tempfile::tempdir().unwrap();
    const SCRIPT: &Script<'_> = &[
        ("open:s:/data/s.lock:soft", "ok"),
        ("acq:s:ex:forever", "ok"),
        ("touch:/data/held", "ok"),
        ("await:/data/go", "ok"),
        ("rel:s", "ok"),
    ];
    let turn = Turn::start(dir.path(), SCRIPT, WasmLockCtx::builder()).await;
    // Well inside the second the release waits for its turn (`TURN_PATIENCE`
    // in host/src/backend/soft.rs). Had it waited on this thread, this task
    // would run only after it gave up waiting.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let printed = turn.printed();
    assert!(
        printed.contains("await:/data/go => ok") && !printed.contains("rel:s =>"),
        "the release should be waiting for its turn now:\n{printed}"
    );
    assert!(turn.marker.exists(), "released before its turn");
    turn.finish(SCRIPT).await;
}

/// A guard's drop is a synchronous host call, so it cannot wait: a soft
/// release that would (a breaker keeps its turn) finishes on a blocking
/// thread while the guest goes on, and the guest's next lock call waits for
/// it, so a `try` then finds the lock free rather than the guest's own old
/// hold.
#[tokio::test(flavor = "current_thread")]
async fn a_dropped_soft_guard_waiting_for_its_turn_is_released_before_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    const SCRIPT: &Script<'_> = &[
        ("open:s:/data/s.lock:soft", "ok"),
        ("acq:s:ex:forever", "ok"),
        ("touch:/data/held", "ok"),
        ("await:/data/go", "ok"),
        ("dropguards:s", "ok"),
        ("touch:/data/dropped", "ok"),
        ("acq:s:ex:try", "ok"),
        ("rel:s", "ok"),
    ];
    let turn = Turn::start(dir.path(), SCRIPT, WasmLockCtx::builder()).await;
    // Still well inside `TURN_PATIENCE` (1 s).
    turn.after_the_drop_the_next_call_waits(dir.path()).await;
    turn.finish(SCRIPT).await;
}

/// The host's maximum hold time ends a hold by releasing it, and here that
/// release waits for a breaker's turn. The guest's drop of the guard
/// meanwhile finds nothing left to release and does not wait; its next lock
/// call waits for the host's end, then finds the lock free.
#[tokio::test(flavor = "current_thread")]
async fn a_guard_dropped_while_the_host_ends_it_is_released_before_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    const SCRIPT: &Script<'_> = &[
        ("open:s:/data/s.lock:soft", "ok"),
        ("acq:s:ex:forever", "ok"),
        ("touch:/data/held", "ok"),
        ("await:/data/go", "ok"),
        // Past the maximum hold time: the host is ending the hold.
        ("sleep:600", "ok"),
        ("dropguards:s", "ok"),
        ("touch:/data/dropped", "ok"),
        ("acq:s:ex:try", "ok"),
        ("rel:s", "ok"),
    ];
    let locks = WasmLockCtx::builder().max_hold(Duration::from_millis(300));
    let turn = Turn::start(dir.path(), SCRIPT, locks).await;
    // The end waits for its turn until about 1.3 s after the hold began.
    turn.after_the_drop_the_next_call_waits(dir.path()).await;
    turn.finish(SCRIPT).await;
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
