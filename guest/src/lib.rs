//! File locks for WebAssembly plugins.
//!
//! `wasi:filesystem` has no locks; this crate gives a plugin real ones,
//! through the `wasmlock:lock` interface its host implements (for example
//! with the `wasmlock` crate and wasmtime, or `wasmlock run plugin.wasm`).
//! Locks exclude other plugins, other processes and native programs alike.
//!
//! A complete plugin (a `wasi:cli` command; build it with plain
//! `cargo build --target wasm32-wasip2`):
//!
//! ```no_run
//! use std::time::Duration;
//! use wasmlock_guest::Lock;
//!
//! fn main() -> Result<(), wasmlock_guest::Error> {
//!     // "/data" is a directory the host granted (a preopen).
//!     let lock = Lock::open("/data/counter.lock")?;
//!     {
//!         let _guard = lock.lock()?;                        // waits; other guests keep running
//!         let n: u64 = std::fs::read_to_string("/data/counter")
//!             .ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
//!         std::fs::write("/data/counter", format!("{}\n", n + 1)).unwrap();
//!     }                                                     // released here
//!     let _maybe = lock.lock_timeout(Duration::from_millis(50))?;
//!     Ok(())
//! }
//! ```
//!
//! Paths are resolved like `std::fs` does on WASI: an absolute path by the
//! granted directory it lies in, and never outside it (`..`, absolute paths
//! and symbolic links leading out give [`ErrorKind::PermissionDenied`]).
//! (The examples here are `no_run`: they run inside a WebAssembly host.)
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]

#[allow(missing_docs, unreachable_pub, missing_debug_implementations)]
mod bindings;
mod error;
mod preopen;

use std::time::Duration;

pub use error::{Error, ErrorKind, Result};
pub use wasip2::filesystem::types::Descriptor;
pub use wasip2::io::poll::Pollable;

use bindings::wasmlock::lock::locks;
use bindings::wasmlock::lock::types;

/// Exclusive or shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One holder.
    Exclusive,
    /// Many readers, no writer.
    Shared,
}

/// A kernel lock on a lock file (`Os`), or a marker file (`Soft`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// A kernel advisory lock, freed by the kernel if the host process dies.
    #[default]
    Os,
    /// A marker file, py-filelock compatible; exclusive only.
    Soft,
}

/// How long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Until obtained (the host may cap it).
    Forever,
    /// One attempt.
    TryOnce,
    /// At most this long.
    Timeout(Duration),
}

impl Mode {
    fn raw(self) -> types::Mode {
        match self {
            Mode::Exclusive => types::Mode::Exclusive,
            Mode::Shared => types::Mode::Shared,
        }
    }
}

impl Kind {
    fn raw(self) -> types::Kind {
        match self {
            Kind::Os => types::Kind::Os,
            Kind::Soft => types::Kind::Soft,
        }
    }
}

impl Wait {
    fn raw(self) -> types::Wait {
        match self {
            Wait::Forever => types::Wait::Forever,
            Wait::TryOnce => types::Wait::TryOnce,
            Wait::Timeout(d) => types::Wait::Timeout(d.as_nanos().min(u64::MAX as u128) as u64),
        }
    }
}

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's process id.
    pub pid: Option<u32>,
    /// The holder's host.
    pub host: Option<String>,
    /// Since when, in seconds and nanoseconds after the Unix epoch.
    pub since: Option<(u64, u32)>,
}

/// A lock on one file. Re-entrant: locking it again while holding it counts
/// up. Dropping it releases everything it holds.
///
/// ```no_run
/// use wasmlock_guest::{ErrorKind, Lock};
/// let lock = Lock::open("/data/jobs/42.lock")?;
/// match lock.try_lock() {
///     Ok(_guard) => { /* ours until the guard drops */ }
///     Err(e) if e.kind() == ErrorKind::WouldBlock => { /* someone else has it */ }
///     Err(e) => return Err(e),
/// }
/// # Ok::<(), wasmlock_guest::Error>(())
/// ```
#[derive(Debug)]
pub struct Lock {
    raw: locks::Lock,
}

impl Lock {
    /// An OS lock on a guest path (absolute, or relative to `/`).
    pub fn open(path: &str) -> Result<Lock> {
        Self::open_kind(path, Kind::Os)
    }

    /// A soft (marker-file) lock on a guest path.
    pub fn open_soft(path: &str) -> Result<Lock> {
        Self::open_kind(path, Kind::Soft)
    }

    /// A lock of `kind` on a guest path.
    pub fn open_kind(path: &str, kind: Kind) -> Result<Lock> {
        preopen::with_dir(path, |dir, rel| Self::open_at(dir, rel, kind))
    }

    /// A lock on `rel` inside a directory descriptor this plugin holds.
    pub fn open_at(dir: &Descriptor, rel: &str, kind: Kind) -> Result<Lock> {
        let raw = locks::Lock::open_at(dir, rel, kind.raw())?;
        Ok(Lock { raw })
    }

    /// An OS lock on a file this plugin opened (lock the data file itself).
    pub fn on_file(file: &Descriptor) -> Result<Lock> {
        Ok(Lock {
            raw: locks::Lock::on_file(file)?,
        })
    }

    /// Locks exclusively, waiting as long as it takes.
    pub fn lock(&self) -> Result<Guard<'_>> {
        self.lock_with(Mode::Exclusive, Wait::Forever)
    }

    /// Locks exclusively if possible right now ([`ErrorKind::WouldBlock`] if not).
    pub fn try_lock(&self) -> Result<Guard<'_>> {
        self.lock_with(Mode::Exclusive, Wait::TryOnce)
    }

    /// Locks exclusively, waiting at most `timeout` ([`ErrorKind::Timeout`]).
    pub fn lock_timeout(&self, timeout: Duration) -> Result<Guard<'_>> {
        self.lock_with(Mode::Exclusive, Wait::Timeout(timeout))
    }

    /// Locks shared, waiting as long as it takes.
    pub fn lock_shared(&self) -> Result<Guard<'_>> {
        self.lock_with(Mode::Shared, Wait::Forever)
    }

    /// Locks shared if possible right now.
    pub fn try_lock_shared(&self) -> Result<Guard<'_>> {
        self.lock_with(Mode::Shared, Wait::TryOnce)
    }

    /// Locks shared, waiting at most `timeout`.
    pub fn lock_shared_timeout(&self, timeout: Duration) -> Result<Guard<'_>> {
        self.lock_with(Mode::Shared, Wait::Timeout(timeout))
    }

    /// Locks in `mode`, waiting as `wait` says.
    pub fn lock_with(&self, mode: Mode, wait: Wait) -> Result<Guard<'_>> {
        self.raw.acquire(mode.raw(), wait.raw())?;
        Ok(Guard {
            lock: self,
            released: false,
        })
    }

    /// Starts an acquisition without waiting for it: wait on
    /// [`PendingLock::pollable`] together with other events
    /// (`wasi:io/poll`), then [`PendingLock::finish`].
    ///
    /// ```no_run
    /// use wasmlock_guest::{Lock, Mode};
    /// use wasip2::clocks::monotonic_clock::subscribe_duration;
    /// use wasip2::io::poll::poll;
    ///
    /// let lock = Lock::open("/data/x.lock")?;
    /// let pending = lock.start_lock(Mode::Exclusive)?;
    /// let timer = subscribe_duration(1_000_000_000);
    /// let ready = poll(&[&pending.pollable(), &timer]);
    /// if ready.contains(&0) {
    ///     let _guard = pending.finish()?;
    /// } // else: dropping `pending` gives up cleanly
    /// # Ok::<(), wasmlock_guest::Error>(())
    /// ```
    pub fn start_lock(&self, mode: Mode) -> Result<PendingLock<'_>> {
        Ok(PendingLock {
            lock: self,
            raw: self.raw.start_acquire(mode.raw())?,
        })
    }

    /// Releases one hold without a guard.
    pub fn unlock(&self) -> Result<()> {
        Ok(self.raw.release()?)
    }

    /// How many holds this plugin has through this handle.
    pub fn hold_count(&self) -> u32 {
        self.raw.hold_count()
    }

    /// Whether anyone holds the lock.
    pub fn is_locked(&self) -> Result<bool> {
        Ok(self.raw.is_locked()?)
    }

    /// Who holds the lock, if anyone.
    pub fn holder(&self) -> Result<Option<Holder>> {
        Ok(self.raw.holder()?.map(|h| Holder {
            pid: h.pid,
            host: h.host,
            since: h.since.map(|t| (t.seconds, t.nanoseconds)),
        }))
    }

    /// Breaks a stale soft lock (with `force`, any soft lock), if the host
    /// allows this plugin to.
    pub fn break_lock(&self, force: bool) -> Result<()> {
        Ok(self.raw.break_lock(force)?)
    }
}

/// Holds a lock until dropped.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct Guard<'a> {
    lock: &'a Lock,
    released: bool,
}

impl Guard<'_> {
    /// Releases now and reports any error.
    pub fn unlock(mut self) -> Result<()> {
        self.released = true;
        self.lock.unlock()
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.lock.raw.release();
        }
    }
}

/// An acquisition in progress; dropping it gives up cleanly.
#[derive(Debug)]
pub struct PendingLock<'a> {
    lock: &'a Lock,
    raw: locks::Pending,
}

impl<'a> PendingLock<'a> {
    /// Ready when the acquisition completed (either way).
    pub fn pollable(&self) -> Pollable {
        self.raw.subscribe()
    }

    /// Whether it has completed, without waiting.
    pub fn is_ready(&self) -> bool {
        self.pollable().ready()
    }

    /// The outcome: a guard when the lock is held.
    /// [`ErrorKind::WouldBlock`] while still pending.
    pub fn finish(self) -> Result<Guard<'a>> {
        self.raw.finish()?;
        Ok(Guard {
            lock: self.lock,
            released: false,
        })
    }

    /// Blocks until it completes, then [`finish`](Self::finish)es.
    pub fn wait(self) -> Result<Guard<'a>> {
        self.pollable().block();
        self.finish()
    }
}

/// At most N holders across plugins and processes.
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
}

impl Semaphore {
    /// The semaphore `name` with `slots` permits in guest directory `dir`.
    pub fn open(dir: &str, name: &str, slots: u32) -> Result<Semaphore> {
        preopen::with_dir(dir, |d, rel| {
            let name = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            Self::open_at(d, &name, slots)
        })
    }

    /// The semaphore `name` inside a directory descriptor.
    pub fn open_at(dir: &Descriptor, name: &str, slots: u32) -> Result<Semaphore> {
        Ok(Semaphore {
            raw: locks::Semaphore::open_at(dir, name, slots)?,
        })
    }

    /// Takes a permit.
    pub fn acquire(&self, wait: Wait) -> Result<Permit> {
        Ok(Permit {
            raw: self.raw.acquire(wait.raw())?,
        })
    }

    /// How many permits are free right now.
    pub fn available(&self) -> Result<u32> {
        Ok(self.raw.available()?)
    }
}

/// A semaphore permit, returned when dropped.
#[derive(Debug)]
pub struct Permit {
    raw: locks::Permit,
}

impl Permit {
    /// Which slot it holds.
    pub fn slot(&self) -> u32 {
        self.raw.slot()
    }
}

#[cfg(test)]
mod tests {
    use super::preopen::resolve;

    #[test]
    fn absolute_paths_pick_the_longest_preopen() {
        let names = ["/", "/data", "/data/sub", "."];
        let r = |p| resolve(names.iter().copied(), p).map(|(i, rest)| (i, rest.to_owned()));
        assert_eq!(r("/data/x.lock").unwrap(), (1, "x.lock".into()));
        assert_eq!(r("/data/sub/y/z.lock").unwrap(), (2, "y/z.lock".into()));
        assert_eq!(r("/datax/a").unwrap(), (0, "datax/a".into()));
        assert_eq!(r("rel.lock").unwrap(), (3, "rel.lock".into()));
    }

    #[test]
    fn paths_outside_every_preopen_are_refused() {
        let names = ["/data"];
        assert!(resolve(names.iter().copied(), "/etc/passwd").is_err());
        assert!(resolve(names.iter().copied(), "relative").is_err());
    }
}
