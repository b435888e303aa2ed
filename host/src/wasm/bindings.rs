//! The code `bindgen!` generates from `wit/`, with the lock resources mapped
//! to our host types, WASI mapped to wasmtime-wasi's own bindings (so a
//! guest's `wasi:filesystem` descriptor can be passed straight in), and
//! `error-code` results mapped once through [`LockError`](super::LockError).

wasmtime::component::bindgen!({
    path: "wit",
    world: "wasmlock:lock/imports",
    // No `tracing` here: a span per call would cost a guest lock+unlock
    // more than the lock itself; the engine logs at debug level instead.
    // As in wasmtime-wasi, only what may wait is async: a sync call costs a
    // guest far less (a guard's drop was 15 % of an uncontended
    // lock+unlock as an async call).
    imports: {
        "wasmlock:lock/locks.[method]guard.mode": trappable,
        "wasmlock:lock/locks.[method]guard.slot": trappable,
        "wasmlock:lock/locks.[method]guard.fence": trappable,
        "wasmlock:lock/locks.[method]guard.status": trappable,
        "wasmlock:lock/locks.[method]guard.subscribe-lost": trappable,
        "wasmlock:lock/locks.[drop]guard": trappable,
        "wasmlock:lock/locks.[method]future-guard.subscribe": trappable,
        "wasmlock:lock/locks.[method]future-guard.get": trappable,
        "wasmlock:lock/locks.[drop]lock": trappable,
        "wasmlock:lock/locks.[method]semaphore.slots": trappable,
        "wasmlock:lock/locks.[drop]semaphore": trappable,
        "wasmlock:lock/locks.[drop]namespace": trappable,
        "wasmlock:lock/namespaces.get-namespaces": trappable,
        default: async | trappable,
    },
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
