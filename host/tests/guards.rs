//! A hold belongs to its guard: mutual exclusion in the async patterns that
//! broke when the owner was the thread or the task (`join!`, `select!`, sync
//! guards held across `.await` by tasks sharing a thread), owned guards
//! moved between tasks and threads, the opt-in re-entrant mode, and guards
//! that give access to the locked file. Every exclusion claim has a witness
//! that records the most holders it ever saw inside at once.

mod common;

use std::io::{Read, Seek, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use wasmlock::{
    AsyncLockGuard, ErrorKind, FileLock, LockGuard, Mode, OwnedLockGuard, OwnedPermit, Semaphore,
    Wait,
};

#[test]
#[ignore = "helper: runs only as a child process"]
fn child_entry() {
    child_main();
}

/// Counts who is inside; remembers the most at once.
#[derive(Default)]
struct Witness {
    inside: AtomicU32,
    most: AtomicU32,
    entries: AtomicU32,
}

impl Witness {
    fn enter(&self) -> Inside<'_> {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.entries.fetch_add(1, Ordering::SeqCst);
        Inside(self)
    }

    fn most(&self) -> u32 {
        self.most.load(Ordering::SeqCst)
    }

    fn entries(&self) -> u32 {
        self.entries.load(Ordering::SeqCst)
    }
}

struct Inside<'a>(&'a Witness);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A single-threaded runtime: every task and future on one thread.
fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn futures_joined_in_one_task_exclude_each_other() {
    let dir = tmp();
    let lock = FileLock::new(dir.path().join("join.lock")).unwrap();
    let witness = Witness::default();
    let work = || async {
        for _ in 0..20 {
            let _g = lock.lock_async().await.unwrap();
            let _in = witness.enter();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    current_thread().block_on(async {
        tokio::join!(work(), work(), work());
    });
    assert_eq!(witness.entries(), 60);
    assert_eq!(
        witness.most(),
        1,
        "two futures of one task were inside at once"
    );
}

#[test]
fn select_in_a_task_that_holds_the_lock_waits_for_it() {
    let dir = tmp();
    let lock = FileLock::new(dir.path().join("select.lock")).unwrap();
    let witness = Witness::default();
    let held = AtomicBool::new(false);
    current_thread().block_on(async {
        let holder = async {
            let _g = lock.lock_async().await.unwrap();
            let _in = witness.enter();
            held.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let contender = async {
            while !held.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
            tokio::select! {
                g = lock.lock_async() => {
                    let _g = g.unwrap();
                    let _in = witness.enter();
                    "lock"
                }
                () = tokio::time::sleep(Duration::from_millis(10)) => "timer",
            }
        };
        let ((), first) = tokio::join!(holder, contender);
        assert_eq!(first, "timer", "the lock is held by the other future");
    });
    assert_eq!(witness.most(), 1);
    // The dropped branch left nothing behind.
    assert!(lock.try_lock().is_ok());
}

#[test]
fn sync_guards_held_across_await_by_tasks_sharing_a_thread() {
    struct Shared {
        lock: FileLock,
        witness: Witness,
        held: AtomicBool,
        done: AtomicBool,
    }
    let dir = tmp();
    let shared = std::rc::Rc::new(Shared {
        lock: FileLock::new(dir.path().join("local.lock")).unwrap(),
        witness: Witness::default(),
        held: AtomicBool::new(false),
        done: AtomicBool::new(false),
    });
    let local = tokio::task::LocalSet::new();
    let first = {
        let s = shared.clone();
        async move {
            let g = s.lock.lock().unwrap();
            let inside = s.witness.enter();
            s.held.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(inside);
            drop(g);
            s.done.store(true, Ordering::SeqCst);
        }
    };
    let second = {
        let s = shared.clone();
        async move {
            while !s.held.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
            // The other task holds it on this very thread: blocking for it
            // would never end, and trying finds it taken.
            assert_eq!(s.lock.lock().unwrap_err().kind(), ErrorKind::Deadlock);
            assert_eq!(s.lock.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
            while !s.done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let _g = s.lock.lock().unwrap();
            let _in = s.witness.enter();
        }
    };
    let (a, b) = current_thread().block_on(local.run_until(async {
        tokio::join!(
            tokio::task::spawn_local(first),
            tokio::task::spawn_local(second)
        )
    }));
    a.unwrap();
    b.unwrap();
    assert_eq!(shared.witness.entries(), 2);
    assert_eq!(
        shared.witness.most(),
        1,
        "two tasks of one thread were inside at once"
    );
}

#[test]
fn owned_guards_move_between_tasks_and_threads() {
    let dir = tmp();
    let lock = Arc::new(FileLock::new(dir.path().join("owned.lock")).unwrap());
    let witness = Arc::new(Witness::default());
    let rt = two_workers();
    rt.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (lock, witness) = (lock.clone(), witness.clone());
                tokio::spawn(async move {
                    for _ in 0..10 {
                        let guard = lock.lock_owned_async().await.unwrap();
                        let witness = witness.clone();
                        if i % 2 == 0 {
                            // Handed to a plain thread, released there.
                            tokio::task::spawn_blocking(move || {
                                let inside = witness.enter();
                                std::thread::sleep(Duration::from_micros(300));
                                drop(inside);
                                drop(guard);
                            })
                            .await
                            .unwrap();
                        } else {
                            // Handed to another task, released there.
                            tokio::spawn(async move {
                                let _in = witness.enter();
                                tokio::time::sleep(Duration::from_micros(300)).await;
                                drop(_in);
                                drop(guard);
                            })
                            .await
                            .unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert_eq!(witness.entries(), 80);
    assert_eq!(witness.most(), 1);
    assert!(lock.try_lock().is_ok());
}

#[test]
fn owned_sync_guards_can_be_stored_and_sent() {
    let dir = tmp();
    let lock = Arc::new(FileLock::new(dir.path().join("store.lock")).unwrap());
    let witness = Arc::new(Witness::default());
    let (tx, rx) = std::sync::mpsc::channel::<OwnedLockGuard>();
    let releaser = {
        let witness = witness.clone();
        std::thread::spawn(move || {
            for guard in rx {
                let _in = witness.enter();
                assert_eq!(guard.mode(), Mode::Exclusive);
                std::thread::sleep(Duration::from_micros(200));
                drop(_in);
                drop(guard);
            }
        })
    };
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..20 {
                    tx.send(lock.lock_owned().unwrap()).unwrap();
                }
            });
        }
    });
    drop(tx);
    releaser.join().unwrap();
    assert_eq!(witness.entries(), 80);
    assert_eq!(witness.most(), 1);
}

#[test]
fn readers_and_writers_with_owned_and_borrowed_guards_never_overlap() {
    let dir = tmp();
    let lock = Arc::new(FileLock::new(dir.path().join("rw.lock")).unwrap());
    let readers = Arc::new(Witness::default());
    let writers = Arc::new(Witness::default());
    let rt = two_workers();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..12 {
            let (lock, readers, writers) = (lock.clone(), readers.clone(), writers.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..15 {
                    if i % 3 == 0 {
                        let _g = lock.lock_owned_async().await.unwrap();
                        let _in = writers.enter();
                        assert_eq!(readers.inside.load(Ordering::SeqCst), 0);
                        tokio::task::yield_now().await;
                    } else {
                        let _g = lock.lock_shared_async().await.unwrap();
                        let _in = readers.enter();
                        assert_eq!(writers.inside.load(Ordering::SeqCst), 0);
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert_eq!(writers.most(), 1);
    assert!(readers.most() >= 1);
}

#[test]
fn reentrant_handles_count_per_thread_and_still_detect_deadlocks() {
    let dir = tmp();
    let path = dir.path().join("re.lock");
    let lock = Arc::new(FileLock::builder(&path).reentrant().build().unwrap());
    let other = FileLock::builder(&path).reentrant().build().unwrap();
    let outer = lock.lock().unwrap();
    let inner = lock.lock_timeout(SHORT).unwrap();
    assert_eq!(lock.hold_count(), 2);
    // Another handle on the same file is another lock: this thread would
    // wait for itself.
    assert_eq!(other.lock().unwrap_err().kind(), ErrorKind::Deadlock);
    assert_eq!(other.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
    // The async and owned methods never re-enter.
    let rt = current_thread();
    let e = rt
        .block_on(lock.lock_timeout_async(SHORT))
        .map(drop)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert_eq!(
        lock.try_lock_owned().map(drop).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    drop(outer);
    assert!(lock.is_locked().unwrap(), "the inner guard still holds it");
    drop(inner);
    assert!(!lock.is_locked().unwrap());
    assert_eq!(lock.hold_count(), 0);
}

#[test]
fn guards_give_access_to_the_locked_file() {
    let dir = tmp();
    let path = dir.path().join("data.txt");
    std::fs::write(&path, "old").unwrap();
    // A lock made from the data file: the guard writes through that file.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let lock = Arc::new(FileLock::from_file(file).unwrap());
    assert!(lock.file().is_some());
    {
        let g = lock.lock().unwrap();
        let mut f = g.file().unwrap();
        f.set_len(0).unwrap();
        f.rewind().unwrap();
        f.write_all(b"new").unwrap();
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    let g = lock.lock_shared_owned().unwrap();
    let mut text = String::new();
    let mut f = g.file().unwrap();
    f.rewind().unwrap();
    f.read_to_string(&mut text).unwrap();
    assert_eq!(text, "new");
    drop(g);

    // A lock on a path hands out its lock file; a soft lock has none.
    let by_path = FileLock::new(dir.path().join("p.lock")).unwrap();
    assert!(by_path.file().is_none());
    let g = by_path.lock().unwrap();
    let st = g.file().unwrap().metadata().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let named = std::fs::metadata(dir.path().join("p.lock")).unwrap();
        assert_eq!((st.dev(), st.ino()), (named.dev(), named.ino()));
    }
    assert!(st.is_file());
    drop(g);
    let soft = FileLock::builder(dir.path().join("s.lock"))
        .soft()
        .build()
        .unwrap();
    assert!(soft.lock().unwrap().file().is_none());
}

#[test]
fn owned_permits_move_to_other_threads() {
    let dir = tmp();
    let sem = Arc::new(Semaphore::new(dir.path(), "pool", 2).unwrap());
    let witness = Arc::new(Witness::default());
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (sem, witness) = (sem.clone(), witness.clone());
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let permit: OwnedPermit = sem.acquire_owned(Wait::Forever).unwrap();
                    let witness = witness.clone();
                    std::thread::spawn(move || {
                        let _in = witness.enter();
                        std::thread::sleep(Duration::from_micros(200));
                        drop(_in);
                        drop(permit);
                    })
                    .join()
                    .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(witness.entries(), 60);
    assert!(witness.most() <= 2, "{} holders of 2 slots", witness.most());
    assert_eq!(sem.available().unwrap(), 2);
}

/// `LockGuard` must not be `Send` (it is what proves which thread holds a
/// lock); the others must be. Checked by the compiler: if `LockGuard` were
/// `Send`, the call below would be ambiguous and this file would not build.
#[test]
fn only_thread_guards_stay_on_their_thread() {
    trait AmbiguousIfSend<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    impl<T: ?Sized + Send> AmbiguousIfSend<u8> for T {}
    <LockGuard<'static> as AmbiguousIfSend<_>>::check();

    fn send<T: Send + 'static>() {}
    fn send_borrowed<'a, T: Send + 'a>() {}
    send::<OwnedLockGuard>();
    send::<OwnedPermit>();
    send_borrowed::<AsyncLockGuard<'_>>();
}

#[test]
fn forgotten_guards_are_released_with_their_handle() {
    let dir = tmp();
    let path = dir.path().join("forget.lock");
    let lock = FileLock::new(&path).unwrap();
    // A second handle keeps the lock file's entry (and its open file) alive
    // past the first: the forgotten holds must go from its books, not with
    // a closed file.
    let other = FileLock::new(&path).unwrap();
    std::mem::forget(lock.lock_shared().unwrap());
    std::mem::forget(lock.lock_shared().unwrap());
    assert_eq!(lock.hold_count(), 2);
    assert!(other.try_lock().is_err());
    drop(lock);
    assert!(other.try_lock().is_ok());
}

#[test]
fn a_shared_request_behind_its_own_reader_and_a_queued_writer_is_no_deadlock() {
    let dir = tmp();
    let path = dir.path().join("queued.lock");
    let a = FileLock::new(&path).unwrap();
    let b = FileLock::new(&path).unwrap();
    let reader = a.lock_shared().unwrap();
    std::thread::scope(|s| {
        // A writer queues behind our reader, and gives up after a while.
        let writer = s.spawn(|| {
            let w = FileLock::new(&path).unwrap();
            w.lock_timeout(Duration::from_millis(300)).map(drop)
        });
        while !writer.is_finished() && b.try_lock_shared().is_ok() {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Fair to the writer, a second reader waits; it is no deadlock,
        // since the writer may give up — and it does.
        let second = b.lock_shared().expect("no false deadlock");
        assert_eq!(
            writer.join().unwrap().unwrap_err().kind(),
            ErrorKind::Timeout
        );
        drop(second);
    });
    // An exclusive request behind its own reader is a deadlock, provably.
    assert_eq!(b.lock().unwrap_err().kind(), ErrorKind::Deadlock);
    drop(reader);
}
