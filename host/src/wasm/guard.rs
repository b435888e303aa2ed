//! A guest's guard: one hold of a lock or one permit of a semaphore. The
//! guest releases it by dropping it; the host ends it when the embedder's
//! maximum hold time runs out, and tells the guest through `lost`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use wasmtime_wasi::runtime::{AbortOnDropJoinHandle, spawn, spawn_blocking};

use super::ctx::Slot;
use super::releasing::Releasing;
use crate::backend::LostFuture;
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

    fn fence(&self) -> Option<u64> {
        match self {
            Native::Lock(g) => g.fence(),
            Native::Permit(_) => None,
        }
    }

    /// Ready when the hold is lost, where the backend tells (etcd).
    fn lost_signal(&self) -> Option<LostFuture> {
        match self {
            Native::Lock(g) => g.lost_signal(),
            Native::Permit(_) => None,
        }
    }

    /// Releases at once if that needs no wait, else gives itself back: a
    /// soft marker whose turn a breaker holds right now (the turn lasts
    /// microseconds unless that breaker is stopped).
    fn release_now(self) -> std::result::Result<Result<()>, Native> {
        match self {
            Native::Lock(g) => g.unlock_now().map_err(Native::Lock),
            Native::Permit(p) => Ok(p.release()),
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
    /// permits let go in one system call that does not wait; an etcd hold's
    /// deletion is awaited (and tells whether the hold was lost).
    pub(crate) async fn release_off_executor(self) -> Result<()> {
        match self {
            held if held.is_soft() => spawn_blocking(move || held.release()).await,
            Native::Lock(g) => g.unlock_async().await,
            Native::Permit(p) => p.release(),
        }
    }
}

/// The hold, shared by the guard, its lost pollables and its timer.
#[derive(Debug, Default)]
struct Cell {
    /// `None` once released, or taken by the host's timer to end it: a
    /// guard whose cell is empty while its timer runs is being ended.
    native: Mutex<Option<Native>>,
    /// Set once the hold is gone without a release: after the host's end
    /// is done (until then the hold is still booked), or when a soft
    /// marker is found gone.
    lost: AtomicBool,
    /// Wakes lost pollables. A `Notify` costs nothing until someone waits,
    /// which matters: every guest lock+unlock makes and drops a cell.
    wake: Notify,
}

impl Cell {
    fn native(&self) -> MutexGuard<'_, Option<Native>> {
        // A panic elsewhere leaves the value itself sound.
        self.native.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the hold was lost; notices a removed soft marker.
    fn check(&self) -> bool {
        if self.lost.load(Ordering::Acquire) {
            return true;
        }
        let taken = self.native().as_ref().is_some_and(Native::is_lost);
        if taken {
            self.mark_lost();
        }
        taken
    }

    /// Ready when the hold is lost, where the backend tells.
    fn lost_signal(&self) -> Option<LostFuture> {
        self.native().as_ref().and_then(Native::lost_signal)
    }

    /// Whether someone elsewhere may end the hold (asked only by lost
    /// pollables: it costs a look at the handle). While the host ends it,
    /// the end itself wakes them.
    fn can_be_taken(&self) -> bool {
        self.native().as_ref().is_some_and(Native::is_soft)
    }

    fn mark_lost(&self) {
        self.lost.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }

    /// Ends the hold from the host's side: releases it, then says so.
    async fn end(&self) {
        let held = self.native().take();
        if let Some(held) = held {
            let _ = held.release_off_executor().await;
            self.mark_lost();
        }
    }
}

/// Where a guard's cell lives: in the guard until something else must see
/// it (a lost pollable, the host's timer), then shared. Most guards are
/// taken and dropped with nobody else looking, one allocation fewer each.
#[derive(Debug)]
enum Home {
    Own(Cell),
    Shared(Arc<Cell>),
}

impl Home {
    fn cell(&self) -> &Cell {
        match self {
            Home::Own(cell) => cell,
            Home::Shared(cell) => cell,
        }
    }

    fn share(&mut self) -> Arc<Cell> {
        let shared = match self {
            Home::Shared(cell) => return cell.clone(),
            Home::Own(cell) => Arc::new(std::mem::take(cell)),
        };
        *self = Home::Shared(shared.clone());
        shared
    }
}

/// A guest's guard (`wasmlock:lock/locks.guard`).
#[derive(Debug)]
pub struct GuestGuard {
    home: Home,
    mode: Mode,
    slot: Option<u32>,
    fence: Option<u64>,
    /// Ends the hold at the embedder's maximum hold time.
    timer: Option<AbortOnDropJoinHandle<()>>,
    /// The guest's held-locks unit: given back when the hold has ended,
    /// not before (a release finishing off the executor keeps it).
    held: Option<Slot>,
}

impl GuestGuard {
    /// A guard for `native`, counted in the guest's held-locks quota by
    /// `held`, ended by the host at `deadline` if the guest still holds it.
    pub(crate) fn new(native: Native, held: Slot, deadline: Option<Instant>) -> GuestGuard {
        let (mode, slot, fence) = (native.mode(), native.slot(), native.fence());
        let mut home = Home::Own(Cell {
            native: Mutex::new(Some(native)),
            ..Cell::default()
        });
        let timer = deadline.map(|at| {
            let cell = home.share();
            spawn(async move {
                tokio::time::sleep_until(at).await;
                cell.end().await;
            })
        });
        GuestGuard {
            home,
            mode,
            slot,
            fence,
            timer,
            held: Some(held),
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    pub(crate) fn slot(&self) -> Option<u32> {
        self.slot
    }

    pub(crate) fn fence(&self) -> Option<u64> {
        self.fence
    }

    fn cell(&self) -> &Cell {
        self.home.cell()
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.cell().check()
    }

    /// A pollable's (0.2) or future's (0.3) target that becomes ready when
    /// the hold is lost, counted by `handle` in the guest's open handles:
    /// each costs the host memory, and a soft hold's a look at its marker
    /// now and then while it is awaited.
    pub(crate) fn lost_signal(&mut self, handle: Slot) -> LostSignal {
        LostSignal {
            cell: self.home.share(),
            _handle: handle,
        }
    }

    /// Releases now if that needs no wait, as it does not for kernel locks
    /// and permits; else gives the guard back, for [`release`](Self::release).
    /// (Boxed: the slow case, and a guard is large.)
    pub(crate) fn release_now(self) -> std::result::Result<Result<()>, Box<GuestGuard>> {
        let held = self.cell().native().take();
        match held.map(Native::release_now) {
            Some(Ok(released)) => Ok(released),
            Some(Err(held)) => {
                // Back for `release`; the timer, finding the cell empty
                // meanwhile, ended nothing.
                *self.cell().native() = Some(held);
                Err(Box::new(self))
            }
            // Being ended by the host's timer: `release` waits for that.
            None => Err(Box::new(self)),
        }
    }

    /// Releases now. A hold the host ended is `Lost`, once that end is done
    /// (the guest's next call must not find the old hold).
    pub(crate) async fn release(mut self) -> Result<(), crate::Error> {
        let held = self.cell().native().take();
        match held {
            Some(native) => native.release_off_executor().await,
            None => {
                if let Some(ending) = self.timer.take() {
                    ending.await;
                }
                Err(crate::Error::new(crate::ErrorKind::Lost, "")
                    .with_detail("the hold was ended by the host (maximum hold time)"))
            }
        }
    }

    /// Releases as the guest drops it, in a synchronous host call: at once,
    /// unless that would wait (a breaker holds a soft marker's turn, an etcd
    /// key's deletion, or the host's timer ending the hold). Then the release
    /// finishes on a task of its own, and the guest's next lock call waits
    /// for it (`Releasing`), so that call never finds the guest's own old
    /// hold.
    pub(crate) fn close_now(self, releasing: &mut Releasing) {
        if let Err(mut guard) = self.release_now() {
            let unit = guard.held.take();
            releasing.push(async move {
                let _ = (*guard).release().await;
                drop(unit);
            });
        }
    }
}

impl Drop for GuestGuard {
    fn drop(&mut self) {
        // Guards the store drops with it: released before the store's drop
        // returns, where the embedder drops it, as the embedder expects.
        // (Empty while the host's timer ends the hold: that release, already
        // on a blocking thread, finishes there.)
        let held = self.cell().native().take();
        drop(held);
    }
}

/// Ready once a guard's hold is lost. It may outlive the guard; after a
/// release it never becomes ready.
#[derive(Debug)]
pub struct LostSignal {
    cell: Arc<Cell>,
    _handle: Slot,
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
            if let Some(signal) = self.cell.lost_signal() {
                first_of(ended, signal).await;
                continue;
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

/// Returns when either future does.
async fn first_of(a: impl Future<Output = ()>, b: impl Future<Output = ()>) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    std::future::poll_fn(|cx| {
        if a.as_mut().poll(cx).is_ready() || b.as_mut().poll(cx).is_ready() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}
