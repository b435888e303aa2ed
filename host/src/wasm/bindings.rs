//! The code `bindgen!` generates from `wit/`, with the lock resources mapped
//! to our host types and WASI mapped to wasmtime-wasi's own bindings, so a
//! guest's `wasi:filesystem` descriptor can be passed straight in.

wasmtime::component::bindgen!({
    path: "wit",
    world: "wasmlock:lock/imports",
    imports: { default: async | trappable | tracing },
    with: {
        "wasi": wasmtime_wasi::p2::bindings,
        "wasmlock:lock/locks.lock": super::resources::GuestLock,
        "wasmlock:lock/locks.pending": super::resources::PendingAcquire,
        "wasmlock:lock/locks.semaphore": super::resources::GuestSemaphore,
        "wasmlock:lock/locks.permit": super::resources::GuestPermit,
    },
    require_store_data_send: true,
});
