//! Embedding wasmlock in a wasmtime host: many instances of the counter
//! plugin run concurrently in one process, on one lock, through the WASI
//! 0.3 world (`wasmlock:lock@0.3.0`); the plugin is built for
//! `wasm32-wasip2`, whose std imports WASI 0.2, so both worlds are linked.
//!
//! ```text
//! cargo run --example embedding -- [INSTANCES] [ITERS]
//! ```

use wasmlock::{WasiLockHost, WasmLockCtx};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p3::bindings::Command;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

#[tokio::main]
async fn main() -> wasmtime::Result<()> {
    let mut args = std::env::args().skip(1);
    let instances: usize = args.next().map_or(16, |s| s.parse().expect("INSTANCES"));
    let iters: u64 = args.next().map_or(200, |s| s.parse().expect("ITERS"));

    let mut config = wasmtime::Config::new();
    config.wasm_component_model_async(true);
    let engine = Engine::new(&config)?;
    let component = Component::from_file(&engine, wasmlock_tests::COUNTER_PLUGIN)?;
    // WASI and the lock interface, over one resource table per store.
    let mut linker = Linker::<WasiLockHost>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmlock::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmlock::p3::add_to_linker(&mut linker)?;

    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("counter"), "0")?;
    let mut tasks = Vec::new();
    for _ in 0..instances {
        let wasi = WasiCtxBuilder::new()
            .preopened_dir(dir.path(), "/data", FsPerms::ReadWrite)?
            .args(&["counter-plugin", "/data/counter", &iters.to_string()])
            .inherit_stderr()
            .build();
        // Each store is one guest with its own limits; its guards hold.
        let locks = WasmLockCtx::builder()
            .max_handles(4)
            .max_held_locks(1)
            .build();
        let mut store = Store::new(&engine, WasiLockHost::new(wasi, locks));
        let (component, linker) = (component.clone(), linker.clone());
        tasks.push(tokio::spawn(async move {
            let command = Command::instantiate_async(&mut store, &component, &linker).await?;
            // A 0.3 export runs in the store's event loop, where its tasks
            // and the host's async functions take turns.
            store
                .run_concurrent(async move |a| command.wasi_cli_run().call_run(a).await)
                .await??
                .map_err(|()| wasmtime::Error::msg("plugin failed"))
        }));
    }
    for t in tasks {
        t.await.expect("task")?;
    }
    let total = std::fs::read_to_string(dir.path().join("counter"))?;
    println!(
        "{instances} instances x {iters} increments = {} (expected {})",
        total.trim(),
        instances as u64 * iters
    );
    Ok(())
}
