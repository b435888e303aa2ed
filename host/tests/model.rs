//! A model-based property test: random sequences of open, lock (try, timed,
//! forever), unlock, force-unlock and drop over several handles — two
//! spellings of one file — and several threads, each step checked against a
//! small reference model of who holds what.

mod common;

use std::collections::BTreeMap;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use wasmlock::{ErrorKind, FileLock, Kind, Mode, Wait};

#[test]
#[ignore = "helper: runs only as a child process"]
fn child_entry() {
    common::child_main();
}

const HANDLES: usize = 3;
const THREADS: usize = 3;
/// How long a timed attempt that must fail waits.
const BRIEF: Duration = Duration::from_millis(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum W {
    Try,
    Brief,
    Forever,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Open(usize),
    Drop(usize),
    Lock(usize, usize, Mode, W),
    Unlock(usize, usize),
    ForceUnlock(usize, usize),
    HoldCount(usize, usize),
    IsLocked(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Done,
    Failed(ErrorKind),
    Count(u32),
    Locked(bool),
    /// The handle is not open: the step is skipped.
    Skipped,
    /// The model cannot run this step (it would wait forever).
    NotRun,
}

fn outcome(r: wasmlock::Result<()>) -> Outcome {
    match r {
        Ok(()) => Outcome::Done,
        Err(e) => Outcome::Failed(e.kind()),
    }
}

fn op() -> impl Strategy<Value = Op> {
    let h = 0..HANDLES;
    let t = 0..THREADS;
    let mode = prop_oneof![Just(Mode::Exclusive), Just(Mode::Shared)];
    let wait = prop_oneof![Just(W::Try), Just(W::Brief), Just(W::Forever)];
    prop_oneof![
        1 => h.clone().prop_map(Op::Open),
        1 => h.clone().prop_map(Op::Drop),
        6 => (t.clone(), h.clone(), mode, wait).prop_map(|(t, h, m, w)| Op::Lock(t, h, m, w)),
        4 => (t.clone(), h.clone()).prop_map(|(t, h)| Op::Unlock(t, h)),
        1 => (t.clone(), h.clone()).prop_map(|(t, h)| Op::ForceUnlock(t, h)),
        1 => (t, h.clone()).prop_map(|(t, h)| Op::HoldCount(t, h)),
        1 => h.prop_map(Op::IsLocked),
    ]
}

/// Who holds what: (handle, thread) → (mode, count).
#[derive(Debug, Default)]
struct Model {
    kind: Option<Kind>,
    open: [bool; HANDLES],
    holds: BTreeMap<(usize, usize), (Mode, u32)>,
}

impl Model {
    fn new(kind: Kind) -> Model {
        Model {
            kind: Some(kind),
            open: [true; HANDLES],
            holds: BTreeMap::new(),
        }
    }

    fn step(&mut self, op: Op) -> Outcome {
        let open = |h: usize, m: &Model| m.open[h];
        match op {
            Op::Open(h) => {
                self.open[h] = true;
                Outcome::Done
            }
            Op::Drop(h) => {
                self.open[h] = false;
                self.holds.retain(|&(hh, _), _| hh != h);
                Outcome::Done
            }
            _ if !open(op_handle(op), self) => Outcome::Skipped,
            Op::Lock(t, h, mode, w) => self.lock(t, h, mode, w),
            Op::Unlock(t, h) => {
                let others = self.holds.keys().any(|&(hh, tt)| hh == h && tt != t);
                match self.holds.get_mut(&(h, t)) {
                    Some((_, c)) => {
                        *c -= 1;
                        if *c == 0 {
                            self.holds.remove(&(h, t));
                        }
                        Outcome::Done
                    }
                    None if others => Outcome::Failed(ErrorKind::NotOwner),
                    None => Outcome::Failed(ErrorKind::NotHeld),
                }
            }
            Op::ForceUnlock(t, h) => {
                Outcome::Count(self.holds.remove(&(h, t)).map_or(0, |(_, c)| c))
            }
            Op::HoldCount(t, h) => Outcome::Count(self.holds.get(&(h, t)).map_or(0, |x| x.1)),
            Op::IsLocked(_) => Outcome::Locked(!self.holds.is_empty()),
        }
    }

    fn lock(&mut self, t: usize, h: usize, mode: Mode, w: W) -> Outcome {
        if let Some((held, count)) = self.holds.get_mut(&(h, t)) {
            if *held == Mode::Shared && mode == Mode::Exclusive {
                return Outcome::Failed(ErrorKind::Deadlock);
            }
            *count += 1;
            return Outcome::Done;
        }
        if mode == Mode::Shared && self.kind == Some(Kind::Soft) {
            return Outcome::Failed(ErrorKind::Unsupported);
        }
        let free = self
            .holds
            .values()
            .all(|(m, _)| *m == Mode::Shared && mode == Mode::Shared);
        if free {
            self.holds.insert((h, t), (mode, 1));
            return Outcome::Done;
        }
        match w {
            W::Try => Outcome::Failed(ErrorKind::WouldBlock),
            W::Brief => Outcome::Failed(ErrorKind::Timeout),
            // The same thread holds it through another handle.
            W::Forever if self.holds.keys().any(|&(_, tt)| tt == t) => {
                Outcome::Failed(ErrorKind::Deadlock)
            }
            W::Forever => Outcome::NotRun,
        }
    }
}

fn op_handle(op: Op) -> usize {
    match op {
        Op::Open(h)
        | Op::Drop(h)
        | Op::Lock(_, h, _, _)
        | Op::Unlock(_, h)
        | Op::ForceUnlock(_, h)
        | Op::HoldCount(_, h)
        | Op::IsLocked(h) => h,
    }
}

type Job = Box<dyn FnOnce() -> Outcome + Send>;

/// The real thing: handles shared by worker threads, each thread an owner.
struct Real {
    handles: Arc<Mutex<[Option<Arc<FileLock>>; HANDLES]>>,
    workers: Vec<Sender<(Job, Sender<Outcome>)>>,
    open: Box<dyn Fn(usize) -> FileLock>,
}

impl Real {
    fn new(dir: &std::path::Path, kind: Kind) -> Real {
        let (a, b) = (dir.join("m.lock"), dir.join("sub/../m.lock"));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let open = Box::new(move |h: usize| {
            // Handle 2 spells the same file differently.
            let path = if h == 2 { &b } else { &a };
            FileLock::builder(path).kind(kind).build().unwrap()
        });
        let handles = Arc::new(Mutex::new(std::array::from_fn(|h| Some(Arc::new(open(h))))));
        let workers = (0..THREADS)
            .map(|_| {
                let (tx, rx) = channel::<(Job, Sender<Outcome>)>();
                std::thread::spawn(move || {
                    for (job, reply) in rx {
                        let _ = reply.send(job());
                    }
                });
                tx
            })
            .collect();
        Real {
            handles,
            workers,
            open,
        }
    }

    fn handle(&self, h: usize) -> Option<Arc<FileLock>> {
        self.handles.lock().unwrap()[h].clone()
    }

    fn on(&self, t: usize, job: impl FnOnce() -> Outcome + Send + 'static) -> Outcome {
        let (tx, rx) = channel();
        self.workers[t].send((Box::new(job), tx)).unwrap();
        rx.recv_timeout(Duration::from_secs(20))
            .expect("a step hung: it should have finished or failed at once")
    }

    fn step(&self, op: Op) -> Outcome {
        match op {
            Op::Open(h) => {
                let mut hs = self.handles.lock().unwrap();
                if hs[h].is_none() {
                    hs[h] = Some(Arc::new((self.open)(h)));
                }
                Outcome::Done
            }
            Op::Drop(h) => {
                self.handles.lock().unwrap()[h] = None;
                Outcome::Done
            }
            _ => {
                let Some(lock) = self.handle(op_handle(op)) else {
                    return Outcome::Skipped;
                };
                match op {
                    Op::Lock(t, _, mode, w) => self.on(t, move || {
                        let wait = match w {
                            W::Try => Wait::TryOnce,
                            W::Brief => Wait::Timeout(BRIEF),
                            W::Forever => Wait::Forever,
                        };
                        outcome(lock.lock_with(mode, wait).map(std::mem::forget))
                    }),
                    Op::Unlock(t, _) => self.on(t, move || outcome(lock.unlock())),
                    Op::ForceUnlock(t, _) => {
                        self.on(t, move || Outcome::Count(lock.force_unlock().unwrap()))
                    }
                    Op::HoldCount(t, _) => self.on(t, move || Outcome::Count(lock.hold_count())),
                    Op::IsLocked(_) => Outcome::Locked(lock.is_locked().unwrap()),
                    Op::Open(_) | Op::Drop(_) => unreachable!(),
                }
            }
        }
    }
}

fn check(kind: Kind, ops: Vec<Op>) -> std::result::Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let real = Real::new(dir.path(), kind);
    let mut model = Model::new(kind);
    for (i, op) in ops.into_iter().enumerate() {
        let expected = model.step(op);
        if expected == Outcome::NotRun {
            continue;
        }
        let got = real.step(op);
        prop_assert_eq!(&got, &expected, "step {} {:?} ({:?})", i, op, model.holds);
    }
    // Dropping every handle frees the lock for anyone.
    drop(real);
    let last = FileLock::builder(dir.path().join("m.lock"))
        .kind(kind)
        .build()
        .unwrap();
    prop_assert!(last.try_lock().is_ok(), "a hold outlived its handle");
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
