//! A test guest for `wasmlock:lock@0.3.0`, a WASI 0.3 command. Each
//! argument is one scenario, `verb:arg:arg...`; each prints one line
//! `STEP => RESULT` the test reads.
//!
//! Scenarios: `pair:PATH:N` (two tasks of this guest take the lock N times
//! each and check that the other is never inside), `counter:PATH:FILE:N`
//! (N increments of FILE under the lock), `timeout:PATH:MS` (one bounded
//! wait), `givesup:PATH:MS` (one task holds, another's bounded wait gives
//! up, then the lock is free at once), `race:PATH:N` (N releases that race
//! a waiter's cancel: the lock is free afterwards every time), `lost:PATH`
//! (waits for the host to end the hold), `open:PATH` (opens it),
//! `guards:DIR:N` (opens and takes N locks, keeping them), `bench:PATH:N`
//! (N uncontended lock+unlock; prints the nanoseconds they took),
//! `hostile:os|soft:HEX` (opens a hex-encoded path in `/data`, then tries),
//! `trap:PATH` (traps while holding),
//! `tasks:PATH:FILE:T:N` (T tasks, each N increments of FILE under the lock),
//! `lostmany:PATH:N` (holds, and keeps N lost futures of the guard),
//! `unlockcancel:NAMESPACE` (holds two keys, drops one guard, cancels the
//! other's unlock after its first poll, then tries the second key again),
//! `call:N` (N calls of an async import that returns at once: the floor of
//! a 0.3 host call, for the bench; prints the nanoseconds they took).

use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use wasmlock_guest::p3::{Lock, Namespace};
use wasmlock_guest::{ErrorKind, Kind};

wit_bindgen::generate!({
    inline: "package probe:p3; world probe { import wasi:clocks/monotonic-clock@0.3.0; export wasi:cli/run@0.3.0; }",
    path: "../../../wit/p3",
    generate_all,
});

use wasi::clocks::monotonic_clock::wait_for;

struct Probe;

export!(Probe);

impl exports::wasi::cli::run::Guest for Probe {
    async fn run() -> Result<(), ()> {
        for step in std::env::args().skip(1) {
            let result = scenario(&step).await;
            println!("{step} => {result}");
        }
        Ok(())
    }
}

fn main() {}

async fn scenario(step: &str) -> String {
    let words: Vec<&str> = step.split(':').collect();
    let number = |i: usize| -> u64 { words[i].parse().expect("a number") };
    match words[0] {
        "guards" => return guards(words[1], number(2)).await,
        "hostile" => return hostile(words[1], words[2]).await,
        "unlockcancel" => return unlock_cancelled(words[1]).await,
        "call" => {
            let start = std::time::Instant::now();
            for _ in 0..number(1) {
                wait_for(0).await;
            }
            return format!("ns {}", start.elapsed().as_nanos());
        }
        _ => {}
    }
    let lock = match Lock::open(words[1]).await {
        Ok(lock) => lock,
        Err(e) => return format!("err {:?} {}", e.kind(), e.message()),
    };
    match words[0] {
        "pair" => pair(&lock, number(2)).await,
        "counter" => {
            for _ in 0..number(3) {
                let _guard = lock.lock().await.expect("lock");
                bump(words[2]);
            }
            "ok".into()
        }
        "open" => "ok".into(),
        "bench" => {
            let start = std::time::Instant::now();
            for _ in 0..number(2) {
                drop(lock.lock().await.expect("lock"));
            }
            format!("ns {}", start.elapsed().as_nanos())
        }
        "tasks" => {
            let task = || async {
                for _ in 0..number(4) {
                    let _guard = lock.lock().await.expect("lock");
                    bump(words[2]);
                }
            };
            all((0..number(3)).map(|_| Box::pin(task()) as Pin<Box<dyn Future<Output = ()>>>))
                .await;
            "ok".into()
        }
        "timeout" => outcome(lock.lock_timeout(Duration::from_millis(number(2))).await),
        "givesup" => gives_up(&lock, number(2)).await,
        "race" => race(&lock, number(2)).await,
        "lost" => {
            let guard = lock.lock().await.expect("lock");
            guard.lost().await;
            format!("lost {}", guard.is_lost())
        }
        "lostmany" => {
            let guard = lock.lock().await.expect("lock");
            let mut kept = Vec::new();
            for _ in 0..number(2) {
                let mut lost = Box::pin(guard.lost());
                poll_once(lost.as_mut()).await;
                kept.push(lost);
            }
            format!("kept {}", kept.len())
        }
        "trap" => {
            let _guard = lock.lock().await.expect("lock");
            println!("{step} => holding");
            std::process::abort()
        }
        other => panic!("unknown scenario {other}"),
    }
}

fn outcome<T>(r: Result<T, wasmlock_guest::Error>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("err {:?} {}", e.kind(), e.message()),
    }
}

fn bump(path: &str) {
    let n: u64 = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    std::fs::write(path, format!("{}\n", n + 1)).expect("write the counter");
}

fn sleep(ms: u64) -> impl Future<Output = ()> {
    wait_for(ms * 1_000_000)
}

/// Every future to completion, polled in turn: tasks of one guest.
async fn all<'a>(futures: impl Iterator<Item = Pin<Box<dyn Future<Output = ()> + 'a>>>) {
    let mut futures: Vec<_> = futures.map(Some).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for slot in &mut futures {
            if let Some(f) = slot {
                if f.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    pending = true;
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await
}

/// Polls `f` once (an import it calls is made), and goes on.
async fn poll_once<F: Future>(mut f: Pin<&mut F>) {
    poll_fn(|cx| {
        let _ = f.as_mut().poll(cx);
        Poll::Ready(())
    })
    .await
}

/// An unlock cancelled after its first poll still releases: the next
/// lock call of this guest finds the key free. (Keys in a lock service:
/// their release waits for the service, so it goes on without the call.)
async fn unlock_cancelled(namespace: &str) -> String {
    let ns = Namespace::get(namespace).expect("the namespace");
    let (first, second) = (ns.lock("k1").await.unwrap(), ns.lock("k2").await.unwrap());
    let held = first.lock().await.expect("lock k1");
    let other = second.lock().await.expect("lock k2");
    // A release of its own, under way while the unlock is cancelled.
    drop(held);
    poll_once(pin!(other.unlock())).await;
    let k2 = outcome(second.try_lock().await);
    let k1 = outcome(first.try_lock().await);
    format!("k2 {k2}, k1 {k1}")
}

/// Both futures to completion, polled in turn: two tasks of one guest.
async fn both<A, B>(a: impl Future<Output = A>, b: impl Future<Output = B>) -> (A, B) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut ra, mut rb) = (None, None);
    poll_fn(|cx| {
        if ra.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    (ra.unwrap(), rb.unwrap())
}

/// Opens the hex-encoded `hex` in the granted `/data` (the guest-side path
/// resolution passes it on as it is), then tries it.
async fn hostile(kind: &str, hex: &str) -> String {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    let path = String::from_utf8(bytes).expect("UTF-8: WIT strings are");
    let kind = if kind == "soft" { Kind::Soft } else { Kind::Os };
    match Lock::open_kind(&format!("/data/{path}"), kind).await {
        Ok(lock) => format!("open ok, try {}", outcome(lock.try_lock().await.map(drop))),
        Err(e) => outcome::<()>(Err(e)),
    }
}

/// Opens and takes `n` locks in `dir`, keeping every guard: where the
/// host's limits stop it.
async fn guards(dir: &str, n: u64) -> String {
    let mut kept = Vec::new();
    for i in 0..n {
        let lock = match Lock::open(&format!("{dir}/{i}.lock")).await {
            Ok(lock) => lock,
            Err(e) => return format!("open {i}: err {:?}", e.kind()),
        };
        match lock.try_lock().await {
            Ok(guard) => kept.push((lock, guard)),
            Err(e) => return format!("lock {i}: err {:?}", e.kind()),
        }
    }
    "ok".into()
}

/// Two tasks take the lock `n` times each; a witness says whether the
/// other was ever inside at the same time. Each stays inside across an
/// await, so the other task runs (and waits) meanwhile.
async fn pair(lock: &Lock, n: u64) -> String {
    let inside = Cell::new(false);
    let violations = Cell::new(0);
    let task = || async {
        for _ in 0..n {
            let guard = lock.lock().await.expect("lock");
            if inside.replace(true) {
                violations.set(violations.get() + 1);
            }
            sleep(1).await;
            inside.set(false);
            drop(guard);
        }
    };
    both(task(), task()).await;
    match violations.get() {
        0 => "ok".into(),
        v => format!("VIOLATION {v}"),
    }
}

/// One task holds for a while; the other's bounded wait gives up; after
/// the holder lets go the lock is free at once (the given-up wait left
/// nothing queued).
async fn gives_up(lock: &Lock, ms: u64) -> String {
    let holder = async {
        let guard = lock.lock().await.expect("lock");
        sleep(ms * 3).await;
        drop(guard);
    };
    let waiter = async {
        sleep(ms / 4).await;
        lock.lock_timeout(Duration::from_millis(ms)).await
    };
    let ((), waited) = both(holder, waiter).await;
    let waited = match waited {
        Err(e) if e.kind() == ErrorKind::Timeout => "timeout".to_owned(),
        other => outcome(other),
    };
    let next = outcome(lock.try_lock().await);
    format!("{waited} then {next}")
}

/// `n` times: a holder releases while a waiter's wait is cancelled about
/// then (a timer of 0 to 2 ms); whoever got the lock lets it go, and the
/// lock must be free right after.
async fn race(lock: &Lock, n: u64) -> String {
    let mut granted = 0;
    for round in 0..n {
        let guard = lock.lock().await.expect("lock");
        let waiter = async {
            let timer = sleep(round % 3);
            let (mut w, mut t) = (pin!(lock.lock()), pin!(timer));
            poll_fn(|cx| {
                if let Poll::Ready(r) = w.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                t.as_mut().poll(cx).map(|()| None)
            })
            .await
        };
        let releaser = async {
            sleep(1).await;
            drop(guard);
        };
        let (got, ()) = both(waiter, releaser).await;
        if let Some(Ok(g)) = got {
            granted += 1;
            drop(g);
        }
        if lock.try_lock().await.is_err() {
            return format!("held after round {round}");
        }
    }
    format!("ok {granted} granted")
}
