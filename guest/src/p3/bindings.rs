//! Bindings for `wasmlock:lock@0.3.0`, generated from `wit/p3/`, with the
//! WASI 0.3 interfaces a lock user needs (a directory to lock in, a clock to
//! bound a wait).

wit_bindgen::generate!({
    path: "wit/p3",
    world: "wasmlock:lock/imports",
    generate_all,
});
