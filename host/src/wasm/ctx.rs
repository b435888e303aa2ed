//! Per-guest configuration and bookkeeping: the limits an embedder sets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::{Holder, Kind, Owner, Wait};

/// Builds a [`WasmLockCtx`]: the limits one guest lives within.
///
/// ```
/// use std::time::Duration;
/// use wasmlock::{Kind, WasmLockCtx};
///
/// let ctx = WasmLockCtx::builder()
///     .max_handles(64)                      // open lock/semaphore handles
///     .max_held_locks(8)                    // locks and permits held at once
///     .max_wait(Duration::from_secs(30))    // a guest's "forever" ends here
///     .allow_break(false)                   // may the guest break soft locks?
///     .allow_kind(Kind::Soft, false)        // OS locks only
///     .build();
/// assert_eq!(ctx.open_handles(), 0);
/// ```
#[derive(Clone)]
#[must_use]
pub struct WasmLockCtxBuilder {
    on_slow_wait: Option<(Duration, SlowWait)>,
    max_handles: usize,
    max_held: usize,
    max_wait: Option<Duration>,
    allow_break: bool,
    allow_os: bool,
    allow_soft: bool,
}

/// Called with the lock path and holder when a guest's wait runs long.
pub(crate) type SlowWait = Arc<dyn Fn(&std::path::Path, Option<Holder>) + Send + Sync>;

impl std::fmt::Debug for WasmLockCtxBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmLockCtxBuilder")
            .field("max_handles", &self.max_handles)
            .field("max_held", &self.max_held)
            .field("max_wait", &self.max_wait)
            .field("allow_break", &self.allow_break)
            .field("allow_os", &self.allow_os)
            .field("allow_soft", &self.allow_soft)
            .finish_non_exhaustive()
    }
}

impl Default for WasmLockCtxBuilder {
    fn default() -> Self {
        WasmLockCtxBuilder {
            on_slow_wait: None,
            max_handles: 1024,
            max_held: 256,
            max_wait: None,
            allow_break: false,
            allow_os: true,
            allow_soft: true,
        }
    }
}

impl WasmLockCtxBuilder {
    /// Defaults: 1024 handles, 256 held locks, waits unbounded, breaking
    /// not allowed, both kinds allowed.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `n` lock and semaphore handles open at once.
    pub fn max_handles(mut self, n: usize) -> Self {
        self.max_handles = n;
        self
    }

    /// At most `n` locks (and semaphore permits) held at once.
    pub fn max_held_locks(mut self, n: usize) -> Self {
        self.max_held = n;
        self
    }

    /// Caps every wait; a guest's `forever` becomes this timeout.
    pub fn max_wait(mut self, max: Duration) -> Self {
        self.max_wait = Some(max);
        self
    }

    /// Whether the guest may break soft locks (stale ones, or with `force`
    /// any). Off by default.
    pub fn allow_break(mut self, yes: bool) -> Self {
        self.allow_break = yes;
        self
    }

    /// Calls `report` once per acquisition whose wait lasts longer than
    /// `after`, with the lock path (as the guest named it) and the holder.
    ///
    /// ```
    /// use std::time::Duration;
    /// use wasmlock::WasmLockCtx;
    /// let ctx = WasmLockCtx::builder()
    ///     .on_slow_wait(Duration::from_secs(1), |path, holder| {
    ///         let pid = holder.and_then(|h| h.pid).map_or("?".into(), |p| p.to_string());
    ///         eprintln!("waiting for lock on {} (held by pid {pid})", path.display());
    ///     })
    ///     .build();
    /// # drop(ctx);
    /// ```
    pub fn on_slow_wait(
        mut self,
        after: Duration,
        report: impl Fn(&std::path::Path, Option<Holder>) + Send + Sync + 'static,
    ) -> Self {
        self.on_slow_wait = Some((after, Arc::new(report)));
        self
    }

    /// Allows or forbids one kind of lock.
    pub fn allow_kind(mut self, kind: Kind, yes: bool) -> Self {
        match kind {
            Kind::Os => self.allow_os = yes,
            Kind::Soft => self.allow_soft = yes,
        }
        self
    }

    /// The context for one guest (one store).
    pub fn build(self) -> WasmLockCtx {
        WasmLockCtx {
            limits: Arc::new(Limits {
                config: self,
                handles: AtomicUsize::new(0),
                held: AtomicUsize::new(0),
            }),
            owner: Owner::unique(),
        }
    }
}

/// The lock state of one guest: its limits, and its identity as an owner.
/// Everything the guest holds is released when its handles are dropped,
/// which happens at the latest when its store is dropped (after a trap, too).
#[derive(Debug)]
pub struct WasmLockCtx {
    pub(crate) limits: Arc<Limits>,
    pub(crate) owner: Owner,
}

impl Default for WasmLockCtx {
    fn default() -> Self {
        WasmLockCtxBuilder::new().build()
    }
}

impl WasmLockCtx {
    /// Same as [`WasmLockCtxBuilder::new`].
    pub fn builder() -> WasmLockCtxBuilder {
        WasmLockCtxBuilder::new()
    }

    /// How many lock and semaphore handles the guest has open.
    pub fn open_handles(&self) -> usize {
        self.limits.handles.load(Ordering::Relaxed)
    }

    /// How many locks and permits the guest holds.
    pub fn held_locks(&self) -> usize {
        self.limits.held.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub(crate) struct Limits {
    config: WasmLockCtxBuilder,
    handles: AtomicUsize,
    held: AtomicUsize,
}

/// One unit of a counted limit, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    limits: Arc<Limits>,
    which: Which,
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Handle,
    Held,
}

impl Limits {
    fn take(self: &Arc<Self>, which: Which) -> Option<Slot> {
        let (counter, max) = match which {
            Which::Handle => (&self.handles, self.config.max_handles),
            Which::Held => (&self.held, self.config.max_held),
        };
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                limits: self.clone(),
                which,
            })
    }

    pub(crate) fn take_handle(self: &Arc<Self>) -> Option<Slot> {
        self.take(Which::Handle)
    }

    pub(crate) fn take_held(self: &Arc<Self>) -> Option<Slot> {
        self.take(Which::Held)
    }

    pub(crate) fn clamp(&self, wait: Wait) -> Wait {
        match self.config.max_wait {
            Some(max) => wait.clamp(max),
            None => wait,
        }
    }

    pub(crate) fn allows(&self, kind: Kind) -> bool {
        match kind {
            Kind::Os => self.config.allow_os,
            Kind::Soft => self.config.allow_soft,
        }
    }

    pub(crate) fn slow_wait(&self) -> Option<(Duration, SlowWait)> {
        self.config.on_slow_wait.clone()
    }

    pub(crate) fn allow_break(&self) -> bool {
        self.config.allow_break
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let counter = match self.which {
            Which::Handle => &self.limits.handles,
            Which::Held => &self.limits.held,
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }
}
