//! `FileLock`: a lock on a path or on an open file, with RAII guards.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::backend::os::OsBackend;
use crate::backend::soft::{SoftBackend, unsupported_shared};
use crate::manager::{self, Entry, HolderId, Key, Pending};
use crate::owner::OwnerMap;
use crate::sandbox::Target;
use crate::sys::{self, Create};
use crate::{Error, ErrorKind, Holder, Kind, Mode, Owner, Result, Wait};

/// How often a lock file may be found unlinked or replaced right after it was
/// won before we give up (it takes a hostile peer to get there).
const MAX_REPLACED: usize = 64;

static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

/// A lock on a file, for threads, tasks and processes alike.
///
/// One `FileLock` is a handle: it can be shared between threads (it is
/// `Sync`), and every thread is a separate owner — two threads locking the
/// same handle exclude each other, while one thread locking it twice counts
/// up (re-entrancy) and must unlock as often. Two handles on the same file,
/// in this process or another, exclude each other; files are identified by
/// device and inode, not by spelling. The async methods count the tokio task
/// as owner instead of the thread.
///
/// ```
/// use std::time::Duration;
/// use wasmlock::{ErrorKind, FileLock};
/// # let dir = tempfile::tempdir().unwrap();
/// let lock = FileLock::new(dir.path().join("data.lock"))?;
/// {
///     let _guard = lock.lock()?;           // exclusive, waits as long as needed
///     let _again = lock.lock()?;           // re-entrant: counts up
///     assert_eq!(lock.hold_count(), 2);
/// }                                        // guards unlock on drop
/// assert_eq!(lock.hold_count(), 0);
///
/// let reader = lock.lock_shared_timeout(Duration::from_millis(100))?;
/// reader.unlock()?;                        // explicit unlock reports errors
/// # Ok::<(), wasmlock::Error>(())
/// ```
pub struct FileLock {
    id: u64,
    source: Source,
    options: Options,
    inner: Mutex<Inner>,
}

/// What a builder configures beyond the path and kind.
#[derive(Debug, Clone, Copy)]
struct Options {
    file_mode: Option<u32>,
    fallback_to_soft: bool,
    recheck: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            file_mode: None,
            fallback_to_soft: false,
            recheck: true,
        }
    }
}

enum Source {
    Path(Target),
    File { file: File, display: PathBuf },
}

struct Inner {
    kind: Kind,
    entry: Option<Arc<Entry>>,
    parent: Option<Arc<OwnedFd>>,
    holds: OwnerMap<(Mode, u32)>,
    /// The lock file's change time when the path was last seen to name it.
    verified: Option<i128>,
    /// The lock file this handle created (device, inode), while it may still
    /// be an unused placeholder.
    created: Option<(u64, u64)>,
}

impl std::fmt::Debug for FileLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileLock")
            .field("path", &self.path())
            .field("kind", &self.kind())
            .finish()
    }
}

/// Builds a [`FileLock`] with options.
///
/// ```
/// use wasmlock::{FileLock, Kind};
/// # let dir = tempfile::tempdir().unwrap();
/// let lock = FileLock::builder(dir.path().join("shared.lock"))
///     .mode(0o660)            // applied by the winner, after it holds the lock
///     .fallback_to_soft(true) // on file systems without kernel locks
///     .build()?;
/// assert_eq!(lock.kind(), Kind::Os);
/// # Ok::<(), wasmlock::Error>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct FileLockBuilder {
    target: Result<Target>,
    kind: Kind,
    options: Options,
}

impl FileLockBuilder {
    pub(crate) fn new(target: Result<Target>) -> FileLockBuilder {
        FileLockBuilder {
            target,
            kind: Kind::Os,
            options: Options::default(),
        }
    }

    /// Uses a soft lock (a marker file) instead of a kernel lock.
    pub fn soft(self) -> Self {
        self.kind(Kind::Soft)
    }

    /// Chooses the kind of lock.
    pub fn kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    /// Permission bits for the lock file. Without it the umask decides and the
    /// file is never `chmod`ed. With it, the process that wins the lock sets
    /// them — never a contender, so a holder's file is never touched.
    pub fn mode(mut self, mode: u32) -> Self {
        self.options.file_mode = Some(mode & 0o7777);
        self
    }

    /// Falls back to a soft lock when the file system has no kernel locks
    /// (`ENOLCK`, `ENOTSUP`, `ENOSYS`) instead of failing with
    /// [`ErrorKind::Unsupported`].
    pub fn fallback_to_soft(mut self, yes: bool) -> Self {
        self.options.fallback_to_soft = yes;
        self
    }

    /// Whether each acquisition checks that the path still names the file it
    /// locked (default: yes). A peer that deletes or replaces the lock file —
    /// `rm`, portalocker's `TemporaryFileLock`, a cleanup script — would
    /// otherwise leave this handle locking an orphaned file while newcomers
    /// lock the new one. The check is one `fstat` per acquisition (a full
    /// `lstat` only after the file's change time moved). Turn it off only for
    /// a lock file that nothing ever deletes; it saves that system call.
    ///
    /// ```
    /// use wasmlock::FileLock;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = FileLock::builder(dir.path().join("private.lock"))
    ///     .recheck_path(false)
    ///     .build()?;
    /// drop(lock.lock()?);
    /// # Ok::<(), wasmlock::Error>(())
    /// ```
    pub fn recheck_path(mut self, yes: bool) -> Self {
        self.options.recheck = yes;
        self
    }

    /// Creates the handle. Nothing is opened or created until the first lock.
    pub fn build(self) -> Result<FileLock> {
        Ok(FileLock::with_source(
            Source::Path(self.target?),
            self.kind,
            self.options,
            None,
        ))
    }
}

/// What `begin` found.
enum Begin {
    Held,
    Wait(Arc<Entry>),
}

impl FileLock {
    /// An OS lock on `path`. Missing parent directories are created at the
    /// first lock.
    pub fn new(path: impl AsRef<Path>) -> Result<FileLock> {
        Self::builder(path).build()
    }

    /// A builder for a lock on `path` (kind, file mode, fallback).
    pub fn builder(path: impl AsRef<Path>) -> FileLockBuilder {
        let path = path.as_ref();
        FileLockBuilder::new(
            Target::ambient(path)
                .map_err(|(kind, detail)| Error::new(kind, path).with_detail(detail)),
        )
    }

    /// An OS lock on a file the caller already opened (like portalocker's
    /// `lock(file, flags)` or py-filelock's `lock_descriptor`). It contends
    /// with path-based locks on the same file, in this process and others.
    ///
    /// Like `flock(1)`, any open file will do: a directory, `/dev/null`, a
    /// file opened read-only (writers are then not protected from a stream
    /// of readers in other processes: the turnstile needs a read-write file).
    ///
    /// ```
    /// use wasmlock::FileLock;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("data.txt");
    /// let file = std::fs::File::create(&path).unwrap();
    /// let on_file = FileLock::from_file(file)?;
    /// let by_path = FileLock::new(&path)?;
    /// let _g = on_file.lock()?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| assert!(by_path.try_lock().is_err()));
    /// });
    /// # Ok::<(), wasmlock::Error>(())
    /// ```
    pub fn from_file(file: File) -> Result<FileLock> {
        let display = fd_path(&file);
        Ok(Self::on_open_file(file, display))
    }

    /// [`from_file`](Self::from_file) for a guest's file, named `display` in
    /// errors (guests must not learn host paths), and only a regular file.
    #[cfg_attr(not(feature = "wasmtime"), allow(dead_code))]
    pub(crate) fn from_file_as(file: File, display: PathBuf) -> Result<FileLock> {
        let st = sys::fstat(&file).map_err(|e| Error::from_io(e, &display))?;
        if !st.is_file {
            return Err(
                Error::new(ErrorKind::InvalidPath, &display).with_detail("not a regular file")
            );
        }
        Ok(Self::on_open_file(file, display))
    }

    fn on_open_file(file: File, display: PathBuf) -> FileLock {
        FileLock::with_source(
            Source::File { file, display },
            Kind::Os,
            Options::default(),
            None,
        )
    }

    fn with_source(source: Source, kind: Kind, options: Options, id: Option<u64>) -> FileLock {
        FileLock {
            id: id.unwrap_or_else(|| NEXT_HANDLE.fetch_add(1, Ordering::Relaxed)),
            source,
            options,
            inner: Mutex::new(Inner {
                kind,
                entry: None,
                parent: None,
                holds: OwnerMap::default(),
                verified: None,
                created: None,
            }),
        }
    }

    pub(crate) fn for_semaphore(target: Target, id: u64) -> FileLock {
        FileLock::with_source(Source::Path(target), Kind::Os, Options::default(), Some(id))
    }

    /// The lock path, as given.
    pub fn path(&self) -> &Path {
        match &self.source {
            Source::Path(t) => &t.display,
            Source::File { display, .. } => display,
        }
    }

    /// The kind in use (soft after a fallback).
    pub fn kind(&self) -> Kind {
        self.inner().kind
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    // ----- the public locking API -----------------------------------------

    /// Locks exclusively, waiting as long as it takes.
    ///
    /// Waiting forever for a lock this thread already holds through another
    /// handle fails at once with [`ErrorKind::Deadlock`].
    #[inline]
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        self.lock_with(Mode::Exclusive, Wait::Forever)
    }

    /// Locks exclusively if that is possible right now, else
    /// [`ErrorKind::WouldBlock`].
    #[inline]
    pub fn try_lock(&self) -> Result<LockGuard<'_>> {
        self.lock_with(Mode::Exclusive, Wait::TryOnce)
    }

    /// Locks exclusively, waiting at most `timeout`, else [`ErrorKind::Timeout`].
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.lock_with(Mode::Exclusive, Wait::Timeout(timeout))
    }

    /// Locks shared (with other readers), waiting as long as it takes.
    pub fn lock_shared(&self) -> Result<LockGuard<'_>> {
        self.lock_with(Mode::Shared, Wait::Forever)
    }

    /// Locks shared if that is possible right now.
    pub fn try_lock_shared(&self) -> Result<LockGuard<'_>> {
        self.lock_with(Mode::Shared, Wait::TryOnce)
    }

    /// Locks shared, waiting at most `timeout`.
    pub fn lock_shared_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.lock_with(Mode::Shared, Wait::Timeout(timeout))
    }

    /// Locks in `mode`, waiting as `wait` says. The calling thread is the owner.
    #[inline]
    pub fn lock_with(&self, mode: Mode, wait: Wait) -> Result<LockGuard<'_>> {
        let owner = Owner::current_thread();
        self.acquire(owner, mode, wait)?;
        Ok(LockGuard::new(self, owner, mode))
    }

    /// [`lock_with`](Self::lock_with), calling `on_wait` once with the
    /// holder (when known) if the wait lasts longer than `after` — the hook
    /// behind "waiting for lock on PATH (held by pid N)" messages.
    ///
    /// ```
    /// use std::time::Duration;
    /// use wasmlock::{FileLock, Mode, Wait};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = FileLock::new(dir.path().join("slow.lock"))?;
    /// let _g = lock.lock_reporting(Mode::Exclusive, Wait::Forever, Duration::from_secs(1), |holder| {
    ///     eprintln!("waiting for lock on {} (held by {holder:?})", lock.path().display());
    /// })?;
    /// # Ok::<(), wasmlock::Error>(())
    /// ```
    pub fn lock_reporting(
        &self,
        mode: Mode,
        wait: Wait,
        after: Duration,
        on_wait: impl FnOnce(Option<Holder>),
    ) -> Result<LockGuard<'_>> {
        let (first, rest) = split_wait(wait, after);
        match self.lock_with(mode, first) {
            Err(e) if rest.is_some() && e.kind() == ErrorKind::Timeout => {
                on_wait(self.holder().ok().flatten());
                self.lock_with(mode, rest.expect("checked"))
            }
            other => other,
        }
    }

    /// Async [`lock_reporting`](Self::lock_reporting), for `owner`.
    #[cfg_attr(not(feature = "wasmtime"), allow(dead_code))]
    pub(crate) async fn acquire_reporting_async(
        &self,
        owner: Owner,
        mode: Mode,
        wait: Wait,
        after: Duration,
        on_wait: impl FnOnce(Option<Holder>),
    ) -> Result<()> {
        let (first, rest) = split_wait(wait, after);
        match self.acquire_async(owner, mode, first).await {
            Err(e) if rest.is_some() && e.kind() == ErrorKind::Timeout => {
                on_wait(self.holder().ok().flatten());
                self.acquire_async(owner, mode, rest.expect("checked"))
                    .await
            }
            other => other,
        }
    }

    /// Async [`lock`](Self::lock): waits without blocking a thread. The
    /// calling tokio task is the owner. Dropping the future gives up cleanly.
    ///
    /// ```
    /// use wasmlock::FileLock;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), wasmlock::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = FileLock::new(dir.path().join("async.lock"))?;
    /// let guard = lock.lock_async().await?;
    /// guard.unlock()?;
    /// # Ok(()) }
    /// ```
    pub async fn lock_async(&self) -> Result<LockGuard<'_>> {
        self.lock_with_async(Mode::Exclusive, Wait::Forever).await
    }

    /// Async [`lock_shared`](Self::lock_shared).
    pub async fn lock_shared_async(&self) -> Result<LockGuard<'_>> {
        self.lock_with_async(Mode::Shared, Wait::Forever).await
    }

    /// Async [`lock_timeout`](Self::lock_timeout).
    pub async fn lock_timeout_async(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.lock_with_async(Mode::Exclusive, Wait::Timeout(timeout))
            .await
    }

    /// Async [`lock_with`](Self::lock_with). Needs a tokio runtime with time
    /// enabled when `wait` is bounded.
    pub async fn lock_with_async(&self, mode: Mode, wait: Wait) -> Result<LockGuard<'_>> {
        let owner = Owner::current_task();
        self.acquire_async(owner, mode, wait).await?;
        Ok(LockGuard::new(self, owner, mode))
    }

    /// Releases one hold of the calling thread without a guard (for code
    /// that cannot keep one, e.g. after [`std::mem::forget`]). Fails with
    /// [`ErrorKind::NotHeld`] when nobody holds this handle, and with
    /// [`ErrorKind::NotOwner`] when only other threads do.
    ///
    /// ```
    /// use wasmlock::{ErrorKind, FileLock};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = FileLock::new(dir.path().join("u.lock"))?;
    /// assert_eq!(lock.unlock().unwrap_err().kind(), ErrorKind::NotHeld);
    /// std::mem::forget(lock.lock()?);
    /// lock.unlock()?;
    /// assert_eq!(lock.hold_count(), 0);
    /// # Ok::<(), wasmlock::Error>(())
    /// ```
    pub fn unlock(&self) -> Result<()> {
        self.release(Owner::current_thread())
    }

    /// How many times the calling thread holds this handle.
    pub fn hold_count(&self) -> u32 {
        self.hold_count_of(Owner::current_thread())
    }

    /// Drops every hold the calling thread has on this handle at once.
    /// Returns how many there were.
    pub fn force_unlock(&self) -> Result<u32> {
        self.force_release(Owner::current_thread())
    }

    /// Whether anyone — this process or another — holds the lock, found
    /// without disturbing the holder. Does not create the lock file.
    ///
    /// ```
    /// use wasmlock::FileLock;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let lock = FileLock::new(dir.path().join("q.lock"))?;
    /// assert!(!lock.is_locked()?);
    /// let g = lock.lock()?;
    /// assert!(lock.is_locked()?);
    /// drop(g);
    /// assert!(!lock.is_locked()?);
    /// # Ok::<(), wasmlock::Error>(())
    /// ```
    pub fn is_locked(&self) -> Result<bool> {
        let Some(entry) = self.existing_entry()? else {
            return Ok(false);
        };
        if entry.held_locally() {
            return Ok(true);
        }
        entry.backend().is_locked()
    }

    /// Who holds the lock, if anyone (see [`Holder`] for what is known).
    pub fn holder(&self) -> Result<Option<Holder>> {
        let Some(entry) = self.existing_entry()? else {
            return Ok(None);
        };
        if entry.held_locally() && self.kind() == Kind::Os {
            return Ok(Some(Holder::new(
                Some(sys::pid()),
                Some(sys::host_name().to_owned()),
                None,
            )));
        }
        entry.backend().holder()
    }

    /// Breaks a stale soft lock: one whose holder is provably gone (same
    /// host, process dead or its pid recycled), or a malformed marker. With
    /// `force`, breaks a live holder's lock too. OS locks cannot be broken
    /// ([`ErrorKind::Unsupported`]): the kernel frees them when the holder dies.
    ///
    /// ```
    /// use wasmlock::{ErrorKind, FileLock};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("stale.lock");
    /// // A marker left by a process that no longer exists.
    /// std::fs::write(&path, format!("999999999\n{}\n", hostname()))?;
    /// let lock = FileLock::builder(&path).soft().build()?;
    /// lock.break_lock(false)?;
    /// assert!(!path.exists());
    /// # fn hostname() -> String {
    /// #     let out = std::process::Command::new("hostname").output().unwrap();
    /// #     String::from_utf8(out.stdout).unwrap().trim().to_owned()
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn break_lock(&self, force: bool) -> Result<()> {
        let entry = self.entry()?;
        entry.backend().break_lock(force)?;
        tracing::debug!(path = %self.path().display(), force, "broke lock");
        Ok(())
    }

    // ----- the engine behind it, also used by guests and semaphores -------

    pub(crate) fn hold_count_of(&self, owner: Owner) -> u32 {
        self.inner().holds.get(&owner).map_or(0, |h| h.1)
    }

    /// Whether `owner` waiting forever in `mode` would never end, because it
    /// holds this file through another handle.
    #[cfg_attr(not(feature = "wasmtime"), allow(dead_code))]
    pub(crate) fn would_deadlock(&self, owner: Owner, mode: Mode) -> Result<bool> {
        if self.hold_count_of(owner) > 0 {
            return Ok(false);
        }
        Ok(self.entry()?.would_deadlock(self.holder_id(owner), mode))
    }

    pub(crate) fn holder_id(&self, owner: Owner) -> HolderId {
        HolderId {
            handle: self.id,
            owner,
        }
    }

    /// Acquires for `owner`, blocking the thread while waiting.
    pub(crate) fn acquire(&self, owner: Owner, mode: Mode, wait: Wait) -> Result<()> {
        let (wait, deadline) = fix_deadline(wait);
        loop {
            let entry = match self.begin(owner, mode, wait)? {
                Begin::Held => return Ok(()),
                Begin::Wait(entry) => entry,
            };
            let id = self.holder_id(owner);
            let pending = match deadline {
                None => Pending::start_forever(entry.clone(), mode, id),
                Some(_) => Pending::start(vec![entry.clone()], mode, id),
            };
            let settled = pending.wait(deadline);
            if self.finish(owner, mode, &entry, settled.map(drop))? {
                return Ok(());
            }
        }
    }

    /// Acquires for `owner` without blocking a thread.
    pub(crate) async fn acquire_async(&self, owner: Owner, mode: Mode, wait: Wait) -> Result<()> {
        let (wait, deadline) = fix_deadline(wait);
        loop {
            let entry = match self.begin(owner, mode, wait)? {
                Begin::Held => return Ok(()),
                Begin::Wait(entry) => entry,
            };
            let settled = Pending::start(vec![entry.clone()], mode, self.holder_id(owner))
                .into_future(deadline)
                .await;
            if self.finish(owner, mode, &entry, settled.map(drop))? {
                return Ok(());
            }
        }
    }

    /// Re-entry, or one attempt; says whether waiting is needed.
    ///
    /// This is the uncontended fast path: the handle's state stays locked
    /// from re-entry check to recorded hold, so an acquisition costs one
    /// handle lock, one entry lock, the `flock` and one `fstat`.
    fn begin(&self, owner: Owner, mode: Mode, wait: Wait) -> Result<Begin> {
        let id = self.holder_id(owner);
        for _ in 0..MAX_REPLACED {
            let mut guard = self.inner();
            let inner = &mut *guard;
            if self.reenter(inner, owner, mode)? {
                return Ok(Begin::Held);
            }
            self.open_if_needed(inner)?;
            let Some(entry) = inner.entry.as_ref() else {
                unreachable!("open_if_needed sets the entry")
            };
            tracing::debug!(path = %self.path().display(), ?mode, "lock attempt");
            match entry.try_acquire(id, mode) {
                Ok(true) => {
                    if self.record(inner, owner, mode)? {
                        return Ok(Begin::Held);
                    }
                    continue;
                }
                Ok(false) => {}
                Err(e) if self.fallback_applies(&e, inner.kind) => {
                    drop(guard);
                    self.switch_to_soft(&e);
                    continue;
                }
                Err(e) => return Err(e),
            }
            let entry = entry.clone();
            drop(guard);
            return match wait {
                Wait::TryOnce => Err(self.held_error(ErrorKind::WouldBlock, &entry)),
                Wait::Forever if entry.would_deadlock(id, mode) => {
                    Err(Error::new(ErrorKind::Deadlock, self.path()).with_detail(
                        "this owner already holds the lock through another handle; \
                         waiting forever would never end",
                    ))
                }
                _ => {
                    tracing::debug!(path = %self.path().display(), ?mode, "waiting");
                    Ok(Begin::Wait(entry))
                }
            };
        }
        Err(self.replaced_error())
    }

    /// After a wait: `Ok(true)` held, `Ok(false)` try again.
    fn finish(
        &self,
        owner: Owner,
        mode: Mode,
        entry: &Arc<Entry>,
        settled: std::result::Result<(), Option<Error>>,
    ) -> Result<bool> {
        match settled {
            Ok(()) => self.complete(owner, mode, entry),
            Err(Some(e)) => Err(e),
            Err(None) => Err(self.held_error(ErrorKind::Timeout, entry)),
        }
    }

    /// The lock was granted after a wait: record it if `entry` is still this
    /// handle's (it is dropped if the lock file was found replaced).
    pub(crate) fn complete(&self, owner: Owner, mode: Mode, entry: &Arc<Entry>) -> Result<bool> {
        let mut inner = self.inner();
        if !inner.entry.as_ref().is_some_and(|e| Arc::ptr_eq(e, entry)) {
            // Another owner of this handle found the file replaced meanwhile.
            entry.release(self.holder_id(owner))?;
            return Ok(false);
        }
        self.record(&mut inner, owner, mode)
    }

    /// The entry's lock was just won for `owner`: check that the path still
    /// names it, then record the hold. `Ok(false)`: the lock file was
    /// replaced; the entry is given up and the caller tries again.
    fn record(&self, inner: &mut Inner, owner: Owner, mode: Mode) -> Result<bool> {
        let id = self.holder_id(owner);
        let Some(entry) = inner.entry.as_ref() else {
            return Ok(false);
        };
        let current = if self.options.recheck {
            self.still_current(inner.parent.as_deref(), &mut inner.verified, entry)
        } else {
            Ok(true)
        };
        let current = match current {
            Ok(current) => current,
            Err(e) => {
                entry.release(id)?;
                return Err(e);
            }
        };
        if !current {
            // Someone unlinked or replaced the lock file: the inode we hold
            // is no longer what the path names.
            entry.release(id)?;
            if !inner.holds.is_empty() {
                // Another owner still holds the old file through this handle
                // and will release it there.
                return Err(Error::new(ErrorKind::Io, self.path()).with_detail(
                    "the lock file was replaced while another owner of this handle holds it",
                ));
            }
            inner.entry = None;
            inner.verified = None;
            tracing::debug!(path = %self.path().display(), "lock file was replaced; retrying");
            return Ok(false);
        }
        if let Some(m) = self.options.file_mode
            && let Err(e) = entry.backend().set_mode(m)
        {
            entry.release(id)?;
            return Err(e);
        }
        inner.holds.insert(owner, (mode, 1));
        tracing::debug!(path = %self.path().display(), ?mode, "acquired");
        Ok(true)
    }

    /// Counts up if `owner` already holds this handle.
    fn reenter(&self, inner: &mut Inner, owner: Owner, mode: Mode) -> Result<bool> {
        let Some((held, count)) = inner.holds.get_mut(&owner) else {
            if mode == Mode::Shared && inner.kind == Kind::Soft {
                return Err(unsupported_shared(self.path()));
            }
            return Ok(false);
        };
        if !held.covers(mode) {
            return Err(Error::new(ErrorKind::Deadlock, self.path()).with_detail(
                "upgrading a shared hold to exclusive is not supported (two readers \
                 upgrading would wait for each other); release the shared hold first",
            ));
        }
        *count = count
            .checked_add(1)
            .ok_or_else(|| Error::new(ErrorKind::QuotaExceeded, self.path()))?;
        Ok(true)
    }

    /// Releases one hold of `owner`.
    pub(crate) fn release(&self, owner: Owner) -> Result<()> {
        let mut inner = self.inner();
        let empty = inner.holds.is_empty();
        let std::collections::hash_map::Entry::Occupied(mut hold) = inner.holds.entry(owner) else {
            let kind = if empty {
                ErrorKind::NotHeld
            } else {
                ErrorKind::NotOwner
            };
            return Err(Error::new(kind, self.path()));
        };
        hold.get_mut().1 -= 1;
        if hold.get().1 > 0 {
            return Ok(());
        }
        hold.remove();
        self.release_entry(&inner, owner)
    }

    fn release_entry(&self, inner: &Inner, owner: Owner) -> Result<()> {
        let entry = inner
            .entry
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::NotHeld, self.path()))?;
        entry.release(self.holder_id(owner))?;
        tracing::debug!(path = %self.path().display(), "released");
        Ok(())
    }

    /// Drops every hold of `owner`; returns how many there were.
    pub(crate) fn force_release(&self, owner: Owner) -> Result<u32> {
        let mut inner = self.inner();
        let Some((_, count)) = inner.holds.remove(&owner) else {
            return Ok(0);
        };
        self.release_entry(&inner, owner)?;
        Ok(count)
    }

    /// Whether the path still names the entry's file.
    ///
    /// A full check (`lstat` of the name) costs more than the lock itself, so
    /// it runs only when the file's change time moved since the last one: an
    /// `fstat` of the open file shows an unlink or a rename over it (no links
    /// left) and any other rename (it changes the change time) at once. See
    /// [`trustworthy`] for the change times that cannot vouch for that.
    fn still_current(
        &self,
        parent: Option<&OwnedFd>,
        verified: &mut Option<i128>,
        entry: &Entry,
    ) -> Result<bool> {
        let (Source::Path(target), Key::Os(dev, ino), Some(parent)) =
            (&self.source, entry.key(), parent)
        else {
            return Ok(true);
        };
        let Some(file) = entry.backend().file() else {
            return Ok(true);
        };
        let st = sys::fstat(file).map_err(|e| Error::from_io(e, self.path()))?;
        if st.nlink == 0 {
            return Ok(false);
        }
        if *verified == Some(st.ctime_ns) {
            return Ok(true);
        }
        let current = match sys::lstat_at(parent.as_fd(), &target.cname) {
            Ok(named) => named.key() == (*dev, *ino),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::from_io(e, self.path())),
        };
        *verified = (current && trustworthy(st.ctime_ns)).then_some(st.ctime_ns);
        Ok(current)
    }

    fn fallback_applies(&self, e: &Error, kind: Kind) -> bool {
        self.options.fallback_to_soft
            && e.kind() == ErrorKind::Unsupported
            && matches!(self.source, Source::Path(_))
            && kind == Kind::Os
    }

    fn switch_to_soft(&self, why: &Error) {
        tracing::warn!(path = %self.path().display(), error = %why, "kernel locks unsupported here; falling back to a soft lock");
        let mut inner = self.inner();
        // The empty file we just created would read as a live marker; only
        // ours goes; a file someone else made may be their marker.
        if let (Some(key), Some(parent), Source::Path(target)) =
            (inner.created.take(), inner.parent.clone(), &self.source)
            && sys::lstat_at(parent.as_fd(), &target.cname).is_ok_and(|st| st.key() == key)
        {
            let _ = sys::unlink_at(parent.as_fd(), &target.cname);
        }
        inner.kind = Kind::Soft;
        inner.entry = None;
        inner.verified = None;
    }

    fn held_error(&self, kind: ErrorKind, entry: &Entry) -> Error {
        let err = Error::new(kind, self.path());
        match entry.backend().holder() {
            Ok(Some(Holder { pid: Some(pid), .. })) => {
                err.with_detail(format!("held by pid {pid}"))
            }
            _ => err,
        }
    }

    fn replaced_error(&self) -> Error {
        Error::new(ErrorKind::Io, self.path())
            .with_detail("the lock file kept being replaced while locking")
    }

    /// The entry, opening (and creating) the lock file on first use.
    pub(crate) fn entry(&self) -> Result<Arc<Entry>> {
        let mut inner = self.inner();
        self.open_if_needed(&mut inner)?;
        Ok(inner.entry.clone().expect("open_if_needed sets the entry"))
    }

    fn open_if_needed(&self, inner: &mut Inner) -> Result<()> {
        if inner.entry.is_some() {
            return Ok(());
        }
        let entry = match &self.source {
            Source::File { file, display } => {
                let st = sys::fstat(file).map_err(|e| Error::from_io(e, display))?;
                manager::entry(Key::Os(st.dev, st.ino), || {
                    let dup = file.try_clone().map_err(|e| Error::from_io(e, display))?;
                    Ok(Box::new(OsBackend::new(dup, display.clone())))
                })?
            }
            Source::Path(target) => {
                let parent = target.open_parent()?;
                inner.parent = Some(parent.clone());
                let kind = inner.kind;
                self.open_entry(target, parent, kind, &mut inner.created)?
            }
        };
        inner.entry = Some(entry);
        Ok(())
    }

    fn open_entry(
        &self,
        target: &Target,
        parent: Arc<OwnedFd>,
        kind: Kind,
        created: &mut Option<(u64, u64)>,
    ) -> Result<Arc<Entry>> {
        let path = &target.display;
        let name = &target.cname;
        let io = |e: std::io::Error| classify_open(e, path);
        match kind {
            Kind::Os => {
                let (file, made) = open_lock_file(parent.as_fd(), name).map_err(io)?;
                let st = sys::fstat(&file).map_err(io)?;
                if made {
                    *created = Some(st.key());
                }
                if !st.is_file {
                    return Err(
                        Error::new(ErrorKind::InvalidPath, path).with_detail("not a regular file")
                    );
                }
                manager::entry(Key::Os(st.dev, st.ino), || {
                    Ok(Box::new(OsBackend::new(file, path.clone())))
                })
            }
            Kind::Soft => {
                let dir = File::from(parent.try_clone().map_err(io)?);
                let st = sys::fstat(&dir).map_err(io)?;
                manager::entry(Key::Soft(st.dev, st.ino, target.name.clone()), || {
                    Ok(Box::new(SoftBackend::new(
                        parent,
                        name.clone(),
                        path.clone(),
                        self.options.file_mode,
                    )))
                })
            }
        }
    }

    /// The entry if the lock file exists; never creates it.
    fn existing_entry(&self) -> Result<Option<Arc<Entry>>> {
        if let Some(e) = &self.inner().entry {
            return Ok(Some(e.clone()));
        }
        if let Source::Path(target) = &self.source {
            let parent = match target.open_parent_existing() {
                Some(p) => p,
                None => return Ok(None),
            };
            match sys::lstat_at(parent.as_fd(), &target.cname) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::from_io(e, self.path())),
                Ok(_) => {}
            }
        }
        self.entry().map(Some)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // A guard cannot outlive its handle, but a forgotten one can: no hold
        // may outlive the handle that took it.
        let holds: Vec<Owner> = self.inner().holds.keys().copied().collect();
        for owner in holds {
            let _ = self.force_release(owner);
        }
    }
}

/// How old a change time must be before it is trusted to move on the next
/// change: far more than the timestamp granularity of a file system with
/// fine timestamps (a clock tick).
const SETTLED: Duration = Duration::from_millis(100);

/// Whether a change time (nanoseconds since the epoch) will surely differ
/// after the file's next change, so that an unchanged one vouches for the
/// path. A change within the same clock tick would leave it as it is: it
/// must be older than [`SETTLED`]. And file systems that keep whole seconds
/// (ext4 with small inodes, FAT, many FUSE and NFS servers) betray it with a
/// zero fraction: their files are checked in full every time.
fn trustworthy(ctime_ns: i128) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    ctime_ns % 1_000_000_000 != 0 && now - ctime_ns > SETTLED.as_nanos() as i128
}

/// Splits a wait into a first part of at most `after` and what is left of it
/// (`None` if nothing is: the first part is the whole wait).
fn split_wait(wait: Wait, after: Duration) -> (Wait, Option<Wait>) {
    let soon = std::time::Instant::now() + after;
    match wait.deadline() {
        _ if wait == Wait::TryOnce => (wait, None),
        None => (Wait::Deadline(soon), Some(Wait::Forever)),
        Some(at) if at > soon => (Wait::Deadline(soon), Some(Wait::Deadline(at))),
        Some(at) => (Wait::Deadline(at), None),
    }
}

fn fix_deadline(wait: Wait) -> (Wait, Option<std::time::Instant>) {
    let deadline = wait.deadline();
    let fixed = match (wait, deadline) {
        (Wait::Timeout(_), Some(at)) => Wait::Deadline(at),
        (Wait::Timeout(_), None) => Wait::Forever,
        _ => wait,
    };
    (fixed, deadline)
}

/// Opens the lock file, creating it if missing; says whether we created it.
/// Opening an existing file without `O_CREAT` also avoids the refusal that
/// sticky directories (`/tmp`) give for another user's file.
fn open_lock_file(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &CString,
) -> std::io::Result<(File, bool)> {
    loop {
        match sys::open_at(dir, name, Create::New, 0o666) {
            Ok(f) => return Ok((f, true)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        match sys::open_at(dir, name, Create::Existing, 0) {
            Ok(f) => return Ok((f, false)),
            // Removed between the two opens: create it after all.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

fn classify_open(e: std::io::Error, path: &Path) -> Error {
    let detail = match e.raw_os_error() {
        // A device that refuses to open (no reader on a FIFO, ...): whatever
        // the OS says, it cannot be a lock file.
        Some(libc::ENXIO) => {
            return Error::new(ErrorKind::InvalidPath, path).with_detail("not a regular file");
        }
        Some(libc::ELOOP) => "the final component is a symbolic link",
        Some(libc::EISDIR) => "the path names a directory",
        Some(libc::EACCES) => "no permission to create or open the lock file for writing",
        Some(libc::EROFS) => "read-only file system",
        _ => return Error::from_io(e, path),
    };
    Error::from_io(e, path).with_detail(detail)
}

/// A name for a file given by descriptor, for messages.
fn fd_path(file: &File) -> PathBuf {
    let fd = file.as_raw_fd();
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .unwrap_or_else(|_| PathBuf::from(format!("<fd {fd}>")))
}

/// Holds a lock until dropped (or [`unlock`](LockGuard::unlock)ed).
///
/// ```
/// use wasmlock::{FileLock, Mode};
/// # let dir = tempfile::tempdir().unwrap();
/// let lock = FileLock::new(dir.path().join("g.lock"))?;
/// let guard = lock.lock_shared()?;
/// assert_eq!(guard.mode(), Mode::Shared);
/// drop(guard);
/// assert_eq!(lock.hold_count(), 0);
/// # Ok::<(), wasmlock::Error>(())
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a FileLock,
    owner: Owner,
    mode: Mode,
    released: bool,
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("path", &self.lock.path())
            .field("mode", &self.mode)
            .finish()
    }
}

impl<'a> LockGuard<'a> {
    fn new(lock: &'a FileLock, owner: Owner, mode: Mode) -> Self {
        LockGuard {
            lock,
            owner,
            mode,
            released: false,
        }
    }

    /// The mode this guard was granted in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The lock this guard holds.
    pub fn lock(&self) -> &'a FileLock {
        self.lock
    }

    /// Releases this hold now and reports any error (drop only logs it).
    pub fn unlock(mut self) -> Result<()> {
        self.released = true;
        self.lock.release(self.owner)
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.released
            && let Err(e) = self.lock.release(self.owner)
        {
            tracing::warn!(path = %self.lock.path().display(), error = %e, "unlock on drop failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::os::INJECT_ERRNO;

    #[test]
    fn file_systems_without_locks_are_unsupported_or_fall_back_to_soft() {
        let dir = tempfile::tempdir().unwrap();
        for errno in [libc::ENOLCK, libc::EOPNOTSUPP, libc::ENOSYS] {
            INJECT_ERRNO.with(|e| e.set(Some(errno)));
            let path = dir.path().join(format!("nolocks-{errno}.lock"));
            let strict = FileLock::new(&path).unwrap();
            let err = strict.try_lock().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unsupported, "errno {errno}");
            assert_eq!(err.path(), path.as_path());

            let soft_path = dir.path().join(format!("fallback-{errno}.lock"));
            let lenient = FileLock::builder(&soft_path)
                .fallback_to_soft(true)
                .build()
                .unwrap();
            let g = lenient.lock().unwrap();
            assert_eq!(lenient.kind(), Kind::Soft);
            let marker = std::fs::read_to_string(&soft_path).unwrap();
            assert!(
                marker.starts_with(&format!("{}\n", std::process::id())),
                "{marker:?}"
            );
            drop(g);
            assert!(!soft_path.exists(), "the soft marker is removed on release");
            INJECT_ERRNO.with(|e| e.set(None));
        }
    }
}
