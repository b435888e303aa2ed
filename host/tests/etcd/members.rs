//! A cluster of three members. A waiter's looks are serializable (the
//! member's own state, which may lag behind the cluster), so clients of
//! different members, and clients whose requests go to several, must still
//! never hold at once, also while members fall behind and catch up; and a
//! client given every member goes on when one of them dies.

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
    // Two of the members are stopped in turn: a stopped member falls
    // behind, and answers from what it has seen until it catches up.
    let done = AtomicBool::new(false);
    let stops = std::thread::scope(|s| {
        let stopper = s.spawn(|| {
            let mut stops = 0;
            while !done.load(Ordering::Relaxed) {
                for member in &members[1..] {
                    let pid = member.pid() as i32;
                    // SAFETY: signals to a child of ours.
                    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
                    std::thread::sleep(Duration::from_millis(120));
                    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
                    std::thread::sleep(Duration::from_millis(40));
                    stops += 1;
                }
            }
            stops
        });
        for mut p in procs {
            p.expect("DONE", Duration::from_secs(180));
            p.finish();
        }
        done.store(true, Ordering::Relaxed);
        stopper.join().unwrap()
    });
    assert!(stops >= 4, "members were stopped {stops} times");
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
        .ttl(TTL)
        // A new leader may have to be elected (about a second).
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
