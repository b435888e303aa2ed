//! What the lock calls do, in steps both WIT versions share: checks and
//! quota units taken with the store, work that may take long (the file
//! system, a wait) run without it, and the result handed to the guest with
//! it again. The 0.2 bindings (`host.rs`) run the steps in one call that has
//! the store throughout; the 0.3 bindings (`p3/host.rs`) give the store back
//! between them, so a guest's other tasks run while one waits.
//!
//! Every limit is checked before the file system is touched, and file-system
//! work that may take long (opening and creating files and directories,
//! a semaphore's slot files, reading holders and markers, breaking, a soft
//! marker's release, which takes turns with breakers) runs on a blocking
//! thread. What stays on the executor is an acquisition's attempts and a
//! release that cannot wait: a few system calls each (a `flock` with
//! `LOCK_NB` or `LOCK_UN`, a soft marker's exclusive create or unlink).

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cap_std::fs::Dir;
use wasmlock_types::{ErrorCode as Code, HolderKind};
use wasmtime::component::Resource;
use wasmtime_wasi::OpenMode;
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::runtime::spawn_blocking;

use super::bindings::wasmlock::lock::types::ErrorCode;
use super::error::LockResult;
use super::guard::{GuestGuard, Native};
use super::namespace::Namespace;
use super::resources::{GuestLock, GuestNamespace, GuestSemaphore};
use super::{WasmLockCtxView, ctx::Slot};
use crate::{FileLock, Kind, LockDir, Mode, Result, Semaphore, Wait};

/// When a hold began, as seconds and nanoseconds since the Unix epoch.
pub(super) fn since_epoch(holder: &crate::Holder) -> Option<Duration> {
    holder
        .since
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
}

/// An acquisition a guest asked for: granted at once, or to be waited for.
pub(super) enum Begun {
    Held(GuestGuard),
    Waiting(Waiting),
}

/// The wait for a grant, which needs nothing of the store: a WASI 0.3
/// guest's other tasks go on meanwhile. Dropping it withdraws the wait (the
/// engine's waits are cancel safe: a grant that raced the drop is released).
pub(super) struct Waiting {
    wait: Pin<Box<dyn Future<Output = Result<Native>> + Send>>,
    held: Slot,
    max_hold: Option<Duration>,
}

impl Waiting {
    /// The guard, once granted; the host's maximum hold counts from then.
    pub(super) async fn granted(self) -> LockResult<GuestGuard> {
        let native = self.wait.await?;
        let deadline = self.max_hold.map(|max| tokio::time::Instant::now() + max);
        Ok(GuestGuard::new(native, self.held, deadline))
    }
}

impl WasmLockCtxView<'_> {
    /// Runs file-system work on a blocking thread, in one of the guest's
    /// turns (see `Limits::turns`). The turn, and whatever `work` owns,
    /// stay with the work: a call cancelled while it runs does not free
    /// them before it ends.
    pub(super) fn blocking<T, F>(
        &self,
        work: F,
    ) -> impl Future<Output = LockResult<T>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        let turns = self.ctx.limits.turns();
        async move {
            // Never closed: the semaphore lives as long as the limits.
            let turn = turns.acquire_owned().await;
            Ok(spawn_blocking(move || {
                let _turn = turn;
                work()
            })
            .await?)
        }
    }

    /// Opens a lock by path off the store (resolved and opened now, so a
    /// path out of the sandbox fails here), counted by `handle` from the
    /// start.
    pub(super) fn opened_lock<F>(
        &self,
        handle: Slot,
        open: F,
    ) -> impl Future<Output = LockResult<(FileLock, Slot)>> + Send + use<F>
    where
        F: FnOnce() -> Result<FileLock> + Send + 'static,
    {
        self.blocking(move || {
            let lock = open()?;
            lock.entry()?;
            Ok((lock, handle))
        })
    }

    /// Opens a semaphore off the store, its slot files made now; see
    /// [`opened_lock`](Self::opened_lock).
    pub(super) fn opened_semaphore<F>(
        &self,
        handle: Slot,
        open: F,
    ) -> impl Future<Output = LockResult<(Semaphore, Slot)>> + Send + use<F>
    where
        F: FnOnce() -> Result<Semaphore> + Send + 'static,
    {
        self.blocking(move || {
            let sem = open()?;
            sem.open_slots()?;
            Ok((sem, handle))
        })
    }

    /// A unit of the open-handles quota, before anything is touched.
    fn handle_slot(&self) -> LockResult<Slot> {
        self.ctx
            .limits
            .take_handle()
            .ok_or_else(|| Code::Quota.into())
    }

    /// A unit of the open-handles quota for a lost signal. Its calls have
    /// no error to return: past the quota, the guest traps.
    pub(super) fn lost_handle(&self) -> wasmtime::Result<Slot> {
        self.ctx.limits.take_handle().ok_or_else(|| {
            wasmtime::format_err!(
                "wasmlock: the guest's open-handle limit was reached asking for a hold's lost signal"
            )
        })
    }

    /// A unit of the held-locks quota for one more guard.
    pub(super) fn held_slot(&self) -> LockResult<Slot> {
        self.ctx
            .limits
            .take_held()
            .ok_or_else(|| Code::Quota.into())
    }

    /// The writable directory behind a guest's descriptor, as a sandbox
    /// named by the guest's own spelling (host paths stay private).
    fn lock_dir(&mut self, dir: &Resource<Descriptor>) -> LockResult<LockDir> {
        let Descriptor::Dir(d) = self.table.get(dir)? else {
            return Err(Code::InvalidPath.into());
        };
        if d.perms.write_not_permitted() {
            return Err(Code::ReadOnly.into());
        }
        let file = d
            .dir
            .try_clone()
            .map_err(|e| ErrorCode::Other(Some(e.to_string())))?;
        Ok(LockDir::from_cap_std(Dir::from_std_file(file), ""))
    }

    pub(super) fn push_lock(
        &mut self,
        lock: FileLock,
        read_only: bool,
        handle: Slot,
    ) -> LockResult<Resource<GuestLock>> {
        let guest = GuestLock {
            lock: Arc::new(lock),
            read_only,
            _handle: handle,
        };
        Ok(self.table.push(guest)?)
    }

    pub(super) fn push_semaphore(
        &mut self,
        sem: Semaphore,
        handle: Slot,
    ) -> LockResult<Resource<GuestSemaphore>> {
        let guest = GuestSemaphore {
            sem: Arc::new(sem),
            _handle: handle,
        };
        Ok(self.table.push(guest)?)
    }

    /// What opening a lock of kind `k` in `dir` needs, after the policy
    /// and quota checks.
    pub(super) fn open_at_checked(
        &mut self,
        dir: &Resource<Descriptor>,
        k: Kind,
    ) -> LockResult<(Slot, LockDir)> {
        if !self.ctx.limits.allows(k) {
            return Err(Code::NotPermitted.into());
        }
        let handle = self.handle_slot()?;
        Ok((handle, self.lock_dir(dir)?))
    }

    /// What opening a semaphore of `slots` in `dir` needs, after the policy
    /// and quota checks.
    pub(super) fn semaphore_at_checked(
        &mut self,
        dir: &Resource<Descriptor>,
        slots: u32,
    ) -> LockResult<(Slot, usize, LockDir)> {
        if !self.ctx.limits.allows(Kind::Os) {
            return Err(Code::NotPermitted.into());
        }
        let slots = self.check_slots(slots)?;
        let handle = self.handle_slot()?;
        Ok((handle, slots, self.lock_dir(dir)?))
    }

    /// What opening a lock in namespace `this` needs, after the checks: the
    /// namespace's name and the namespace.
    pub(super) fn namespace_lock_checked(
        &mut self,
        this: &Resource<GuestNamespace>,
    ) -> LockResult<(Slot, String, Namespace)> {
        let ns = self.table.get(this)?;
        let (name, namespace) = (ns.name.clone(), ns.namespace.clone());
        if namespace
            .lock_kind()
            .is_some_and(|kind| !self.ctx.limits.allows(kind))
        {
            return Err(Code::NotPermitted.into());
        }
        Ok((self.handle_slot()?, name, namespace))
    }

    /// What opening a semaphore of `slots` in namespace `this` needs.
    pub(super) fn namespace_semaphore_checked(
        &mut self,
        this: &Resource<GuestNamespace>,
        slots: u32,
    ) -> LockResult<(Slot, usize, String, Namespace)> {
        let ns = self.table.get(this)?;
        let (name, namespace) = (ns.name.clone(), ns.namespace.clone());
        if !self.ctx.limits.allows(Kind::Os) {
            return Err(Code::NotPermitted.into());
        }
        let slots = self.check_slots(slots)?;
        Ok((self.handle_slot()?, slots, name, namespace))
    }

    /// An OS lock on a file the guest opened.
    pub(super) fn lock_on_file(
        &mut self,
        file: &Resource<Descriptor>,
    ) -> LockResult<Resource<GuestLock>> {
        if !self.ctx.limits.allows(Kind::Os) {
            return Err(Code::NotPermitted.into());
        }
        // The quota first: no descriptor is duplicated beyond it.
        let handle = self.handle_slot()?;
        let Descriptor::File(f) = self.table.get(file)? else {
            return Err(Code::InvalidPath.into());
        };
        let read_only = !f.open_mode.contains(OpenMode::WRITE) || f.perms.write_not_permitted();
        let opened = f.file.try_clone();
        let name = PathBuf::from("<file descriptor>");
        let opened = opened.map_err(|e| crate::Error::from_io(e, &name))?;
        let lock = FileLock::from_file_as(opened, name)?;
        self.push_lock(lock, read_only, handle)
    }

    /// Acquiring `this` in `m` as the guest asked (`asked`): granted at once
    /// when the lock is free, else the wait. `blocks`: the guest cannot go
    /// on while it waits (a WASI 0.2 call), so deadlock is judged.
    pub(super) fn begin_acquire(
        &mut self,
        this: &Resource<GuestLock>,
        m: Mode,
        asked: Wait,
        blocks: bool,
    ) -> LockResult<Begun> {
        let (lock, held) = self.prepare(this, m)?;
        let party = self.ctx.owner;
        // A free lock is taken without building the waiting future, which
        // costs an uncontended lock+unlock more than the lock itself.
        if let Some(guard) = lock.try_fast_for_party(m, party, blocks) {
            let guard = GuestGuard::new(Native::Lock(guard), held, self.deadline());
            return Ok(Begun::Held(guard));
        }
        let w = self.ctx.limits.clamp(asked);
        let report = self.ctx.limits.slow_wait().map(|(after, report)| {
            let path = lock.path().to_path_buf();
            (after, move |h| report(&path, h))
        });
        let wait = async move {
            lock.lock_for_party_async(m, w, party, blocks, report)
                .await
                .map(Native::Lock)
        };
        Ok(Begun::Waiting(self.waiting(wait, held)))
    }

    /// Taking a permit of `this` as the guest asked; see
    /// [`begin_acquire`](Self::begin_acquire).
    pub(super) fn begin_permit(
        &mut self,
        this: &Resource<GuestSemaphore>,
        asked: Wait,
        blocks: bool,
    ) -> LockResult<Waiting> {
        let sem = self.table.get(this)?.sem.clone();
        let held = self.held_slot()?;
        let w = self.ctx.limits.clamp(asked);
        let party = self.ctx.owner;
        let wait = async move {
            sem.acquire_for_party_async(w, party, blocks)
                .await
                .map(Native::Permit)
        };
        Ok(self.waiting(wait, held))
    }

    fn waiting(
        &self,
        wait: impl Future<Output = Result<Native>> + Send + 'static,
        held: Slot,
    ) -> Waiting {
        Waiting {
            wait: Box::pin(wait),
            held,
            max_hold: self.ctx.limits.max_hold(),
        }
    }

    /// Who holds `this`, as this guest may know: the lookup, to run off the
    /// store (it reads files).
    pub(super) fn holder_lookup(
        &mut self,
        this: &Resource<GuestLock>,
    ) -> LockResult<impl Future<Output = LockResult<Option<(HolderKind, crate::Holder)>>> + use<>>
    {
        let lock = self.table.get(this)?.lock.clone();
        let (party, reveal) = (self.ctx.owner, self.ctx.limits.reveal_holders());
        Ok(self.blocking(move || {
            let Some(kind) = lock.holder_kind(party)? else {
                return Ok(None);
            };
            let details = if reveal { lock.holder()? } else { None };
            Ok(Some((kind, details.unwrap_or_default())))
        }))
    }

    /// Breaking `this`, after the policy check: to run off the store.
    pub(super) fn break_checked(
        &mut self,
        this: &Resource<GuestLock>,
        force: bool,
    ) -> LockResult<impl Future<Output = LockResult<()>> + use<>> {
        let lock = self.table.get(this)?.lock.clone();
        if !self.ctx.limits.allows_break(force) {
            return Err(Code::NotPermitted.into());
        }
        Ok(self.blocking(move || match lock.break_lock(force) {
            // A live holder, and no force: someone holds it.
            Err(e) if e.kind() == crate::ErrorKind::NotOwner => {
                Err(crate::Error::new(crate::ErrorKind::WouldBlock, lock.path()))
            }
            // Nobody holds it: nothing to break.
            Err(e) if e.kind() == crate::ErrorKind::NotHeld => Ok(()),
            other => other,
        }))
    }

    /// The lock behind `this`, for work off the store.
    pub(super) fn lock_of(&self, this: &Resource<GuestLock>) -> LockResult<Arc<FileLock>> {
        Ok(self.table.get(this)?.lock.clone())
    }

    /// The semaphore behind `this`, for work off the store.
    pub(super) fn semaphore_of(
        &self,
        this: &Resource<GuestSemaphore>,
    ) -> LockResult<Arc<Semaphore>> {
        Ok(self.table.get(this)?.sem.clone())
    }

    /// Refuses a semaphore size before any slot file is made.
    fn check_slots(&self, slots: u32) -> LockResult<usize> {
        if slots > self.ctx.limits.max_slots() {
            return Err(Code::Quota.into());
        }
        Ok(slots as usize)
    }

    /// What acquiring `this` in `m` needs: the handle, the guest's identity
    /// and its held-locks unit, after the policy checks.
    pub(super) fn prepare(
        &mut self,
        this: &Resource<GuestLock>,
        m: Mode,
    ) -> LockResult<(Arc<FileLock>, Slot)> {
        let g = self.table.get(this)?;
        if g.read_only && !self.ctx.limits.read_only_allows(m) {
            return Err(Code::NotPermitted.into());
        }
        let lock = g.lock.clone();
        Ok((lock, self.held_slot()?))
    }

    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.ctx
            .limits
            .max_hold()
            .map(|max| tokio::time::Instant::now() + max)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::mpsc;
    use wasmtime::component::ResourceTable;

    use super::*;
    use crate::WasmLockCtx;
    use crate::wasm::ctx::BLOCKING_TURNS;

    /// A guest that starts many calls at once, and cancels the ones whose
    /// work runs, still has at most its turns of blocking threads busy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guest_takes_turns_at_blocking_threads_even_cancelling() {
        let (mut ctx, mut table) = (WasmLockCtx::default(), ResourceTable::new());
        let view = WasmLockCtxView {
            ctx: &mut ctx,
            table: &mut table,
        };
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let (started, mut starts) = mpsc::unbounded_channel();
        let mut calls = HashMap::new();
        for call in 0..20 {
            let (running, most, ended) = (running.clone(), most.clone(), ended.clone());
            let started = started.clone();
            let work = view.blocking(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                started.send(call).unwrap();
                std::thread::sleep(Duration::from_millis(40));
                running.fetch_sub(1, Ordering::SeqCst);
                ended.fetch_add(1, Ordering::SeqCst);
                Ok(())
            });
            calls.insert(call, tokio::spawn(work));
        }
        drop(started);
        // Cancel the first calls whose work runs, mid-work.
        for _ in 0..BLOCKING_TURNS {
            let call = starts.recv().await.unwrap();
            calls.remove(&call).unwrap().abort();
        }
        for (_, call) in calls {
            call.await.unwrap().unwrap();
        }
        // Every work's sender is gone once the cancelled calls' work ended.
        while starts.recv().await.is_some() {}
        assert_eq!(ended.load(Ordering::SeqCst), 20);
        assert_eq!(most.load(Ordering::SeqCst), BLOCKING_TURNS);
    }
}
