//! Compiles etcd's gRPC API (`proto/etcd.proto`) for the `etcd` feature.
//!
//! `protoc` comes from `PROTOC` if set, else from the `protoc-bin-vendored`
//! crate, so that a fresh clone builds without a system package.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_ETCD").is_some() {
        #[cfg(feature = "etcd")]
        etcd::compile();
    }
}

#[cfg(feature = "etcd")]
mod etcd {
    pub(super) fn compile() {
        println!("cargo:rerun-if-changed=proto/etcd.proto");
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
            .compile_with_config(config, &["proto/etcd.proto"], &["proto"])
            .unwrap_or_else(|e| panic!("compiling proto/etcd.proto: {e}"));
    }
}
