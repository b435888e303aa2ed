//! Running real guest components: the harness of the end-to-end tests and
//! of the demo. The guests are built by `build.rs` for `wasm32-wasip2`.

pub mod bench;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use wasmlock::{FileLock, WasiLockHost as Host, WasmLockCtx, WasmLockCtxBuilder};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Result, Store};
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::p3::bindings::Command as P3Command;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// The counter plugin (`examples/counter-plugin`).
pub const COUNTER_PLUGIN: &str = env!("GUEST_COUNTER_PLUGIN");
/// The scriptable test guest (`tests/guests/probe`).
pub const PROBE: &str = env!("GUEST_PROBE");
/// The WASI 0.3 test guest (`tests/guests/probe3`).
pub const PROBE3: &str = env!("GUEST_PROBE3");

/// Read, add one, write back — the critical section of every counter test:
/// it loses updates unless its callers are serialised.
pub fn bump(counter: &Path) -> std::io::Result<()> {
    let n: u64 = std::fs::read_to_string(counter)?
        .trim()
        .parse()
        .unwrap_or(0);
    std::fs::write(counter, format!("{}\n", n + 1))
}

/// The number in a counter file.
pub fn read_counter(counter: &Path) -> u32 {
    let text = std::fs::read_to_string(counter).unwrap();
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("counter {}: {text:?}: {e}", counter.display()))
}

#[path = "../../host/tests/common/ci.rs"]
mod ci;
pub use ci::{in_ci, require};

/// A real etcd started for a test (the host tests' harness).
#[path = "../../host/tests/etcd/harness.rs"]
pub mod etcd;

/// `n` processes running `program` with `args` (the counter processes of
/// the mixed load tests).
pub fn spawn_each(n: u32, program: &str, args: &[&std::ffi::OsStr]) -> Vec<std::process::Child> {
    (0..n)
        .map(|_| {
            std::process::Command::new(program)
                .args(args)
                .spawn()
                .unwrap()
        })
        .collect()
}

/// A shell loop that bumps `counter` `n` times, each time under the lock
/// `lock` taken by `locker LOCK COMMAND...` (`flock`, `wasmlock exec`,
/// `etcdctl lock`); it exits non-zero at the first failure.
pub fn shell_loop(locker: &[&str], lock: &str, counter: &Path, n: u32) -> std::process::Child {
    let script = counter.with_extension("sh");
    std::fs::write(&script, "n=$(cat \"$1\"); echo $((n+1)) > \"$1\"\n").unwrap();
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "i=0; while [ $i -lt {n} ]; do {} \"$0\" sh \"$1\" \"$2\" || exit 1; i=$((i+1)); done",
            locker.join(" ")
        ))
        .arg(lock)
        .arg(&script)
        .arg(counter)
        .spawn()
        .unwrap()
}

/// A binary of this workspace's build (`wasmlock`, `wasmlock-counter`, ...),
/// next to the test executables. `None` (with a note) when it was not built,
/// which only `cargo test --workspace` guarantees; in CI that is a failure.
pub fn workspace_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let bin = [dir, dir.parent()?]
        .iter()
        .map(|d| d.join(name))
        .find(|b| b.exists());
    if bin.is_some() {
        return bin;
    }
    if in_ci() {
        panic!(
            "{name} missing next to {}: run `cargo test --workspace`",
            exe.display()
        );
    }
    eprintln!("SKIPPED: {name} is not built; run `cargo test --workspace`");
    None
}

/// One engine and linker; components compiled once each.
pub struct Runtime {
    pub engine: Engine,
    linker: Linker<Host>,
    compiled: Mutex<HashMap<PathBuf, Component>>,
}

/// What to run.
pub struct Guest {
    pub wasm: PathBuf,
    pub args: Vec<String>,
    pub dirs: Vec<(PathBuf, String, FsPerms)>,
    pub locks: WasmLockCtxBuilder,
    /// Epoch ticks before the guest is interrupted (see [`Runtime::tick`]).
    pub epoch_deadline: Option<u64>,
    /// What the guest prints; a clone can be read while it runs.
    pub stdout: MemoryOutputPipe,
    /// How many instances of the component run, one after the other, in
    /// the one store (with the same arguments and directories).
    pub instances: usize,
    /// Run WASI 0.2's `run` even if the component exports 0.3's too.
    pub wasi_p2: bool,
}

impl Guest {
    /// `wasm` with `args`, and `host_dir` granted read-write as `/data`.
    pub fn new(wasm: &str, host_dir: &Path, args: &[&str]) -> Guest {
        Guest {
            wasm: wasm.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            dirs: vec![(host_dir.to_path_buf(), "/data".into(), FsPerms::ReadWrite)],
            locks: WasmLockCtx::builder(),
            epoch_deadline: None,
            stdout: MemoryOutputPipe::new(1 << 20),
            instances: 1,
            wasi_p2: false,
        }
    }
}

/// How a guest run ended.
#[derive(Debug)]
pub struct Outcome {
    /// `Err` with the trap or error message when the guest did not exit cleanly.
    pub result: Result<(), String>,
    pub stdout: String,
    /// Guards the host still counted for the guest when it exited (those it
    /// leaked to the store), before the store was dropped.
    pub held_at_end: usize,
}

impl Outcome {
    /// The result printed for `step` by the probe guest.
    pub fn step(&self, step: &str) -> &str {
        let prefix = format!("{step} => ");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no output for step {step:?} in:\n{}", self.stdout))
    }

    /// The results of all steps, in order.
    pub fn results(&self) -> Vec<&str> {
        self.ran().into_iter().map(|(_, r)| r).collect()
    }

    /// Every step that ran, with its result.
    pub fn ran(&self) -> Vec<(&str, &str)> {
        self.stdout
            .lines()
            .filter_map(|l| l.split_once(" => "))
            .collect()
    }

    /// Checks that the guest ran the whole script, each step with the
    /// result written next to it: exactly, or as the first words of it
    /// (`err WouldBlock` matches `err WouldBlock held by pid 7`).
    pub fn check(&self, script: &Script<'_>) {
        let ran = self.ran();
        for (i, &(step, want)) in script.iter().enumerate() {
            let Some(&(done, got)) = ran.get(i) else {
                panic!("step {i} {step:?} did not run:\n{}", self.stdout);
            };
            assert_eq!(done, step, "step {i} ran out of order:\n{}", self.stdout);
            assert!(
                got == want || got.starts_with(&format!("{want} ")),
                "step {i} {step:?}: expected {want:?}, got {got:?}\n{}",
                self.stdout
            );
        }
        assert_eq!(ran.len(), script.len(), "more steps ran:\n{}", self.stdout);
    }
}

/// A probe script: each step next to the result it must give.
pub type Script<'a> = [(&'a str, &'a str)];

/// The steps of a script, for [`Guest::new`].
pub fn steps<'a>(script: &Script<'a>) -> Vec<&'a str> {
    script.iter().map(|&(step, _)| step).collect()
}

impl Runtime {
    /// An engine for WASI 0.3 and 0.2 components, both worlds linked.
    pub fn new() -> Result<Runtime> {
        Runtime::with_worlds(true)
    }

    /// An engine for WASI 0.2 components only, as an embedder that runs no
    /// 0.3 components configures it: without wasmtime's concurrency
    /// support, which costs every host call (the benchmark's 0.2 figures).
    pub fn wasi_p2_only() -> Result<Runtime> {
        Runtime::with_worlds(false)
    }

    fn with_worlds(p3: bool) -> Result<Runtime> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.concurrency_support(p3);
        config.wasm_component_model_async(p3);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmlock::add_to_linker_async(&mut linker)?;
        if p3 {
            wasmtime_wasi::p3::add_to_linker(&mut linker)?;
            wasmlock::p3::add_to_linker(&mut linker)?;
        }
        Ok(Runtime {
            engine,
            linker,
            compiled: Mutex::new(HashMap::new()),
        })
    }

    pub fn component(&self, wasm: &Path) -> Result<Component> {
        let mut compiled = self.compiled.lock().unwrap();
        if let Some(c) = compiled.get(wasm) {
            return Ok(c.clone());
        }
        let c = Component::from_file(&self.engine, wasm)?;
        compiled.insert(wasm.to_path_buf(), c.clone());
        Ok(c)
    }

    /// Advances the epoch, interrupting guests whose deadline passed.
    pub fn tick(&self) {
        self.engine.increment_epoch();
    }

    /// Runs a guest as a `wasi:cli` command to completion (or trap); with
    /// [`Guest::instances`] above one, several instances in one store.
    pub async fn run(&self, guest: Guest) -> Result<Outcome> {
        let component = self.component(&guest.wasm)?;
        let stdout = guest.stdout.clone();
        let mut wasi = WasiCtxBuilder::new();
        wasi.arg(
            guest
                .wasm
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("guest"),
        )
        .args(&guest.args)
        .stdout(stdout.clone())
        .inherit_stderr();
        for (host, path, perms) in &guest.dirs {
            wasi.preopened_dir(host, path, *perms)?;
        }
        let mut store = Store::new(&self.engine, Host::new(wasi.build(), guest.locks.build()));
        match guest.epoch_deadline {
            Some(ticks) => {
                store.set_epoch_deadline(ticks);
                store.epoch_deadline_trap();
            }
            None => store.set_epoch_deadline(u64::MAX / 2),
        }
        // A WASI 0.3 command (which may export 0.2's `run` too, from std).
        let p3 = !guest.wasi_p2
            && component
                .get_export_index(None, "wasi:cli/run@0.3.0")
                .is_some();
        let run = async {
            for _ in 0..guest.instances {
                let ran = if p3 {
                    let command =
                        P3Command::instantiate_async(&mut store, &component, &self.linker).await?;
                    store
                        .run_concurrent(async move |a| command.wasi_cli_run().call_run(a).await)
                        .await??
                } else {
                    let command =
                        Command::instantiate_async(&mut store, &component, &self.linker).await?;
                    command.wasi_cli_run().call_run(&mut store).await?
                };
                if let Err(()) = ran {
                    return Ok(Err(()));
                }
            }
            Ok::<_, wasmtime::Error>(Ok(()))
        };
        let result = match run.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(())) => Err("the guest returned an error".to_owned()),
            Err(e) => Err(format!("{e:?}")),
        };
        let held_at_end = store.data().lock_ctx().held_locks();
        // Dropping the store releases everything the guest still held.
        drop(store);
        Ok(Outcome {
            result,
            stdout: String::from_utf8_lossy(&stdout.contents()).into_owned(),
            held_at_end,
        })
    }
}

/// One runtime for a test binary: components are compiled once.
pub fn rt() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Runtime::new().unwrap())
}

/// Runs the probe guest with `steps`, `dir` granted as `/data`.
pub async fn probe(dir: &Path, steps: &[&str]) -> Outcome {
    rt().run(Guest::new(PROBE, dir, steps)).await.unwrap()
}

/// Runs a script in the probe guest and checks every step's result.
pub async fn script(dir: &Path, script: &Script<'_>) -> Outcome {
    let out = probe(dir, &steps(script)).await;
    assert_eq!(out.result, Ok(()), "{}", out.stdout);
    out.check(script);
    out
}

/// Whether nobody holds the OS lock on `path` (tried from another thread).
pub fn free(path: &Path) -> bool {
    let path = path.to_path_buf();
    std::thread::spawn(move || FileLock::new(&path).unwrap().try_lock().is_ok())
        .join()
        .unwrap()
}

/// Waits (at most 10 s) until `path` exists.
pub async fn until_exists(path: &Path) {
    for _ in 0..2000 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{} never appeared", path.display());
}

/// Starts the probe with `script` (and `locks` as the host's limits) in a
/// task, to be checked with [`Outcome::check`] when it ends.
pub fn spawn_script(
    dir: &Path,
    script: &'static Script<'static>,
    locks: WasmLockCtxBuilder,
) -> tokio::task::JoinHandle<Outcome> {
    let mut guest = Guest::new(PROBE, dir, &steps(script));
    guest.locks = locks;
    tokio::spawn(async move { rt().run(guest).await.unwrap() })
}

/// `flock(1)` holding `path` in a child process (for 30 s), once it holds.
/// Kill it to release (`-o`: the command it runs does not hold the lock too).
pub async fn flock_1_holding(path: &Path) -> std::process::Child {
    let held = path.with_extension("lock.held");
    let child = std::process::Command::new("flock")
        .arg("-o")
        .arg(path)
        .arg("-c")
        .arg(format!("touch '{}'; sleep 30", held.display()))
        .spawn()
        .expect("flock(1) is required");
    until_exists(&held).await;
    child
}
