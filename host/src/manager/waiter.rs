//! One pending acquisition, queued in one or more entries (a semaphore waits
//! on all its slots at once), waited for by a thread or by a future.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::{Entry, HolderId};
use crate::{Error, Mode, Owner};

/// Where a waiter stands.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Pending,
    /// Granted by the entry at this index of the wait list.
    Granted(usize),
    Failed(Error),
    Cancelled,
}

struct Slot {
    outcome: Outcome,
    waker: Option<Waker>,
    /// The entry (by index) asks this waiter's thread to wait on its backend.
    block: Option<usize>,
    /// A thread sleeps on the condition variable: only then is waking it
    /// worth a system call.
    sleeping: bool,
}

/// What wakes a thread waiting for its outcome.
enum Woken {
    Settled(Outcome),
    /// Wait on the backend of the entry at this index first.
    Block(usize),
}

pub(crate) struct Waiter {
    pub(crate) mode: Mode,
    pub(crate) holder: HolderId,
    /// A thread that waits for nothing else is waiting for this one, and may
    /// do the entry's kernel wait itself: the kernel then wakes the thread
    /// that wants the lock, not a helper that would have to wake it in turn.
    pub(crate) blocks_itself: bool,
    /// The party that cannot go on while this waiter waits (a thread, a
    /// guest in a blocking call): a hold of its own that excludes this
    /// request would never be released, and the wait fails as a deadlock.
    pub(crate) stuck: Option<Owner>,
    /// A try-once request of a remote backend: it fails after one attempt
    /// on the backend that does not win.
    pub(crate) once: bool,
    slot: Mutex<Slot>,
    cv: Condvar,
}

impl Waiter {
    fn new(mode: Mode, holder: HolderId, blocks_itself: bool, stuck: Option<Owner>) -> Waiter {
        Waiter {
            mode,
            holder,
            blocks_itself,
            stuck,
            once: false,
            slot: Mutex::new(Slot {
                outcome: Outcome::Pending,
                waker: None,
                block: None,
                sleeping: false,
            }),
            cv: Condvar::new(),
        }
    }

    /// Asks the waiting thread to wait on the backend of entry `index`;
    /// false if this waiter cannot (see [`Waiter::blocks_itself`]).
    pub(crate) fn ask_to_block(&self, index: usize) -> bool {
        if !self.blocks_itself {
            return false;
        }
        let mut slot = self.slot.lock().unwrap();
        if !matches!(slot.outcome, Outcome::Pending) {
            return false;
        }
        slot.block = Some(index);
        let sleeping = slot.sleeping;
        drop(slot);
        if sleeping {
            self.cv.notify_all();
        }
        true
    }

    /// Settles a pending waiter; false if it was already settled elsewhere.
    fn settle(&self, outcome: Outcome) -> bool {
        let mut slot = self.slot.lock().unwrap();
        if !matches!(slot.outcome, Outcome::Pending) {
            return false;
        }
        slot.outcome = outcome;
        let waker = slot.waker.take();
        let sleeping = slot.sleeping;
        drop(slot);
        if sleeping {
            self.cv.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    pub(crate) fn grant(&self, index: usize) -> bool {
        self.settle(Outcome::Granted(index))
    }

    pub(crate) fn fail(&self, err: Error) -> bool {
        self.settle(Outcome::Failed(err))
    }

    pub(crate) fn is_pending(&self) -> bool {
        matches!(self.slot.lock().unwrap().outcome, Outcome::Pending)
    }

    /// Cancels a pending waiter and returns what it was before: a grant that
    /// raced with the cancellation is reported, never lost.
    fn cancel(&self) -> Outcome {
        let mut slot = self.slot.lock().unwrap();
        let before = slot.outcome.clone();
        if matches!(before, Outcome::Pending) {
            slot.outcome = Outcome::Cancelled;
        }
        before
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Woken {
        let mut slot = self.slot.lock().unwrap();
        loop {
            if !matches!(slot.outcome, Outcome::Pending) {
                return Woken::Settled(slot.outcome.clone());
            }
            if let Some(index) = slot.block.take() {
                return Woken::Block(index);
            }
            slot.sleeping = true;
            match deadline {
                None => slot = self.cv.wait(slot).unwrap(),
                Some(at) => {
                    let now = Instant::now();
                    if now >= at {
                        slot.sleeping = false;
                        return Woken::Settled(Outcome::Pending);
                    }
                    slot = self.cv.wait_timeout(slot, at - now).unwrap().0;
                }
            }
            slot.sleeping = false;
        }
    }

    fn poll_outcome(&self, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut slot = self.slot.lock().unwrap();
        if matches!(slot.outcome, Outcome::Pending) {
            slot.waker = Some(cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(slot.outcome.clone())
        }
    }
}

/// An acquisition queued in `entries`. Whatever happens to it, it leaves no
/// lock behind: dropping it while pending withdraws it, and a grant that
/// arrives during the withdrawal is handed back.
pub(crate) struct Pending {
    waiter: Arc<Waiter>,
    entries: Vec<Arc<Entry>>,
    done: bool,
}

/// What a timed-out or cancelled wait turns into.
pub(crate) type Settled = Result<usize, Option<Error>>;

impl Pending {
    /// Queues one waiter in every entry; the first entry to grant wins.
    pub(crate) fn start(entries: Vec<Arc<Entry>>, mode: Mode, holder: HolderId) -> Pending {
        Pending::queue(entries, mode, holder, false, None)
    }

    /// [`start`](Self::start) in one entry for a wait that `stuck` cannot go
    /// on during (see [`Waiter::stuck`]).
    pub(crate) fn start_stuck(
        entry: Arc<Entry>,
        mode: Mode,
        holder: HolderId,
        stuck: Option<Owner>,
    ) -> Pending {
        Pending::queue(vec![entry], mode, holder, false, stuck)
    }

    /// Queues a waiter in one entry for a thread that will wait for it
    /// without a deadline ([`Pending::wait`]`(None)`): that thread may be
    /// asked to do the kernel wait itself.
    pub(crate) fn start_forever(
        entry: Arc<Entry>,
        mode: Mode,
        holder: HolderId,
        stuck: Option<Owner>,
    ) -> Pending {
        Pending::queue(vec![entry], mode, holder, true, stuck)
    }

    /// Queues a try-once request in a remote backend's entry
    /// ([`Attempt::Untried`](super::Attempt::Untried)): it is granted by
    /// the next attempt on the backend, or fails with `WouldBlock` when that
    /// attempt does not win.
    pub(crate) fn start_once(entry: Arc<Entry>, mode: Mode, holder: HolderId) -> Pending {
        let waiter = Waiter {
            once: true,
            ..Waiter::new(mode, holder, false, None)
        };
        Pending::queue_waiter(vec![entry], Arc::new(waiter))
    }

    fn queue(
        entries: Vec<Arc<Entry>>,
        mode: Mode,
        holder: HolderId,
        blocks_itself: bool,
        stuck: Option<Owner>,
    ) -> Pending {
        let waiter = Arc::new(Waiter::new(mode, holder, blocks_itself, stuck));
        Pending::queue_waiter(entries, waiter)
    }

    fn queue_waiter(entries: Vec<Arc<Entry>>, waiter: Arc<Waiter>) -> Pending {
        for (i, e) in entries.iter().enumerate() {
            e.enqueue(&waiter, i);
        }
        Pending {
            waiter,
            entries,
            done: false,
        }
    }

    /// The (first) entry the acquisition is queued in.
    pub(crate) fn entry(&self) -> &Arc<Entry> {
        &self.entries[0]
    }

    /// Blocks the calling thread. `Err(None)` means the deadline passed.
    pub(crate) fn wait(mut self, deadline: Option<Instant>) -> Settled {
        loop {
            match self.waiter.wait_until(deadline) {
                Woken::Block(index) => self.entries[index].clone().block(self.waiter.mode),
                Woken::Settled(outcome) => return self.settle(outcome),
            }
        }
    }

    /// Waits as a future. `Err(None)` means the deadline passed.
    pub(crate) fn into_future(self, deadline: Option<Instant>) -> PendingFuture {
        let sleep = deadline.map(|at| Box::pin(tokio::time::sleep_until(at.into())));
        PendingFuture {
            pending: Some(self),
            sleep,
        }
    }

    fn settle(&mut self, outcome: Outcome) -> Settled {
        let outcome = match outcome {
            Outcome::Pending | Outcome::Cancelled => self.waiter.cancel(),
            other => other,
        };
        self.done = true;
        for (i, e) in self.entries.iter().enumerate() {
            if !matches!(outcome, Outcome::Granted(g) if g == i) {
                e.withdraw(&self.waiter);
            }
        }
        match outcome {
            Outcome::Granted(i) => Ok(i),
            Outcome::Failed(e) => Err(Some(e)),
            Outcome::Pending | Outcome::Cancelled => Err(None),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let holder = self.waiter.holder;
        if let Ok(i) = self.settle(Outcome::Cancelled) {
            // Granted while being dropped: hand it on.
            let _ = self.entries[i].release(holder);
        }
    }
}

/// The future form of [`Pending`]; dropping it withdraws the acquisition.
pub(crate) struct PendingFuture {
    pending: Option<Pending>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Future for PendingFuture {
    type Output = Settled;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Settled> {
        let this = &mut *self;
        let Some(pending) = this.pending.as_mut() else {
            panic!("PendingFuture polled after completion");
        };
        let outcome = match pending.waiter.poll_outcome(cx) {
            Poll::Ready(o) => o,
            Poll::Pending => match this.sleep.as_mut().map(|s| s.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Outcome::Pending,
                _ => return Poll::Pending,
            },
        };
        let mut pending = this.pending.take().expect("checked above");
        Poll::Ready(pending.settle(outcome))
    }
}
