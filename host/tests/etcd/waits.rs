//! Waits that end early leave nothing behind, many waiters cost little, and
//! a waiting task never holds up its executor.

use std::sync::Arc;
use std::time::Duration;

use super::*;

#[test]
fn a_cancelled_async_wait_leaves_no_key_and_later_fences_grow() {
    let Some(etcd) = Etcd::start() else { return };
    let mut holder = spawn("hold", &etcd, "cancel", &[]);
    let (their_fence, _) = locked(&mut holder);
    let cluster = cluster(&etcd.url);
    let lock = Arc::new(cluster.lock("cancel").unwrap());
    let rt = two_workers();
    rt.block_on(async {
        let waiting = tokio::spawn({
            let lock = lock.clone();
            async move { lock.lock_owned_async().await.map(drop) }
        });
        // Its key is queued behind the holder's.
        etcd.until_keys("cancel/", 2);
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
    });
    etcd.until_keys("cancel/", 1);
    holder.send("release");
    holder.expect("RELEASED", LONG);
    holder.finish();
    let guard = lock.try_lock().unwrap();
    assert!(guard.fence().unwrap() > their_fence);
}

#[test]
fn ten_thousand_waiting_tasks_cost_one_key_two_watches_and_one_thread() {
    let Some(etcd) = Etcd::start() else { return };
    let mut holder = spawn("hold", &etcd, "crowd", &[]);
    locked(&mut holder);
    let watchers = || etcd.metric("etcd_debugging_mvcc_watcher_total", |_| true);
    let watchers_before = watchers();
    let dir = tmp();
    let counter = dir.path().join("counter");
    // In a process of its own, where no sibling test's threads are counted.
    let mut crowd = spawn("crowd", &etcd, "crowd", &[p(&counter), "10000", "100"]);
    let threads: usize = crowd.expect("QUEUED", LONG).parse().unwrap();
    assert_eq!(threads, 1, "threads started to wait for the name");
    assert_eq!(
        etcd.keys("crowd/").len(),
        2,
        "the holder's key and one of the crowd's"
    );
    // One on its own key (to queue again at once if it goes), one on the
    // key ahead.
    assert_eq!(watchers(), watchers_before + 2.0, "two watches for all");
    // All but the first hundred give up while they wait.
    crowd.send("go");
    crowd.expect("ABORTED", LONG);
    holder.send("release");
    holder.expect("RELEASED", LONG);
    crowd.expect("DONE", LONG);
    crowd.finish();
    holder.finish();
    assert_eq!(read_counter(&counter), 100);
    etcd.until_keys("crowd/", 0);
}

#[test]
fn a_task_waiting_for_an_etcd_lock_does_not_hold_up_its_thread() {
    let Some(etcd) = Etcd::start() else { return };
    let mut holder = spawn("hold", &etcd, "busy", &[]);
    locked(&mut holder);
    let cluster = cluster(&etcd.url);
    let lock = cluster.lock("busy").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let waiting = tokio::task::spawn_local(async move {
                    lock.lock_timeout_async(LONG).await.map(|g| g.fence())
                });
                // The only thread goes on with other work meanwhile.
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                assert!(!waiting.is_finished());
                holder.send("release");
                assert!(waiting.await.unwrap().unwrap().is_some());
            })
            .await;
    });
    holder.expect("RELEASED", LONG);
    holder.finish();
}

#[test]
fn a_waiter_hears_of_the_key_ahead_not_of_the_keys_between() {
    let Some(etcd) = Etcd::start() else { return };
    let mut holder = spawn("hold", &etcd, "between", &[]);
    locked(&mut holder);
    let mut waiter = spawn("wait", &etcd, "between", &[]);
    waiter.expect("WAITING", LONG);
    let watchers = || etcd.metric("etcd_debugging_mvcc_watcher_total", |_| true);
    let mut queued = etcd.until_keys("between/", 2);
    queued.sort();
    // Its look done and its watches made: keys put before would not be
    // among those it watches even with a range.
    let deadline = Instant::now() + LONG;
    while watchers() < 2.0 {
        assert!(Instant::now() < deadline, "the waiter never watched");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (low, high) = (&queued[0], &queued[1]);
    // Keys that sort between the holder's and the waiter's come and go, as
    // other waiters' keys do: no event of theirs may reach the waiter
    // (with N waiters, that would be N² events for every hand-off).
    let events = || etcd.metric("etcd_debugging_mvcc_events_total", |_| true);
    let before = events();
    for round in 0..2 {
        for i in 0..20 {
            let between = format!("{low}0{round}{i:02}");
            assert!(
                &between > low && &between < high,
                "{between} between {low} and {high}"
            );
            assert!(etcd.ctl(&["put", &between, "x"]).status.success());
        }
        assert!(
            etcd.ctl(&["del", "--prefix", &format!("{low}0{round}")])
                .status
                .success()
        );
    }
    assert_eq!(
        events() - before,
        0.0,
        "events sent to the waiter's watches"
    );
    holder.send("release");
    holder.expect("RELEASED", LONG);
    locked(&mut waiter);
    waiter.send("go");
    waiter.expect("RELEASED", LONG);
    waiter.finish();
    holder.finish();
    etcd.until_keys("between/", 0);
}
