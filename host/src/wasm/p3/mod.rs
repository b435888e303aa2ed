//! The host side of `wasmlock:lock@0.3.0`, for WASI 0.3 components: the
//! same locks, guards, semaphores and namespaces as the 0.2 interface, from
//! the same engine, with acquisition as an `async func` (a task that waits
//! leaves the guest's other tasks running; cancelling the call gives up the
//! wait) and the lost signal as a `future`.
//!
//! # Embedding
//!
//! Add [`add_to_linker`] beside wasmtime-wasi's 0.3 (and 0.2: a component
//! built for `wasm32-wasip2` imports WASI 0.2 through Rust's std), sharing
//! one `ResourceTable`, and run the command in `run_concurrent`:
//!
//! ```
//! use wasmtime::component::{Component, Linker};
//! use wasmtime::{Config, Engine, Store};
//! use wasmtime_wasi::WasiCtxBuilder;
//! use wasmlock::{WasiLockHost, WasmLockCtx};
//!
//! # fn main() -> wasmtime::Result<()> {
//! let mut config = Config::new();
//! config.wasm_component_model_async(true);
//! let engine = Engine::new(&config)?;
//! let mut linker = Linker::<WasiLockHost>::new(&engine);
//! wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
//! wasmtime_wasi::p3::add_to_linker(&mut linker)?;
//! wasmlock::p3::add_to_linker(&mut linker)?;
//! let store = Store::new(&engine, WasiLockHost::new(WasiCtxBuilder::new().build(), WasmLockCtx::default()));
//! // Then, in async code:
//! // let cmd = wasmtime_wasi::p3::bindings::Command::instantiate_async(&mut store, &component, &linker).await?;
//! // store.run_concurrent(async move |a| cmd.wasi_cli_run().call_run(a).await).await??;
//! # drop(store);
//! # Ok(()) }
//! ```

mod bindings;
mod convert;
mod host;

use wasmtime::component::Linker;

use super::{WasmLock, WasmLockView};

/// Adds the `wasmlock:lock@0.3.0` interfaces (`types`, `locks`,
/// `namespaces`) to `linker`, as `wasmtime_wasi::p3::add_to_linker` adds
/// WASI 0.3's. A store may have both versions linked: they share the guest's
/// [`WasmLockCtx`](super::WasmLockCtx) and its limits.
pub fn add_to_linker<T: WasmLockView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    use bindings::wasmlock::lock::{locks, namespaces, types};
    types::add_to_linker::<T, WasmLock>(linker, T::locks)?;
    locks::add_to_linker::<T, WasmLock>(linker, T::locks)?;
    namespaces::add_to_linker::<T, WasmLock>(linker, T::locks)?;
    Ok(())
}
