//! File locks for WebAssembly plugins.
//!
//! `wasi:filesystem` has no locks; this crate gives a plugin real ones,
//! through the `wasmlock:lock@0.2.0` interface its host implements (for
//! example with the `wasmlock` crate and wasmtime, or `wasmlock run
//! plugin.wasm`). Locks exclude other plugins, other processes and native
//! programs alike.
//!
//! A complete plugin (a `wasi:cli` command; build it with plain
//! `cargo build --target wasm32-wasip2`):
//!
//! ```no_run
//! use std::time::Duration;
//! use wasmlock_guest::Lock;
//!
//! fn main() -> Result<(), wasmlock_guest::Error> {
//!     // "/data" is a directory the host granted (a preopen).
//!     let lock = Lock::open("/data/counter.lock")?;
//!     {
//!         let _guard = lock.lock()?;                        // waits; other guests keep running
//!         let n: u64 = std::fs::read_to_string("/data/counter")
//!             .ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
//!         std::fs::write("/data/counter", format!("{}\n", n + 1)).unwrap();
//!     }                                                     // released here
//!     let _maybe = lock.lock_timeout(Duration::from_millis(50))?;
//!     Ok(())
//! }
//! ```
//!
//! **A hold belongs to its guard.** Every acquisition returns a [`Guard`];
//! dropping it releases. Two guards are two holds and exclude each other,
//! in one plugin too: nothing is re-entrant, and waiting forever for a lock
//! this plugin already holds is [`ErrorKind::Deadlock`], not a hang.
//!
//! Paths are resolved like `std::fs` does on WASI: an absolute path by the
//! granted directory it lies in, and never outside it (`..`, absolute paths
//! and symbolic links leading out give [`ErrorKind::Access`]). A host may
//! also grant [`Namespace`]s: named locks with no directory at all.
//! (The examples here are `no_run`: they run inside a WebAssembly host.)
//!
//! For WASI 0.3 plugins, the crate's `p3` feature adds the module `p3`: the
//! same locks over `wasmlock:lock@0.3.0`, where waiting is awaiting (one
//! task waits while the plugin's others run) and cancelling is dropping.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]

#[allow(missing_docs, unreachable_pub, missing_debug_implementations)]
mod bindings;
mod error;
mod lock;
mod namespace;
#[cfg(feature = "p3")]
pub mod p3;
mod preopen;
mod raw;
mod semaphore;

use std::time::Duration;

pub use error::{Error, ErrorKind, Result};
pub use lock::{Guard, Lock, PendingLock};
pub use namespace::Namespace;
pub use semaphore::{Permit, Semaphore};
pub use wasip2::filesystem::types::Descriptor;
pub use wasip2::io::poll::Pollable;
pub use wasmlock_types::{HolderKind, Kind, Mode};

/// How long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Until obtained (the host may cap it).
    Forever,
    /// One attempt.
    TryOnce,
    /// At most this long.
    Timeout(Duration),
}

/// Who holds a lock, as far as the host lets this plugin know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Where the holder is: this plugin, this host, or elsewhere.
    pub kind: HolderKind,
    /// The holder's process id, if the host reveals it.
    pub pid: Option<u32>,
    /// The holder's host, if the host reveals it.
    pub host: Option<String>,
    /// Since when, in seconds and nanoseconds after the Unix epoch, if the
    /// host reveals it.
    pub since: Option<(u64, u32)>,
}

#[cfg(test)]
mod tests {
    use super::preopen::resolve;

    #[test]
    fn absolute_paths_pick_the_longest_preopen() {
        let names = ["/", "/data", "/data/sub", "."];
        let r = |p| resolve(names.iter().copied(), p).map(|(i, rest)| (i, rest.to_owned()));
        assert_eq!(r("/data/x.lock").unwrap(), (1, "x.lock".into()));
        assert_eq!(r("/data/sub/y/z.lock").unwrap(), (2, "y/z.lock".into()));
        assert_eq!(r("/datax/a").unwrap(), (0, "datax/a".into()));
        assert_eq!(r("rel.lock").unwrap(), (3, "rel.lock".into()));
    }

    #[test]
    fn paths_outside_every_preopen_are_refused() {
        let names = ["/data"];
        assert!(resolve(names.iter().copied(), "/etc/passwd").is_err());
        assert!(resolve(names.iter().copied(), "relative").is_err());
    }
}
