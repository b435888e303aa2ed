//! Soft locks: a marker file that exists while the lock is held.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::marker::{self, Content, Marker};
use super::{Backend, ReleaseTurn};
use crate::sys::{self, Create, DirFd, DirWatch, Name, Stat};
use crate::{Error, ErrorKind, Holder, Mode, Result};

/// py-filelock's grace before a malformed marker may be replaced: long enough
/// that a peer between create and write is never mistaken for garbage.
const MALFORMED_GRACE: Duration = Duration::from_secs(2);

/// How often a waiter looks again when no file-system event arrives: the
/// fallback for network file systems, and how a dead holder is noticed.
const POLL_FALLBACK: Duration = Duration::from_millis(100);

/// How long a holder releasing waits for a breaker's turn on its marker.
const TURN_PATIENCE: Duration = Duration::from_secs(1);

/// How often one lock looks for markers dead breakers left aside.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

pub(crate) struct SoftBackend {
    dir: Arc<DirFd>,
    name: Name,
    /// [`break_prefix`] of `name`, made once: every attempt may need it.
    break_prefix: String,
    path: PathBuf,
    mode: u32,
    /// The marker we created, while we hold it. Keeping it open pins its
    /// inode number: no successor's marker can carry it while we check.
    mine: Mutex<Option<(File, (u64, u64))>>,
    /// The [`Turn`] of the release under way, by its number; 0 for none.
    turn: Arc<AtomicU64>,
    /// A malformed marker first seen at this instant, identified by inode and times.
    malformed: Mutex<Option<(Stat, Instant)>>,
    /// While a thread waits for this lock: setting a watch up is cheap, but
    /// tearing one down costs milliseconds, so it goes only once the lock
    /// has been handed on ([`Backend::done_waiting`]).
    watch: Mutex<Option<DirWatch>>,
    /// The file system cannot make unnamed files: markers are created, then
    /// written.
    no_unnamed: AtomicBool,
    /// When this lock last looked for markers dead breakers left aside.
    swept: Mutex<Option<Instant>>,
}

impl SoftBackend {
    pub(crate) fn new(
        dir: Arc<DirFd>,
        name: Name,
        path: PathBuf,
        mode: Option<u32>,
    ) -> SoftBackend {
        SoftBackend {
            dir,
            break_prefix: break_prefix(&name),
            name,
            path,
            // Like py-filelock: nobody but the owner's group may rewrite a marker.
            mode: mode.unwrap_or(0o664),
            mine: Mutex::new(None),
            turn: Arc::default(),
            malformed: Mutex::new(None),
            watch: Mutex::new(None),
            no_unnamed: AtomicBool::new(false),
            swept: Mutex::new(None),
        }
    }

    fn err(&self, e: io::Error) -> Error {
        Error::from_io(e, &self.path)
    }

    /// Creates our marker if the path is free. `Ok(false)`: it is taken.
    fn create(&self) -> Result<bool> {
        if !self.no_unnamed.load(Ordering::Relaxed) {
            match self.publish_whole() {
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    self.no_unnamed.store(true, Ordering::Relaxed);
                }
                other => return other.map_err(|e| self.err(e)),
            }
        }
        self.create_then_write()
    }

    /// Writes the marker into a file without a name, then names it: a holder
    /// killed at any moment leaves no marker or a whole one, never the empty
    /// file that py-filelock — and so we — must take for a live holder.
    fn publish_whole(&self) -> io::Result<bool> {
        let dir = &*self.dir;
        let private = &self.break_prefix;
        let mut file = match sys::open_unnamed_at(dir, &self.name, private, self.mode) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            opened => opened?,
        };
        let written = file
            .write_all(&our_marker())
            .and_then(|()| sys::fstat(&file));
        let st = match written {
            Ok(st) => st,
            Err(e) => {
                sys::discard_unnamed(&file);
                return Err(e);
            }
        };
        match sys::link_at(&file, dir, &self.name) {
            Ok(()) => {
                *self.mine.lock().unwrap() = Some((file, st.key()));
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The portable way, as py-filelock does it: exclusive create, then write.
    fn create_then_write(&self) -> Result<bool> {
        let dir = &*self.dir;
        let mut file = match sys::open_at(dir, &self.name, Create::Marker, self.mode) {
            Ok(f) => f,
            Err(e) if sys::is_exists(&e) => return Ok(false),
            Err(e) => return Err(self.err(e)),
        };
        let written = sys::fstat(&file).and_then(|st| {
            file.write_all(&our_marker())?;
            Ok(st)
        });
        match written {
            Ok(st) => {
                *self.mine.lock().unwrap() = Some((file, st.key()));
                Ok(true)
            }
            Err(e) => {
                // A half-written marker of ours must not block everyone.
                if let Ok(st) = sys::fstat(&file) {
                    self.unlink_if(st.key());
                }
                Err(self.err(e))
            }
        }
    }

    /// Removes the marker if the name still points at inode `key`.
    fn unlink_if(&self, key: (u64, u64)) -> bool {
        let dir = &*self.dir;
        match sys::lstat_at(dir, &self.name) {
            Ok(st) if st.key() == key => sys::unlink_at(dir, &self.name).is_ok(),
            _ => false,
        }
    }

    /// Reads the marker; `None` when it vanished meanwhile. The open file
    /// comes back too: holding it pins the inode number being judged.
    fn read(&self) -> Result<Option<(Stat, Content, File)>> {
        self.read_named(&self.name)
    }

    /// [`read`](Self::read) for another file of the directory.
    fn read_named(&self, name: &Name) -> Result<Option<(Stat, Content, File)>> {
        let dir = &*self.dir;
        let st = match sys::lstat_at(dir, name) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        if !st.is_file {
            return Err(Error::new(ErrorKind::InvalidPath, &self.path)
                .with_detail("exists and is not a regular file"));
        }
        // For writing where we may (never written): on NFS, where `flock` is
        // a record lock, the breakers' turns (see `take_over`) need it.
        let opened = sys::open_at(dir, name, Create::MarkerOpen, 0).or_else(|e| {
            if sys::is_refusal(&e) {
                sys::open_at(dir, name, Create::ReadOnly, 0)
            } else {
                Err(e)
            }
        });
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        let opened = sys::fstat(&file).map_err(|e| self.err(e))?;
        if opened.key() != st.key() {
            // Replaced between the two looks; the caller simply looks again.
            return Ok(None);
        }
        let mut buf = Vec::with_capacity(128);
        Read::by_ref(&mut file)
            .take(4096)
            .read_to_end(&mut buf)
            .map_err(|e| self.err(e))?;
        Ok(Some((opened, marker::parse(&buf), file)))
    }

    /// Breaks the marker if its holder is provably gone. `Ok(true)`: the path
    /// is free now (or was already), try again.
    fn break_if_stale(&self) -> Result<bool> {
        let Some((st, content, pin)) = self.read()? else {
            return Ok(true);
        };
        let stale = match &content {
            Content::Holder(m) => m.is_stale(),
            Content::Empty | Content::Sentinel => false,
            Content::Malformed => self.malformed_for_long(st),
        };
        if stale {
            self.take_over(st, &content, pin)
        } else {
            Ok(false)
        }
    }

    fn malformed_for_long(&self, st: Stat) -> bool {
        let mut seen = self.malformed.lock().unwrap();
        match *seen {
            Some((old, since)) if old == st => since.elapsed() >= MALFORMED_GRACE,
            _ => {
                *seen = Some((st, Instant::now()));
                false
            }
        }
    }

    /// Moves the judged marker to a private name, then deletes it.
    ///
    /// Breakers take turns: whoever moves a marker off the name holds a
    /// kernel lock on it (`pin`, the judged marker itself) meanwhile, and
    /// first checks that the name still holds it. Without the turns, a second
    /// breaker that judged the same marker could move its successor's live
    /// marker aside instead, and if it died before putting it back, that
    /// holder would hold a lock that everyone else sees free. A marker is
    /// judged stale only on the host that wrote it, so every breaker of one
    /// marker shares a kernel; a holder takes the same lock to release.
    fn take_over(&self, judged: Stat, content: &Content, pin: File) -> Result<bool> {
        let dir = &*self.dir;
        match sys::marker_turn_try(&pin) {
            // Another process is breaking or releasing it right now.
            Ok(false) => return Ok(false),
            Ok(true) => {}
            // No kernel locks on this file system: go on without turns, as
            // py-filelock does.
            Err(_) => {}
        }
        match sys::lstat_at(dir, &self.name) {
            // The same file (`pin` keeps its number from being reused),
            // not written since it was judged.
            Ok(now) if now.key() == judged.key() && now.mtime_ns == judged.mtime_ns => {}
            // Broken, released or rewritten meanwhile: look again.
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(self.err(e)),
        }
        // The same pattern as py-filelock, so its recovery of stranded markers
        // also recognises ours.
        let aside = format!("{}{}.{}", self.break_prefix, sys::pid(), sys::random_hex());
        let aside = sys::name(OsStr::new(&aside)).expect("no NUL");
        match sys::rename_at(dir, &self.name, &aside, true) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(self.err(e)),
        }
        // Only a peer that takes no turns (py-filelock) can have slipped a
        // live marker in between; it goes back.
        let moved = match sys::lstat_at(dir, &aside) {
            Ok(st) => st,
            // Swept by someone who could not see that we are alive (another
            // PID namespace): what was moved is gone; look again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(self.err(e)),
        };
        if moved.key() == judged.key() && moved.mtime_ns == judged.mtime_ns {
            let _ = sys::unlink_at(dir, &aside);
            tracing::debug!(path = %self.path.display(), marker = ?content, "broke stale soft lock");
            // Not while holding the turn: the sweep reads the directory.
            drop(pin);
            self.sweep_stranded();
            return Ok(true);
        }
        if let Err(e) = sys::rename_at(dir, &aside, &self.name, true) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not put back a live marker moved while breaking a stale one");
        }
        Ok(false)
    }

    /// Deletes markers that a breaker moved aside and died before deleting,
    /// or that a writer on Windows died before naming (run after a break,
    /// the one moment stranded files are known to be likely):
    /// `{name}.break.{pid}.{32 hex}` whose process is not alive here, that
    /// have stayed there a while, and that hold a marker of a dead holder on
    /// this host or garbage — never a live holder's marker. They hold no
    /// lock, but nobody else would ever clean them up. At most once per
    /// [`SWEEP_EVERY`]: it reads the whole directory.
    fn sweep_stranded(&self) {
        {
            let mut last = self.swept.lock().unwrap();
            if last.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let prefix = self.break_prefix.as_str();
        let Ok(names) = sys::dir_names(&self.dir) else {
            return;
        };
        for name in names {
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
                continue;
            };
            let Some((pid, hex)) = rest.split_once('.') else {
                continue;
            };
            let named = hex.len() == 32
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
                && pid.parse().is_ok_and(|pid| !sys::pid_alive(pid));
            let Some(c) = sys::name(&name) else {
                continue;
            };
            if !named || !self.stranded(&c) {
                continue;
            }
            let _ = sys::unlink_at(&self.dir, &c);
            tracing::debug!(path = %self.path.display(), stranded = ?name, "removed a marker a dead breaker left aside");
        }
    }

    /// Whether the file `name` holds a marker nobody needs, and has held it,
    /// under that name, for longer than any live breaker takes.
    fn stranded(&self, name: &Name) -> bool {
        let Ok(Some((st, content, _))) = self.read_named(name) else {
            return false;
        };
        let moved_at = system_time(st.ctime_ns);
        let settled = moved_at.elapsed().is_ok_and(|age| age >= MALFORMED_GRACE);
        settled
            && match content {
                Content::Holder(m) => m.is_stale(),
                // A private name holds no lock: an empty file there is a
                // marker its dead writer never finished (Windows writes
                // markers under these names first, see `sys::open_unnamed_at`).
                Content::Malformed | Content::Empty => true,
                Content::Sentinel => false,
            }
    }

    /// Takes turns with anyone breaking our marker (see `take_over`): a
    /// breaker holds the turn for a few system calls, or dies and frees it.
    /// One that hangs there (stopped, or a lock server that does not answer)
    /// is waited for at most [`TURN_PATIENCE`]; release then goes ahead, as
    /// it would without turns. An error means no kernel locks here, and no
    /// turns to take.
    fn wait_turn(&self, pin: &File) {
        // `release_turn` has it already, or waited for it in vain just now
        // (once is enough). Taken again, it would be refused where locks
        // are not counted per open file (Windows) and waited for in vain.
        if self.turn.load(Ordering::Relaxed) != 0 || take_turn(pin) {
            return;
        }
        self.patiently(|| take_turn(pin));
    }

    /// Waits until `free`, at most [`TURN_PATIENCE`]; says whether it is.
    fn patiently(&self, mut free: impl FnMut() -> bool) -> bool {
        let since = Instant::now();
        while !free() {
            if since.elapsed() > TURN_PATIENCE {
                tracing::warn!(path = %self.path.display(), "a breaker kept its turn on our marker; releasing anyway");
                return false;
            }
            // Only a forced break of a live holder gets here, and a turn
            // lasts microseconds: a short nap is all it takes.
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }

    fn wait_once(&self) -> Result<bool> {
        if self.create()? {
            return Ok(true);
        }
        if self.break_if_stale()? {
            return self.create();
        }
        Ok(false)
    }
}

/// Takes the turn on our marker unless a breaker has it. (No kernel locks
/// here: no turns to take, and none to wait for.)
fn take_turn(pin: &File) -> bool {
    !matches!(sys::marker_turn_try(pin), Ok(false))
}

/// A release's turn, taken before it (`release_turn`): given back after it,
/// also where the release handed the marker to another holder here. While
/// it lives, the backend's `turn` holds its number, and the release's
/// `wait_turn` neither takes nor waits for the turn again.
struct Turn {
    /// Ours, on a copy of the marker's descriptor; `None` if a breaker
    /// kept it past our patience and the release goes ahead without it.
    pin: Option<File>,
    /// Unique in the process: the release of a holder this one handed the
    /// marker to may take its own turn before this one is dropped, and this
    /// drop must neither clear that one's number nor give back its turn.
    number: u64,
    state: Arc<AtomicU64>,
}

impl Turn {
    fn new(pin: Option<File>, state: Arc<AtomicU64>) -> Turn {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let number = NEXT.fetch_add(1, Ordering::Relaxed);
        state.store(number, Ordering::Relaxed);
        Turn { pin, number, state }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Cleared first: once the kernel turn is given back, the next
        // release may take it and record its own number.
        let last = self
            .state
            .compare_exchange(self.number, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        // A newer release recorded its own turn, taken through the same
        // open file: where turns are not counted per open file (`flock`),
        // giving ours back would give back theirs; theirs goes when they
        // drop it.
        if let Some(pin) = self.pin.as_ref().filter(|_| last) {
            drop(sys::marker_turn_release(pin));
        }
    }
}

impl Backend for SoftBackend {
    fn try_acquire(&self, mode: Mode) -> Result<bool> {
        if mode == Mode::Shared {
            return Err(unsupported_shared(&self.path));
        }
        self.wait_once()
    }

    fn acquire_blocking(&self, mode: Mode, wanted: &dyn Fn() -> bool) -> Result<bool> {
        // Watch first, then try: a release between the two is not missed.
        let mut slot = self.watch.lock().unwrap();
        let watch = slot.get_or_insert_with(|| DirWatch::new(&self.dir));
        watch.clear();
        // Checking `wanted` first: a marker taken for nobody would block
        // others until the manager noticed and gave it back.
        while wanted() {
            if self.try_acquire(mode)? {
                return Ok(true);
            }
            watch.wait(POLL_FALLBACK);
        }
        Ok(false)
    }

    fn done_waiting(&self) {
        // Torn down after the mutex is let go.
        let _watch = self.watch.lock().unwrap().take();
    }

    fn attempts_while_blocking(&self) -> bool {
        // Exclusive creation arbitrates between any number of attempts.
        true
    }

    fn release(&self, _mode: Mode) -> Result<()> {
        let Some((pin, key)) = self.mine.lock().unwrap().take() else {
            return Ok(());
        };
        self.wait_turn(&pin);
        if self.unlink_if(key) {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::Lost, &self.path)
                .with_detail("the marker was removed or replaced by someone else while held"))
        }
    }

    fn release_turn(&self, wait: bool, gives_back: &dyn Fn() -> bool) -> Option<ReleaseTurn> {
        // Taken on a copy of the marker's descriptor (the same open file,
        // so the same turn), with `mine` unlocked meanwhile; the release's
        // own `wait_turn` learns from `turn` that it is ours.
        let pin = match self.mine.lock().unwrap().as_ref() {
            Some((pin, _)) => pin.try_clone(),
            None => return Some(ReleaseTurn::default()),
        };
        // Without a copy, the release takes its turn itself, as it would.
        let Ok(pin) = pin else {
            return Some(ReleaseTurn::default());
        };
        let ours = if take_turn(&pin) {
            true
        } else if !wait {
            return None;
        } else if !gives_back() {
            return Some(ReleaseTurn::default());
        } else {
            self.patiently(|| take_turn(&pin))
        };
        let pin = ours.then_some(pin);
        Some(ReleaseTurn::holding(Turn::new(pin, self.turn.clone())))
    }

    fn lost(&self) -> bool {
        let mine = self.mine.lock().unwrap();
        let Some((_, key)) = mine.as_ref() else {
            return false;
        };
        // An error other than "gone" says nothing either way: not lost.
        match sys::lstat_at(&self.dir, &self.name) {
            Ok(st) => st.key() != *key,
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn holder(&self) -> Result<Option<Holder>> {
        Ok(match self.read()? {
            Some((st, Content::Holder(m), _)) => Some(Holder::new(
                Some(m.pid),
                Some(m.host),
                Some(system_time(st.mtime_ns)),
            )),
            Some((st, _, _)) => Some(Holder::new(None, None, Some(system_time(st.mtime_ns)))),
            None => None,
        })
    }

    /// Whether a marker exists whose holder is not provably gone.
    fn is_locked(&self) -> Result<bool> {
        Ok(match self.read()? {
            Some((_, Content::Holder(m), _)) => !m.is_stale(),
            Some(_) => true,
            None => false,
        })
    }

    /// Breaks the marker. Without `force`, only a marker whose holder is
    /// provably gone (or a malformed one) is broken.
    fn break_lock(&self, force: bool) -> Result<()> {
        let Some((st, content, pin)) = self.read()? else {
            return Err(
                Error::new(ErrorKind::NotHeld, &self.path).with_detail("no marker to break")
            );
        };
        if !force
            && let Content::Holder(m) = &content
            && !m.is_stale()
        {
            return Err(
                Error::new(ErrorKind::NotOwner, &self.path).with_detail(format!(
                    "held by live process {} on {}; pass force to break it anyway",
                    m.pid, m.host
                )),
            );
        }
        if self.take_over(st, &content, pin)? {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::WouldBlock, &self.path)
                .with_detail("the marker changed while breaking it; look again"))
        }
    }
}

/// `{name}.break.`: what a breaker's private name starts with (and, on
/// Windows, a writer's: see `sys::open_unnamed_at`). A long name is cut
/// short, leaving room for `{pid}.{32 hex}` within the 255 bytes a file
/// name may have; two locks whose names start alike then share a prefix,
/// which is safe: the sweep judges what a file holds, never a live
/// holder's marker.
fn break_prefix(name: &Name) -> String {
    /// `.break.`, a pid of up to 10 digits, a dot and 32 hex digits.
    const SUFFIX: usize = 7 + 10 + 1 + 32;
    let name = name.to_string_lossy();
    let mut end = name.len().min(255 - SUFFIX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}.break.", &name[..end])
}

/// This process's marker bytes. Made once per process: the start token
/// takes two file reads. A forked child has another pid, and makes its own.
fn our_marker() -> Vec<u8> {
    static OURS: Mutex<Option<(u32, Vec<u8>)>> = Mutex::new(None);
    let mut ours = OURS.lock().unwrap();
    match &*ours {
        Some((pid, bytes)) if *pid == sys::pid() => bytes.clone(),
        _ => {
            let bytes = Marker::ours().to_bytes();
            *ours = Some((sys::pid(), bytes.clone()));
            bytes
        }
    }
}

pub(crate) fn unsupported_shared(path: &Path) -> Error {
    Error::new(ErrorKind::Unsupported, path).with_detail("soft locks are exclusive only")
}

fn system_time(ns: i128) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs().min(u64::MAX as u128) as u64);
    if ns >= 0 {
        SystemTime::UNIX_EPOCH + d
    } else {
        SystemTime::UNIX_EPOCH - d
    }
}

#[cfg(test)]
mod tests {
    use cap_std::ambient_authority;
    use cap_std::fs::Dir;

    use super::*;

    /// A soft backend on `name` in `dir`.
    fn backend(dir: &Path, name: &str) -> SoftBackend {
        let fd = sys::dir_fd(Dir::open_ambient_dir(dir, ambient_authority()).unwrap());
        let cname = sys::name(OsStr::new(name)).unwrap();
        SoftBackend::new(Arc::new(fd), cname, dir.join(name), None)
    }

    /// The pid of a process that has exited.
    fn exited_pid() -> u32 {
        #[cfg(unix)]
        let mut exited = std::process::Command::new("true").spawn().unwrap();
        #[cfg(windows)]
        let mut exited = std::process::Command::new("cmd")
            .args(["/C", "exit"])
            .spawn()
            .unwrap();
        let pid = exited.id();
        exited.wait().unwrap();
        pid
    }

    /// A backend on `name` in a fresh directory, and a marker of a process
    /// that has exited at that name.
    fn with_stale_marker(dir: &Path, name: &str) -> SoftBackend {
        let pid = exited_pid();
        std::fs::write(dir.join(name), format!("{pid}\n{}\n", sys::host_name())).unwrap();
        backend(dir, name)
    }

    /// Unix: Windows keeps the name of a file deleted while open (the
    /// judged marker is), so no one can make a new marker there meanwhile.
    #[cfg(unix)]
    #[test]
    fn a_breaker_that_judged_a_marker_someone_else_replaced_moves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let soft = with_stale_marker(dir.path(), "s.lock");
        let (judged, content, pin) = soft.read().unwrap().unwrap();
        // Meanwhile another process broke it and took the lock.
        std::fs::remove_file(dir.path().join("s.lock")).unwrap();
        let live = format!("{}\n{}\n", std::process::id(), sys::host_name());
        std::fs::write(dir.path().join("s.lock"), &live).unwrap();
        assert!(soft.take_over(judged, &content, pin).unwrap(), "look again");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("s.lock")).unwrap(),
            live
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing moved aside"
        );
    }

    #[test]
    fn a_breaker_waits_its_turn_behind_another() {
        let dir = tempfile::tempdir().unwrap();
        let soft = with_stale_marker(dir.path(), "t.lock");
        let (judged, content, pin) = soft.read().unwrap().unwrap();
        // Another breaker is between its checks and its rename.
        let other = File::open(dir.path().join("t.lock")).unwrap();
        assert!(sys::marker_turn_try(&other).unwrap());
        assert!(
            !soft
                .take_over(judged, &content, pin.try_clone().unwrap())
                .unwrap(),
            "not its turn"
        );
        assert!(dir.path().join("t.lock").exists());
        drop(other);
        assert!(soft.take_over(judged, &content, pin).unwrap());
        assert!(!dir.path().join("t.lock").exists());
    }

    /// Names near the file-name limit: the private names beside them
    /// (where Windows writes a marker first, and where a breaker moves a
    /// stale one) must still fit, so such a lock works, and a stale marker
    /// under such a name is broken like any other. In ASCII, and in
    /// two-byte characters (UTF-8 bytes and UTF-16 units count apart).
    #[test]
    fn locks_with_names_near_the_limit_work_and_their_stale_markers_break() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            format!("{}.lock", "n".repeat(245)),
            format!("{}.lock", "é".repeat(120)),
        ] {
            let soft = backend(dir.path(), &name);
            assert!(soft.try_acquire(Mode::Exclusive).unwrap());
            let other = backend(dir.path(), &name);
            assert!(!other.try_acquire(Mode::Exclusive).unwrap(), "taken");
            soft.release(Mode::Exclusive).unwrap();
            let breaker = with_stale_marker(dir.path(), &name);
            assert!(breaker.try_acquire(Mode::Exclusive).unwrap(), "broken");
            breaker.release(Mode::Exclusive).unwrap();
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }

    /// Windows' byte-range locks are mandatory: a turn that covered the
    /// marker's bytes would fail every look at the marker by others while
    /// a break or a release lasts. (Where locks are advisory this holds by
    /// construction, so it is for Windows only, and wine does not enforce
    /// them either.)
    #[cfg(windows)]
    #[test]
    #[ignore = "wine 8 does not enforce mandatory locks; run on Windows with --ignored"]
    fn a_marker_can_be_read_while_its_turn_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let soft = with_stale_marker(dir.path(), "r.lock");
        let other = File::open(dir.path().join("r.lock")).unwrap();
        assert!(sys::marker_turn_try(&other).unwrap());
        let (_, content, _) = soft.read().unwrap().unwrap();
        assert!(matches!(content, Content::Holder(_)), "{content:?}");
    }

    /// Linux makes unnamed files (`O_TMPFILE`); elsewhere markers are
    /// created, then written.
    #[cfg(target_os = "linux")]
    #[test]
    fn our_marker_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let soft = backend(dir.path(), "w.lock");
        assert!(soft.create().unwrap());
        assert!(
            !soft.no_unnamed.load(Ordering::Relaxed),
            "ext4 and tmpfs make unnamed files"
        );
        assert_eq!(
            std::fs::read(dir.path().join("w.lock")).unwrap(),
            our_marker()
        );
        assert!(!soft.create().unwrap(), "taken");
        soft.release(Mode::Exclusive).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
