//! Generates the benchmark's raw etcd client, and builds the guest
//! components the tests and the demo run, as wasmtime's own
//! test-programs do: a nested `cargo build --target wasm32-wasip2` into a
//! target directory of its own (so it does not wait for the outer build's lock).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "../host/build/protoc.rs"]
mod protoc;

const GUESTS: &[&str] = &["counter-plugin", "probe", "probe3"];
const TARGET: &str = "wasm32-wasip2";

fn main() {
    // The benchmark's baseline: etcd's own lock service (and its leases).
    protoc::compile_clients(
        &["proto/v3lock.proto", "../host/proto/etcd.proto"],
        &["proto", "../host/proto"],
    );
    ensure_target();
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out. The guests go
    // beside the profiles, so `cargo test`, `cargo run` and `cargo clippy`
    // share one guest build instead of making one each.
    let target_dir = out
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == "build"))
        .and_then(|build| build.parent()?.parent())
        .map_or_else(|| out.join("guests"), |target| target.join("wasm-guests"));

    for dir in [
        "Cargo.toml",
        "Cargo.lock",
        "guest",
        "wit",
        "examples/counter-plugin",
        "tests/guests/probe",
        "tests/guests/probe3",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    for package in GUESTS {
        cmd.args(["-p", package]);
    }
    // Flags meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
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

/// rustup installs the targets of `rust-toolchain.toml` only along with the
/// toolchain itself, so a machine that already had the toolchain may lack
/// the wasm target. Install it here, or stop with the command that would.
fn ensure_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let installed = target_dir(&rustc);
    // Installing or removing the target reruns this script, so the notice
    // below is not replayed on every later build.
    println!("cargo:rerun-if-changed={}", installed.display());
    if installed.is_dir() {
        return;
    }
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").ok();
    let mut add = vec!["target", "add", TARGET];
    if let Some(toolchain) = &toolchain {
        add.extend(["--toolchain", toolchain]);
    }
    let manual = format!("rustup {}", add.join(" "));
    println!("cargo:warning=the {TARGET} target is missing; installing it: {manual}");
    // rustup's progress goes to our stderr, which cargo shows if this fails.
    let added = Command::new("rustup")
        .args(&add)
        .stdout(Stdio::null())
        .status();
    let why = match added {
        Ok(status) if status.success() && installed.is_dir() => return,
        Ok(status) => format!("`{manual}` failed ({status})"),
        Err(e) => format!("rustup could not be run ({e})"),
    };
    // A panic would bury the one line that matters under a backtrace.
    eprintln!(
        "error: building the guest components needs the {TARGET} target, and {why}.\n\
         Install it for this toolchain ({manual}), then build again."
    );
    std::process::exit(1);
}

/// Where the target's standard library is, or would be, in rustc's sysroot.
fn target_dir(rustc: &str) -> PathBuf {
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("run rustc --print sysroot");
    let sysroot = String::from_utf8_lossy(&sysroot.stdout);
    Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib")
}
