//! Per-guest configuration and bookkeeping: the limits an embedder sets and
//! the namespaces it grants.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::namespace::Namespace;
use super::releasing::Releasing;
use crate::{Holder, Kind, Mode, Owner, Wait};

/// Builds a [`WasmLockCtx`]: the limits one guest lives within, and the
/// namespaces it is given.
///
/// ```
/// use std::time::Duration;
/// use wasmlock::{Kind, Mode, WasmLockCtx};
///
/// let ctx = WasmLockCtx::builder()
///     .max_handles(64)                      // open locks, semaphores, namespaces
///     .max_held_locks(8)                    // guards held at once
///     .max_semaphore_slots(16)              // permits one semaphore may have
///     .max_wait(Duration::from_secs(30))    // a guest's "forever" ends here
///     .max_hold(Duration::from_secs(300))   // then the hold is lost
///     .allow_break(false)                   // may the guest break stale soft locks?
///     .allow_kind(Kind::Soft, false)        // OS locks only
///     .read_only_files(Some(Mode::Shared))  // what a read-only descriptor may hold
///     .build();
/// assert_eq!(ctx.open_handles(), 0);
/// ```
#[derive(Clone)]
#[must_use]
pub struct WasmLockCtxBuilder {
    on_slow_wait: Option<(Duration, SlowWait)>,
    max_handles: usize,
    max_held: usize,
    max_slots: u32,
    max_wait: Option<Duration>,
    max_hold: Option<Duration>,
    allow_break: bool,
    allow_force_break: bool,
    reveal_holders: bool,
    read_only_files: Option<Mode>,
    allow_os: bool,
    allow_soft: bool,
    namespaces: Vec<(String, Namespace)>,
}

/// Called with the lock path and holder when a guest's wait runs long.
pub(crate) type SlowWait = Arc<dyn Fn(&std::path::Path, Option<Holder>) + Send + Sync>;

impl std::fmt::Debug for WasmLockCtxBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmLockCtxBuilder")
            .field("max_handles", &self.max_handles)
            .field("max_held", &self.max_held)
            .field("max_slots", &self.max_slots)
            .field("max_wait", &self.max_wait)
            .field("max_hold", &self.max_hold)
            .field("allow_break", &self.allow_break)
            .field("allow_force_break", &self.allow_force_break)
            .field("reveal_holders", &self.reveal_holders)
            .field("read_only_files", &self.read_only_files)
            .field("allow_os", &self.allow_os)
            .field("allow_soft", &self.allow_soft)
            .field("namespaces", &self.namespaces)
            .finish_non_exhaustive()
    }
}

impl Default for WasmLockCtxBuilder {
    fn default() -> Self {
        WasmLockCtxBuilder {
            on_slow_wait: None,
            max_handles: 1024,
            max_held: 256,
            max_slots: 64,
            max_wait: None,
            max_hold: None,
            allow_break: false,
            allow_force_break: false,
            reveal_holders: false,
            read_only_files: Some(Mode::Shared),
            allow_os: true,
            allow_soft: true,
            namespaces: Vec::new(),
        }
    }
}

impl WasmLockCtxBuilder {
    /// Defaults: 1024 handles, 256 held locks, 64 slots per semaphore, waits
    /// and holds unbounded, no breaking, holders' details hidden, shared
    /// holds only through read-only descriptors, both kinds allowed, no
    /// namespaces.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `n` lock, semaphore and namespace handles open at once;
    /// checked before any file is touched.
    pub fn max_handles(mut self, n: usize) -> Self {
        self.max_handles = n;
        self
    }

    /// At most `n` guards (lock holds and semaphore permits) at once.
    pub fn max_held_locks(mut self, n: usize) -> Self {
        self.max_held = n;
        self
    }

    /// At most `n` permits per semaphore a guest opens (each is a lock file
    /// and an open file); more is refused with `quota` before any file is
    /// made.
    pub fn max_semaphore_slots(mut self, n: u32) -> Self {
        self.max_slots = n;
        self
    }

    /// Caps every wait; a guest's `forever` becomes this timeout.
    pub fn max_wait(mut self, max: Duration) -> Self {
        self.max_wait = Some(max);
        self
    }

    /// Caps every hold: after `max`, the host releases the lock and the
    /// guard reports `lost` (its lost pollable becomes ready). A lock granted
    /// to a pending acquisition the guest never collects is released after
    /// the same time.
    pub fn max_hold(mut self, max: Duration) -> Self {
        self.max_hold = Some(max);
        self
    }

    /// Whether the guest may break soft locks whose holder is provably gone.
    /// Off by default.
    pub fn allow_break(mut self, yes: bool) -> Self {
        self.allow_break = yes;
        self
    }

    /// Whether the guest may break any soft lock, a live holder's too
    /// (`break-lock` with `force`). Off by default, and separate from
    /// [`allow_break`](Self::allow_break): breaking a live lock lets two
    /// holders in.
    pub fn allow_force_break(mut self, yes: bool) -> Self {
        self.allow_force_break = yes;
        self
    }

    /// Whether `holder` tells the guest the holder's pid, host name and
    /// since when. Off by default: the guest learns only whether the holder
    /// is itself, someone in this host, or elsewhere.
    pub fn reveal_holders(mut self, yes: bool) -> Self {
        self.reveal_holders = yes;
        self
    }

    /// What a guest may hold through a file descriptor opened without write
    /// access (`on-file`): `None` nothing, `Some(Mode::Shared)` shared holds
    /// (the default), `Some(Mode::Exclusive)` both. A read-only reader
    /// holding an exclusive lock forever could stop every writer of a file
    /// it may only read.
    pub fn read_only_files(mut self, most: Option<Mode>) -> Self {
        self.read_only_files = most;
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

    /// Grants the guest the namespace `backend` under `name`: it finds it in
    /// `get-namespaces` and opens locks in it by key, the way it finds a
    /// preopened directory. Granting the same name twice replaces it.
    ///
    /// ```
    /// use wasmlock::{Namespace, WasmLockCtx};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let ctx = WasmLockCtx::builder()
    ///     .namespace("jobs", Namespace::directory(dir.path())?)
    ///     .build();
    /// # drop(ctx);
    /// # Ok::<(), wasmlock::Error>(())
    /// ```
    pub fn namespace(mut self, name: impl Into<String>, backend: Namespace) -> Self {
        let name = name.into();
        self.namespaces.retain(|(n, _)| *n != name);
        self.namespaces.push((name, backend));
        self
    }

    /// The context for one guest (one store).
    pub fn build(self) -> WasmLockCtx {
        WasmLockCtx {
            limits: Arc::new(Limits {
                config: self,
                handles: AtomicUsize::new(0),
                held: AtomicUsize::new(0),
                turns: Arc::new(Semaphore::new(BLOCKING_TURNS)),
            }),
            owner: Owner::unique(),
            releasing: Releasing::default(),
        }
    }
}

/// The lock state of one guest: its limits, its namespaces, and its
/// identity for deadlock detection (a guest that waits cannot release).
/// Everything the guest holds is released when its guards are dropped,
/// which happens at the latest when its store is dropped (after a trap, too).
#[derive(Debug)]
pub struct WasmLockCtx {
    pub(crate) limits: Arc<Limits>,
    pub(crate) owner: Owner,
    pub(crate) releasing: Releasing,
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

    /// How many lock, semaphore and namespace handles the guest has open.
    pub fn open_handles(&self) -> usize {
        self.limits.handles.load(Ordering::Relaxed)
    }

    /// How many guards (holds and permits) the guest has.
    pub fn held_locks(&self) -> usize {
        self.limits.held.load(Ordering::Relaxed)
    }
}

/// How many of one guest's calls may do file-system work on blocking
/// threads at once. A WASI 0.3 guest can start any number of calls at once
/// (and cancel them, which leaves work already begun running): the rest
/// wait their turn, so one guest cannot fill tokio's blocking pool.
pub(super) const BLOCKING_TURNS: usize = 4;

#[derive(Debug)]
pub(crate) struct Limits {
    config: WasmLockCtxBuilder,
    handles: AtomicUsize,
    held: AtomicUsize,
    /// Turns at blocking threads (`BLOCKING_TURNS`).
    turns: Arc<Semaphore>,
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

    /// The guest's turns at blocking threads.
    pub(crate) fn turns(&self) -> Arc<Semaphore> {
        self.turns.clone()
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

    /// Whether breaking (with or without `force`) is allowed.
    pub(crate) fn allows_break(&self, force: bool) -> bool {
        if force {
            self.config.allow_force_break
        } else {
            self.config.allow_break
        }
    }

    pub(crate) fn max_hold(&self) -> Option<Duration> {
        self.config.max_hold
    }

    pub(crate) fn max_slots(&self) -> u32 {
        self.config.max_slots
    }

    pub(crate) fn reveal_holders(&self) -> bool {
        self.config.reveal_holders
    }

    /// Whether a read-only descriptor may be held in `mode`.
    pub(crate) fn read_only_allows(&self, mode: Mode) -> bool {
        self.config
            .read_only_files
            .is_some_and(|most| most.covers(mode))
    }

    pub(crate) fn namespaces(&self) -> &[(String, Namespace)] {
        &self.config.namespaces
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
