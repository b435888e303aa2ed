//! A counting semaphore across processes: N slot files, each an OS lock.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cap_std::fs::Dir;

use crate::lock::{Request, next_handle_id};
use crate::manager::{Attempt, Entry, HolderId, Pending};
use crate::target::{Target, open_ambient_dir};
use crate::{Error, ErrorKind, FileLock, Mode, Owner, Result, Wait};

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
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidPath`] for a name that is not a relative path
    /// ending in a file name, or for zero slots; [`ErrorKind::PermissionDenied`]
    /// for a name that leaves `dir`; I/O errors creating the directory.
    pub fn new(dir: impl AsRef<Path>, name: &str, slots: usize) -> Result<Semaphore> {
        let dir = dir.as_ref();
        let root = Arc::new(open_ambient_dir(dir)?);
        Semaphore::in_dir(&root, dir, name, slots)
    }

    /// A semaphore in a granted directory shown as `shown`.
    pub(crate) fn in_dir(
        dir: &Arc<Dir>,
        shown: &Path,
        name: &str,
        slots: usize,
    ) -> Result<Semaphore> {
        let display = shown.join(name);
        // Directories before the name are resolved like a lock's path; the
        // last component names the slots' files.
        let base = name.rsplit('/').next().unwrap_or(name);
        if name.contains('\0') || base.is_empty() || base == "." || base == ".." {
            return Err(Error::new(ErrorKind::InvalidPath, display).with_detail(
                "a semaphore name is a relative path ending in a non-empty file name",
            ));
        }
        if slots == 0 {
            return Err(Error::new(ErrorKind::InvalidPath, display)
                .with_detail("a semaphore needs at least one slot"));
        }
        let id = next_handle_id();
        let slots = (0..slots)
            .map(|n| {
                let rel = format!("{name}.{n:02}.lock");
                let target =
                    Target::inside(dir, shown, Path::new(&rel)).map_err(|(kind, detail)| {
                        Error::new(kind, shown.join(&rel)).with_detail(detail)
                    })?;
                Ok(FileLock::for_semaphore(target, id))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Semaphore { slots, id, display })
    }

    /// How many permits there are in all.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Opens every slot's file now (creating it and its directories), so
    /// that acquiring touches no file that is not open already.
    #[cfg_attr(not(feature = "wasmtime"), allow(dead_code))]
    pub(crate) fn open_slots(&self) -> Result<()> {
        self.slots.iter().try_for_each(|s| s.entry().map(drop))
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

    /// Takes a permit, waiting as `wait` says, blocking the thread.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::WouldBlock`] (try once) or [`ErrorKind::Timeout`] when
    /// every slot stays taken; I/O errors opening a slot file.
    ///
    /// # Cancel safety
    ///
    /// Blocking: nothing to cancel.
    pub fn acquire_with(&self, wait: Wait) -> Result<Permit<'_>> {
        let (slot, owner) = self.take(wait)?;
        Ok(Permit::new(self, slot, owner))
    }

    /// Takes a permit that keeps the semaphore alive and can go anywhere
    /// (`Send + 'static`), waiting as `wait` says.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use wasmlock::{Semaphore, Wait};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let sem = Arc::new(Semaphore::new(dir.path(), "pool", 1)?);
    /// let permit = sem.acquire_owned(Wait::Forever)?;
    /// std::thread::spawn(move || drop(permit)).join().unwrap();
    /// assert_eq!(sem.available()?, 1);
    /// # Ok::<(), wasmlock::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`acquire_with`](Self::acquire_with).
    ///
    /// # Cancel safety
    ///
    /// Blocking: nothing to cancel.
    pub fn acquire_owned(self: &Arc<Self>, wait: Wait) -> Result<OwnedPermit> {
        let (slot, owner) = self.take(wait)?;
        Ok(OwnedPermit::new(self.clone(), slot, owner))
    }

    /// Async [`acquire_owned`](Self::acquire_owned).
    ///
    /// # Errors
    ///
    /// As for [`acquire_with`](Self::acquire_with).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future leaves every slot's queue, and a
    /// slot granted to it in the meantime is passed on.
    pub async fn acquire_owned_async(self: &Arc<Self>, wait: Wait) -> Result<OwnedPermit> {
        let (slot, owner) = self.take_async(wait).await?;
        Ok(OwnedPermit::new(self.clone(), slot, owner))
    }

    /// A free slot and the owner of its hold, waiting on the thread.
    fn take(&self, wait: Wait) -> Result<(usize, Owner)> {
        let owner = Owner::unique();
        let deadline = wait.deadline();
        loop {
            let (entries, pending) = match self.step(owner, wait)? {
                Step::Done(slot) => return Ok((slot, owner)),
                Step::Wait(entries, pending) => (entries, pending),
            };
            if let Some(slot) = self.settled(owner, &entries, pending.wait(deadline))? {
                return Ok((slot, owner));
            }
        }
    }

    /// [`take`](Self::take) without blocking a thread.
    async fn take_async(&self, wait: Wait) -> Result<(usize, Owner)> {
        let owner = Owner::unique();
        let deadline = wait.deadline();
        loop {
            let (entries, pending) = match self.step(owner, wait)? {
                Step::Done(slot) => return Ok((slot, owner)),
                Step::Wait(entries, pending) => (entries, pending),
            };
            let settled = pending.into_future(deadline).await;
            if let Some(slot) = self.settled(owner, &entries, settled)? {
                return Ok((slot, owner));
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
    ///
    /// # Errors
    ///
    /// As for [`acquire_with`](Self::acquire_with).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`acquire_owned_async`](Self::acquire_owned_async).
    pub async fn acquire_async(&self, wait: Wait) -> Result<Permit<'_>> {
        let (slot, owner) = self.take_async(wait).await?;
        Ok(Permit::new(self, slot, owner))
    }

    /// Tries every slot; if all are taken, queues on all of them at once.
    fn step(&self, owner: Owner, wait: Wait) -> Result<Step> {
        if let Some(slot) = self.try_each(owner)? {
            return Ok(Step::Done(slot));
        }
        let entries = self.entries(wait)?;
        let pending = Pending::start(entries.clone(), Mode::Exclusive, self.holder(owner));
        Ok(Step::Wait(entries, pending))
    }

    fn holder(&self, owner: Owner) -> HolderId {
        HolderId {
            handle: self.id,
            owner,
            party: None,
        }
    }

    fn try_each(&self, owner: Owner) -> Result<Option<usize>> {
        for (n, slot) in self.slots.iter().enumerate() {
            let entry = slot.entry()?;
            let attempt = entry.try_acquire(self.holder(owner), Mode::Exclusive, || Ok(true))?;
            if matches!(attempt, Attempt::Held)
                && slot.complete(Request::new(owner, Mode::Exclusive), &entry)?
            {
                return Ok(Some(n));
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
    ) -> Result<Option<usize>> {
        match settled {
            Ok(n) => Ok(self.slots[n]
                .complete(Request::new(owner, Mode::Exclusive), &entries[n])?
                .then_some(n)),
            Err(Some(e)) => Err(e),
            Err(None) => Err(Error::new(ErrorKind::Timeout, &self.display)
                .with_detail("no slot became free in time")),
        }
    }
}

enum Step {
    Done(usize),
    Wait(Vec<Arc<Entry>>, Pending),
}

/// One slot held, through a borrowed or an owned semaphore.
#[derive(Debug)]
struct SlotHold<S: Deref<Target = Semaphore>> {
    sem: S,
    slot: usize,
    owner: Owner,
    released: bool,
}

impl<S: Deref<Target = Semaphore>> SlotHold<S> {
    fn new(sem: S, slot: usize, owner: Owner) -> Self {
        SlotHold {
            sem,
            slot,
            owner,
            released: false,
        }
    }

    fn release(&mut self) -> Result<()> {
        self.released = true;
        self.sem.slots[self.slot].release(self.owner)
    }
}

impl<S: Deref<Target = Semaphore>> Drop for SlotHold<S> {
    fn drop(&mut self) {
        if !self.released
            && let Err(e) = self.sem.slots[self.slot].release(self.owner)
        {
            tracing::warn!(error = %e, "returning a semaphore permit failed");
        }
    }
}

/// One permit of a [`Semaphore`]; gives the slot back when dropped.
#[must_use = "the permit is returned when dropped"]
#[derive(Debug)]
pub struct Permit<'a> {
    hold: SlotHold<&'a Semaphore>,
}

impl<'a> Permit<'a> {
    fn new(sem: &'a Semaphore, slot: usize, owner: Owner) -> Self {
        Permit {
            hold: SlotHold::new(sem, slot, owner),
        }
    }

    /// Which slot this permit holds (0-based).
    pub fn slot(&self) -> usize {
        self.hold.slot
    }

    /// Returns the permit now and reports any error.
    pub fn release(mut self) -> Result<()> {
        self.hold.release()
    }
}

/// A permit that owns its semaphore (an `Arc<Semaphore>`): `Send +
/// 'static`. Gives the slot back when dropped.
#[must_use = "the permit is returned when dropped"]
#[derive(Debug)]
pub struct OwnedPermit {
    hold: SlotHold<Arc<Semaphore>>,
}

impl OwnedPermit {
    fn new(sem: Arc<Semaphore>, slot: usize, owner: Owner) -> Self {
        OwnedPermit {
            hold: SlotHold::new(sem, slot, owner),
        }
    }

    /// Which slot this permit holds (0-based).
    pub fn slot(&self) -> usize {
        self.hold.slot
    }

    /// Returns the permit now and reports any error.
    pub fn release(mut self) -> Result<()> {
        self.hold.release()
    }
}
