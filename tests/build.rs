//! Builds the guest components the tests and the demo run, as wasmtime's own
//! test-programs do: a nested `cargo build --target wasm32-wasip2` into a
//! target directory of its own (so it does not wait on ours).

use std::path::PathBuf;
use std::process::Command;

const GUESTS: &[&str] = &["counter-plugin", "probe"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target_dir = out.join("guests");

    for dir in [
        "guest",
        "wit",
        "examples/counter-plugin",
        "tests/guests/probe",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for package in GUESTS {
        cmd.args(["-p", package]);
    }
    // Flags meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("run cargo to build the guest components");
    assert!(status.success(), "building the guest components failed");

    for package in GUESTS {
        let wasm = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{package}.wasm"));
        assert!(wasm.exists(), "{} missing", wasm.display());
        let var = format!("GUEST_{}", package.replace('-', "_").to_uppercase());
        println!("cargo:rustc-env={var}={}", wasm.display());
    }
}
