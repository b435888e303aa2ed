//! One process, many threads and tasks: re-entrancy, exclusion, waiting,
//! deadlock detection, FIFO order, cancel safety.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::*;
use wasmlock::{ErrorKind, FileLock, Mode, Semaphore, Wait};

#[test]
#[ignore = "helper: runs only as a child process"]
fn child_entry() {
    child_main();
}

/// Whether another thread could take the lock right now (through its own handle).
fn free_elsewhere(path: &std::path::Path) -> bool {
    let path = path.to_path_buf();
    std::thread::spawn(move || FileLock::new(&path).unwrap().try_lock().is_ok())
        .join()
        .unwrap()
}

#[test]
fn reentrant_holds_count_up_and_down() {
    let dir = tmp();
    let path = dir.path().join("nest.lock");
    let lock = FileLock::builder(&path).reentrant().build().unwrap();
    let g1 = lock.lock().unwrap();
    let g2 = lock.try_lock().unwrap();
    let g3 = lock.lock_timeout(SHORT).unwrap();
    let g4 = lock.lock_shared().unwrap();
    assert_eq!(lock.hold_count(), 4);
    drop(g3);
    drop(g2);
    drop(g4);
    assert_eq!(lock.hold_count(), 1);
    assert!(!free_elsewhere(&path), "one hold left keeps it locked");
    // Another thread is another owner: it does not re-enter.
    std::thread::scope(|s| {
        s.spawn(|| {
            assert_eq!(lock.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
            assert_eq!(lock.hold_count(), 0);
        });
    });
    drop(g1);
    assert_eq!(lock.hold_count(), 0);
    assert!(free_elsewhere(&path));
}

#[test]
fn a_plain_handle_is_not_reentrant_two_acquisitions_are_two_holds() {
    let dir = tmp();
    let path = dir.path().join("plain.lock");
    let lock = FileLock::new(&path).unwrap();
    let g = lock.lock().unwrap();
    assert_eq!(lock.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(
        lock.lock_timeout(SHORT).unwrap_err().kind(),
        ErrorKind::Timeout
    );
    // Waiting forever for its own guard would never end: refused at once.
    let t = Instant::now();
    assert_eq!(lock.lock().unwrap_err().kind(), ErrorKind::Deadlock);
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(lock.hold_count(), 1);
    drop(g);
    assert_eq!(lock.hold_count(), 0);
    // Two shared guards of one thread are two holds; both must go.
    let r1 = lock.lock_shared().unwrap();
    let r2 = lock.lock_shared().unwrap();
    assert_eq!(lock.hold_count(), 2);
    drop(r1);
    assert!(!free_elsewhere(&path), "the second reader still holds it");
    drop(r2);
    assert!(free_elsewhere(&path));
}

#[test]
fn try_once_fails_at_once_and_timeout_waits_then_fails() {
    let dir = tmp();
    let path = dir.path().join("t.lock");
    let holder = FileLock::new(&path).unwrap();
    let _g = holder.lock().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let other = FileLock::new(&path).unwrap();
            let t = Instant::now();
            let e = other.try_lock().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::WouldBlock);
            assert!(t.elapsed() < Duration::from_secs(1));
            assert!(e.to_string().contains("t.lock"), "names the path: {e}");

            let t = Instant::now();
            let e = other.lock_timeout(Duration::from_millis(200)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Timeout);
            assert!(t.elapsed() >= Duration::from_millis(200));
            assert_eq!(e.path(), path.as_path());

            let deadline = Instant::now() + Duration::from_millis(50);
            let e = other
                .lock_with(Mode::Exclusive, Wait::Deadline(deadline))
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Timeout);
            assert!(Instant::now() >= deadline);
        });
    });
}

#[test]
fn a_waiter_gets_the_lock_when_it_is_released() {
    let dir = tmp();
    let path = dir.path().join("handoff.lock");
    let lock = FileLock::new(&path).unwrap();
    let g = lock.lock().unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let _g = lock.lock().unwrap();
            Instant::now()
        });
        std::thread::sleep(Duration::from_millis(100));
        let released = Instant::now();
        drop(g);
        let acquired = waiter.join().unwrap();
        assert!(acquired >= released, "the waiter got in before the release");
    });
}

#[test]
fn threads_sharing_one_handle_exclude_each_other() {
    let dir = tmp();
    let lock = FileLock::new(dir.path().join("shared-handle.lock")).unwrap();
    let counter = dir.path().join("counter");
    std::fs::write(&counter, "0").unwrap();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..100 {
                    let _g = lock.lock().unwrap();
                    bump(&counter);
                }
            });
        }
    });
    assert_eq!(read_counter(&counter), 800);
}

/// A handle on `path` that has opened its lock file, and an open file of
/// its own on it, for a holder outside the engine (the kernel treats it as
/// another process).
fn engine_and_outside(path: &std::path::Path) -> (FileLock, std::fs::File) {
    let lock = FileLock::new(path).unwrap();
    drop(lock.lock().unwrap());
    let outside = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    (lock, outside)
}

/// The uncontended path books a hold before it asks the kernel; when the
/// kernel says no (another open file holds the lock), the hold and the
/// process's claim on the kernel lock are taken back. Threads race that
/// window here against a holder outside the engine, with a witness of who is
/// inside. (That a waiter queued behind a refused claim is served is a unit
/// test in the manager, which can hold the window open.)
#[test]
fn a_claim_the_kernel_refuses_is_taken_back() {
    let dir = tmp();
    let path = dir.path().join("claimed.lock");
    let (lock, outside) = engine_and_outside(&path);
    let inside = AtomicUsize::new(0);
    let most = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let enter = || {
        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(now, Ordering::SeqCst);
        std::thread::yield_now();
        inside.fetch_sub(1, Ordering::SeqCst);
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..50 {
                fs4::FileExt::lock(&outside).unwrap();
                enter();
                std::thread::sleep(Duration::from_micros(300));
                fs4::FileExt::unlock(&outside).unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        for t in 0..6 {
            let (lock, enter, refused) = (&lock, &enter, &refused);
            s.spawn(move || {
                for i in 0..200 {
                    let guard = if (t + i) % 2 == 0 {
                        match lock.try_lock() {
                            Ok(g) => g,
                            Err(e) => {
                                assert_eq!(e.kind(), ErrorKind::WouldBlock);
                                refused.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        }
                    } else {
                        lock.lock().unwrap()
                    };
                    enter();
                    drop(guard);
                }
            });
        }
    });
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "two holders were inside at once"
    );
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "the outside holder never refused a try"
    );
    // Nothing stayed booked or held: the outside file takes the lock at once.
    assert!(fs4::FileExt::try_lock(&outside).is_ok());
}

#[test]
fn two_handles_in_one_process_exclude_each_other() {
    let dir = tmp();
    let path = dir.path().join("two.lock");
    let total = count_with_threads(dir.path(), 6, 100, || FileLock::new(&path).unwrap());
    assert_eq!(total, 600);
}

// Symbolic links need a privilege on Windows.
#[cfg(unix)]
#[test]
fn different_spellings_of_one_file_are_one_lock() {
    let dir = tmp();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("sub"), dir.path().join("link")).unwrap();
    let a = FileLock::new(dir.path().join("sub/x.lock")).unwrap();
    let b = FileLock::new(dir.path().join("link/../sub/./x.lock")).unwrap();
    let c = FileLock::new(dir.path().join("link/x.lock")).unwrap();
    let _g = a.lock().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            assert_eq!(b.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
            assert_eq!(c.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
        });
    });
}

#[test]
fn a_panicking_holder_releases_the_lock() {
    let dir = tmp();
    let path = dir.path().join("panic.lock");
    let lock = FileLock::new(&path).unwrap();
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            let _g = lock.lock().unwrap();
            panic!("boom while holding");
        })
        .join()
    });
    assert!(r.is_err());
    assert!(free_elsewhere(&path));
}

#[test]
fn dropping_the_handle_releases_forgotten_guards() {
    let dir = tmp();
    let path = dir.path().join("forgotten.lock");
    let lock = FileLock::new(&path).unwrap();
    std::mem::forget(lock.lock().unwrap());
    assert!(!free_elsewhere(&path));
    drop(lock);
    assert!(free_elsewhere(&path));
}

#[test]
fn waiting_forever_on_a_lock_this_thread_holds_is_a_deadlock_error() {
    let dir = tmp();
    let path = dir.path().join("dl.lock");
    let a = FileLock::new(&path).unwrap();
    let b = FileLock::new(&path).unwrap();
    let g = a.lock().unwrap();
    let t = Instant::now();
    let e = b.lock().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Deadlock);
    assert!(t.elapsed() < Duration::from_secs(1), "reported at once");
    assert!(e.to_string().contains("dl.lock"));
    // Finite waits and tries get the ordinary errors.
    assert_eq!(
        b.lock_timeout(SHORT).unwrap_err().kind(),
        ErrorKind::Timeout
    );
    assert_eq!(b.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
    // Shared plus shared is no deadlock.
    drop(g);
    let _r1 = a.lock_shared().unwrap();
    let _r2 = b.lock_shared().unwrap();
    // Another thread is no false positive: it simply waits.
    std::thread::scope(|s| {
        let h = s.spawn(|| b.lock_timeout(SHORT).map(drop).unwrap_err().kind());
        assert_eq!(h.join().unwrap(), ErrorKind::Timeout);
    });
}

#[test]
fn shared_holders_coexist_and_keep_writers_out() {
    let dir = tmp();
    let path = dir.path().join("rw.lock");
    let lock = FileLock::new(&path).unwrap();
    let inside = AtomicUsize::new(0);
    let max_inside = AtomicUsize::new(0);
    let barrier = Barrier::new(4);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let _r = lock.lock_shared().unwrap();
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max_inside.fetch_max(now, Ordering::SeqCst);
                barrier.wait(); // all four readers inside at once
                let other = FileLock::new(&path).unwrap();
                assert_eq!(other.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
                barrier.wait();
                inside.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    assert_eq!(max_inside.load(Ordering::SeqCst), 4);
}

#[test]
fn upgrade_is_refused_and_downgrade_counts() {
    let dir = tmp();
    let lock = FileLock::builder(dir.path().join("up.lock"))
        .reentrant()
        .build()
        .unwrap();
    let r = lock.lock_shared().unwrap();
    let e = lock.lock().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Deadlock);
    assert!(e.to_string().contains("upgrad"), "{e}");
    assert_eq!(lock.hold_count(), 1, "the shared hold is untouched");
    drop(r);
    let w = lock.lock().unwrap();
    let r = lock.lock_shared().unwrap();
    assert_eq!(lock.hold_count(), 2);
    drop(r);
    drop(w);
}

#[test]
fn local_waiters_are_served_in_fifo_order() {
    let dir = tmp();
    let path = dir.path().join("fifo.lock");
    let holder = FileLock::new(&path).unwrap();
    let g = holder.lock().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for i in 0..8 {
        let path = path.clone();
        let order = order.clone();
        threads.push(std::thread::spawn(move || {
            let lock = FileLock::new(&path).unwrap();
            let _g = lock.lock().unwrap();
            order.lock().unwrap().push(i);
        }));
        // Let each waiter queue before the next one arrives.
        std::thread::sleep(Duration::from_millis(30));
    }
    drop(g);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
}

#[test]
fn a_writer_is_not_starved_by_overlapping_local_readers() {
    let dir = tmp();
    let path = dir.path().join("starve.lock");
    let readers_done = AtomicUsize::new(0);
    let writer_in_at = Mutex::new(None);
    std::thread::scope(|s| {
        for r in 0..3 {
            let path = &path;
            let readers_done = &readers_done;
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(10 * r));
                let lock = FileLock::new(path).unwrap();
                for _ in 0..40 {
                    let _g = lock.lock_shared().unwrap();
                    std::thread::sleep(Duration::from_millis(20));
                }
                readers_done.fetch_add(1, Ordering::SeqCst);
            });
        }
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            let lock = FileLock::new(&path).unwrap();
            let _g = lock.lock().unwrap();
            *writer_in_at.lock().unwrap() = Some(readers_done.load(Ordering::SeqCst));
        });
    });
    assert_eq!(
        writer_in_at.lock().unwrap().unwrap(),
        0,
        "the writer got in while every reader still had work left"
    );
}

// Unix: Windows refuses to delete, replace or rename a lock file that
// someone has open, so the case cannot arise there.
#[cfg(unix)]
#[test]
fn the_lock_file_is_replaced_while_waiting_and_the_waiter_follows_the_path() {
    let dir = tmp();
    let path = dir.path().join("moved.lock");
    let holder = FileLock::new(&path).unwrap();
    let g = holder.lock().unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let lock = FileLock::new(&path).unwrap();
            let g = lock.lock().unwrap();
            // Whoever opens the path now must be kept out by our hold.
            let p = path.clone();
            let split = std::thread::spawn(move || FileLock::new(&p).unwrap().try_lock().is_ok())
                .join()
                .unwrap();
            drop(g);
            split
        });
        std::thread::sleep(Duration::from_millis(100));
        std::fs::remove_file(&path).unwrap();
        drop(g);
        assert!(!waiter.join().unwrap(), "the lock was split");
    });
}

/// A peer that deletes its lock file as it lets go (as older py-filelock
/// did): the first waiter granted finds the file gone and releases its grant,
/// which the queue hands to the second waiter at once. Neither may fail: the
/// first forgets the old file and both follow the path.
// Unix: Windows refuses to delete, replace or rename a lock file that
// someone has open, so the case cannot arise there.
#[cfg(unix)]
#[test]
fn waiters_on_one_handle_follow_a_peer_that_deletes_the_lock_file() {
    let dir = tmp();
    let path = dir.path().join("peer.lock");
    let (lock, peer) = engine_and_outside(&path);
    fs4::FileExt::lock(&peer).unwrap();
    std::thread::scope(|s| {
        let waiters: Vec<_> = (0..2)
            .map(|_| s.spawn(|| lock.lock_timeout(Duration::from_secs(10)).map(drop)))
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        std::fs::remove_file(&path).unwrap();
        fs4::FileExt::unlock(&peer).unwrap();
        for waiter in waiters {
            waiter.join().unwrap().unwrap();
        }
    });
    assert!(path.exists(), "the waiters locked what the path names now");
}

#[test]
fn semaphore_never_exceeds_its_slots_across_threads() {
    let dir = tmp();
    let sem = Semaphore::new(dir.path(), "pool", 3).unwrap();
    let inside = AtomicUsize::new(0);
    let max_inside = AtomicUsize::new(0);
    let taken = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..10 {
            s.spawn(|| {
                for _ in 0..30 {
                    let p = sem.acquire().unwrap();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    max_inside.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_micros(300));
                    inside.fetch_sub(1, Ordering::SeqCst);
                    taken.fetch_add(1, Ordering::SeqCst);
                    drop(p);
                }
            });
        }
    });
    assert_eq!(max_inside.load(Ordering::SeqCst), 3);
    assert_eq!(taken.load(Ordering::SeqCst), 300);
    assert_eq!(sem.available().unwrap(), 3, "no slot lost");
    for n in 0..3 {
        assert!(dir.path().join(format!("pool.{n:02}.lock")).exists());
    }
}

#[test]
fn semaphore_try_and_timeout() {
    let dir = tmp();
    let sem = Semaphore::new(dir.path(), "one", 1).unwrap();
    let p = sem.acquire().unwrap();
    assert_eq!(sem.try_acquire().unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(
        sem.acquire_timeout(SHORT).unwrap_err().kind(),
        ErrorKind::Timeout
    );
    assert_eq!(sem.available().unwrap(), 0);
    std::thread::scope(|s| {
        let h = s.spawn(|| sem.acquire_timeout(LONG).map(|p| p.slot()));
        std::thread::sleep(Duration::from_millis(50));
        p.release().unwrap();
        assert_eq!(h.join().unwrap().unwrap(), 0);
    });
    assert!(Semaphore::new(dir.path(), "zero", 0).is_err());
    for bad in ["", "a/", "a/..", "a\0b"] {
        let err = Semaphore::new(dir.path(), bad, 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidPath, "{bad:?}");
    }
    let err = Semaphore::new(dir.path(), "../out", 1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    // A name may have directories before it, like a lock path.
    let nested = Semaphore::new(dir.path(), "a/b", 1).unwrap();
    drop(nested.try_acquire().unwrap());
    assert!(dir.path().join("a/b.00.lock").exists());
}

// Counts threads through /proc.
#[cfg(target_os = "linux")]
#[test]
fn many_async_waiters_use_no_thread_each_and_all_get_the_lock() {
    let dir = tmp();
    let path = dir.path().join("many.lock");
    let rt = two_workers();
    // Held by "another process": a separate handle on a plain thread, so the
    // waiters queue on the process's in-process lock.
    let holder = FileLock::new(&path).unwrap();
    let g = holder.lock().unwrap();
    let lock = Arc::new(FileLock::new(&path).unwrap());
    let got = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..2000)
        .map(|_| {
            let lock = lock.clone();
            let got = got.clone();
            rt.spawn(async move {
                let g = lock.lock_async().await.unwrap();
                got.fetch_add(1, Ordering::SeqCst);
                drop(g);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let during = threads_named("wasmlock-wait");
    assert!(during <= 8, "{during} waiting threads for 2000 waiters");
    assert_eq!(got.load(Ordering::SeqCst), 0);
    drop(g);
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert_eq!(got.load(Ordering::SeqCst), 2000);
    assert!(free_elsewhere(&path));
}

#[test]
fn dropping_or_timing_out_async_waits_never_leaks_the_lock() {
    let dir = tmp();
    let path = dir.path().join("cancel.lock");
    let rt = two_workers();
    let lock = Arc::new(FileLock::new(&path).unwrap());
    rt.block_on(async {
        // A task that keeps taking and giving back the lock...
        let toggler = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let other = FileLock::new(&path).unwrap();
                for _ in 0..300 {
                    let g = other.lock().unwrap();
                    std::thread::sleep(Duration::from_micros(200));
                    drop(g);
                }
            })
        };
        // ...while waiters are cancelled at every possible moment.
        let mut acquired = 0;
        for i in 0..300u64 {
            let waiting = lock.clone();
            let cut = Duration::from_micros(50 + (i * 37) % 400);
            let r = tokio::time::timeout(cut, async move {
                let g = waiting.lock_async().await.unwrap();
                drop(g);
            })
            .await;
            acquired += r.is_ok() as u32;
            if i % 3 == 0 {
                let r = lock.lock_timeout_async(Duration::from_micros(100)).await;
                if let Err(e) = r {
                    assert_eq!(e.kind(), ErrorKind::Timeout);
                }
            }
        }
        toggler.await.unwrap();
        eprintln!("acquired {acquired} of 300 cancellable waits");
    });
    assert_eq!(lock.hold_count(), 0);
    assert!(free_elsewhere(&path), "a cancelled wait left the lock held");
}

#[test]
fn async_tasks_are_owners_and_exclude_each_other() {
    let dir = tmp();
    let counter = dir.path().join("counter");
    std::fs::write(&counter, "0").unwrap();
    let lock = Arc::new(FileLock::new(dir.path().join("tasks.lock")).unwrap());
    let rt = two_workers();
    rt.block_on(async {
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let lock = lock.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    for _ in 0..50 {
                        let _g = lock.lock_async().await.unwrap();
                        bump(&counter);
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert_eq!(read_counter(&counter), 800);
}
