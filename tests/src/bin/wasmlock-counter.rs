//! A native process for the mixed load tests: bumps a counter file N times
//! under a `wasmlock` lock, the way the counter plugin does from a guest.
//!
//! ```text
//! wasmlock-counter LOCKFILE COUNTER N [os|soft]
//! ```

use wasmlock::{FileLock, Kind};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [lock, counter, n, rest @ ..] = args.as_slice() else {
        return Err("usage: wasmlock-counter LOCKFILE COUNTER N [os|soft]".into());
    };
    let kind = match rest.first().map(String::as_str) {
        None | Some("os") => Kind::Os,
        Some("soft") => Kind::Soft,
        Some(other) => return Err(format!("unknown kind {other:?}").into()),
    };
    let lock = FileLock::builder(lock).kind(kind).build()?;
    for _ in 0..n.parse::<u64>()? {
        let _guard = lock.lock()?;
        wasmlock_tests::bump(std::path::Path::new(counter))?;
    }
    Ok(())
}
