//! `wasmlock run`: a WASI command component with `wasmlock:lock` linked.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use wasmlock::{Namespace, WasiLockHost, WasmLockCtx};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::remote::EtcdArgs;
use crate::{describe, duration, status};

/// Run a WASI command component with WASI and the wasmlock:lock interface linked.
///
/// Exits with the plugin's status; 1 if it trapped; 64 for bad arguments
/// or a component that cannot be loaded.
#[derive(Args)]
#[command(after_help = "Examples:\n  \
    wasmlock run --dir ./data::/data counter.wasm             the plugin sees ./data as /data\n  \
    wasmlock run --dir ./cfg::/cfg::ro --max-wait 30s p.wasm  read-only; no wait past 30 s\n  \
    wasmlock run --allow-break --dir .::/work tool.wasm -- --verbose   arguments for the plugin\n  \
    wasmlock run --namespace jobs=/var/lock/jobs --max-hold 10m worker.wasm   named locks, no directory\n  \
    wasmlock run --etcd http://10.0.0.5:2379 --namespace jobs=acme/ worker.wasm   named locks across machines")]
pub(crate) struct RunArgs {
    /// Grant a host directory to the plugin as HOST::GUEST (read-write), or HOST::GUEST::ro.
    #[arg(long = "dir", value_name = "HOST::GUEST")]
    dirs: Vec<String>,
    /// Cap every wait of the plugin (its "forever" ends here), e.g. 30s, 500ms, 2.5.
    #[arg(long, value_parser = duration::parse)]
    max_wait: Option<Duration>,
    /// End any hold of the plugin after this long (the guard reports it lost).
    #[arg(long, value_parser = duration::parse)]
    max_hold: Option<Duration>,
    /// Let the plugin break soft locks whose holder is gone.
    #[arg(long)]
    allow_break: bool,
    /// Let the plugin break any soft lock, a live holder's too.
    #[arg(long)]
    allow_force_break: bool,
    /// Grant a namespace of named locks as NAME=HOST_DIR: key K is the lock file HOST_DIR/K.lock (escaped); the plugin never sees HOST_DIR. With --etcd: NAME=PREFIX, key K is the etcd lock PREFIX+K (escaped).
    #[arg(long = "namespace", value_name = "NAME=HOST_DIR|PREFIX")]
    namespaces: Vec<String>,
    #[command(flatten)]
    remote: EtcdArgs,
    /// The component (.wasm).
    plugin: PathBuf,
    /// Arguments for the plugin.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub(crate) fn main(args: RunArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wasmlock: {e}");
            return ExitCode::from(status::OSERR);
        }
    };
    rt.block_on(run(args)).unwrap_or_else(|e| {
        eprintln!("wasmlock: {e}");
        ExitCode::from(status::USAGE)
    })
}

/// The WASI version of a command's `run`.
enum World {
    P2,
    P3,
}

async fn run(args: RunArgs) -> Result<ExitCode, String> {
    let RunArgs {
        dirs,
        max_wait,
        max_hold,
        allow_break,
        allow_force_break,
        namespaces,
        remote,
        plugin,
        args,
    } = args;
    let cluster = remote.cluster().transpose()?;
    let engine = Engine::default();
    let component = Component::from_file(&engine, &plugin)
        .map_err(|e| format!("{}: cannot load component: {e}", plugin.display()))?;
    // A WASI 0.3 command exports 0.3's `run` (and, built by Rust's std
    // for wasm32-wasip2, 0.2's too, and imports WASI 0.2): both worlds
    // are linked, and 0.3's `run` is the one called when there is one.
    let world = if component
        .get_export_index(None, "wasi:cli/run@0.3.0")
        .is_some()
    {
        World::P3
    } else if component
        .get_export_index(None, "wasi:cli/run@0.2.0")
        .is_some()
    {
        World::P2
    } else {
        return Err(format!(
            "{}: not a wasi:cli command (it exports no wasi:cli/run@0.3.x or @0.2.x)",
            plugin.display()
        ));
    };
    let mut linker = Linker::new(&engine);
    let linked = (|| {
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmlock::add_to_linker_async(&mut linker)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmlock::p3::add_to_linker(&mut linker)
    })();
    linked.map_err(|e| e.to_string())?;

    let mut wasi = WasiCtxBuilder::new();
    wasi.inherit_stdio()
        .inherit_env()
        .arg(plugin.display().to_string())
        .args(&args);
    for spec in &dirs {
        let parts: Vec<&str> = spec.split("::").collect();
        let (host, guest, perms) = match parts.as_slice() {
            [host, guest] => (host, guest, FsPerms::ReadWrite),
            [host, guest, "ro"] => (host, guest, FsPerms::ReadOnly),
            _ => {
                return Err(format!(
                    "--dir {spec:?}: expected HOST::GUEST or HOST::GUEST::ro"
                ));
            }
        };
        wasi.preopened_dir(host, guest, perms)
            .map_err(|e| format!("--dir {spec:?}: {e}"))?;
    }
    let mut locks = WasmLockCtx::builder()
        .allow_break(allow_break)
        .allow_force_break(allow_force_break)
        .on_slow_wait(Duration::from_secs(1), |path, holder| {
            eprintln!(
                "waiting for lock on {}{}",
                path.display(),
                describe(&holder)
            );
        });
    if let Some(max) = max_wait {
        locks = locks.max_wait(max);
    }
    if let Some(max) = max_hold {
        locks = locks.max_hold(max);
    }
    for spec in &namespaces {
        let Some((name, place)) = spec.split_once('=') else {
            return Err(format!(
                "--namespace {spec:?}: expected NAME=HOST_DIR or, with --etcd, NAME=PREFIX"
            ));
        };
        let backend = match &cluster {
            Some(cluster) => Namespace::etcd(cluster, place),
            None => {
                Namespace::directory(place).map_err(|e| format!("--namespace {spec:?}: {e}"))?
            }
        };
        locks = locks.namespace(name, backend);
    }
    let mut store = Store::new(&engine, WasiLockHost::new(wasi.build(), locks.build()));
    let result = async {
        match world {
            World::P3 => {
                let command = wasmtime_wasi::p3::bindings::Command::instantiate_async(
                    &mut store, &component, &linker,
                )
                .await?;
                store
                    .run_concurrent(async move |a| command.wasi_cli_run().call_run(a).await)
                    .await?
            }
            World::P2 => {
                let command = wasmtime_wasi::p2::bindings::Command::instantiate_async(
                    &mut store, &component, &linker,
                )
                .await?;
                command.wasi_cli_run().call_run(&mut store).await
            }
        }
    }
    .await;
    Ok(match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(())) => ExitCode::from(1),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => ExitCode::from(exit.0.clamp(0, 255) as u8),
            None => {
                eprintln!("wasmlock: {}: {e:?}", plugin.display());
                ExitCode::from(1)
            }
        },
    })
}
