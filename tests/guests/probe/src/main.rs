//! A test guest. Each argument is one step, `verb:arg:arg...`; each step
//! prints one line the test reads. Handles are named, so a script can hold
//! several locks at once.
//!
//! Steps: `open:H:PATH:os|soft`, `onfile:H:PATH`, `ns:H:NAMESPACE:KEY`,
//! `nslist`, `acq:H:ex|sh:forever|try|MS` (keeps the guard under `H`),
//! `rel:H` (releases `H`'s last guard), `count:H` (guards kept under `H`),
//! `lost:H` (the last guard's status), `fence:H` (its fencing token), `waitlost:H:MS` (its lost pollable
//! against a timer), `lostmany:H:N` (keeps N lost pollables of the last guard), `locked:H`, `holder:H`, `break:H:force|noforce`,
//! `drop:H` (the handle), `dropguards:H`, `leak:H` (forgets the guards), `start:H:ex|sh`, `semstart:S`,
//! `keep:H` (keeps the pending acquisition's pollable), `poll:H:MS`,
//! `finish:H` (keeps the pending acquisition: may be repeated), `unpend:H`,
//! `sem:S:DIR:NAME:N`, `nssem:S:NAMESPACE:KEY:N`, `permit:S:forever|try|MS`,
//! `droppermits`, `counter:H:FILE:N`, `touch:PATH`, `await:PATH`,
//! `sleep:MS`, `trap`, `spin`, `hostile:os|soft:HEX` (open-at the first
//! preopen with a hex-encoded path, then try), `log:PATH:TEXT` (append a
//! line), `bench:H:N` (N uncontended lock+unlock, prints the nanoseconds
//! they took). `--then` splits the steps between two instances in one store.

use std::collections::HashMap;
use std::time::Duration;

use wasip2::clocks::monotonic_clock::subscribe_duration;
use wasip2::filesystem::preopens::get_directories;
use wasip2::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
use wasip2::io::poll::{Pollable, poll};
use wasmlock_guest::{Guard, Kind, Lock, Mode, Namespace, PendingLock, Permit, Semaphore, Wait};

fn wait(word: &str) -> Wait {
    match word {
        "forever" => Wait::Forever,
        "try" => Wait::TryOnce,
        ms => Wait::Timeout(Duration::from_millis(ms.parse().expect("wait in ms"))),
    }
}

fn mode(word: &str) -> Mode {
    if word == "sh" {
        Mode::Shared
    } else {
        Mode::Exclusive
    }
}

fn outcome<T>(r: Result<T, wasmlock_guest::Error>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("err {:?} {}", e.kind(), e.message()),
    }
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn bump(path: &str) {
    let n: u64 = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    std::fs::write(path, format!("{}\n", n + 1)).unwrap();
}

fn main() {
    let mut locks: HashMap<String, Lock> = HashMap::new();
    let mut guards: HashMap<String, Vec<Guard>> = HashMap::new();
    let mut pending: HashMap<String, PendingLock> = HashMap::new();
    let mut kept: Vec<Pollable> = Vec::new();
    let mut sems: HashMap<String, Semaphore> = HashMap::new();
    let mut permits: Vec<Permit> = Vec::new();
    // Several instances in one store share their arguments: `--then`
    // splits them, and a file says which part this instance runs.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps = match args.iter().position(|a| a == "--then") {
        None => args,
        Some(split) => {
            let marker = "/data/.probe-first-ran";
            if std::fs::metadata(marker).is_err() {
                std::fs::write(marker, b"").unwrap();
                args[..split].to_vec()
            } else {
                args[split + 1..].to_vec()
            }
        }
    };
    for step in steps {
        let parts: Vec<&str> = step.split(':').collect();
        let line = match parts.as_slice() {
            ["open", h, path, kind] => {
                let kind = if *kind == "soft" {
                    Kind::Soft
                } else {
                    Kind::Os
                };
                match Lock::open_kind(path, kind) {
                    Ok(l) => {
                        locks.insert(h.to_string(), l);
                        "ok".into()
                    }
                    Err(e) => outcome::<()>(Err(e)),
                }
            }
            ["ns", h, ns, key] => match Namespace::get(ns).and_then(|ns| ns.lock(key)) {
                Ok(l) => {
                    locks.insert(h.to_string(), l);
                    "ok".into()
                }
                Err(e) => outcome::<()>(Err(e)),
            },
            ["nslist"] => Namespace::list().join(","),
            // Open-at on the first preopen with a path given in hex (any
            // bytes, ':' and NUL included), then one try: what a hostile
            // guest would do. Prints both outcomes.
            ["hostile", kind, hex] => {
                let path = String::from_utf8(unhex(hex)).expect("UTF-8: WIT strings are");
                let kind = if *kind == "soft" {
                    Kind::Soft
                } else {
                    Kind::Os
                };
                let dirs = get_directories();
                match Lock::open_at(&dirs[0].0, &path, kind) {
                    Ok(l) => format!("open ok, try {}", outcome(l.try_lock().map(drop))),
                    Err(e) => outcome::<()>(Err(e)),
                }
            }
            ["onfile", h, path] => {
                let dirs = get_directories();
                let (dir, rel) = dirs
                    .iter()
                    .find_map(|(d, name)| path.strip_prefix(&format!("{name}/")).map(|r| (d, r)))
                    .expect("path in a preopen");
                let file = dir
                    .open_at(
                        PathFlags::empty(),
                        rel,
                        OpenFlags::empty(),
                        DescriptorFlags::READ,
                    )
                    .expect("open data file");
                match Lock::on_file(&file) {
                    Ok(l) => {
                        locks.insert(h.to_string(), l);
                        "ok".into()
                    }
                    Err(e) => outcome::<()>(Err(e)),
                }
            }
            ["acq", h, m, w] => match locks[*h].lock_with(mode(m), wait(w)) {
                // Keep the hold: the script releases it with rel.
                Ok(g) => {
                    guards.entry(h.to_string()).or_default().push(g);
                    "ok".into()
                }
                Err(e) => outcome::<()>(Err(e)),
            },
            ["rel", h] => match guards.get_mut(*h).and_then(Vec::pop) {
                Some(g) => outcome(g.unlock()),
                None => "no guard".into(),
            },
            ["count", h] => guards.get(*h).map_or(0, Vec::len).to_string(),
            // Leaves the guards to the store: they stay held after this
            // instance's `run` returns.
            ["leak", h] => {
                guards
                    .remove(*h)
                    .into_iter()
                    .flatten()
                    .for_each(std::mem::forget);
                "ok".into()
            }
            ["dropguards", h] => {
                guards.remove(*h);
                "ok".into()
            }
            ["lost", h] => match guards.get(*h).and_then(|g| g.last()) {
                Some(g) if g.is_lost() => "lost".into(),
                Some(_) => "held".into(),
                None => "no guard".into(),
            },
            ["fence", h] => match guards.get(*h).and_then(|g| g.last()) {
                Some(g) => g.fence().map_or("none".into(), |f| format!("fence {f}")),
                None => "no guard".into(),
            },
            ["waitlost", h, ms] => {
                let lost = guards[*h].last().expect("a guard").lost_pollable();
                let timer = subscribe_duration(ms.parse::<u64>().unwrap() * 1_000_000);
                if poll(&[&lost, &timer]).contains(&0) {
                    "lost".into()
                } else {
                    "timeout".into()
                }
            }
            ["lostmany", h, n] => {
                let guard = guards[*h].last().expect("a guard");
                let kept: Vec<Pollable> = (0..n.parse().unwrap())
                    .map(|_| guard.lost_pollable())
                    .collect();
                format!("kept {}", kept.len())
            }
            ["locked", h] => match locks[*h].is_locked() {
                Ok(b) => b.to_string(),
                Err(e) => outcome::<()>(Err(e)),
            },
            ["holder", h] => match locks[*h].holder() {
                Ok(Some(hd)) => format!(
                    "{:?} pid {}",
                    hd.kind,
                    hd.pid.map_or("?".into(), |p| p.to_string())
                ),
                Ok(None) => "none".into(),
                Err(e) => outcome::<()>(Err(e)),
            },
            ["break", h, force] => outcome(locks[*h].break_lock(*force == "force")),
            ["drop", h] => {
                locks.remove(*h);
                "ok".into()
            }
            ["start", h, m] => match locks[*h].start_lock(mode(m)) {
                Ok(p) => {
                    pending.insert(h.to_string(), p);
                    "ok".into()
                }
                Err(e) => outcome::<()>(Err(e)),
            },
            ["semstart", s] => match sems[*s].start_acquire() {
                Ok(p) => {
                    pending.insert(s.to_string(), p);
                    "ok".into()
                }
                Err(e) => outcome::<()>(Err(e)),
            },
            ["keep", h] => {
                kept.push(pending[*h].pollable());
                "ok".into()
            }
            ["poll", h, ms] => {
                let p = &pending[*h];
                let timer = subscribe_duration(ms.parse::<u64>().unwrap() * 1_000_000);
                let ready = poll(&[&p.pollable(), &timer]);
                if ready.contains(&0) {
                    "ready".into()
                } else {
                    "timeout".into()
                }
            }
            ["finish", h] => match pending[*h].finish() {
                Ok(g) => {
                    let slot = g.slot().map_or(String::new(), |s| format!(" slot {s}"));
                    guards.entry(h.to_string()).or_default().push(g);
                    format!("ok{slot}")
                }
                Err(e) => outcome::<()>(Err(e)),
            },
            ["unpend", h] => {
                pending.remove(*h);
                "ok".into()
            }
            ["sem", s, dir, name, n] => match Semaphore::open(dir, name, n.parse().unwrap()) {
                Ok(sem) => {
                    sems.insert(s.to_string(), sem);
                    "ok".into()
                }
                Err(e) => outcome::<()>(Err(e)),
            },
            ["nssem", s, ns, key, n] => {
                match Namespace::get(ns).and_then(|ns| ns.semaphore(key, n.parse().unwrap())) {
                    Ok(sem) => {
                        sems.insert(s.to_string(), sem);
                        "ok".into()
                    }
                    Err(e) => outcome::<()>(Err(e)),
                }
            }
            ["permit", s, w] => match sems[*s].acquire(wait(w)) {
                Ok(p) => {
                    let slot = p.slot();
                    permits.push(p);
                    format!("slot {slot}")
                }
                Err(e) => outcome::<()>(Err(e)),
            },
            ["droppermits"] => {
                permits.clear();
                "ok".into()
            }
            ["counter", h, file, n] => {
                for _ in 0..n.parse::<u32>().unwrap() {
                    let _g = locks[*h].lock().expect("lock");
                    bump(file);
                }
                "ok".into()
            }
            ["log", path, text] => {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
                    .unwrap();
                writeln!(f, "{text}").unwrap();
                "ok".into()
            }
            ["bench", h, n] => {
                let lock = &locks[*h];
                let start = std::time::Instant::now();
                for _ in 0..n.parse::<u32>().unwrap() {
                    drop(lock.lock().expect("lock"));
                }
                format!("ns {}", start.elapsed().as_nanos())
            }
            ["touch", path] => {
                std::fs::write(path, b"").unwrap();
                "ok".into()
            }
            ["await", path] => {
                while std::fs::metadata(path).is_err() {
                    std::thread::sleep(Duration::from_millis(2));
                }
                "ok".into()
            }
            ["sleep", ms] => {
                std::thread::sleep(Duration::from_millis(ms.parse().unwrap()));
                "ok".into()
            }
            // A Rust abort is a WebAssembly trap.
            ["trap"] => std::process::abort(),
            ["spin"] => loop {
                std::hint::black_box(0);
            },
            other => panic!("unknown step {other:?}"),
        };
        println!("{step} => {line}");
    }
}
