//! Locks for WebAssembly components: the host side of `wasmlock:lock@0.2.0`.
//!
//! A guest opens a lock the way WASI opens files — relative to a
//! `wasi:filesystem` directory descriptor it holds — or by key in a
//! namespace the embedder grants ([`WasmLockCtxBuilder::namespace`]), so it
//! reaches nothing the host did not give it, and a read-only preopen cannot
//! create lock files. Every acquisition returns a `guard` resource, and the
//! guard is the hold: two guards exclude each other, within one guest and
//! across guests, exactly like two processes. Dropping a guard releases it;
//! whatever a guest holds is released at the latest when its store is
//! dropped (after a trap, too). Waiting is asynchronous: a waiting guest
//! does not block the host thread, and a pending acquisition
//! (`future-guard`) can be polled together with other `wasi:io` events.
//!
//! A guest is hostile until proven otherwise: every limit of its
//! [`WasmLockCtx`] (handles, held guards, semaphore slots, wait and hold
//! times, lock kinds, breaking, what a read-only file may hold, what it
//! learns about holders) is checked before any file is touched.
//!
//! # Embedding
//!
//! Add [`add_to_linker_async`] beside wasmtime-wasi, sharing one
//! `ResourceTable`, so guest descriptors can be passed to lock functions:
//!
//! ```
//! use wasmtime::component::{Linker, ResourceTable};
//! use wasmtime::{Engine, Store};
//! use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
//! use wasmlock::{Namespace, WasmLockCtx, WasmLockCtxView, WasmLockView};
//!
//! struct Host {
//!     table: ResourceTable,
//!     wasi: WasiCtx,
//!     locks: WasmLockCtx,
//! }
//!
//! impl WasiView for Host {
//!     fn ctx(&mut self) -> WasiCtxView<'_> {
//!         WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
//!     }
//! }
//!
//! impl WasmLockView for Host {
//!     fn locks(&mut self) -> WasmLockCtxView<'_> {
//!         WasmLockCtxView { ctx: &mut self.locks, table: &mut self.table }
//!     }
//! }
//!
//! # fn main() -> wasmtime::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! # let jobs = tempfile::tempdir()?;
//! let engine = Engine::default();
//! let mut linker = Linker::<Host>::new(&engine);
//! wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
//! wasmlock::add_to_linker_async(&mut linker)?;
//!
//! let store = Store::new(&engine, Host {
//!     table: ResourceTable::new(),
//!     wasi: WasiCtxBuilder::new()
//!         .preopened_dir(dir.path(), "/data", FsPerms::ReadWrite)?
//!         .build(),
//!     locks: WasmLockCtx::builder()
//!         .max_wait(std::time::Duration::from_secs(30))
//!         .max_hold(std::time::Duration::from_secs(600))
//!         // Keys of "jobs" are lock files in a directory the guest
//!         // cannot otherwise see.
//!         .namespace("jobs", Namespace::directory(jobs.path())?)
//!         .build(),
//! });
//! // Then, in async code:
//! // let cmd = wasmtime_wasi::p2::bindings::Command::instantiate_async(&mut store, &component, &linker).await?;
//! // cmd.wasi_cli_run().call_run(&mut store).await?;
//! # drop(store);
//! # Ok(()) }
//! ```

mod bindings;
mod ctx;
mod error;
mod guard;
mod host;
mod namespace;
pub mod p3;
mod pending;
mod releasing;
mod resources;
mod steps;

pub use ctx::{WasmLockCtx, WasmLockCtxBuilder};
pub use error::LockError;
pub use namespace::Namespace;

// The resource types behind the guest's handles: named in the generated
// traits, of no use to an embedder.
#[doc(hidden)]
pub use guard::{GuestGuard, LostSignal};
#[doc(hidden)]
pub use pending::{Done, FutureGuard};
#[doc(hidden)]
pub use resources::{GuestLock, GuestNamespace, GuestSemaphore};

use wasmtime::component::{HasData, Linker, ResourceTable};

/// What the lock host functions work on: the guest's [`WasmLockCtx`] and the
/// store's resource table (the same one wasmtime-wasi uses).
pub struct WasmLockCtxView<'a> {
    /// The guest's lock context.
    pub ctx: &'a mut WasmLockCtx,
    /// The store's resource table, shared with WASI.
    pub table: &'a mut ResourceTable,
}

impl std::fmt::Debug for WasmLockCtxView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmLockCtxView")
            .field("ctx", &self.ctx)
            .finish()
    }
}

/// Implemented by the store's data to give the lock host its view.
pub trait WasmLockView: Send {
    /// The guest's lock context and resource table.
    fn locks(&mut self) -> WasmLockCtxView<'_>;
}

/// The [`HasData`] marker for `wasmlock:lock`, for calling generated
/// `add_to_linker` functions directly.
#[derive(Debug)]
pub struct WasmLock;

impl HasData for WasmLock {
    type Data<'a> = WasmLockCtxView<'a>;
}

/// Adds the `wasmlock:lock@0.2.0` interfaces (`types`, `locks`,
/// `namespaces`) to `linker`. The host functions that may wait are async
/// (the others are sync, as in wasmtime-wasi): instantiate and call with the
/// `_async` wasmtime APIs, as for `wasmtime_wasi::p2::add_to_linker_async`.
pub fn add_to_linker_async<T: WasmLockView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    use bindings::wasmlock::lock::{locks, namespaces, types};
    types::add_to_linker::<T, WasmLock>(linker, T::locks)?;
    locks::add_to_linker::<T, WasmLock>(linker, T::locks)?;
    namespaces::add_to_linker::<T, WasmLock>(linker, T::locks)?;
    Ok(())
}

/// Ready-made store data for embeddings that need WASI and locks only.
///
/// ```
/// use wasmtime::{Engine, Store, component::Linker};
/// use wasmtime_wasi::WasiCtxBuilder;
/// use wasmlock::{WasiLockHost, WasmLockCtx};
///
/// # fn main() -> wasmtime::Result<()> {
/// let engine = Engine::default();
/// let mut linker = Linker::<WasiLockHost>::new(&engine);
/// wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
/// wasmlock::add_to_linker_async(&mut linker)?;
/// let store = Store::new(&engine, WasiLockHost::new(WasiCtxBuilder::new().build(), WasmLockCtx::default()));
/// # drop(store);
/// # Ok(()) }
/// ```
pub struct WasiLockHost {
    table: ResourceTable,
    wasi: wasmtime_wasi::WasiCtx,
    locks: WasmLockCtx,
}

impl std::fmt::Debug for WasiLockHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasiLockHost")
            .field("locks", &self.locks)
            .finish_non_exhaustive()
    }
}

impl WasiLockHost {
    /// Store data with these WASI and lock contexts and a fresh resource table.
    pub fn new(wasi: wasmtime_wasi::WasiCtx, locks: WasmLockCtx) -> WasiLockHost {
        WasiLockHost {
            table: ResourceTable::new(),
            wasi,
            locks,
        }
    }

    /// The guest's lock context (open handles, held locks).
    pub fn lock_ctx(&self) -> &WasmLockCtx {
        &self.locks
    }
}

impl wasmtime_wasi::WasiView for WasiLockHost {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasmLockView for WasiLockHost {
    fn locks(&mut self) -> WasmLockCtxView<'_> {
        WasmLockCtxView {
            ctx: &mut self.locks,
            table: &mut self.table,
        }
    }
}
