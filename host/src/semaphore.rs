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
        let (slot, owner) = self.take(wait, None)?;
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
        let (slot, owner) = self.take(wait, None)?;
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
        let (slot, owner) = self.take_async(wait, None).await?;
        Ok(OwnedPermit::new(self.clone(), slot, owner))
    }

    /// An owned permit for a guest: booked for `party` (the guest), which
    /// cannot go on while it waits when `blocks`. Such a wait with every
    /// slot held by the party itself would never end: it fails as a
    /// deadlock when it is queued. (A slot the party's own pending
    /// acquisition is granted later is not noticed; the host's wait limit
    /// ends that wait.)
    #[cfg(feature = "wasmtime")]
    pub(crate) async fn acquire_for_party_async(
        self: &Arc<Self>,
        wait: Wait,
        party: Owner,
        blocks: bool,
    ) -> Result<OwnedPermit> {
        let party = Party { party, blocks };
        let (slot, owner) = self.take_async(wait, Some(party)).await?;
        Ok(OwnedPermit::new(self.clone(), slot, owner))
    }

    /// A free slot and the owner of its hold, waiting on the thread.
    fn take(&self, wait: Wait, party: Option<Party>) -> Result<(usize, Owner)> {
        let req = self.request(party);
        let deadline = wait.deadline();
        loop {
            let (entries, pending) = match self.step(req, party, wait)? {
                Step::Done(slot) => return Ok((slot, req.owner)),
                Step::Wait(entries, pending) => (entries, pending),
            };
            if let Some(slot) = self.settled(req, &entries, pending.wait(deadline))? {
                return Ok((slot, req.owner));
            }
        }
    }

    /// [`take`](Self::take) without blocking a thread.
    async fn take_async(&self, wait: Wait, party: Option<Party>) -> Result<(usize, Owner)> {
        let req = self.request(party);
        let deadline = wait.deadline();
        loop {
            let (entries, pending) = match self.step(req, party, wait)? {
                Step::Done(slot) => return Ok((slot, req.owner)),
                Step::Wait(entries, pending) => (entries, pending),
            };
            let settled = pending.into_future(deadline).await;
            if let Some(slot) = self.settled(req, &entries, settled)? {
                return Ok((slot, req.owner));
            }
        }
    }

    /// A fresh owner's request for one slot, booked for `party`.
    fn request(&self, party: Option<Party>) -> Request {
        let req = Request::new(Owner::unique(), Mode::Exclusive);
        match party {
            Some(p) => req.held_by(p.party),
            None => req,
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
        let (slot, owner) = self.take_async(wait, None).await?;
        Ok(Permit::new(self, slot, owner))
    }

    /// Tries every slot; if all are taken, queues on all of them at once.
    fn step(&self, req: Request, party: Option<Party>, wait: Wait) -> Result<Step> {
        if let Some(slot) = self.try_each(req)? {
            return Ok(Step::Done(slot));
        }
        let entries = self.entries(wait)?;
        let pending = Pending::start(entries.clone(), Mode::Exclusive, self.holder(req));
        // Queued first: a slot freed meanwhile is granted, not missed (and
        // a slot granted to this very request is no hold in its way). Only
        // the party itself could free a slot it holds, and it is waiting.
        if let Some(Party {
            party,
            blocks: true,
        }) = party
            && entries.iter().all(|e| e.held_by(party, req.owner))
        {
            drop(pending);
            return Err(Error::new(ErrorKind::Deadlock, &self.display).with_detail(
                "the waiting guest holds every slot itself; waiting forever would never end",
            ));
        }
        Ok(Step::Wait(entries, pending))
    }

    fn holder(&self, req: Request) -> HolderId {
        HolderId {
            handle: self.id,
            owner: req.owner,
            party: req.party,
        }
    }

    fn try_each(&self, req: Request) -> Result<Option<usize>> {
        for (n, slot) in self.slots.iter().enumerate() {
            let entry = slot.entry()?;
            let attempt = entry.try_acquire(self.holder(req), Mode::Exclusive, || Ok(true))?;
            if matches!(attempt, Attempt::Held) && slot.complete(req, &entry)? {
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
        req: Request,
        entries: &[Arc<Entry>],
        settled: std::result::Result<usize, Option<Error>>,
    ) -> Result<Option<usize>> {
        match settled {
            Ok(n) => Ok(self.slots[n].complete(req, &entries[n])?.then_some(n)),
            Err(Some(e)) => Err(e),
            Err(None) => Err(Error::new(ErrorKind::Timeout, &self.display)
                .with_detail("no slot became free in time")),
        }
    }
}

/// Whose acquisition it is, for deadlock detection (see
/// `Request::party`).
#[derive(Clone, Copy)]
struct Party {
    party: Owner,
    /// The party cannot go on while it waits.
    blocks: bool,
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
