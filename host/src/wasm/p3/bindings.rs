//! The code `bindgen!` generates from `wit/p3/` (`wasmlock:lock@0.3.0`),
//! mapped as the 0.2 bindings are: the lock resources to our host types,
//! WASI to wasmtime-wasi's 0.3 bindings (whose descriptors are the 0.2
//! ones), and `error-code` results once through
//! [`LockError`](crate::wasm::LockError). The enums both versions share
//! convert case by case (`convert.rs`).

wasmtime::component::bindgen!({
    path: "wit/p3",
    world: "wasmlock:lock/imports",
    // WIT `async func`s are `async | store` (an `Accessor`, so that a
    // waiting task leaves the guest's other tasks running); `lost` needs
    // the store to make its future.
    imports: {
        "wasmlock:lock/locks.[method]guard.lost": store | trappable,
        default: trappable,
    },
    with: {
        "wasi": wasmtime_wasi::p3::bindings,
        "wasmlock:lock/locks.lock": crate::wasm::GuestLock,
        "wasmlock:lock/locks.guard": crate::wasm::GuestGuard,
        "wasmlock:lock/locks.semaphore": crate::wasm::GuestSemaphore,
        "wasmlock:lock/locks.namespace": crate::wasm::GuestNamespace,
    },
    trappable_error_type: {
        "wasmlock:lock/types.error-code" => crate::wasm::LockError,
    },
    require_store_data_send: true,
});
