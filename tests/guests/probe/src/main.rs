//! A test guest. Each argument is one step, `verb:arg:arg...`; each step
//! prints one line the test reads. Handles are named, so a script can hold
//! several locks at once.
//!
//! Steps: `open:H:PATH:os|soft`, `onfile:H:PATH`, `acq:H:ex|sh:forever|try|MS`,
//! `rel:H`, `count:H`, `locked:H`, `holder:H`, `break:H:force|noforce`,
//! `drop:H`, `start:H:ex|sh`, `poll:H:MS`, `finish:H`, `sem:S:DIR:NAME:N`,
//! `permit:S:forever|try|MS`, `droppermits`, `counter:H:FILE:N`,
//! `touch:PATH`, `await:PATH`, `sleep:MS`, `trap`, `spin`, `hostile:os|soft:HEX`
//! (open-at the first preopen with a hex-encoded path, then try), `log:PATH:TEXT`
//! (append a line), `bench:H:N` (N uncontended lock+unlock, prints the
//! nanoseconds they took).

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use wasip2::clocks::monotonic_clock::subscribe_duration;
use wasip2::filesystem::preopens::get_directories;
use wasip2::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
use wasip2::io::poll::poll;
use wasmlock_guest::{Kind, Lock, Mode, PendingLock, Permit, Semaphore, Wait};

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
    let mut locks: HashMap<String, Rc<Lock>> = HashMap::new();
    let mut pending: HashMap<String, PendingLock<'static>> = HashMap::new();
    let mut sems: HashMap<String, Semaphore> = HashMap::new();
    let mut permits: Vec<Permit> = Vec::new();
    for step in std::env::args().skip(1) {
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
                        locks.insert(h.to_string(), Rc::new(l));
                        "ok".into()
                    }
                    Err(e) => outcome::<()>(Err(e)),
                }
            }
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
                        locks.insert(h.to_string(), Rc::new(l));
                        "ok".into()
                    }
                    Err(e) => outcome::<()>(Err(e)),
                }
            }
            ["acq", h, m, w] => {
                let r = locks[*h].lock_with(mode(m), wait(w));
                // Keep the hold: the script releases it with rel.
                r.map(std::mem::forget)
                    .map_or_else(|e| outcome::<()>(Err(e)), |_| "ok".into())
            }
            ["rel", h] => outcome(locks[*h].unlock()),
            ["count", h] => locks[*h].hold_count().to_string(),
            ["locked", h] => match locks[*h].is_locked() {
                Ok(b) => b.to_string(),
                Err(e) => outcome::<()>(Err(e)),
            },
            ["holder", h] => match locks[*h].holder() {
                Ok(Some(hd)) => format!("pid {}", hd.pid.map_or("?".into(), |p| p.to_string())),
                Ok(None) => "none".into(),
                Err(e) => outcome::<()>(Err(e)),
            },
            ["break", h, force] => outcome(locks[*h].break_lock(*force == "force")),
            ["drop", h] => {
                locks.remove(*h);
                "ok".into()
            }
            ["start", h, m] => {
                // A pending acquisition borrows its lock; this one lives
                // until the store goes, and the script may go on using it.
                let lock: &'static Rc<Lock> = Box::leak(Box::new(locks[*h].clone()));
                match lock.start_lock(mode(m)) {
                    Ok(p) => {
                        pending.insert(h.to_string(), p);
                        "ok".into()
                    }
                    Err(e) => outcome::<()>(Err(e)),
                }
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
            ["finish", h] => {
                let p = pending.remove(*h).expect("started");
                p.finish()
                    .map(std::mem::forget)
                    .map_or_else(|e| outcome::<()>(Err(e)), |_| "ok".into())
            }
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
