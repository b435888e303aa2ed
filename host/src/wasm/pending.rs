//! A guest's acquisition in progress (`future-guard`), in the manner of
//! wasi-http's `future-incoming-response`: the wait runs as a host task, the
//! guest subscribes and then takes the outcome exactly once.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use wasmtime_wasi::runtime::{AbortOnDropJoinHandle, spawn, spawn_blocking};

use super::ctx::Slot;
use super::guard::{GuestGuard, Native};
use super::releasing::Releasing;
use crate::{Error, Result};

type Acquisition = Pin<Box<dyn Future<Output = Result<Native>> + Send>>;

enum State {
    /// The acquisition, driven by the task; kept here so that dropping the
    /// future-guard withdraws it at once.
    Waiting(Acquisition),
    /// Completed at the instant given; not taken yet.
    Ready(Result<Native>, Instant),
    /// A grant nobody took within the maximum hold time, being released by
    /// the task.
    Expiring,
    Taken,
    /// The guest dropped the future-guard.
    Closed,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Waiting(_) => f.write_str("Waiting"),
            State::Ready(outcome, _) => f.debug_tuple("Ready").field(outcome).finish(),
            State::Expiring => f.write_str("Expiring"),
            State::Taken => f.write_str("Taken"),
            State::Closed => f.write_str("Closed"),
        }
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    done: watch::Sender<bool>,
}

impl Shared {
    /// Advances the acquisition; says whether it was granted just now.
    fn poll(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut state = self.state.lock().unwrap();
        let State::Waiting(acquisition) = &mut *state else {
            return Poll::Ready(false);
        };
        let Poll::Ready(outcome) = acquisition.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        let granted = outcome.is_ok();
        *state = State::Ready(outcome, Instant::now());
        drop(state);
        self.done.send_replace(true);
        Poll::Ready(granted)
    }

    /// A grant nobody took within the maximum hold time is given back; it
    /// reads as lost once the release is done.
    async fn expire(&self) {
        let native = {
            let mut state = self.state.lock().unwrap();
            let old = std::mem::replace(&mut *state, State::Expiring);
            let State::Ready(Ok(native), _) = old else {
                *state = old;
                return;
            };
            native
        };
        let _ = native.release_off_executor().await;
        let mut state = self.state.lock().unwrap();
        if matches!(&*state, State::Expiring) {
            *state = State::Ready(Err(uncollected()), Instant::now());
        }
    }

    /// Ends it. What the state held is returned, to be let go of: a
    /// waiting acquisition withdraws from the queue as it drops, an
    /// uncollected grant is released.
    fn close(&self) -> State {
        std::mem::replace(&mut *self.state.lock().unwrap(), State::Closed)
    }
}

/// A guest's pending acquisition (`wasmlock:lock/locks.future-guard`).
#[derive(Debug)]
pub struct FutureGuard {
    shared: Arc<Shared>,
    held: Option<Slot>,
    max_hold: Option<Duration>,
    /// Drives the acquisition, then expires an uncollected grant.
    task: Option<AbortOnDropJoinHandle<()>>,
}

impl FutureGuard {
    /// Starts `acquisition` now — it takes its place in the queue before this
    /// returns — and lets a host task drive it. `held` is the guest's
    /// held-locks unit reserved for the guard. What fails at once (a mode
    /// the lock does not offer, an I/O error) is returned here, as the
    /// blocking `acquire` would.
    pub(crate) fn start(
        acquisition: impl Future<Output = Result<Native>> + Send + 'static,
        held: Slot,
        max_hold: Option<Duration>,
    ) -> Result<FutureGuard> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::Waiting(Box::pin(acquisition))),
            done: watch::Sender::new(false),
        });
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let first = shared.poll(&mut cx);
        if first == Poll::Ready(false) {
            let mut state = shared.state.lock().unwrap();
            if let State::Ready(Err(e), _) = std::mem::replace(&mut *state, State::Closed) {
                return Err(e);
            }
        }
        let driver = shared.clone();
        let task = async move {
            let granted = match first {
                Poll::Ready(granted) => granted,
                Poll::Pending => std::future::poll_fn(|cx| driver.poll(cx)).await,
            };
            if let (true, Some(max)) = (granted, max_hold) {
                tokio::time::sleep(max).await;
                driver.expire().await;
            }
        };
        Ok(FutureGuard {
            shared,
            held: Some(held),
            max_hold,
            task: Some(spawn(task)),
        })
    }

    /// What a pollable waits on: the acquisition completing.
    pub(crate) fn done(&self) -> Done {
        Done {
            done: self.shared.done.subscribe(),
        }
    }

    /// Ends it as the guest drops it: now, not when the task is next polled,
    /// so the guest's next call finds the queue without it. Off the
    /// executor where that may wait: a grant to a soft lock is released
    /// there, and so is a waiting acquisition, whose withdrawal may pass on
    /// a grant that arrived meanwhile (a soft marker's release).
    pub(crate) async fn close(mut self) {
        match self.shared.close() {
            State::Ready(Ok(native), _) => {
                let _ = native.release_off_executor().await;
            }
            State::Waiting(acquisition) => spawn_blocking(move || drop(acquisition)).await,
            // The task is releasing the grant: done when it is.
            State::Expiring => {
                if let Some(task) = self.task.take() {
                    task.await;
                }
            }
            _ => {}
        }
    }

    /// `None` while pending; then the outcome once, and `Some(Err(()))` after.
    /// A grant whose expiry is under way is lost already; the guest's next
    /// lock call waits for its release (`releasing`).
    pub(crate) fn get(
        &mut self,
        releasing: &mut Releasing,
    ) -> Option<std::result::Result<Result<GuestGuard>, ()>> {
        let mut state = self.shared.state.lock().unwrap();
        match std::mem::replace(&mut *state, State::Taken) {
            waiting @ State::Waiting(_) => {
                *state = waiting;
                None
            }
            State::Expiring => {
                if let Some(task) = self.task.take() {
                    releasing.push(task);
                }
                Some(Ok(Err(uncollected())))
            }
            State::Ready(outcome, at) => {
                let held = self.held.take().expect("taken once");
                let deadline = self.max_hold.map(|max| at + max);
                Some(Ok(
                    outcome.map(|native| GuestGuard::new(native, held, deadline))
                ))
            }
            State::Taken | State::Closed => Some(Err(())),
        }
    }
}

impl Drop for FutureGuard {
    fn drop(&mut self) {
        // With the store: as a guard's drop.
        drop(self.shared.close());
    }
}

fn uncollected() -> Error {
    Error::new(crate::ErrorKind::Lost, "")
        .with_detail("granted, but not taken within the host's maximum hold time")
}

/// Ready when an acquisition has completed, or its future-guard is gone.
#[derive(Debug)]
pub struct Done {
    done: watch::Receiver<bool>,
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for Done {
    async fn ready(&mut self) {
        let _ = self.done.wait_for(|done| *done).await;
    }
}
