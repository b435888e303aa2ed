//! A native process for the mixed load tests: bumps a counter file N times
//! under a `wasmlock` lock, the way the counter plugin does from a guest.
//!
//! ```text
//! wasmlock-counter LOCK COUNTER N [os|soft|etcd=URL]
//! ```
//!
//! LOCK is a lock file, or with `etcd=URL` the name of a lock in that
//! cluster.

use wasmlock::etcd::Cluster;
use wasmlock::{FileLock, Kind};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [lock, counter, n, rest @ ..] = args.as_slice() else {
        return Err("usage: wasmlock-counter LOCK COUNTER N [os|soft|etcd=URL]".into());
    };
    // Kept for as long as its lock: the cluster's lease lives with it.
    let cluster;
    let lock = match rest.first().map(String::as_str) {
        None | Some("os") => FileLock::builder(lock).kind(Kind::Os).build()?,
        Some("soft") => FileLock::builder(lock).kind(Kind::Soft).build()?,
        Some(other) => match other.strip_prefix("etcd=") {
            Some(url) => {
                cluster = Cluster::connect([url])?;
                cluster.lock(lock)?
            }
            None => return Err(format!("unknown kind {other:?}").into()),
        },
    };
    for _ in 0..n.parse::<u64>()? {
        let _guard = lock.lock()?;
        wasmlock_tests::bump(std::path::Path::new(counter))?;
    }
    Ok(())
}
