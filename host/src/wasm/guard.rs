//! A guest's guard: one hold of a lock or one permit of a semaphore. The
//! guest releases it by dropping it; the host ends it when the embedder's
//! maximum hold time runs out, and tells the guest through `lost`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;
use wasmtime_wasi::runtime::{AbortOnDropJoinHandle, spawn, spawn_blocking};

use super::ctx::Slot;
use crate::{Kind, Mode, OwnedLockGuard, OwnedPermit, Result};

/// How often the lost pollable of a soft hold looks at its marker when no
/// one ends the hold from this host (someone elsewhere may remove it).
const LOST_CHECK: Duration = Duration::from_millis(100);

/// What a guard holds in the engine.
#[derive(Debug)]
pub(crate) enum Native {
    Lock(OwnedLockGuard),
    Permit(OwnedPermit),
}

impl Native {
    fn mode(&self) -> Mode {
        match self {
            Native::Lock(g) => g.mode(),
            Native::Permit(_) => Mode::Exclusive,
        }
    }

    fn slot(&self) -> Option<u32> {
        match self {
            Native::Lock(_) => None,
            Native::Permit(p) => Some(p.slot() as u32),
        }
    }

    /// A soft marker: someone else can remove it without this host
    /// knowing, and its release takes turns with breakers (it may wait).
    fn is_soft(&self) -> bool {
        matches!(self, Native::Lock(g) if g.lock().kind() == Kind::Soft)
    }

    fn is_lost(&self) -> bool {
        match self {
            Native::Lock(g) => g.is_lost(),
            Native::Permit(_) => false,
        }
    }

    fn release(self) -> Result<()> {
        match self {
            Native::Lock(g) => g.unlock(),
            Native::Permit(p) => p.release(),
        }
    }

    /// Releases where it cannot stall the executor. A soft marker's release
    /// takes turns with anyone breaking it, which can last up to a second
    /// (a stopped breaker): that runs on a blocking thread. Kernel locks and
    /// permits let go in one system call that does not wait.
    pub(crate) async fn release_off_executor(self) -> Result<()> {
        if self.is_soft() {
            spawn_blocking(move || self.release()).await
        } else {
            self.release()
        }
    }
}

/// The hold, shared by the guard, its lost pollables and its timer.
#[derive(Debug)]
struct Cell {
    /// `None` once released or ended by the host. An async mutex: the host
    /// ending a hold keeps it while the release runs (off the executor), so
    /// the guest's own release or drop waits for that, not the executor.
    native: Mutex<Option<Native>>,
    lost: AtomicBool,
    /// Wakes lost pollables. A `Notify` costs nothing until someone waits,
    /// which matters: every guest lock+unlock makes and drops a cell.
    wake: Notify,
}

impl Cell {
    /// Whether the hold was lost; notices a removed soft marker.
    fn check(&self) -> bool {
        if self.lost.load(Ordering::Acquire) {
            return true;
        }
        // Busy only while the host ends the hold (the guest is single
        // threaded, and here): lost.
        let Ok(native) = self.native.try_lock() else {
            return true;
        };
        let taken = native.as_ref().is_some_and(Native::is_lost);
        drop(native);
        if taken {
            self.mark_lost();
        }
        taken
    }

    /// Whether someone elsewhere may end the hold (asked only by lost
    /// pollables: it costs a look at the handle). While the host ends it,
    /// the end itself wakes them.
    fn can_be_taken(&self) -> bool {
        self.native
            .try_lock()
            .is_ok_and(|native| native.as_ref().is_some_and(Native::is_soft))
    }

    fn mark_lost(&self) {
        self.lost.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }

    /// Ends the hold from the host's side: releases it, and says so. The
    /// hold stays taken until the release is done.
    async fn end(&self) {
        let mut native = self.native.lock().await;
        if let Some(held) = native.take() {
            let _ = held.release_off_executor().await;
            // Before the hold is seen empty: a look in between says lost.
            self.mark_lost();
        }
    }

    /// The hold, once any end the host began is done.
    async fn take(&self) -> Option<Native> {
        self.native.lock().await.take()
    }
}

/// A guest's guard (`wasmlock:lock/locks.guard`).
#[derive(Debug)]
pub struct GuestGuard {
    cell: Arc<Cell>,
    mode: Mode,
    slot: Option<u32>,
    _timer: Option<AbortOnDropJoinHandle<()>>,
    _held: Slot,
}

impl GuestGuard {
    /// A guard for `native`, counted in the guest's held-locks quota by
    /// `held`, ended by the host at `deadline` if the guest still holds it.
    pub(crate) fn new(native: Native, held: Slot, deadline: Option<Instant>) -> GuestGuard {
        let (mode, slot) = (native.mode(), native.slot());
        let cell = Arc::new(Cell {
            native: Mutex::new(Some(native)),
            lost: AtomicBool::new(false),
            wake: Notify::new(),
        });
        let timer = deadline.map(|at| {
            let cell = cell.clone();
            spawn(async move {
                tokio::time::sleep_until(at).await;
                cell.end().await;
            })
        });
        GuestGuard {
            cell,
            mode,
            slot,
            _timer: timer,
            _held: held,
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    pub(crate) fn slot(&self) -> Option<u32> {
        self.slot
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.cell.check()
    }

    /// A pollable's target that becomes ready when the hold is lost.
    pub(crate) fn lost_signal(&self) -> LostSignal {
        LostSignal {
            cell: self.cell.clone(),
        }
    }

    /// Releases now. A hold already ended is `Lost`.
    pub(crate) async fn release(self) -> Result<(), crate::Error> {
        match self.cell.take().await {
            Some(native) => native.release_off_executor().await,
            None => Err(crate::Error::new(crate::ErrorKind::Lost, "")
                .with_detail("the hold was ended by the host (maximum hold time)")),
        }
    }

    /// Releases now, as the guest drops it: done when this returns, so the
    /// guest's next call finds the lock free.
    pub(crate) async fn close(self) {
        if let Some(native) = self.cell.take().await {
            let _ = native.release_off_executor().await;
        }
    }
}

impl Drop for GuestGuard {
    fn drop(&mut self) {
        // Guards the store drops with it: released before the store's drop
        // returns, where the embedder drops it, as the embedder expects.
        // (Busy only while the host's timer ends the hold: that release,
        // already on a blocking thread, finishes there.)
        if let Ok(mut native) = self.cell.native.try_lock() {
            drop(native.take());
        }
    }
}

/// Ready once a guard's hold is lost. It may outlive the guard; after a
/// release it never becomes ready.
#[derive(Debug)]
pub struct LostSignal {
    cell: Arc<Cell>,
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for LostSignal {
    async fn ready(&mut self) {
        loop {
            // Registered before the check: a loss right after it wakes us.
            let ended = self.cell.wake.notified();
            let mut ended = std::pin::pin!(ended);
            ended.as_mut().enable();
            if self.cell.check() {
                return;
            }
            if !self.cell.can_be_taken() {
                ended.await;
                continue;
            }
            // A soft marker can be removed by anyone, anywhere: look again
            // now and then, as soft-lock waiters do.
            let _ = tokio::time::timeout(LOST_CHECK, ended).await;
        }
    }
}
