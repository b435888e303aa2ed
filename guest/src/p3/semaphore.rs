//! Semaphores for WASI 0.3 plugins: at most N holders across plugins and
//! processes; permits are guards.

use std::time::Duration;

use super::bindings::wasmlock::lock::locks;
use super::lock::{Guard, granted, within};
use crate::{Error, Result};

/// At most N holders across plugins and processes. Permits are [`Guard`]s,
/// which tell their slot.
#[derive(Debug)]
pub struct Semaphore {
    raw: locks::Semaphore,
    name: String,
}

impl Semaphore {
    pub(super) fn from_raw(raw: locks::Semaphore, name: String) -> Semaphore {
        Semaphore { raw, name }
    }

    /// The semaphore `name` with `slots` permits in `dir`, a directory the
    /// host granted or one below it.
    pub async fn open(dir: &str, name: &str, slots: u32) -> Result<Semaphore> {
        let shown = format!("{}/{name}", dir.trim_end_matches('/'));
        let (descriptor, rel) = granted(dir)?;
        let path = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        let raw = locks::Semaphore::open_at(descriptor, path, slots)
            .await
            .map_err(|e| Error::about(&shown, e))?;
        Ok(Semaphore::from_raw(raw, shown))
    }

    /// Waits for a permit.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future withdraws the wait; a permit that raced the drop
    /// is given back.
    pub async fn acquire(&self) -> Result<Guard> {
        self.permit(self.raw.acquire().await)
    }

    /// A permit if one is free:
    /// [`ErrorKind::WouldBlock`](crate::ErrorKind::WouldBlock) otherwise.
    pub async fn try_acquire(&self) -> Result<Guard> {
        self.permit(self.raw.try_acquire().await)
    }

    /// Waits at most `timeout` for a permit, then
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout).
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<Guard> {
        self.permit(within(&self.name, timeout, self.raw.acquire()).await?)
    }

    /// How many permits nobody holds right now.
    pub async fn available(&self) -> Result<u32> {
        self.raw
            .available()
            .await
            .map_err(|e| Error::about(&self.name, e))
    }

    /// How many permits there are.
    pub fn slots(&self) -> u32 {
        self.raw.slots()
    }

    fn permit(
        &self,
        acquired: std::result::Result<locks::Guard, impl crate::error::WitCode>,
    ) -> Result<Guard> {
        Guard::granted(&self.name, acquired)
    }
}
