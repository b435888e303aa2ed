//! A counting semaphore across processes: N slot files, each an OS lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::manager::{Entry, HolderId, Pending};
use crate::{Error, ErrorKind, FileLock, LockDir, Mode, Owner, Result, Wait};

static NEXT_SEMAPHORE: AtomicU64 = AtomicU64::new(1 << 48);

/// At most `slots` holders at once, across threads and processes — like
/// portalocker's `BoundedSemaphore`, and with the same slot file names
/// (`{name}.{n:02}.lock`). Each slot is an OS lock, so a crashed holder's
/// slot is freed by the kernel. A waiter waits on all slots at once, without
/// polling, and takes whichever frees first.
///
/// ```
/// use wasmlock::{ErrorKind, Semaphore};
/// # let dir = tempfile::tempdir().unwrap();
/// let sem = Semaphore::new(dir.path(), "workers", 2)?;
/// let a = sem.acquire()?;
/// let b = sem.acquire()?;
/// assert_ne!(a.slot(), b.slot());
/// assert_eq!(sem.try_acquire().unwrap_err().kind(), ErrorKind::WouldBlock);
/// drop(a);
/// let c = sem.try_acquire()?;     // the freed slot
/// # drop((b, c));
/// # Ok::<(), wasmlock::Error>(())
/// ```
#[derive(Debug)]
pub struct Semaphore {
    slots: Vec<FileLock>,
    id: u64,
    display: PathBuf,
}

impl Semaphore {
    /// A semaphore of `slots` permits named `name` in directory `dir`.
    pub fn new(dir: impl AsRef<Path>, name: &str, slots: usize) -> Result<Semaphore> {
        LockDir::open_ambient(dir)?.semaphore(name, slots)
    }

    pub(crate) fn in_dir(dir: &LockDir, name: &str, slots: usize) -> Result<Semaphore> {
        let display = dir.path().join(name);
        if name.is_empty() || name.contains('/') || name.contains('\0') {
            return Err(Error::new(ErrorKind::InvalidPath, display)
                .with_detail("a semaphore name is one non-empty file-name component"));
        }
        if slots == 0 {
            return Err(Error::new(ErrorKind::InvalidPath, display)
                .with_detail("a semaphore needs at least one slot"));
        }
        let id = NEXT_SEMAPHORE.fetch_add(1, Ordering::Relaxed);
        let slots = (0..slots)
            .map(|n| {
                let target = dir.target(format!("{name}.{n:02}.lock"))?;
                Ok(FileLock::for_semaphore(target, id))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Semaphore { slots, id, display })
    }

    /// How many permits there are in all.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// How many permits nobody holds right now (a snapshot).
    pub fn available(&self) -> Result<usize> {
        let mut free = 0;
        for s in &self.slots {
            if !s.is_locked()? {
                free += 1;
            }
        }
        Ok(free)
    }

    /// Takes a permit, waiting as long as it takes.
    pub fn acquire(&self) -> Result<Permit<'_>> {
        self.acquire_with(Wait::Forever)
    }

    /// Takes a permit if one is free now, else [`ErrorKind::WouldBlock`].
    pub fn try_acquire(&self) -> Result<Permit<'_>> {
        self.acquire_with(Wait::TryOnce)
    }

    /// Takes a permit, waiting at most `timeout`, else [`ErrorKind::Timeout`].
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Permit<'_>> {
        self.acquire_with(Wait::Timeout(timeout))
    }

    /// Takes a permit, waiting as `wait` says.
    pub fn acquire_with(&self, wait: Wait) -> Result<Permit<'_>> {
        let owner = Owner::unique();
        let deadline = wait.deadline();
        loop {
            let (entries, pending) = match self.step(owner, wait)? {
                Step::Done(p) => return Ok(p),
                Step::Wait(entries, pending) => (entries, pending),
            };
            if let Some(p) = self.settled(owner, &entries, pending.wait(deadline))? {
                return Ok(p);
            }
        }
    }

    /// Async [`acquire_with`](Self::acquire_with): waits without a thread.
    ///
    /// ```
    /// use wasmlock::{Semaphore, Wait};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), wasmlock::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let sem = Semaphore::new(dir.path(), "jobs", 1)?;
    /// let permit = sem.acquire_async(Wait::Forever).await?;
    /// drop(permit);
    /// # Ok(()) }
    /// ```
    pub async fn acquire_async(&self, wait: Wait) -> Result<Permit<'_>> {
        let owner = Owner::unique();
        let deadline = wait.deadline();
        loop {
            let (entries, pending) = match self.step(owner, wait)? {
                Step::Done(p) => return Ok(p),
                Step::Wait(entries, pending) => (entries, pending),
            };
            let settled = pending.into_future(deadline).await;
            if let Some(p) = self.settled(owner, &entries, settled)? {
                return Ok(p);
            }
        }
    }

    /// Tries every slot; if all are taken, queues on all of them at once.
    fn step(&self, owner: Owner, wait: Wait) -> Result<Step<'_>> {
        if let Some(p) = self.try_each(owner)? {
            return Ok(Step::Done(p));
        }
        let entries = self.entries(wait)?;
        let pending = Pending::start(entries.clone(), Mode::Exclusive, self.holder(owner));
        Ok(Step::Wait(entries, pending))
    }

    /// A permit as (slot, owner), for holders that cannot keep a borrow
    /// (guest resources); give it back with [`release_raw`](Self::release_raw).
    #[cfg_attr(not(feature = "wasmtime"), allow(dead_code))]
    pub(crate) async fn acquire_raw_async(&self, wait: Wait) -> Result<(usize, Owner)> {
        let permit = self.acquire_async(wait).await?;
        let raw = (permit.slot, permit.owner);
        std::mem::forget(permit);
        Ok(raw)
    }

    #[cfg_attr(not(feature = "wasmtime"), allow(dead_code))]
    pub(crate) fn release_raw(&self, slot: usize, owner: Owner) -> Result<()> {
        self.slots[slot].release(owner)
    }

    fn holder(&self, owner: Owner) -> HolderId {
        HolderId {
            handle: self.id,
            owner,
        }
    }

    fn try_each(&self, owner: Owner) -> Result<Option<Permit<'_>>> {
        for (n, slot) in self.slots.iter().enumerate() {
            let entry = slot.entry()?;
            if entry.try_acquire(self.holder(owner), Mode::Exclusive)?
                && slot.complete(owner, Mode::Exclusive, &entry)?
            {
                return Ok(Some(Permit::new(self, n, owner)));
            }
        }
        Ok(None)
    }

    /// The slots' entries, or the error a try-once wait ends with.
    fn entries(&self, wait: Wait) -> Result<Vec<Arc<Entry>>> {
        if wait == Wait::TryOnce {
            return Err(
                Error::new(ErrorKind::WouldBlock, &self.display).with_detail("every slot is taken")
            );
        }
        self.slots.iter().map(FileLock::entry).collect()
    }

    fn settled(
        &self,
        owner: Owner,
        entries: &[Arc<Entry>],
        settled: std::result::Result<usize, Option<Error>>,
    ) -> Result<Option<Permit<'_>>> {
        match settled {
            Ok(n) => Ok(self.slots[n]
                .complete(owner, Mode::Exclusive, &entries[n])?
                .then(|| Permit::new(self, n, owner))),
            Err(Some(e)) => Err(e),
            Err(None) => Err(Error::new(ErrorKind::Timeout, &self.display)
                .with_detail("no slot became free in time")),
        }
    }
}

enum Step<'a> {
    Done(Permit<'a>),
    Wait(Vec<Arc<Entry>>, Pending),
}

/// One permit of a [`Semaphore`]; gives the slot back when dropped.
#[must_use = "the permit is returned when dropped"]
#[derive(Debug)]
pub struct Permit<'a> {
    sem: &'a Semaphore,
    slot: usize,
    owner: Owner,
    released: bool,
}

impl<'a> Permit<'a> {
    fn new(sem: &'a Semaphore, slot: usize, owner: Owner) -> Self {
        Permit {
            sem,
            slot,
            owner,
            released: false,
        }
    }

    /// Which slot this permit holds (0-based).
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Returns the permit now and reports any error.
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        self.sem.slots[self.slot].release(self.owner)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.released
            && let Err(e) = self.sem.slots[self.slot].release(self.owner)
        {
            tracing::warn!(error = %e, "returning a semaphore permit failed");
        }
    }
}
