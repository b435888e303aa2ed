//! Compiles etcd's gRPC API (`proto/etcd.proto`) for the `etcd` feature.

#[cfg(feature = "etcd")]
#[path = "build/protoc.rs"]
mod protoc;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "etcd")]
    if std::env::var_os("CARGO_FEATURE_ETCD").is_some() {
        protoc::compile_clients(&["proto/etcd.proto"], &["proto"]);
    }
}
