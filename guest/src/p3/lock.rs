//! Locks, guards and namespaces for WASI 0.3 plugins.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use super::Semaphore;
use super::bindings::wasi::clocks::monotonic_clock::wait_for;
use super::bindings::wasi::filesystem::preopens::get_directories;
use super::bindings::wasi::filesystem::types::Descriptor;
use super::bindings::wasmlock::lock::types::{HoldStatus, Kind as RawKind, Mode as RawMode};
use super::bindings::wasmlock::lock::{locks, namespaces};
use crate::preopen::resolve;
use crate::{Error, ErrorKind, Kind, Mode, Result};

thread_local! {
    /// The directories the host granted, listed once: they live as long as
    /// the plugin, so a lock may borrow one across its opening's await.
    static PREOPENS: &'static [(Descriptor, String)] =
        Box::leak(get_directories().into_boxed_slice());
}

/// The granted directory `path` lies in, and the rest of it.
pub(super) fn granted(path: &str) -> Result<(&'static Descriptor, &str)> {
    let dirs = PREOPENS.with(|dirs| *dirs);
    let (index, rel) = resolve(dirs.iter().map(|(_, name)| name.as_str()), path)?;
    Ok((&dirs[index].0, rel))
}

fn raw_mode(mode: Mode) -> RawMode {
    match mode {
        Mode::Exclusive => RawMode::Exclusive,
        Mode::Shared => RawMode::Shared,
    }
}

fn raw_kind(kind: Kind) -> RawKind {
    match kind {
        Kind::Os => RawKind::Os,
        Kind::Soft => RawKind::Soft,
    }
}

/// A lock on one file or key. It holds nothing itself: each acquisition
/// returns a [`Guard`].
#[derive(Debug)]
pub struct Lock {
    raw: locks::Lock,
    name: String,
}

impl Lock {
    /// An OS lock on the file at `path`, inside a directory the host granted.
    pub async fn open(path: &str) -> Result<Lock> {
        Lock::open_kind(path, Kind::Os).await
    }

    /// A lock of `kind` on the file at `path`, inside a directory the host
    /// granted.
    pub async fn open_kind(path: &str, kind: Kind) -> Result<Lock> {
        let (dir, rel) = granted(path)?;
        let raw = locks::Lock::open_at(dir, rel.to_owned(), raw_kind(kind))
            .await
            .map_err(|e| Error::about(path, e))?;
        Ok(Lock {
            raw,
            name: path.to_owned(),
        })
    }

    /// A lock of `kind` on `rel`, inside the directory `dir`.
    pub async fn open_at(dir: &Descriptor, rel: &str, kind: Kind) -> Result<Lock> {
        let raw = locks::Lock::open_at(dir, rel.to_owned(), raw_kind(kind))
            .await
            .map_err(|e| Error::about(rel, e))?;
        Ok(Lock {
            raw,
            name: rel.to_owned(),
        })
    }

    /// The path or key it was opened with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for an exclusive hold.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future withdraws the wait; a grant that raced the drop
    /// is released.
    pub async fn lock(&self) -> Result<Guard> {
        self.guard(self.raw.acquire(RawMode::Exclusive).await)
    }

    /// Waits for a shared hold.
    pub async fn lock_shared(&self) -> Result<Guard> {
        self.guard(self.raw.acquire(RawMode::Shared).await)
    }

    /// One attempt at an exclusive hold: [`ErrorKind::WouldBlock`] if held.
    pub async fn try_lock(&self) -> Result<Guard> {
        self.guard(self.raw.try_acquire(RawMode::Exclusive).await)
    }

    /// Waits at most `timeout` for an exclusive hold, then
    /// [`ErrorKind::Timeout`]: the wait races `wasi:clocks`' `wait-for`.
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<Guard> {
        self.lock_with_timeout(Mode::Exclusive, timeout).await
    }

    /// Waits at most `timeout` for a hold in `mode`.
    pub async fn lock_with_timeout(&self, mode: Mode, timeout: Duration) -> Result<Guard> {
        self.guard(within(&self.name, timeout, self.raw.acquire(raw_mode(mode))).await?)
    }

    /// Whether anyone holds the lock.
    pub async fn is_locked(&self) -> Result<bool> {
        self.raw
            .is_locked()
            .await
            .map_err(|e| Error::about(&self.name, e))
    }

    fn guard(
        &self,
        acquired: std::result::Result<locks::Guard, impl crate::error::WitCode>,
    ) -> Result<Guard> {
        Guard::granted(&self.name, acquired)
    }
}

/// What `acquiring` gives within `timeout` (raced with `wait-for`), or
/// [`ErrorKind::Timeout`] about `name`; the acquisition is dropped then,
/// which withdraws its wait.
pub(super) async fn within<T>(
    name: &str,
    timeout: Duration,
    acquiring: impl Future<Output = T>,
) -> Result<T> {
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    first(acquiring, wait_for(nanos)).await.ok_or_else(|| {
        Error::new(
            ErrorKind::Timeout,
            format!("{name}: not acquired within {timeout:?}"),
        )
    })
}

/// `a`'s output, or `None` if `b` finishes first (then `a` is dropped).
async fn first<T>(a: impl Future<Output = T>, b: impl Future<Output = ()>) -> Option<T> {
    let (mut a, mut b) = (pin!(a), pin!(b));
    poll_fn(|cx| {
        if let Poll::Ready(out) = a.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        b.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// One hold of a lock. Dropping it releases.
#[derive(Debug)]
pub struct Guard {
    raw: locks::Guard,
}

impl Guard {
    /// The guard an acquisition of `name` gave, or its error.
    pub(super) fn granted(
        name: &str,
        acquired: std::result::Result<locks::Guard, impl crate::error::WitCode>,
    ) -> Result<Guard> {
        acquired
            .map(|raw| Guard { raw })
            .map_err(|e| Error::about(name, e))
    }

    /// The mode it was granted in (permits are exclusive).
    pub fn mode(&self) -> Mode {
        match self.raw.mode() {
            RawMode::Exclusive => Mode::Exclusive,
            RawMode::Shared => Mode::Shared,
        }
    }

    /// For a semaphore's permit, which slot it holds.
    pub fn slot(&self) -> Option<u32> {
        self.raw.slot()
    }

    /// A number that grows with every grant of the lock, for backends that
    /// issue one (lock services); `None` for file locks.
    pub fn fence(&self) -> Option<u64> {
        self.raw.fence()
    }

    /// Whether the hold ended without a release.
    pub fn is_lost(&self) -> bool {
        self.raw.status() == HoldStatus::Lost
    }

    /// Returns once the hold is lost (never while it stands).
    pub async fn lost(&self) {
        self.raw.lost().await
    }

    /// Releases now, and says whether the hold had been lost before.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future does not keep the hold: the host goes on with
    /// the release, and this plugin's next lock call waits until it is
    /// done. Only the report is lost.
    pub async fn unlock(self) -> Result<()> {
        locks::Guard::release(self.raw)
            .await
            .map_err(|e| Error::about("guard", e))
    }
}

/// A space of named locks the host granted this plugin, the way it grants
/// directories; see the 0.2 API's [`Namespace`](crate::Namespace).
#[derive(Debug, Clone)]
pub struct Namespace {
    raw: &'static locks::Namespace,
    name: String,
}

thread_local! {
    /// The namespaces the host granted, listed once, as the directories
    /// are (each listing is new handles, counted by the host).
    static NAMESPACES: &'static [(locks::Namespace, String)] =
        Box::leak(namespaces::get_namespaces().into_boxed_slice());
}

impl Namespace {
    /// The names of the namespaces the host granted.
    pub fn list() -> Vec<String> {
        let granted = NAMESPACES.with(|granted| *granted);
        granted.iter().map(|(_, name)| name.clone()).collect()
    }

    /// The namespace the host granted as `name`
    /// ([`ErrorKind::Access`] if there is none).
    pub fn get(name: &str) -> Result<Namespace> {
        let granted = NAMESPACES.with(|granted| *granted);
        granted
            .iter()
            .find(|(_, granted)| granted == name)
            .map(|(raw, name)| Namespace {
                raw,
                name: name.clone(),
            })
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Access,
                    format!("{name}: no namespace of that name was granted to this plugin"),
                )
            })
    }

    /// The semaphore named `key`, with `slots` permits.
    pub async fn semaphore(&self, key: &str, slots: u32) -> Result<Semaphore> {
        let shown = format!("{}:{key}", self.name);
        let raw = self
            .raw
            .open_semaphore(key.to_owned(), slots)
            .await
            .map_err(|e| Error::about(&shown, e))?;
        Ok(Semaphore::from_raw(raw, shown))
    }

    /// The lock named `key`.
    pub async fn lock(&self, key: &str) -> Result<Lock> {
        let shown = format!("{}:{key}", self.name);
        let raw = self
            .raw
            .open(key.to_owned())
            .await
            .map_err(|e| Error::about(&shown, e))?;
        Ok(Lock { raw, name: shown })
    }
}
