//! The code `bindgen!` generates from `wit/`, with the lock resources mapped
//! to our host types, WASI mapped to wasmtime-wasi's own bindings (so a
//! guest's `wasi:filesystem` descriptor can be passed straight in), and
//! `error-code` results mapped once through [`LockError`](super::LockError).

wasmtime::component::bindgen!({
    path: "wit",
    world: "wasmlock:lock/imports",
    // No `tracing` here: a span per call would cost a guest lock+unlock
    // more than the lock itself; the engine logs at debug level instead.
    imports: { default: async | trappable },
    with: {
        "wasi": wasmtime_wasi::p2::bindings,
        "wasmlock:lock/locks.lock": super::resources::GuestLock,
        "wasmlock:lock/locks.guard": super::guard::GuestGuard,
        "wasmlock:lock/locks.future-guard": super::pending::FutureGuard,
        "wasmlock:lock/locks.semaphore": super::resources::GuestSemaphore,
        "wasmlock:lock/locks.namespace": super::resources::GuestNamespace,
    },
    trappable_error_type: {
        "wasmlock:lock/types.error-code" => super::LockError,
    },
    require_store_data_send: true,
});
