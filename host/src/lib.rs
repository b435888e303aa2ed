//! Real file locks for native Rust and for WebAssembly plugins.
//!
//! `wasmlock` is one lock engine with several faces. This crate is the
//! native one: [`FileLock`] on a path or an open file, kernel (`os`) or
//! marker-file (`soft`) locks, exclusive or shared, sync or async, confined
//! to a [`LockDir`] when paths come from someone you do not trust, plus a
//! cross-process [`Semaphore`].
//!
//! ```
//! use std::time::Duration;
//! use wasmlock::{ErrorKind, FileLock};
//! # let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("build.lock");
//!
//! let lock = FileLock::new(&path)?;
//! let guard = lock.lock()?;                       // waits as long as it takes
//!
//! // Another handle — in this process or any other — is kept out.
//! let other = FileLock::new(&path)?;
//! std::thread::scope(|s| {
//!     s.spawn(|| {
//!         let err = other.lock_timeout(Duration::from_millis(50)).unwrap_err();
//!         assert_eq!(err.kind(), ErrorKind::Timeout);
//!     });
//! });
//! drop(guard);                                    // unlocks
//! assert!(path.exists());                         // lock files are never deleted
//! # Ok::<(), wasmlock::Error>(())
//! ```
//!
//! # Which lock do I want
//!
//! - Threads, or a plain program: [`FileLock::lock`] and friends; the
//!   [`LockGuard`] stays on its thread.
//! - Async code: [`FileLock::lock_async`] and friends; the
//!   [`AsyncLockGuard`] is `Send` and may be held across `.await`.
//! - A guard to store or move into a spawned task or thread:
//!   [`FileLock::lock_owned`] / [`FileLock::lock_owned_async`] on an
//!   `Arc<FileLock>` ([`OwnedLockGuard`], `Send + 'static`).
//! - Many readers, one writer: the `_shared` methods; writers are not
//!   starved.
//! - Writing the locked file itself: [`FileLock::from_file`], then the
//!   guard's `file()`.
//! - Paths from someone you do not trust (a plugin, a request): a
//!   [`LockDir`] keeps them inside one directory.
//! - At most N at once: [`Semaphore`].
//! - A file system without kernel locks, or Python's `SoftFileLock` on the
//!   other side: [`FileLockBuilder::soft`].
//!
//! # WebAssembly
//!
//! With the `wasmtime` feature (on by default), `add_to_linker_async` gives WASI
//! components the `wasmlock:lock` interface and `WasmLockCtx` sets each
//! guest's limits; the `wasm` module documentation has a complete embedding
//! example, and `WasiLockHost` is ready-made store data. Without default
//! features the crate has no wasmtime dependency at all.
//!
//! # Features
//!
//! - `wasmtime` (default): the embedding — `add_to_linker_async`, `WasmLockCtx`,
//!   the `wasm` module. It asks wasmtime only for `runtime`,
//!   `component-model`, `async` and `std`; the compiler, caching and the
//!   allocator are the embedder's choice.
//! - `cli`: the `wasmlock` command-line tool (`run`, a `flock(1)`-compatible
//!   `exec`, `status`, `break`, `completions`); it turns on wasmtime's
//!   Cranelift compiler.
//!
//! # Semantics
//!
//! - **Waiting** is an explicit [`Wait`]: forever, try once, a timeout or a
//!   deadline. Waiting for a lock held by another process blocks in the
//!   kernel on one helper thread per contended file (soft locks: on
//!   file-system events), never by polling on a timer, and local waiters are
//!   served first-in first-out.
//! - **Errors** have a [`kind`](Error::kind) from a closed set
//!   ([`ErrorKind`]) and always name the lock path.
//! - **A hold belongs to its guard.** Every acquisition returns a guard;
//!   only the guard releases, and dropping it releases. Two acquisitions are
//!   two holds and exclude each other — two threads, two tasks on one
//!   thread, two futures joined in one task, one thread twice. Counted
//!   re-entrancy (py-filelock's `with lock: with lock:`) is an opt-in per
//!   handle ([`FileLockBuilder::reentrant`]), for threads only.
//! - **Deadlocks**: a thread that would wait forever for a file it holds
//!   with a [`LockGuard`] (which cannot leave the thread) gets
//!   [`ErrorKind::Deadlock`] at once, not a hang.
//! - **Shared locks** are fair to writers: a writer waiting behind a stream
//!   of readers is not starved, across processes too (on Linux).
//! - **Lock files** of OS locks are never deleted (deleting splits the lock),
//!   and a contender never writes, truncates or `chmod`s the holder's file.
//! - **Soft locks** write `pid\nhostname\nstart-token\n` exactly like
//!   py-filelock, so Python and Rust processes exclude each other, and a
//!   marker left by a dead process on this host is broken safely.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub,
    clippy::undocumented_unsafe_blocks
)]

mod backend;
mod error;
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub mod etcd;
mod holder;
mod lock;
mod manager;
mod owner;
mod sandbox;
mod semaphore;
mod sys;
mod target;
mod wait;

pub use error::{Error, ErrorKind, Result};
pub use holder::Holder;
pub use lock::{AsyncLockGuard, FileLock, FileLockBuilder, LockGuard, OwnedLockGuard};
pub(crate) use owner::Owner;
pub use sandbox::LockDir;
pub use semaphore::{OwnedPermit, Permit, Semaphore};
pub use wait::{Kind, Mode, Wait};

#[cfg(feature = "wasmtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "wasmtime")))]
pub mod wasm;
#[cfg(feature = "wasmtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "wasmtime")))]
pub use wasm::{
    LockError, Namespace, WasiLockHost, WasmLock, WasmLockCtx, WasmLockCtxBuilder, WasmLockCtxView,
    WasmLockView, add_to_linker_async, p3,
};
