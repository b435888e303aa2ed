//! The host side of the guest's resources. Each one releases what it holds
//! when the guest drops it, or when the store goes away.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use super::ctx::Slot;
use crate::{FileLock, OwnedPermit, Owner, Result, Semaphore};

/// A guest's lock handle.
#[derive(Debug)]
pub struct GuestLock {
    pub(crate) lock: Arc<FileLock>,
    pub(crate) owner: Owner,
    /// The held-locks quota unit, while this handle holds the lock.
    pub(crate) held: Arc<Mutex<Option<Slot>>>,
    pub(crate) _handle: Slot,
}

impl Drop for GuestLock {
    fn drop(&mut self) {
        let _ = self.lock.force_release(self.owner);
    }
}

type Acquisition = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// A guest's acquisition in progress.
pub struct PendingAcquire {
    pub(crate) lock: Arc<FileLock>,
    pub(crate) owner: Owner,
    future: Option<Acquisition>,
    outcome: Option<Result<()>>,
    finished: bool,
    /// The held-locks quota unit reserved for this acquisition, if the
    /// handle did not hold the lock yet.
    pub(crate) held: Option<Slot>,
    /// Where the reserved unit goes once the lock is held.
    pub(crate) handle_held: Arc<Mutex<Option<Slot>>>,
}

impl std::fmt::Debug for PendingAcquire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAcquire")
            .field("path", &self.lock.path())
            .field("outcome", &self.outcome)
            .finish()
    }
}

impl PendingAcquire {
    pub(crate) fn new(
        lock: Arc<FileLock>,
        owner: Owner,
        future: Acquisition,
        held: Option<Slot>,
        handle_held: Arc<Mutex<Option<Slot>>>,
    ) -> PendingAcquire {
        let mut p = PendingAcquire {
            lock,
            owner,
            future: Some(future),
            outcome: None,
            finished: false,
            held,
            handle_held,
        };
        // Take a place in the queue now, not when the guest first polls.
        p.poll_now();
        p
    }

    /// Advances the acquisition without waiting.
    pub(crate) fn poll_now(&mut self) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let _ = self.poll_step(&mut cx);
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.outcome.is_some() {
            return Poll::Ready(());
        }
        let Some(fut) = self.future.as_mut() else {
            return Poll::Ready(());
        };
        match fut.as_mut().poll(cx) {
            Poll::Ready(r) => {
                self.future = None;
                self.outcome = Some(r);
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The outcome so far, without advancing or handing anything over.
    pub(crate) fn outcome(&self) -> Option<&Result<()>> {
        self.outcome.as_ref()
    }

    /// The outcome, if there is one yet; marks a success as handed over.
    pub(crate) fn finish(&mut self) -> Option<Result<()>> {
        self.poll_now();
        let outcome = self.outcome.clone()?;
        if outcome.is_ok() && !self.finished {
            self.finished = true;
            if let Some(slot) = self.held.take() {
                *self.handle_held.lock().unwrap() = Some(slot);
            }
        }
        Some(outcome)
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for PendingAcquire {
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| self.poll_step(cx)).await
    }
}

impl Drop for PendingAcquire {
    fn drop(&mut self) {
        // Granted but never collected: pass the lock on. Still waiting:
        // dropping the future withdraws it from the queue.
        if matches!(self.outcome, Some(Ok(()))) && !self.finished {
            let _ = self.lock.release(self.owner);
        }
    }
}

/// A guest's semaphore handle.
#[derive(Debug)]
pub struct GuestSemaphore {
    pub(crate) sem: Arc<Semaphore>,
    pub(crate) _handle: Slot,
}

/// A guest's semaphore permit; the slot goes back when the guest drops it.
#[derive(Debug)]
pub struct GuestPermit {
    pub(crate) permit: OwnedPermit,
    pub(crate) _held: Slot,
}
