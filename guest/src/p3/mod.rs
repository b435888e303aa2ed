//! The async API for WASI 0.3 plugins, over `wasmlock:lock@0.3.0`: a wait
//! is an awaited call, so while one task of the plugin waits for a lock,
//! its other tasks run; dropping the future gives the wait up (a grant that
//! raced that is released, never leaked). Enable the crate's `p3` feature.
//!
//! A complete WASI 0.3 plugin (a `wasi:cli@0.3.0` command; build it with
//! `cargo build --target wasm32-wasip2` and a `wit-bindgen` export of
//! `wasi:cli/run@0.3.0`):
//!
//! ```no_run
//! use std::time::Duration;
//! use wasmlock_guest::p3::Lock;
//!
//! # #[allow(dead_code)]
//! async fn run() -> Result<(), wasmlock_guest::Error> {
//!     let lock = Lock::open("/data/counter.lock").await?;
//!     {
//!         let _guard = lock.lock().await?;        // this task waits; the others run
//!         // ... update the shared file ...
//!     }                                           // released here
//!     match lock.lock_timeout(Duration::from_millis(50)).await {
//!         Ok(_guard) => {}
//!         Err(e) if e.kind() == wasmlock_guest::ErrorKind::Timeout => {}
//!         Err(e) => return Err(e),
//!     }
//!     Ok(())
//! }
//! ```
//!
//! The project's `examples/counter-plugin` is a complete plugin for both
//! WASI versions: std's `main` for 0.2, and this `run` for 0.3:
//!
//! ```ignore
//! wit_bindgen::generate!({
//!     inline: "package example:counter; world counter { export wasi:cli/run@0.3.0; }",
//!     path: "wit/p3", // this repository's wit/p3, with its deps
//!     generate_all,
//! });
//! struct Counter;
//! export!(Counter);
//! impl exports::wasi::cli::run::Guest for Counter {
//!     async fn run() -> Result<(), ()> {
//!         run().await.map_err(|e| eprintln!("{e}"))
//!     }
//! }
//! ```
//!
//! **A hold belongs to its guard**, here as in the 0.2 API: two guards are
//! two holds, also when two tasks of one plugin take them.

#[allow(missing_docs, unreachable_pub, missing_debug_implementations)]
pub(crate) mod bindings;
mod lock;
mod semaphore;

pub use bindings::wasi::filesystem::types::Descriptor;
pub use lock::{Guard, Lock, Namespace};
pub use semaphore::Semaphore;
