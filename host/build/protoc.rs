//! gRPC clients generated from `.proto` files, with `protoc` from `PROTOC`
//! if set, else from the `protoc-bin-vendored` crate, so that a fresh clone
//! builds without a system package. Shared by the host crate's build script
//! and the workspace tests' (which include this file).

/// Generates the clients (no servers, no transport) of `protos`.
pub fn compile_clients(protos: &[&str], includes: &[&str]) {
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    let protoc = match std::env::var_os("PROTOC") {
        Some(p) => std::path::PathBuf::from(p),
        None => protoc_bin_vendored::protoc_bin_path().unwrap_or_else(|e| {
            panic!(
                "no protoc for this platform in protoc-bin-vendored ({e}); \
                 set PROTOC to a protoc binary"
            )
        }),
    };
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .compile_with_config(config, protos, includes)
        .unwrap_or_else(|e| panic!("compiling {protos:?}: {e}"));
}
