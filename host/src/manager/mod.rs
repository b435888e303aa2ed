//! The in-process lock manager.
//!
//! Every lock file the process uses has one [`Entry`], found by what the file
//! *is* (device and inode), not how it is spelled. The entry decides which
//! local owner holds the lock, queues the others first-in first-out, and asks
//! the backend for the lock only when the process as a whole gains it, giving
//! it back when the last local holder leaves. When another process holds it,
//! one thread per contended entry waits in the kernel (or on file-system
//! events, for soft locks) and hands the lock to the head of the queue, so
//! any number of local waiters cost no thread each and no polling.

mod waiter;

pub(crate) use waiter::Pending;
use waiter::Waiter;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};

use crate::backend::{Backend, Key};
use crate::{Error, ErrorKind, Mode, Owner, Result};

/// One hold in the manager's books: a handle, the owner using it, and who
/// cannot go on while it lasts (see `Request::party`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct HolderId {
    pub handle: u64,
    pub owner: Owner,
    pub party: Option<Owner>,
}

#[derive(Debug, Clone, Copy)]
struct Hold {
    id: HolderId,
    mode: Mode,
    /// Its handle has confirmed it (the path still named the file when it
    /// was booked). A waiter's grant is not, until the handle completes it;
    /// a claim never is: it excludes every other grant while it lasts, so
    /// the only claims the handle's checks can meet are still being tried.
    confirmed: bool,
}

struct State {
    /// What this process holds from the backend.
    backend_mode: Option<Mode>,
    holds: Vec<Hold>,
    queue: VecDeque<(Arc<Waiter>, usize)>,
    /// A thread is waiting on the backend for this entry.
    blocking: bool,
    /// A remote backend's grant not handed to anyone yet (see
    /// [`Backend::remote`]: a grant serves one hold).
    fresh: bool,
}

pub(crate) struct Entry {
    key: Key,
    backend: Box<dyn Backend>,
    state: Mutex<State>,
}

static REGISTRY: LazyLock<Mutex<HashMap<Key, Weak<Entry>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The entry for `key`, made with `make` if the process has none yet.
pub(crate) fn entry(
    key: Key,
    make: impl FnOnce() -> Result<Box<dyn Backend>>,
) -> Result<Arc<Entry>> {
    let mut map = REGISTRY.lock().unwrap();
    if let Some(e) = map.get(&key).and_then(Weak::upgrade) {
        return Ok(e);
    }
    let e = Arc::new(Entry {
        key: key.clone(),
        backend: make()?,
        state: Mutex::new(State {
            backend_mode: None,
            holds: Vec::new(),
            queue: VecDeque::new(),
            blocking: false,
            fresh: false,
        }),
    });
    map.insert(key, Arc::downgrade(&e));
    Ok(e)
}

impl Drop for Entry {
    fn drop(&mut self) {
        let mut map = REGISTRY.lock().unwrap();
        if map.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
            map.remove(&self.key);
        }
    }
}

/// What [`Entry::try_acquire`] found.
pub(crate) enum Attempt {
    /// Granted and booked.
    Held,
    /// Held by someone else, or others are queued first.
    Busy,
    /// Won, but the caller's check refused it; given back, not booked.
    Refused,
    /// Not tried: only the backend's waiting thread asks a remote backend
    /// (try-once requests queue too, see [`Pending::start_once`]).
    Untried,
}

/// How a request stands against the current state.
enum Take {
    Taken,
    /// A local holder, or the queue, is in the way.
    Busy,
    /// Another process holds it: wait on the backend.
    Contended,
    /// A remote backend, asked only by the waiting thread.
    Untried,
}

impl Entry {
    pub(crate) fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    pub(crate) fn key(&self) -> &Key {
        &self.key
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Tries to take the lock now, without queueing. Once it is won,
    /// `confirm` decides, under the entry's lock, whether it is booked
    /// (`Ok(true)`) or given back (`Ok(false)`, or its error).
    pub(crate) fn try_acquire(
        self: &Arc<Self>,
        id: HolderId,
        mode: Mode,
        confirm: impl FnOnce() -> Result<bool>,
    ) -> Result<Attempt> {
        let mut st = self.state();
        if !st.queue.is_empty() {
            return Ok(Attempt::Busy);
        }
        let confirmed = match self.take(&mut st, mode)? {
            Take::Taken => confirm(),
            Take::Busy | Take::Contended => {
                self.settle_backend(&mut st)?;
                return Ok(Attempt::Busy);
            }
            Take::Untried => return Ok(Attempt::Untried),
        };
        match confirmed {
            Ok(true) => {
                st.holds.push(Hold {
                    id,
                    mode,
                    confirmed: true,
                });
                Ok(Attempt::Held)
            }
            refused => {
                self.settle_backend(&mut st)?;
                refused.map(|_| Attempt::Refused)
            }
        }
    }

    /// [`try_acquire`](Self::try_acquire) in exclusive mode, for a caller
    /// that `admit` (asked under the entry's lock) still lets in, asking the
    /// backend outside the entry's lock when nobody here holds, wants or
    /// waits for the lock:
    /// the hold is booked first, so that everyone here sees the lock taken
    /// (and waits or queues), and it is taken back if the backend or
    /// `confirm` refuses, or `confirm` panics. An uncontended lock then
    /// releases no lock after its system calls, which costs several times
    /// what it costs before them (the release waits for the kernel's stores).
    pub(crate) fn try_claim(
        self: &Arc<Self>,
        id: HolderId,
        admit: impl Fn() -> bool,
        confirm: impl FnOnce() -> Result<bool>,
    ) -> Result<Attempt> {
        {
            let mut st = self.state();
            let idle = st.holds.is_empty()
                && st.queue.is_empty()
                && st.backend_mode.is_none()
                && !st.blocking;
            if !idle {
                drop(st);
                let confirm = || if admit() { confirm() } else { Ok(false) };
                return self.try_acquire(id, Mode::Exclusive, confirm);
            }
            if !admit() {
                return Ok(Attempt::Busy);
            }
            st.holds.push(Hold {
                id,
                mode: Mode::Exclusive,
                confirmed: false,
            });
            st.backend_mode = Some(Mode::Exclusive);
        }
        let mut claim = Claim {
            entry: self,
            id,
            won: false,
        };
        match self.backend.try_acquire(Mode::Exclusive) {
            Ok(true) => claim.won = true,
            Ok(false) => return Ok(Attempt::Busy),
            Err(e) => return Err(e),
        }
        match confirm() {
            Ok(true) => {
                // Booked and won: nothing to take back.
                std::mem::forget(claim);
                Ok(Attempt::Held)
            }
            refused => match claim.give_back() {
                Ok(()) => refused.map(|_| Attempt::Refused),
                Err(e) => refused.and(Err(e)),
            },
        }
    }

    /// Whether `party` holds the lock through a hold other than `except`'s
    /// (a request's own grant is not in its way).
    pub(crate) fn held_by(&self, party: Owner, except: Owner) -> bool {
        self.state()
            .holds
            .iter()
            .any(|h| h.id.party == Some(party) && h.id.owner != except)
    }

    /// Whether releasing one hold now would give the lock back to other
    /// processes: nobody else here holds it or waits for it. A hint: it
    /// may change before the release.
    pub(crate) fn last_one_here(&self) -> bool {
        let st = self.state();
        st.holds.len() <= 1 && !st.queue.iter().any(|(w, _)| w.is_pending())
    }

    /// Whether anyone in this process holds the lock.
    pub(crate) fn held_locally(&self) -> bool {
        !self.state().holds.is_empty()
    }

    /// How many holds in the books `counts` (a handle's, a party's);
    /// with `confirmed_only`, only those their handle has confirmed.
    pub(crate) fn holds_where(
        &self,
        confirmed_only: bool,
        counts: impl Fn(&HolderId) -> bool,
    ) -> usize {
        self.state()
            .holds
            .iter()
            .filter(|h| (h.confirmed || !confirmed_only) && counts(&h.id))
            .count()
    }

    /// A waiter's grant has been confirmed by its handle.
    pub(crate) fn confirm_hold(&self, id: HolderId) {
        if let Some(h) = self.state().holds.iter_mut().find(|h| h.id == id) {
            h.confirmed = true;
        }
    }

    /// Drops every hold taken through `handle` (it is going away).
    pub(crate) fn release_handle(self: &Arc<Self>, handle: u64) -> Result<()> {
        let mut st = self.state();
        st.holds.retain(|h| h.id.handle != handle);
        self.after_release(&mut st)
    }

    pub(crate) fn release(self: &Arc<Self>, id: HolderId) -> Result<()> {
        let mut st = self.state();
        let Some(pos) = st.holds.iter().position(|h| h.id == id) else {
            return Err(Error::new(ErrorKind::NotHeld, self.backend.path()));
        };
        st.holds.swap_remove(pos);
        // A failure to give the lock back (a soft marker someone else
        // removed) belongs to the caller releasing.
        self.after_release(&mut st)
    }

    /// Serves the queue after a hold went. A remote grant served that hold
    /// alone: it goes back first, so that its failure (a lost lease) is the
    /// releaser's, not the next waiter's.
    fn after_release(self: &Arc<Self>, st: &mut State) -> Result<()> {
        let given_back = match self.backend.remote() && st.holds.is_empty() {
            true => self.give_back(st),
            false => Ok(()),
        };
        let dispatched = self.dispatch(st);
        given_back.and(dispatched)
    }

    fn enqueue(self: &Arc<Self>, waiter: &Arc<Waiter>, index: usize) {
        let mut st = self.state();
        // A party that cannot go on while it waits, waiting for its own
        // hold, would wait forever. (A shared request behind its own shared
        // hold may wait for a queued writer that gives up: not provable, not
        // refused.) Checked here, under the state's lock, so no grant slips
        // between the check and the queueing.
        if waiter
            .stuck
            .is_some_and(|party| held_against(&st.holds, party, waiter.mode))
        {
            waiter.fail(self_deadlock(self.backend.path()));
            return;
        }
        // A try-once request behind others here, or beside an attempt
        // under way, would wait for them: the lock is busy.
        if waiter.once && (!st.queue.is_empty() || st.blocking) {
            waiter.fail(Error::new(ErrorKind::WouldBlock, self.backend.path()));
            return;
        }
        st.queue.push_back((waiter.clone(), index));
        self.dispatch_logged(&mut st);
    }

    /// Fails the queued waits that a hold just granted to `party` makes
    /// endless: waits `party` cannot go on during (a guest blocked in a call
    /// behind its own pending acquisition, now granted).
    fn fail_stuck(&self, st: &mut State, party: Owner) {
        let path = self.backend.path();
        st.queue.retain(|(w, _)| {
            let endless = w.stuck == Some(party) && held_against(&st.holds, party, w.mode);
            if endless {
                w.fail(self_deadlock(path));
            }
            !endless
        });
    }

    /// After an attempt on the backend that did not win: the try-once
    /// waiters have had theirs and fail.
    fn fail_tried(&self, st: &mut State) {
        let path = self.backend.path();
        st.queue.retain(|(w, _)| {
            if w.once {
                w.fail(Error::new(ErrorKind::WouldBlock, path));
            }
            !w.once
        });
    }

    fn withdraw(self: &Arc<Self>, waiter: &Arc<Waiter>) {
        let mut st = self.state();
        st.queue.retain(|(w, _)| !Arc::ptr_eq(w, waiter));
        if st.blocking && !wants_a_wait(&st) {
            self.backend.interrupt();
        }
        // The withdrawn waiter may have been the one holding up the rest.
        self.dispatch_logged(&mut st);
    }

    /// Decides whether a request in `mode` can be granted now, taking the
    /// lock from the backend if the process does not hold it yet.
    fn take(&self, st: &mut State, mode: Mode) -> Result<Take> {
        let compatible = match mode {
            Mode::Exclusive => st.holds.is_empty(),
            Mode::Shared => st.holds.iter().all(|h| h.mode == Mode::Shared),
        };
        if !compatible {
            return Ok(Take::Busy);
        }
        if let Some(held) = st.backend_mode {
            // A remote grant serves the one hold it was won for.
            let reusable = !self.backend.remote() || std::mem::take(&mut st.fresh);
            if held.covers(mode) && reusable {
                // One more local reader must not cut in front of a writer
                // that another process has waiting at the turnstile.
                if held == Mode::Exclusive || self.backend.admits_reader()? {
                    return Ok(Take::Taken);
                }
                if !st.holds.is_empty() {
                    return Ok(Take::Busy);
                }
            }
            // Nobody here holds it, but it is held in the wrong mode or a
            // remote writer waits: give it back and queue like everyone else.
            self.give_back(st)?;
        }
        if st.blocking && !self.backend.attempts_while_blocking() {
            return Ok(Take::Busy);
        }
        if self.backend.remote() {
            return Ok(Take::Untried);
        }
        if self.backend.try_acquire(mode)? {
            st.backend_mode = Some(mode);
            Ok(Take::Taken)
        } else {
            Ok(Take::Contended)
        }
    }

    fn give_back(&self, st: &mut State) -> Result<()> {
        st.fresh = false;
        match st.backend_mode.take() {
            Some(mode) => self.backend.release(mode),
            None => Ok(()),
        }
    }

    /// Releases the backend lock when no one here holds or wants it.
    fn settle_backend(&self, st: &mut State) -> Result<()> {
        if st.holds.is_empty() && st.queue.is_empty() {
            self.give_back(st)?;
        }
        Ok(())
    }

    fn dispatch_logged(self: &Arc<Self>, st: &mut State) {
        if let Err(e) = self.dispatch(st) {
            tracing::warn!(path = %self.backend.path().display(), error = %e, "releasing the lock failed");
        }
    }

    /// Grants the head of the queue while it can be granted, and gives the
    /// lock back when nobody here holds or wants it.
    fn dispatch(self: &Arc<Self>, st: &mut State) -> Result<()> {
        while let Some((front, index)) = st.queue.front().cloned() {
            if !front.is_pending() {
                st.queue.pop_front();
                continue;
            }
            match self.take(st, front.mode) {
                Ok(Take::Taken) => {
                    st.queue.pop_front();
                    if front.grant(index) {
                        st.holds.push(Hold {
                            id: front.holder,
                            mode: front.mode,
                            confirmed: false,
                        });
                        if let Some(party) = front.holder.party {
                            self.fail_stuck(st, party);
                        }
                    }
                }
                Ok(Take::Busy) => {
                    // A try-once request has no turn to wait for.
                    if front.once {
                        st.queue.pop_front();
                        front.fail(Error::new(ErrorKind::WouldBlock, self.backend.path()));
                        continue;
                    }
                    break;
                }
                Ok(Take::Contended | Take::Untried) => {
                    if !st.blocking {
                        self.start_blocking(st, &front, index);
                    }
                    break;
                }
                Err(e) => {
                    st.queue.pop_front();
                    front.fail(e);
                }
            }
        }
        self.settle_backend(st)
    }

    /// Has someone wait on the backend for the head of the queue: its own
    /// thread if it can, else a new thread. Only where nothing but that wait
    /// can grant the lock: a thread busy waiting on the backend could not
    /// notice a grant that reached it another way.
    fn start_blocking(self: &Arc<Self>, st: &mut State, head: &Waiter, index: usize) {
        st.blocking = true;
        if !self.backend.attempts_while_blocking() && head.ask_to_block(index) {
            return;
        }
        let mode = head.mode;
        let me = self.clone();
        tracing::debug!(path = %self.backend.path().display(), ?mode, "waiting for another process");
        let spawned = std::thread::Builder::new()
            .name("wasmlock-wait".into())
            .spawn(move || me.block(mode));
        if let Err(e) = spawned {
            st.blocking = false;
            let err = Error::from_io(e, self.backend.path())
                .with_detail("could not start the waiting thread");
            for (w, _) in st.queue.drain(..) {
                w.fail(err.clone());
            }
        }
    }

    /// Body of the waiting thread: wait on the backend for the head's mode,
    /// then hand the lock over through `dispatch`.
    pub(crate) fn block(self: Arc<Self>, mode: Mode) {
        let guard = Unwinding(&self);
        self.wait_on_backend(mode);
        drop(guard);
        self.backend.done_waiting();
    }

    fn wait_on_backend(self: &Arc<Self>, mut mode: Mode) {
        loop {
            let wanted = || wants_a_wait(&self.state());
            let result = self.backend.acquire_blocking(mode, &wanted);
            let mut st = self.state();
            match result {
                Ok(true) => {
                    st.blocking = false;
                    st.backend_mode = Some(mode);
                    st.fresh = true;
                    self.dispatch_logged(&mut st);
                    return;
                }
                Ok(false) => {
                    self.fail_tried(&mut st);
                    // Waiters granted elsewhere withdraw soon; serving them
                    // is not this thread's work.
                    match st.queue.iter().find(|(w, _)| w.is_pending()) {
                        Some((w, _)) if wants_a_wait(&st) => mode = w.mode,
                        _ => {
                            st.blocking = false;
                            return;
                        }
                    }
                }
                Err(e) => {
                    st.blocking = false;
                    for (w, _) in st.queue.drain(..) {
                        w.fail(e.clone());
                    }
                    return;
                }
            }
        }
    }
}

/// A claim being tried ([`Entry::try_claim`]). Dropped, it takes the claim
/// back: the kernel lock if it was won, the hold, the process's mode, and
/// serves whoever queued behind it.
struct Claim<'a> {
    entry: &'a Arc<Entry>,
    id: HolderId,
    won: bool,
}

impl Claim<'_> {
    /// Gives the kernel lock back if the claim won it (once).
    fn give_back(&mut self) -> Result<()> {
        if std::mem::take(&mut self.won) {
            self.entry.backend.release(Mode::Exclusive)
        } else {
            Ok(())
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let entry = self.entry;
        if let Err(e) = self.give_back() {
            tracing::warn!(path = %entry.backend.path().display(), error = %e, "giving back a refused claim failed");
        }
        let mut st = entry.state.lock().unwrap_or_else(|e| e.into_inner());
        st.holds.retain(|h| h.id != self.id);
        st.backend_mode = None;
        entry.dispatch_logged(&mut st);
    }
}

/// Armed while a thread waits on the backend: if that thread unwinds, the
/// entry must not stay marked as waited for by nobody, and the waiters
/// queued behind it get an error instead of waiting forever.
struct Unwinding<'a>(&'a Entry);

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut st = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        st.blocking = false;
        let err = Error::new(ErrorKind::Io, self.0.backend.path())
            .with_detail("the thread waiting for the lock panicked");
        for (w, _) in st.queue.drain(..) {
            w.fail(err.clone());
        }
    }
}

/// Whether a queued waiter wants more than one attempt.
fn wants_a_wait(st: &State) -> bool {
    st.queue.iter().any(|(w, _)| !w.once && w.is_pending())
}

/// Whether `party` holds, among `holds`, in a way that excludes a request in
/// `mode`.
fn held_against(holds: &[Hold], party: Owner, mode: Mode) -> bool {
    holds
        .iter()
        .any(|h| h.id.party == Some(party) && !(h.mode == Mode::Shared && mode == Mode::Shared))
}

/// The error of a wait that could never end.
fn self_deadlock(path: &std::path::Path) -> Error {
    Error::new(ErrorKind::Deadlock, path).with_detail(
        "the waiting thread (or guest) already holds this lock; \
         waiting forever would never end",
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::Holder;

    /// A lock that another process holds until `free` is called. Its first
    /// attempt stops until the test lets it go on, holding the claim open.
    struct Outside {
        held: Mutex<bool>,
        freed: Condvar,
        first: Mutex<Option<(Sender<()>, Receiver<()>)>>,
        /// How often this process gave the lock back.
        released: AtomicUsize,
    }

    impl Outside {
        fn free(&self) {
            *self.held.lock().unwrap() = false;
            self.freed.notify_all();
        }
    }

    // On the `Arc`, so that the test keeps a handle on the entry's backend.
    impl Backend for Arc<Outside> {
        fn try_acquire(&self, _: Mode) -> Result<bool> {
            if let Some((started, go_on)) = self.first.lock().unwrap().take() {
                started.send(()).unwrap();
                go_on.recv().unwrap();
            }
            Ok(!*self.held.lock().unwrap())
        }
        fn acquire_blocking(&self, _: Mode, _: &dyn Fn() -> bool) -> Result<bool> {
            let held = self.held.lock().unwrap();
            drop(self.freed.wait_while(held, |h| *h).unwrap());
            Ok(true)
        }
        fn release(&self, _: Mode) -> Result<()> {
            self.released.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn path(&self) -> &Path {
            Path::new("outside.lock")
        }
        fn holder(&self) -> Result<Option<Holder>> {
            Ok(None)
        }
        fn is_locked(&self) -> Result<bool> {
            Ok(*self.held.lock().unwrap())
        }
        fn break_lock(&self, _: bool) -> Result<()> {
            Ok(())
        }
    }

    fn holder() -> HolderId {
        HolderId {
            handle: crate::lock::next_handle_id(),
            owner: Owner::unique(),
            party: None,
        }
    }

    #[test]
    fn a_waiter_that_queued_behind_a_refused_claim_is_served() {
        let (started_tx, started) = channel();
        let (go_on, go_on_rx) = channel();
        let outside = Arc::new(Outside {
            held: Mutex::new(true),
            freed: Condvar::new(),
            first: Mutex::new(Some((started_tx, go_on_rx))),
            released: AtomicUsize::new(0),
        });
        let backend: Box<dyn Backend> = Box::new(outside.clone());
        let entry = entry(Key::Os(u64::MAX, 1), || Ok(backend)).unwrap();
        std::thread::scope(|s| {
            let claim = s.spawn(|| entry.try_claim(holder(), || true, || Ok(true)));
            started.recv().unwrap();
            // The claim is booked and its attempt under way: a waiter queues
            // behind it, and the attempt is refused.
            let waiter = Pending::start(vec![entry.clone()], Mode::Exclusive, holder());
            go_on.send(()).unwrap();
            assert!(matches!(claim.join().unwrap(), Ok(Attempt::Busy)));
            // Nobody acts here any more; the other process lets go.
            outside.free();
            let settled = waiter.wait(Some(Instant::now() + Duration::from_secs(10)));
            assert!(
                matches!(settled, Ok(0)),
                "the waiter was not served: {settled:?}"
            );
        });
    }

    #[test]
    fn a_claim_whose_check_panics_is_taken_back() {
        let outside = Arc::new(Outside {
            held: Mutex::new(false),
            freed: Condvar::new(),
            first: Mutex::new(None),
            released: AtomicUsize::new(0),
        });
        let backend: Box<dyn Backend> = Box::new(outside.clone());
        let entry = entry(Key::Os(u64::MAX, 2), || Ok(backend)).unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            entry.try_claim(holder(), || true, || panic!("the path check failed"))
        }));
        assert!(panicked.is_err());
        assert_eq!(
            outside.released.load(Ordering::SeqCst),
            1,
            "the kernel lock won by the claim was given back"
        );
        assert!(!entry.held_locally(), "the claim's hold stayed booked");
        assert!(matches!(
            entry.try_claim(holder(), || true, || Ok(true)),
            Ok(Attempt::Held)
        ));
    }
}
