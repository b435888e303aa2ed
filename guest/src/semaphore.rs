//! Semaphores: at most N holders across plugins and processes.

use std::rc::Rc;

use wasip2::filesystem::types::Descriptor;

use crate::bindings::wasmlock::lock::locks;
use crate::{Error, Guard, PendingLock, Result, Wait, preopen, raw};

/// At most N holders across plugins and processes. Permits are guards.
///
/// ```no_run
/// use wasmlock_guest::{Semaphore, Wait};
/// let sem = Semaphore::open("/data", "workers", 4)?;
/// let permit = sem.acquire(Wait::Forever)?;
/// println!("running in slot {}", permit.slot());
/// # Ok::<(), wasmlock_guest::Error>(())
/// ```
#[derive(Debug)]
pub struct Semaphore {
    raw: locks::Semaphore,
    name: Rc<str>,
}

impl Semaphore {
    /// The semaphore `name` with `slots` permits in guest directory `dir`
    /// (a preopen or any directory below one).
    pub fn open(dir: &str, name: &str, slots: u32) -> Result<Semaphore> {
        let shown = format!("{}/{name}", dir.trim_end_matches('/'));
        let sem = preopen::with_dir(dir, |d, rel| {
            let name = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            Self::open_at(d, &name, slots)
        })?;
        Ok(Semaphore {
            name: shown.into(),
            ..sem
        })
    }

    /// The semaphore `name` (a relative path) inside a directory descriptor.
    pub fn open_at(dir: &Descriptor, name: &str, slots: u32) -> Result<Semaphore> {
        let raw = locks::Semaphore::open_at(dir, name, slots).map_err(|e| Error::about(name, e))?;
        Ok(Semaphore::new(raw, name))
    }

    pub(crate) fn new(raw: locks::Semaphore, name: &str) -> Semaphore {
        Semaphore {
            raw,
            name: name.into(),
        }
    }

    /// Takes a permit, waiting as `wait` says.
    pub fn acquire(&self, wait: Wait) -> Result<Permit> {
        let raw = self
            .raw
            .acquire(raw::wait(wait))
            .map_err(|e| Error::about(&self.name, e))?;
        let slot = raw.slot().unwrap_or(0);
        Ok(Permit {
            guard: Guard::from_raw(raw, self.name.clone()),
            slot,
        })
    }

    /// Starts taking a permit without waiting here; the guard it gives has
    /// the slot in [`Guard::slot`].
    pub fn start_acquire(&self) -> Result<PendingLock> {
        let raw = self
            .raw
            .start_acquire()
            .map_err(|e| Error::about(&self.name, e))?;
        Ok(PendingLock::new(raw, self.name.clone()))
    }

    /// How many permits are free right now.
    pub fn available(&self) -> Result<u32> {
        self.raw
            .available()
            .map_err(|e| Error::about(&self.name, e))
    }

    /// How many permits there are.
    pub fn slots(&self) -> u32 {
        self.raw.slots()
    }
}

/// A semaphore permit, returned when dropped.
#[derive(Debug)]
#[must_use = "the permit is returned when it is dropped"]
pub struct Permit {
    guard: Guard,
    slot: u32,
}

impl Permit {
    /// Which slot it holds.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The permit as a guard (lost notification, explicit release).
    pub fn into_guard(self) -> Guard {
        self.guard
    }
}
