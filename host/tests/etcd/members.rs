//! A cluster of three members. A waiter's looks are serializable (the
//! member's own state, which may lag behind the cluster), so clients of
//! different members, and clients whose requests go to several, must still
//! never hold at once, also while members fall behind and catch up and
//! leaders are replaced; and a client given every member goes on when one
//! of them dies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::*;

#[test]
fn clients_of_lagging_members_never_hold_at_once_and_fences_grow() {
    let Some(members) = Etcd::start_members(3) else {
        return;
    };
    let dir = tmp();
    let d = dir.path().to_str().unwrap();
    let every: Vec<&str> = members.iter().map(|m| m.url.as_str()).collect();
    let every = every.join(",");
    // One process for each member, and two whose requests are spread over
    // all three (a put answered by one member, a look by another).
    let mut urls: Vec<&str> = members.iter().map(|m| m.url.as_str()).collect();
    urls.extend([every.as_str(), every.as_str()]);
    let (n, threads) = (30, 2);
    let procs: Vec<Child> = urls
        .iter()
        .map(|url| {
            let (n, threads) = (n.to_string(), threads.to_string());
            Child::spawn(&["fenced", url, "lagging", d, &n, &threads])
        })
        .collect();
    // Every member is stopped in turn, the leader among them: a stopped
    // member falls behind and answers from what it has seen until it
    // catches up; a stopped leader is replaced (after etcd's election
    // timeout, 1 s), and requests in flight meanwhile are answered
    // `Unavailable` and asked again. No release may call that a loss.
    let done = AtomicBool::new(false);
    let stops = std::thread::scope(|s| {
        let stopper = s.spawn(|| {
            let mut stops = 0;
            for member in members.iter().cycle() {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                // Every fourth stop is the leader's, past an election; the
                // new leader gets a second before the next stop.
                let (member, stopped, settle) = match stops % 4 {
                    0 => (leader(&members), Duration::from_millis(2500), 1000),
                    _ => (member, Duration::from_millis(150), 100),
                };
                let pid = member.pid() as i32;
                // Shown when the test fails, beside the children's logs.
                eprintln!("{} {} stopped for {stopped:?}", unix_time(), member.url);
                // SAFETY: signals to a child of ours.
                assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
                std::thread::sleep(stopped);
                assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
                std::thread::sleep(Duration::from_millis(settle));
                stops += 1;
            }
            stops
        });
        // Set however this thread leaves (a failed child panics it), so
        // that the stopper ends and the members are continued; a failure
        // shows the keys and leases the cluster still has, and what the
        // children's leases went through.
        struct Done<'a>(&'a AtomicBool, &'a [Etcd], &'a std::path::Path);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
                if std::thread::panicking() {
                    for m in self.1 {
                        // R, S: running or sleeping; T: stopped; Z: dead.
                        let stat = std::fs::read_to_string(format!("/proc/{}/stat", m.pid()));
                        let state = stat.ok().and_then(|s| {
                            let (_, after) = s.rsplit_once(") ")?;
                            after.split(' ').next().map(str::to_owned)
                        });
                        eprintln!("{} {} state {state:?}", unix_time(), m.url);
                    }
                    let count = std::fs::read_to_string(self.2.join("counter"));
                    eprintln!("counter at {count:?}");
                    eprintln!("{}", self.1[0].state("lagging/"));
                    print_lease_logs(self.2);
                }
            }
        }
        let finished = Done(&done, &members, dir.path());
        for mut p in procs {
            p.expect("DONE", Duration::from_secs(240));
            p.finish();
        }
        drop(finished);
        stopper.join().unwrap()
    });
    assert!(stops >= 4, "members were stopped {stops} times");
    let elections = members
        .iter()
        .map(|m| m.metric("etcd_server_leader_changes_seen_total", |_| true))
        .fold(0.0, f64::max);
    assert!(elections >= 2.0, "no leader was replaced ({elections})");
    assert_eq!(
        read_counter(&dir.path().join("counter")),
        (urls.len() * n * threads) as u64
    );
    members[0].until_keys("lagging/", 0);
}

#[test]
fn a_client_given_every_member_goes_on_when_one_dies() {
    let Some(mut members) = Etcd::start_members(3) else {
        return;
    };
    let every: Vec<&str> = members.iter().map(|m| m.url.as_str()).collect();
    let cluster = every
        .iter()
        .fold(Cluster::builder(), |b, url| b.endpoint(*url))
        // A new leader may have to be elected (a second or two): the
        // lease must outlive the keep-alives that go unanswered meanwhile.
        .ttl(Duration::from_secs(6))
        .timeout(Duration::from_secs(10))
        .connect()
        .unwrap();
    let lock = cluster.lock("survivor").unwrap();
    let mut last = 0;
    for round in 0..2 {
        for _ in 0..10 {
            let guard = lock.lock_timeout(LONG).unwrap();
            let fence = guard.fence().unwrap();
            assert!(fence > last, "fence {fence} after {last}");
            last = fence;
            guard.unlock().unwrap();
        }
        if round == 0 {
            // The last member dies (SIGKILL); two of three are a quorum.
            drop(members.pop());
        }
    }
    // Another process, talking to a member that lives, takes it after us
    // with a greater fence.
    let mut other = Child::spawn(&["hold", &members[0].url, "survivor"]);
    let (fence, _) = locked(&mut other);
    assert!(fence > last);
    other.send("release");
    other.expect("RELEASED ok", LONG);
    other.finish();
}

/// The lines of the children's logs in `dir` that tell of their leases
/// and keep-alives, their warnings, and how they failed.
fn print_lease_logs(dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("log-") {
            let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let told = ["talks to", "etcd lease", "keep-alive", " WARN ", "PANIC"];
            let leases = log.lines().filter(|l| told.iter().any(|w| l.contains(w)));
            for line in leases {
                eprintln!("child {pid}: {line}");
            }
        }
    }
}

/// The member that leads (etcd's own gauge, read while none is stopped),
/// once there is one again.
fn leader(members: &[Etcd]) -> &Etcd {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let leads = |m: &&Etcd| m.metric("etcd_server_is_leader", |_| true) == 1.0;
        if let Some(leader) = members.iter().find(leads) {
            return leader;
        }
        assert!(std::time::Instant::now() < deadline, "no leader for 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}
