//! Test support: child processes that take locks, and helpers.
//!
//! A child is this very test binary, re-run with `--ignored --exact
//! child_entry` and its role in `WASMLOCK_CHILD`. It reports on stdout with
//! lines like `LOCKED`, and waits for orders on stdin.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use wasmlock::{FileLock, Kind, LockDir, Mode, Semaphore, Wait};

pub const ROLE_VAR: &str = "WASMLOCK_CHILD";

/// A running child process with a line-based protocol.
pub struct Child {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: Receiver<String>,
    pub pid: u32,
}

impl Child {
    /// Starts a child (this test binary) with the given role words.
    pub fn spawn(role: &[&str]) -> Child {
        Child::start(Self::own(role))
    }

    /// Like [`Child::spawn`], as an unprivileged user when we are root (so
    /// that permission bits apply to it).
    pub fn spawn_unprivileged(role: &[&str]) -> Child {
        #[allow(unused_mut)]
        let mut cmd = Self::own(role);
        // SAFETY: geteuid has no preconditions.
        #[cfg(unix)]
        if unsafe { libc::geteuid() } == 0 {
            use std::os::unix::process::CommandExt;
            cmd.uid(65534).gid(65534);
        }
        Child::start(cmd)
    }

    fn own(role: &[&str]) -> Command {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = Command::new(exe);
        cmd.args([
            "--ignored",
            "--exact",
            "child_entry",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE_VAR, role.join("\u{1f}"));
        cmd
    }

    /// Starts any program that speaks the line protocol.
    pub fn start(mut cmd: Command) -> Child {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let pid = child.id();
        Child {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            pid,
        }
    }

    /// Waits for a protocol line starting with `prefix`; returns the rest.
    pub fn expect(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                    if line.starts_with("ERROR") {
                        panic!("child {} failed: {line}", self.pid);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "child {} did not say {prefix:?} within {timeout:?}",
                        self.pid
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("child {} exited before saying {prefix:?}", self.pid)
                }
            }
        }
    }

    /// Whether a line starting with `prefix` arrives within `timeout`.
    pub fn says_within(&mut self, prefix: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Sends one line to the child.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// SIGKILL: no cleanup code runs in the child.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// How the child ended, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Closes stdin and waits for the child to exit successfully.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child {} exited with {status}", self.pid);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mode(word: &str) -> Mode {
    match word {
        "ex" => Mode::Exclusive,
        "sh" => Mode::Shared,
        other => panic!("bad mode {other}"),
    }
}

fn kind(word: &str) -> Kind {
    match word {
        "os" => Kind::Os,
        "soft" => Kind::Soft,
        other => panic!("bad kind {other}"),
    }
}

/// A lock of kind `k` (`os`, `soft`) on `path`.
pub fn open(path: &str, k: &str) -> FileLock {
    FileLock::builder(path).kind(kind(k)).build().unwrap()
}

fn wait_line() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim().to_owned()),
    }
}

/// Micros since the Unix epoch, comparable across processes.
pub fn now_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// The body of a child process. Returns quietly when not a child.
pub fn child_main() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    let words: Vec<&str> = role.split('\u{1f}').collect();
    let result = std::panic::catch_unwind(|| run_role(&words));
    if let Err(e) = result {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        println!("ERROR {msg}");
        std::process::exit(3);
    }
    std::process::exit(0);
}

fn run_role(words: &[&str]) {
    match words {
        // A soft marker's turn, as a breaker holds it on the marker it is
        // breaking, until killed or told.
        ["hold-turn", path] => {
            let f = std::fs::File::open(path).unwrap();
            take_marker_turn(&f);
            println!("LOCKED");
            let _ = wait_line();
        }
        // Take the lock, say so, hold it until told (or stdin closes).
        ["hold", path, m, k] => {
            let lock = open(path, k);
            let g = lock.lock_with(mode(m), Wait::Forever).unwrap();
            println!("LOCKED {}", now_us());
            let _ = wait_line();
            drop(g);
            println!("RELEASED {}", now_us());
        }
        // One try on an ambient path; report the outcome's kind.
        ["try", path, m, k] => {
            let lock = open(path, k);
            match lock.lock_with(mode(m), Wait::TryOnce) {
                Ok(_) => println!("RESULT ok"),
                Err(e) => println!("RESULT {:?}", e.kind()),
            }
        }
        // Read-increment-write a counter file `n` times under the lock.
        ["counter", path, counter, n, k] => {
            let lock = open(path, k);
            for _ in 0..n.parse::<u32>().unwrap() {
                let _g = lock.lock().unwrap();
                bump(Path::new(counter));
            }
            println!("DONE");
        }
        // Readers that overlap: `n` holds of `hold_ms` each, back to back.
        ["reader-chain", path, n, hold_ms] => {
            let lock = open(path, "os");
            for _ in 0..n.parse::<u32>().unwrap() {
                let g = lock.lock_shared().unwrap();
                std::thread::sleep(Duration::from_millis(hold_ms.parse().unwrap()));
                drop(g);
            }
            println!("DONE {}", now_us());
        }
        // Take a semaphore permit and hold it until told.
        ["permit", dir, name, slots] => {
            let sem = Semaphore::new(dir, name, slots.parse().unwrap()).unwrap();
            let p = sem.acquire().unwrap();
            println!("PERMIT {}", p.slot());
            let _ = wait_line();
            drop(p);
        }
        // Semaphore load: `n` rounds of take, check the witness, give back.
        ["permit-load", dir, name, slots, n, witness] => {
            let sem = Semaphore::new(dir, name, slots.parse().unwrap()).unwrap();
            let witness = LockDir::open_ambient(witness).unwrap();
            for _ in 0..n.parse::<u32>().unwrap() {
                let p = sem.acquire().unwrap();
                // Slot witness: an exclusive try on a per-slot witness lock
                // must succeed, or two processes hold the same slot.
                let w = witness.file_lock(format!("w{}", p.slot())).unwrap();
                let g = w.try_lock().expect("two holders of one semaphore slot");
                std::thread::sleep(Duration::from_micros(200));
                drop(g);
                drop(p);
            }
            println!("DONE");
        }
        // Open-and-try through a LockDir sandbox.
        ["try-in", dir, rel, k] => {
            let r = LockDir::open_ambient(dir)
                .and_then(|d| d.builder(rel).kind(kind(k)).build())
                .and_then(|l| l.try_lock().map(drop));
            match r {
                Ok(()) => println!("RESULT ok"),
                Err(e) => println!("RESULT {:?}", e.kind()),
            }
        }
        // `threads` threads bump a counter `n` times each under the lock,
        // every one inside a witness; odd threads share one handle, even
        // threads have their own.
        ["counter-threads", path, counter, threads, n, k, witness] => {
            let shared = open(path, k);
            let witness = Witness::new(witness);
            std::thread::scope(|s| {
                for t in 0..threads.parse::<usize>().unwrap() {
                    let (shared, witness) = (&shared, &witness);
                    s.spawn(move || {
                        let own = (t % 2 == 0).then(|| open(path, k));
                        let lock = own.as_ref().unwrap_or(shared);
                        for _ in 0..n.parse::<u32>().unwrap() {
                            let _g = lock.lock().unwrap();
                            let _inside = witness.enter(Mode::Exclusive);
                            bump(Path::new(counter));
                        }
                    });
                }
            });
            println!("DONE");
        }
        // Readers or writers in `threads` threads, each holding `hold_us`
        // inside a witness, until `n` rounds are done (writers) or the stop
        // file appears (readers, which never pause between reads).
        ["rw", path, m, threads, n, hold_us, witness, stop] => {
            let lock = open(path, "os");
            let witness = Witness::new(witness);
            let hold = Duration::from_micros(hold_us.parse().unwrap());
            let rounds = std::sync::atomic::AtomicU64::new(0);
            let n: u32 = n.parse().unwrap();
            let more = |i: u32| {
                if mode(m) == Mode::Exclusive {
                    i < n
                } else {
                    !Path::new(stop).exists()
                }
            };
            let mut slowest = Duration::ZERO;
            std::thread::scope(|s| {
                let workers: Vec<_> = (0..threads.parse::<usize>().unwrap())
                    .map(|_| {
                        s.spawn(|| {
                            let mut slowest = Duration::ZERO;
                            let mut i = 0;
                            while more(i) {
                                let asked = Instant::now();
                                let g = lock.lock_with(mode(m), Wait::Timeout(LONG)).unwrap();
                                slowest = slowest.max(asked.elapsed());
                                let inside = witness.enter(mode(m));
                                std::thread::sleep(hold);
                                drop(inside);
                                drop(g);
                                rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                i += 1;
                            }
                            slowest
                        })
                    })
                    .collect();
                for w in workers {
                    slowest = slowest.max(w.join().unwrap());
                }
            });
            println!("DONE {} {}", rounds.into_inner(), slowest.as_micros());
        }
        // `threads` threads take a permit `n` times each; inside, the number
        // of holders (one witness file each) never exceeds the slots, and
        // nobody else holds the same slot.
        ["permit-threads", dir, name, slots, threads, n, witness] => {
            let slots: usize = slots.parse().unwrap();
            let sem = Semaphore::new(dir, name, slots).unwrap();
            let witness = Path::new(witness);
            std::thread::scope(|s| {
                for t in 0..threads.parse::<usize>().unwrap() {
                    let sem = &sem;
                    s.spawn(move || {
                        for i in 0..n.parse::<u32>().unwrap() {
                            let p = sem.acquire().unwrap();
                            let me = witness.join(format!("{}.{t}.{i}", std::process::id()));
                            std::fs::write(&me, b"").unwrap();
                            let slot = witness.join(format!("slot{}", p.slot()));
                            std::fs::OpenOptions::new()
                                .write(true)
                                .create_new(true)
                                .open(&slot)
                                .expect("two holders of one semaphore slot");
                            let holders = std::fs::read_dir(witness)
                                .unwrap()
                                .filter(|e| {
                                    !e.as_ref()
                                        .unwrap()
                                        .file_name()
                                        .to_string_lossy()
                                        .starts_with("slot")
                                })
                                .count();
                            assert!(holders <= slots, "{holders} holders of {slots} slots");
                            std::thread::sleep(Duration::from_micros(100));
                            std::fs::remove_file(&slot).unwrap();
                            std::fs::remove_file(&me).unwrap();
                            drop(p);
                        }
                    });
                }
            });
            println!("DONE");
        }
        // Soft lock churn for the crash tests: lock (breaking stale markers
        // as needed), hold inside a witness, release; forever or `n` times.
        ["soft-churn", path, witness, n] => {
            let lock = open(path, "soft");
            let witness = Witness::new(witness);
            let n: u64 = n.parse().unwrap();
            let mut i = 0;
            println!("STARTED");
            while n == 0 || i < n {
                let g = lock.lock_timeout(LONG).unwrap();
                let inside = witness.enter(Mode::Exclusive);
                std::thread::sleep(Duration::from_micros(200));
                drop(inside);
                drop(g);
                i += 1;
            }
            println!("DONE");
        }
        other => panic!("unknown child role {other:?}"),
    }
}

/// Shows who is inside a critical section, across threads and processes,
/// with files: a writer creates `w` exclusively and sees no reader file; a
/// reader creates its own file and sees no `w`. Any overlap the lock should
/// have prevented panics (in a child: `ERROR`, exit status 3).
pub struct Witness {
    dir: std::path::PathBuf,
}

/// Inside the witness until dropped.
pub struct Inside(std::path::PathBuf);

impl Drop for Inside {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).unwrap();
    }
}

impl Witness {
    pub fn new(dir: impl AsRef<Path>) -> Witness {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).unwrap();
        Witness { dir }
    }

    pub fn enter(&self, m: Mode) -> Inside {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let writer = self.dir.join("w");
        match m {
            Mode::Exclusive => {
                // Made whole under another name, then linked in: a holder
                // killed at any moment leaves either nothing or its pid.
                let mine = self.dir.join(format!("t.{}", std::process::id()));
                std::fs::write(&mine, std::process::id().to_string()).unwrap();
                while let Err(e) = std::fs::hard_link(&mine, &writer) {
                    // A holder killed inside leaves its file; only a live
                    // one means two are inside.
                    let owner = std::fs::read_to_string(&writer).unwrap_or_default();
                    match owner.parse::<u32>() {
                        Ok(pid) if !alive(pid) => {
                            let _ = std::fs::remove_file(&writer);
                        }
                        _ => panic!("VIOLATION: two writers inside at once ({e}; {owner:?})"),
                    }
                }
                std::fs::remove_file(&mine).unwrap();
                let readers = self.readers();
                assert!(
                    readers == 0,
                    "VIOLATION: a writer inside with {readers} readers"
                );
                Inside(writer)
            }
            Mode::Shared => {
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let me = self.dir.join(format!("r.{}.{n}", std::process::id()));
                std::fs::write(&me, b"").unwrap();
                assert!(!writer.exists(), "VIOLATION: a reader inside with a writer");
                Inside(me)
            }
        }
    }

    fn readers(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("r.")
            })
            .count()
    }

    /// Whether nobody is inside.
    pub fn is_empty(&self) -> bool {
        !self.dir.join("w").exists() && self.readers() == 0
    }
}

/// Read, add one, write back: loses updates unless serialised.
pub fn bump(counter: &Path) {
    let n: u64 = std::fs::read_to_string(counter)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    std::fs::write(counter, format!("{}\n", n + 1)).unwrap();
}

pub fn read_counter(counter: &Path) -> u64 {
    std::fs::read_to_string(counter)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Takes a soft marker's turn through `file`, waiting for it, as breakers
/// and releasers take it: the whole-file `flock` on Unix; on Windows the
/// marker's byte 2^64-1 (`LockFileEx` locks are mandatory, and a lock of
/// the marker's bytes would fail every read of it).
pub fn take_marker_turn(file: &std::fs::File) {
    marker_turn(file, true);
}

/// Gives back a turn [`take_marker_turn`] took.
pub fn give_back_marker_turn(file: &std::fs::File) {
    marker_turn(file, false);
}

#[cfg(unix)]
fn marker_turn(file: &std::fs::File, take: bool) {
    if take {
        fs4::FileExt::lock(file).unwrap();
    } else {
        fs4::FileExt::unlock(file).unwrap();
    }
}

#[cfg(windows)]
fn marker_turn(file: &std::fs::File, take: bool) {
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::Storage::FileSystem::{
        LOCKFILE_EXCLUSIVE_LOCK, LockFileEx, UnlockFileEx,
    };
    // SAFETY: plain old data; all-zero is a valid value.
    let mut o: windows_sys::Win32::System::IO::OVERLAPPED = unsafe { std::mem::zeroed() };
    o.Anonymous.Anonymous.Offset = u32::MAX;
    o.Anonymous.Anonymous.OffsetHigh = u32::MAX;
    let h = file.as_raw_handle() as _;
    // SAFETY: a valid handle and an OVERLAPPED naming one byte.
    let ok = unsafe {
        if take {
            LockFileEx(h, LOCKFILE_EXCLUSIVE_LOCK, 0, 1, 0, &mut o)
        } else {
            UnlockFileEx(h, 0, 1, 0, &mut o)
        }
    };
    assert_ne!(ok, 0, "{}", std::io::Error::last_os_error());
}

/// Whether the process `pid` runs.
#[cfg(unix)]
pub fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks the pid.
    pid as i32 > 0 && unsafe { libc::kill(pid as i32, 0) } == 0
}

/// Whether the process `pid` runs.
#[cfg(windows)]
pub fn alive(pid: u32) -> bool {
    use windows_sys::Win32::Foundation::{CloseHandle, STILL_ACTIVE};
    use windows_sys::Win32::System::Threading::{
        GetExitCodeProcess, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
    };
    // SAFETY: plain calls on a handle we open and close.
    unsafe {
        let h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if h.is_null() {
            return false;
        }
        let mut code = 0;
        let ok = GetExitCodeProcess(h, &mut code) != 0;
        CloseHandle(h);
        ok && code == STILL_ACTIVE as u32
    }
}

/// Threads of this process named `name` (the engine's waiting threads are
/// `wasmlock-wait`, an etcd cluster's `wasmlock-etcd`). Sibling tests run
/// in parallel, so all threads would be a noisy count.
#[cfg(target_os = "linux")]
pub fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == name)
        .count()
}

/// A tokio runtime with two worker threads, everything enabled.
pub fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub const SHORT: Duration = Duration::from_millis(100);
pub const LONG: Duration = Duration::from_secs(20);

mod ci;
#[allow(unused_imports)] // not every test binary needs them
pub use ci::{in_ci, require};

/// Cases per property test: `PROPTEST_CASES` if set (CI runs more),
/// else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A path as the `&str` a child's role words are made of.
pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A pid that belonged to a process that has exited.
pub fn dead_pid() -> u32 {
    #[cfg(unix)]
    let mut c = std::process::Command::new("true").spawn().unwrap();
    #[cfg(windows)]
    let mut c = std::process::Command::new("cmd")
        .args(["/C", "exit"])
        .spawn()
        .unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

/// The host-name line our own soft markers carry.
pub fn our_host(path: &Path) -> String {
    let lock = FileLock::builder(path).soft().build().unwrap();
    let g = lock.lock().unwrap();
    let host = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    drop(g);
    host
}

/// `threads` threads, each with its own handle from `open`, bump a counter
/// `iters` times under the lock; returns the final count.
pub fn count_with_threads(
    dir: &Path,
    threads: usize,
    iters: usize,
    open: impl Fn() -> FileLock + Sync,
) -> u64 {
    let counter = dir.join("counter");
    std::fs::write(&counter, "0").unwrap();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let lock = open();
                for _ in 0..iters {
                    let _g = lock.lock().unwrap();
                    bump(&counter);
                }
            });
        }
    });
    read_counter(&counter)
}
