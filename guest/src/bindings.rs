//! Bindings for `wasmlock:lock@0.2.0`, generated from `wit/`. WASI types
//! come from the `wasip2` crate, so a descriptor from `wasip2` is the same
//! type here.

wit_bindgen::generate!({
    path: "wit",
    world: "wasmlock:lock/imports",
    with: {
        "wasi:io/poll@0.2.12": wasip2::io::poll,
        "wasi:io/error@0.2.12": wasip2::io::error,
        "wasi:io/streams@0.2.12": wasip2::io::streams,
        "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
        "wasi:clocks/wall-clock@0.2.12": wasip2::clocks::wall_clock,
        "wasi:filesystem/types@0.2.12": wasip2::filesystem::types,
    },
    generate_all,
});
