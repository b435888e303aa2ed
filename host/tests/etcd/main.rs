//! Locks in a real etcd: exclusion and fences across processes, interop
//! with `etcdctl lock`, waits that end early, and what failures do to a
//! hold (killed, stopped and cut-off holders, revoked leases).

mod cli;
#[path = "../common/mod.rs"]
mod common;
mod failures;
mod harness;
mod members;
mod proxy;
mod review;
mod waits;

use std::io::Write as _;
use std::time::{Duration, Instant};

use common::*;
use harness::Etcd;
use wasmlock::etcd::Cluster;
use wasmlock::{ErrorKind, Wait};

/// The TTL of the children's leases: etcd's floor.
const TTL: Duration = Duration::from_secs(2);

/// A connection to the members at `urls` (comma-separated).
fn cluster(urls: &str) -> Cluster {
    urls.split(',')
        .fold(Cluster::builder(), |b, url| b.endpoint(url))
        .ttl(TTL)
        .connect()
        .unwrap()
}

/// Seconds since the Unix epoch, to the millisecond: the one clock of the
/// members test's logs.
fn unix_time() -> String {
    format!(
        "{:.3}",
        std::time::UNIX_EPOCH.elapsed().unwrap().as_secs_f64()
    )
}

struct UnixTime;

impl tracing_subscriber::fmt::time::FormatTime for UnixTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        w.write_str(&unix_time())
    }
}

fn read_line() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim().to_owned()),
    }
}

/// A child: `ROLE URL NAME ...`, speaking the line protocol of `Child`.
#[test]
#[ignore]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    let words: Vec<&str> = role.split('\u{1f}').collect();
    match words[..] {
        // Hold the lock; answer `lost` with whether the hold is lost;
        // `release` (or the end of input) releases.
        ["hold", url, name] => {
            let cluster = cluster(url);
            let lock = cluster.lock(name).unwrap();
            let guard = lock.lock().unwrap();
            println!("LOCKED {} {}", guard.fence().unwrap(), now_us());
            while read_line().as_deref() == Some("lost") {
                println!("LOST {}", guard.is_lost());
            }
            match guard.unlock() {
                Ok(()) => println!("RELEASED ok"),
                Err(e) => println!("RELEASED {:?}", e.kind()),
            }
        }
        // Answer each `try` with one attempt's outcome.
        ["try", url, name] => {
            let cluster = cluster(url);
            let lock = cluster.lock(name).unwrap();
            while read_line().is_some() {
                match lock.try_lock() {
                    Ok(_) => println!("RESULT ok"),
                    Err(e) => println!("RESULT {:?}", e.kind()),
                }
            }
        }
        // Wait for the lock, say when it came and its fence, hold it until
        // told.
        ["wait", url, name] => {
            let cluster = cluster(url);
            let lock = cluster.lock(name).unwrap();
            println!("WAITING");
            let guard = lock.lock().unwrap();
            println!("LOCKED {} {}", guard.fence().unwrap(), now_us());
            let _ = read_line();
            drop(guard);
            println!("RELEASED ok");
        }
        // Bump the counter `n` times under the lock, from `threads` threads.
        ["count", url, name, counter, n, threads] => {
            let cluster = cluster(url);
            let lock = cluster.lock(name).unwrap();
            let n: usize = n.parse().unwrap();
            std::thread::scope(|s| {
                for _ in 0..threads.parse().unwrap() {
                    s.spawn(|| {
                        for _ in 0..n {
                            let _g = lock.lock().unwrap();
                            bump(counter.as_ref());
                        }
                    });
                }
            });
            println!("DONE");
        }
        // Like `count`, `n` times from `threads` threads, and check that
        // nobody else is inside (the witness in `dir`), that fences grow
        // from one hold to the next (the file `fence`, a fenced resource)
        // and that no release says the hold was lost. Members may be
        // stopped for longer than an election: a lease long enough to
        // outlive one, and patience for a new leader.
        ["fenced", url, name, dir, n, threads] => {
            // The engine's debug events, for the members test to show beside
            // the times it stopped members when it fails.
            let log = std::path::Path::new(dir).join(format!("log-{}", std::process::id()));
            let log = std::fs::File::create(log).unwrap();
            writeln!(&log, "{} talks to {url}", unix_time()).unwrap();
            // Into the log too: the test's own output is what CI keeps, and
            // a child's stderr is only mixed into it.
            let panics = log.try_clone().unwrap();
            let report = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let _ = writeln!(&panics, "{} PANIC {info}", unix_time());
                report(info);
            }));
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_timer(UnixTime)
                .with_writer(std::sync::Mutex::new(log))
                .init();
            let cluster = url
                .split(',')
                .fold(Cluster::builder(), |b, url| b.endpoint(url))
                .ttl(Duration::from_secs(6))
                .timeout(Duration::from_secs(10))
                .connect()
                .unwrap();
            let lock = cluster.lock(name).unwrap();
            let dir = std::path::Path::new(dir);
            let witness = Witness::new(dir.join("witness"));
            std::thread::scope(|s| {
                for _ in 0..threads.parse().unwrap() {
                    s.spawn(|| {
                        for _ in 0..n.parse().unwrap() {
                            let guard = lock.lock().unwrap();
                            let inside = witness.enter(wasmlock::Mode::Exclusive);
                            let fence = guard.fence().unwrap();
                            let last: u64 = std::fs::read_to_string(dir.join("fence"))
                                .map_or(0, |f| f.trim().parse().unwrap());
                            assert!(fence > last, "VIOLATION: fence {fence} after {last}");
                            std::fs::write(dir.join("fence"), fence.to_string()).unwrap();
                            bump(&dir.join("counter"));
                            drop(inside);
                            guard.unlock().unwrap();
                        }
                    });
                }
            });
            println!("DONE");
        }
        // `n` tasks wait for the lock; say how many threads that took;
        // on `go`, all but the first `served` give up; the rest are served.
        ["crowd", url, name, counter, n, served] => {
            let cluster = cluster(url);
            let lock = std::sync::Arc::new(cluster.lock(name).unwrap());
            let counter = std::path::PathBuf::from(counter);
            let before = threads_named("wasmlock-wait");
            two_workers().block_on(async {
                let mut tasks: Vec<_> = (0..n.parse().unwrap())
                    .map(|_| {
                        let (lock, counter) = (lock.clone(), counter.clone());
                        tokio::spawn(async move {
                            let _g = lock.lock_owned_async().await.unwrap();
                            bump(&counter);
                        })
                    })
                    .collect();
                tokio::time::sleep(Duration::from_millis(500)).await;
                println!("QUEUED {}", threads_named("wasmlock-wait") - before);
                let _ = read_line();
                let gave_up: Vec<_> = tasks.drain(served.parse::<usize>().unwrap()..).collect();
                gave_up.iter().for_each(tokio::task::JoinHandle::abort);
                for t in gave_up {
                    assert!(t.await.unwrap_err().is_cancelled());
                }
                println!("ABORTED");
                for t in tasks {
                    t.await.unwrap();
                }
            });
            println!("DONE");
        }
        _ => panic!("unknown role {role:?}"),
    }
    std::process::exit(0);
}

fn spawn(role: &str, etcd: &Etcd, name: &str, more: &[&str]) -> Child {
    let mut words = vec![role, &etcd.url, name];
    words.extend_from_slice(more);
    Child::spawn(&words)
}

/// `LOCKED <fence> <micros>` → (fence, micros).
fn locked(child: &mut Child) -> (u64, u128) {
    let rest = child.expect("LOCKED", LONG);
    let mut words = rest.split(' ');
    let fence = words.next().unwrap().parse().unwrap();
    let at = words.next().unwrap().parse().unwrap();
    (fence, at)
}

#[test]
fn another_process_holding_excludes_us_and_later_fences_are_greater() {
    let Some(etcd) = Etcd::start() else { return };
    let mut holder = spawn("hold", &etcd, "jobs", &[]);
    let (their_fence, _) = locked(&mut holder);

    let cluster = cluster(&etcd.url);
    let lock = cluster.lock("jobs").unwrap();
    let err = lock.try_lock().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    assert!(err.to_string().contains("jobs"), "{err}");
    assert_eq!(
        lock.lock_timeout(Duration::from_millis(300))
            .unwrap_err()
            .kind(),
        ErrorKind::Timeout
    );
    assert_eq!(
        etcd.keys("jobs/").len(),
        1,
        "the timed-out wait left its key"
    );

    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let guard = lock.lock_timeout(LONG).unwrap();
            let fence = guard.fence().unwrap();
            assert!(fence > their_fence, "fence {fence} after {their_fence}");
            assert!(lock.is_locked().unwrap());
            let holder_info = lock.holder().unwrap().unwrap();
            assert_eq!(holder_info.pid, Some(std::process::id()));
            assert_eq!(holder_info.fence, Some(fence));
            guard.unlock().unwrap();
        });
        std::thread::sleep(Duration::from_millis(200));
        holder.send("release");
        assert_eq!(holder.expect("RELEASED", LONG), "ok");
        waiter.join().unwrap();
    });
    holder.finish();
    // The deletion runs in the background; dropping the cluster revokes
    // the lease, which takes whatever is left with it.
    drop(lock);
    drop(cluster);
    assert_eq!(etcd.keys("jobs/"), Vec::<String>::new());
}

#[test]
fn two_holds_in_one_process_are_two_grants_and_exclude_each_other() {
    let Some(etcd) = Etcd::start() else { return };
    let cluster = cluster(&etcd.url);
    let a = cluster.lock("one").unwrap();
    let b = cluster.lock("one").unwrap();
    let first = a.lock().unwrap();
    assert_eq!(b.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(a.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
    let f1 = first.fence().unwrap();
    drop(first);
    let second = b.lock_timeout(LONG).unwrap();
    let f2 = second.fence().unwrap();
    assert!(f2 > f1, "a local hand-off is a new grant: {f2} after {f1}");
    assert_eq!(etcd.keys("one/").len(), 1);
}

#[test]
fn shared_requests_are_refused() {
    let Some(etcd) = Etcd::start() else { return };
    let cluster = cluster(&etcd.url);
    let lock = cluster.lock("ro").unwrap();
    let err = lock.try_lock_shared().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("etcd:ro"), "{err}");
}

#[test]
fn processes_and_threads_keep_a_counter_exact() {
    let Some(etcd) = Etcd::start() else { return };
    let dir = tmp();
    let counter = dir.path().join("counter");
    let counter = counter.to_str().unwrap();
    let procs: Vec<Child> = (0..4)
        .map(|_| spawn("count", &etcd, "counter", &[counter, "25", "2"]))
        .collect();
    for mut p in procs {
        p.expect("DONE", Duration::from_secs(120));
        p.finish();
    }
    assert_eq!(read_counter(counter.as_ref()), 4 * 25 * 2);
}

#[test]
fn async_tasks_of_one_process_take_turns() {
    let Some(etcd) = Etcd::start() else { return };
    let dir = tmp();
    let counter = dir.path().join("counter");
    let cluster = cluster(&etcd.url);
    let lock = std::sync::Arc::new(cluster.lock("tasks").unwrap());
    let rt = two_workers();
    rt.block_on(async {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let lock = lock.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    for _ in 0..5 {
                        let _g = lock.lock_owned_async().await.unwrap();
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
    assert_eq!(read_counter(&counter), 100);
}

#[test]
fn etcdctl_lock_and_ours_exclude_each_other() {
    let Some(etcd) = Etcd::start() else { return };
    // etcdctl holds, its command waiting on a fifo (etcdctl gives it no
    // stdin): we wait.
    let dir = tmp();
    let fifo = dir.path().join("go");
    let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
    let script = format!(
        "echo LOCKED; read line < '{}'; echo RELEASED",
        fifo.display()
    );
    let mut theirs =
        Child::start(etcd.ctl_command(&["lock", "shared-name", "--", "sh", "-c", &script]));
    theirs.expect("LOCKED", LONG);
    let cluster = cluster(&etcd.url);
    let lock = cluster.lock("shared-name").unwrap();
    assert_eq!(lock.try_lock().unwrap_err().kind(), ErrorKind::WouldBlock);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| lock.lock_timeout(LONG).map(|g| g.fence()));
        std::thread::sleep(Duration::from_millis(200));
        assert!(!waiter.is_finished(), "we got the lock etcdctl holds");
        std::fs::write(&fifo, "go\n").unwrap();
        theirs.expect("RELEASED", LONG);
        assert!(waiter.join().unwrap().unwrap().is_some());
    });
    theirs.finish();

    // We hold: etcdctl waits until we let go.
    let guard = lock.lock().unwrap();
    let mut theirs =
        Child::start(etcd.ctl_command(&["lock", "shared-name", "--", "echo", "THEIRS"]));
    assert!(
        !theirs.says_within("THEIRS", Duration::from_millis(500)),
        "etcdctl got the lock we hold"
    );
    drop(guard);
    theirs.expect("THEIRS", LONG);
}

#[test]
fn waiters_from_three_processes_are_served_in_arrival_order() {
    let Some(etcd) = Etcd::start() else { return };
    let cluster = cluster(&etcd.url);
    let lock = cluster.lock("fifo").unwrap();
    let guard = lock.lock().unwrap();
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let mut w = spawn("wait", &etcd, "fifo", &[]);
        w.expect("WAITING", LONG);
        // Its key is in the queue before the next one starts.
        let deadline = Instant::now() + LONG;
        while etcd.keys("fifo/").len() < waiters.len() + 2 {
            assert!(Instant::now() < deadline, "waiter's key did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        waiters.push(w);
    }
    drop(guard);
    let mut last = 0;
    for w in &mut waiters {
        let (fence, _) = locked(w);
        assert!(fence > last);
        last = fence;
        w.send("go");
        w.expect("RELEASED", LONG);
    }
    for w in waiters {
        w.finish();
    }
}

#[test]
fn an_unreachable_cluster_is_unavailable_naming_the_lock() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cluster = Cluster::builder()
        .endpoint(format!("http://127.0.0.1:{port}"))
        .timeout(Duration::from_millis(500))
        .connect()
        .unwrap();
    let lock = cluster.lock("nowhere").unwrap();
    let started = Instant::now();
    for result in [
        lock.try_lock().map(drop),
        lock.lock().map(drop),
        lock.lock_with(wasmlock::Mode::Exclusive, Wait::Timeout(LONG))
            .map(drop),
    ] {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.to_string().contains("etcd:nowhere"), "{err}");
        assert!(err.to_string().contains(&port.to_string()), "{err}");
    }
    assert!(
        started.elapsed() < LONG,
        "an unreachable cluster made us wait"
    );
}

#[test]
fn bad_names_and_endpoints_are_refused() {
    let err = Cluster::builder().connect().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidPath);
    let err = Cluster::connect(["not a url"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidPath);
    let cluster = Cluster::connect(["http://127.0.0.1:1"]).unwrap();
    for bad in ["", "a\0b"] {
        assert_eq!(
            cluster.lock(bad).unwrap_err().kind(),
            ErrorKind::InvalidPath
        );
    }
    let long = "x".repeat(wasmlock::etcd::MAX_NAME_LEN + 1);
    assert_eq!(
        cluster.lock(&long).unwrap_err().kind(),
        ErrorKind::InvalidPath
    );
}
