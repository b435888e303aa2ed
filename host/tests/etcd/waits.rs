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
fn a_thousand_waiting_tasks_cost_one_key() {
    let Some(etcd) = Etcd::start() else { return };
    let mut holder = spawn("hold", &etcd, "crowd", &[]);
    locked(&mut holder);
    let dir = tmp();
    let counter = dir.path().join("counter");
    let cluster = cluster(&etcd.url);
    let lock = Arc::new(cluster.lock("crowd").unwrap());
    let rt = two_workers();
    rt.block_on(async {
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let lock = lock.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let _g = lock.lock_owned_async().await.unwrap();
                    bump(&counter);
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            etcd.keys("crowd/").len(),
            2,
            "the holder's key and one of ours"
        );
        holder.send("release");
        for t in tasks {
            t.await.unwrap();
        }
    });
    holder.expect("RELEASED", LONG);
    holder.finish();
    assert_eq!(read_counter(&counter), 1000);
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
