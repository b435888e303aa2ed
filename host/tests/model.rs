//! A model-based property test of the guard semantics: random sequences of
//! lock (try, timed, forever; thread-bound or owned guards), unlock, hold
//! counts and lookups over three handles — one re-entrant, and two spellings
//! of one file — and three threads, each step checked against a small
//! reference model of which guard holds what. Owned guards are unlocked
//! from whichever thread the step names, so they move between threads.

mod common;

use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use wasmlock::{ErrorKind, FileLock, Kind, LockGuard, Mode, OwnedLockGuard, Wait};

#[test]
#[ignore = "helper: runs only as a child process"]
fn child_entry() {
    common::child_main();
}

const HANDLES: usize = 3;
const THREADS: usize = 3;
/// The handle built with `.reentrant()`.
const REENTRANT: usize = 0;
/// How long a timed attempt that must fail waits.
const BRIEF: Duration = Duration::from_millis(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum W {
    Try,
    Brief,
    Forever,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum G {
    /// `lock_with`: a `LockGuard` that stays on its thread.
    Thread,
    /// `lock_with_owned`: an `OwnedLockGuard` that may move.
    Owned,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Lock(usize, usize, Mode, W, G),
    /// Unlock thread `t`'s `i`-th thread-bound guard (modulo their number).
    Unlock(usize, usize),
    /// Unlock the `i`-th owned guard, from thread `t`.
    UnlockOwned(usize, usize),
    HoldCount(usize, usize),
    IsLocked(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Done,
    Failed(ErrorKind),
    Count(u32),
    Locked(bool),
    /// There is no such guard: the step is skipped.
    Skipped,
    /// The model cannot run this step (it would wait forever).
    NotRun,
}

fn op() -> impl Strategy<Value = Op> {
    let h = 0..HANDLES;
    let t = 0..THREADS;
    let mode = prop_oneof![Just(Mode::Exclusive), Just(Mode::Shared)];
    let wait = prop_oneof![Just(W::Try), Just(W::Brief), Just(W::Forever)];
    let guard = prop_oneof![Just(G::Thread), Just(G::Owned)];
    prop_oneof![
        6 => (t.clone(), h.clone(), mode, wait, guard)
            .prop_map(|(t, h, m, w, g)| Op::Lock(t, h, m, w, g)),
        3 => (t.clone(), 0..4usize).prop_map(|(t, i)| Op::Unlock(t, i)),
        2 => (t.clone(), 0..4usize).prop_map(|(t, i)| Op::UnlockOwned(t, i)),
        1 => (t, h.clone()).prop_map(|(t, h)| Op::HoldCount(t, h)),
        1 => h.prop_map(Op::IsLocked),
    ]
}

/// One hold in the model.
#[derive(Debug, Clone)]
struct Hold {
    handle: usize,
    mode: Mode,
    /// The thread of a thread-bound hold.
    thread: Option<usize>,
    /// Guards on it (more than one only by re-entry).
    count: u32,
}

/// Holds by id, and which guards point at them, in the order they were
/// taken (as the real test keeps its guards).
#[derive(Debug, Default)]
struct Model {
    kind: Option<Kind>,
    holds: Vec<Option<Hold>>,
    thread_guards: [Vec<usize>; THREADS],
    owned_guards: Vec<usize>,
}

impl Model {
    fn new(kind: Kind) -> Model {
        Model {
            kind: Some(kind),
            ..Model::default()
        }
    }

    fn live(&self) -> impl Iterator<Item = &Hold> {
        self.holds.iter().flatten()
    }

    fn step(&mut self, op: Op) -> Outcome {
        match op {
            Op::Lock(t, h, mode, w, g) => self.lock(t, h, mode, w, g),
            Op::Unlock(t, i) => {
                let guards = &mut self.thread_guards[t];
                if guards.is_empty() {
                    return Outcome::Skipped;
                }
                let id = guards.remove(i % guards.len());
                self.release(id);
                Outcome::Done
            }
            Op::UnlockOwned(_, i) => {
                if self.owned_guards.is_empty() {
                    return Outcome::Skipped;
                }
                let id = self.owned_guards.remove(i % self.owned_guards.len());
                self.release(id);
                Outcome::Done
            }
            Op::HoldCount(t, h) => Outcome::Count(
                self.live()
                    .filter(|x| x.handle == h && x.thread == Some(t))
                    .map(|x| x.count)
                    .sum(),
            ),
            Op::IsLocked(_) => Outcome::Locked(self.live().next().is_some()),
        }
    }

    fn release(&mut self, id: usize) {
        let hold = self.holds[id].as_mut().expect("a guard's hold is live");
        hold.count -= 1;
        if hold.count == 0 {
            self.holds[id] = None;
        }
    }

    fn lock(&mut self, t: usize, h: usize, mode: Mode, w: W, g: G) -> Outcome {
        if g == G::Thread && h == REENTRANT {
            let mine = self.holds.iter().position(|x| {
                x.as_ref()
                    .is_some_and(|x| x.handle == h && x.thread == Some(t))
            });
            if let Some(id) = mine {
                let hold = self.holds[id].as_mut().unwrap();
                if hold.mode == Mode::Shared && mode == Mode::Exclusive {
                    return Outcome::Failed(ErrorKind::Deadlock);
                }
                hold.count += 1;
                self.thread_guards[t].push(id);
                return Outcome::Done;
            }
        }
        if mode == Mode::Shared && self.kind == Some(Kind::Soft) {
            return Outcome::Failed(ErrorKind::Unsupported);
        }
        let free = self
            .live()
            .all(|x| x.mode == Mode::Shared && mode == Mode::Shared);
        if free {
            let id = self.holds.len();
            self.holds.push(Some(Hold {
                handle: h,
                mode,
                thread: (g == G::Thread).then_some(t),
                count: 1,
            }));
            match g {
                G::Thread => self.thread_guards[t].push(id),
                G::Owned => self.owned_guards.push(id),
            }
            return Outcome::Done;
        }
        match w {
            W::Try => Outcome::Failed(ErrorKind::WouldBlock),
            W::Brief => Outcome::Failed(ErrorKind::Timeout),
            // This thread holds the file, with a guard that cannot move, in
            // a way that excludes the request.
            W::Forever
                if self.live().any(|x| {
                    x.thread == Some(t) && !(x.mode == Mode::Shared && mode == Mode::Shared)
                }) =>
            {
                Outcome::Failed(ErrorKind::Deadlock)
            }
            W::Forever => Outcome::NotRun,
        }
    }
}

/// What a worker thread runs: a step, with the thread-bound guards it keeps.
type Job<'s> = Box<dyn FnOnce(&mut Vec<LockGuard<'s>>) -> Outcome + Send + 's>;

/// The real thing: three worker threads; each keeps its own `LockGuard`s,
/// owned guards sit in a pool any worker can take them from.
fn run(dir: &std::path::Path, kind: Kind, steps: &[(Op, Outcome)]) -> (Vec<Outcome>, bool) {
    let (a, b) = (dir.join("m.lock"), dir.join("sub/../m.lock"));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let handles: [Arc<FileLock>; HANDLES] = std::array::from_fn(|h| {
        // Handle 2 spells the same file differently.
        let builder = FileLock::builder(if h == 2 { &b } else { &a }).kind(kind);
        let builder = if h == REENTRANT {
            builder.reentrant()
        } else {
            builder
        };
        Arc::new(builder.build().unwrap())
    });
    let owned: Mutex<Vec<OwnedLockGuard>> = Mutex::new(Vec::new());
    let got = run_on(&handles, &owned, steps);
    // Every guard is gone, the handles are not: the lock must be free.
    owned.lock().unwrap().clear();
    let fresh = FileLock::builder(&a).kind(kind).build().unwrap();
    let free = fresh.try_lock().is_ok();
    (got, free)
}

fn run_on<'h>(
    handles: &'h [Arc<FileLock>; HANDLES],
    owned: &'h Mutex<Vec<OwnedLockGuard>>,
    steps: &[(Op, Outcome)],
) -> Vec<Outcome> {
    std::thread::scope(|s| {
        let workers: Vec<Sender<(Job<'h>, Sender<Outcome>)>> = (0..THREADS)
            .map(|_| {
                let (tx, rx) = channel::<(Job<'h>, Sender<Outcome>)>();
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for (job, reply) in rx {
                        let _ = reply.send(job(&mut mine));
                    }
                });
                tx
            })
            .collect();
        let on = |t: usize, job: Job<'h>| {
            let (tx, rx) = channel();
            workers[t].send((job, tx)).unwrap();
            rx.recv_timeout(Duration::from_secs(20))
                .expect("a step hung: it should have finished or failed at once")
        };
        let mut got = Vec::new();
        for &(op, ref expected) in steps {
            if *expected == Outcome::NotRun {
                got.push(Outcome::NotRun);
                continue;
            }
            got.push(match op {
                Op::Lock(t, h, mode, w, g) => on(
                    t,
                    Box::new(move |mine| {
                        let wait = match w {
                            W::Try => Wait::TryOnce,
                            W::Brief => Wait::Timeout(BRIEF),
                            W::Forever => Wait::Forever,
                        };
                        let taken = match g {
                            G::Thread => handles[h].lock_with(mode, wait).map(|x| mine.push(x)),
                            G::Owned => handles[h]
                                .lock_with_owned(mode, wait)
                                .map(|x| owned.lock().unwrap().push(x)),
                        };
                        taken.map_or_else(|e| Outcome::Failed(e.kind()), |()| Outcome::Done)
                    }),
                ),
                Op::Unlock(t, i) => on(
                    t,
                    Box::new(move |mine| {
                        if mine.is_empty() {
                            return Outcome::Skipped;
                        }
                        let guard = mine.remove(i % mine.len());
                        guard
                            .unlock()
                            .map_or_else(|e| Outcome::Failed(e.kind()), |()| Outcome::Done)
                    }),
                ),
                Op::UnlockOwned(t, i) => on(
                    t,
                    Box::new(move |_| {
                        let mut pool = owned.lock().unwrap();
                        if pool.is_empty() {
                            return Outcome::Skipped;
                        }
                        let at = i % pool.len();
                        let guard = pool.remove(at);
                        drop(pool);
                        guard
                            .unlock()
                            .map_or_else(|e| Outcome::Failed(e.kind()), |()| Outcome::Done)
                    }),
                ),
                Op::HoldCount(t, h) => on(
                    t,
                    Box::new(move |_| Outcome::Count(handles[h].hold_count())),
                ),
                Op::IsLocked(h) => handles[h]
                    .is_locked()
                    .map_or_else(|e| Outcome::Failed(e.kind()), Outcome::Locked),
            });
        }
        drop(workers);
        got
    })
}

fn check(kind: Kind, ops: Vec<Op>) -> std::result::Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    // Only Linux (`/proc/locks`) and Windows (a probe) tell whether an OS
    // lock is held elsewhere; elsewhere `is_locked` of an OS lock is
    // `Unsupported` unless this process holds it, so it is left out.
    let tells = cfg!(any(target_os = "linux", windows));
    let ops = ops
        .into_iter()
        .filter(|op| tells || kind == Kind::Soft || !matches!(op, Op::IsLocked(_)));
    let mut model = Model::new(kind);
    let steps: Vec<(Op, Outcome)> = ops.into_iter().map(|op| (op, model.step(op))).collect();
    let (got, free) = run(dir.path(), kind, &steps);
    for (i, ((op, expected), got)) in steps.iter().zip(&got).enumerate() {
        prop_assert_eq!(got, expected, "step {} {:?}", i, op);
    }
    prop_assert!(free, "a hold outlived its guard");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::cases(48)))]

    #[test]
    fn os_locks_match_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        check(Kind::Os, ops)?;
    }

    #[test]
    fn soft_locks_match_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        check(Kind::Soft, ops)?;
    }
}
