//! Property-based fuzzing (proptest, stable Rust) of what reads untrusted
//! input: path resolution inside a `LockDir`, and the soft-lock marker
//! parser with the stale-holder judgement behind it. `PROPTEST_CASES` scales
//! them up (CI runs more cases than a local `cargo test`).

mod common;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use common::*;
use proptest::prelude::*;
use wasmlock::{ErrorKind, FileLock, Kind, LockDir};

#[test]
#[ignore = "helper: runs only as a child process"]
fn child_entry() {
    child_main();
}

/// A granted directory full of traps, next to a directory that must never
/// be touched.
struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    locks: LockDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tmp();
        let root = tmp.path().to_path_buf();
        let granted = root.join("granted");
        let outside = root.join("outside");
        std::fs::create_dir_all(granted.join("sub/deep")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.lock"), b"secret").unwrap();
        std::fs::write(granted.join("file.txt"), b"data").unwrap();
        make_fifo(&granted.join("fifo"));
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, granted.join(name)).unwrap()
        };
        link(Path::new("sub"), "in");
        link(Path::new(".."), "up");
        link(Path::new("../outside"), "out");
        link(&outside, "abs");
        link(Path::new("out"), "chain");
        link(Path::new("nowhere"), "dangling");
        link(Path::new("loop2"), "loop1");
        link(Path::new("loop1"), "loop2");
        link(Path::new("."), "self");
        link(Path::new("file.txt"), "filelink");
        link(Path::new("../outside/secret.lock"), "outfile");
        let locks = LockDir::open_ambient(&granted).unwrap();
        Sandbox {
            _tmp: tmp,
            root,
            locks,
        }
    }

    /// Every file outside the granted directory: name → (length, mtime).
    fn outside_state(&self) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
        let mut state = BTreeMap::new();
        let mut todo = vec![self.root.clone()];
        while let Some(dir) = todo.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                let path = e.path();
                if path == self.root.join("granted") {
                    continue;
                }
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    todo.push(path.clone());
                }
                state.insert(path, (meta.len(), meta.modified().unwrap()));
            }
        }
        state
    }
}

pub fn make_fifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

fn component() -> impl Strategy<Value = Vec<u8>> {
    let words: Vec<&[u8]> = vec![
        b"..",
        b".",
        b"",
        b"sub",
        b"deep",
        b"in",
        b"up",
        b"out",
        b"abs",
        b"chain",
        b"dangling",
        b"loop1",
        b"self",
        b"file.txt",
        b"fifo",
        b"filelink",
        b"outfile",
        b"x.lock",
        b"secret.lock",
        b"a\\b",
        b"C:",
        b"c:x",
        b"\0",
        b"\xc3\xa9",
        b"\xff\xfe",
        b"new",
    ];
    prop_oneof![
        8 => proptest::sample::select(words).prop_map(|w| w.to_vec()),
        1 => Just(vec![b'n'; 255]),
        1 => Just(vec![b'n'; 256]),
        1 => proptest::collection::vec(any::<u8>(), 1..6),
    ]
}

fn hostile_path() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        proptest::collection::vec(component(), 1..7),
        any::<bool>(),
    )
        .prop_map(|(absolute, parts, trailing)| {
            let mut p = if absolute { b"/".to_vec() } else { Vec::new() };
            p.extend(parts.join(&b'/'));
            if trailing {
                p.push(b'/');
            }
            p
        })
}

/// Path errors a sandbox may give; everything else is a bug or an escape.
const PATH_ERRORS: [ErrorKind; 2] = [ErrorKind::PermissionDenied, ErrorKind::InvalidPath];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// Any path: refused with a path error, or a lock inside the granted
    /// directory; nothing outside it is created or touched, and nothing hangs.
    #[test]
    fn lock_dir_paths_never_leave_the_sandbox(raw in hostile_path(), soft in any::<bool>()) {
        thread_local!(static BOX: Sandbox = Sandbox::new());
        BOX.with(|sb| {
            let before = sb.outside_state();
            let rel = Path::new(std::ffi::OsStr::from_bytes(&raw));
            let kind = if soft { Kind::Soft } else { Kind::Os };
            let result = sb
                .locks
                .builder(rel)
                .kind(kind)
                .build()
                .and_then(|l| l.try_lock().map(drop));
            if let Err(e) = &result {
                prop_assert!(
                    PATH_ERRORS.contains(&e.kind()) || e.kind() == ErrorKind::WouldBlock,
                    "{:?}: unexpected {:?}: {}", rel, e.kind(), e
                );
                // Named as the caller spelled it.
                prop_assert_eq!(e.path(), sb.locks.path().join(rel), "{}", e);
            }
            prop_assert_eq!(sb.outside_state(), before, "{:?} touched the outside", rel);
            Ok(())
        })?;
    }
}

/// What a marker says, built so that the right judgement is known.
#[derive(Debug, Clone)]
enum Marker {
    /// This (live) process, with no token or with its own.
    Live {
        token: bool,
    },
    /// This process's pid with another process's start token: recycled.
    Recycled {
        delta: u64,
    },
    /// A process that has exited.
    Dead {
        token: Option<u64>,
    },
    /// Any pid, another host.
    OtherHost {
        pid: u32,
        host: String,
    },
    Empty,
    /// Not a marker: broken only after a grace period, never at first sight.
    Garbage(Vec<u8>),
    /// Anything at all: the judgement may go either way, but nothing panics
    /// and a marker that is not broken is left exactly as it was.
    Anything(Vec<u8>),
}

fn marker() -> impl Strategy<Value = Marker> {
    let garbage = prop_oneof![
        // No final newline: cut by a crash.
        "[0-9]{1,6}\n[a-z]{1,10}".prop_map(String::into_bytes),
        // Not a number first.
        "[a-z+-]{1,4}[0-9]{0,3}\n[a-z]{1,10}\n".prop_map(String::into_bytes),
        // Too many lines.
        "[0-9]{1,6}\n[a-z]{1,8}\n[0-9]{1,5}\n[a-z]{1,5}\n".prop_map(String::into_bytes),
        // A token that is not a number.
        "[0-9]{1,6}\n[a-z]{1,8}\nx[0-9]{1,5}\n".prop_map(String::into_bytes),
        // pid 0, or beyond what a pid can be.
        Just(b"0\nhost\n".to_vec()),
        Just(b"4294967296\nhost\n".to_vec()),
        // Not UTF-8.
        proptest::collection::vec(128u8..=255, 1..20),
    ];
    prop_oneof![
        any::<bool>().prop_map(|token| Marker::Live { token }),
        (1u64..1_000_000).prop_map(|delta| Marker::Recycled { delta }),
        proptest::option::of(any::<u64>()).prop_map(|token| Marker::Dead { token }),
        (1u32..4_000_000, "[a-z][a-z0-9.-]{0,30}").prop_map(|(pid, host)| Marker::OtherHost {
            pid,
            host: format!("other-{host}")
        }),
        Just(Marker::Empty),
        garbage.prop_map(Marker::Garbage),
        proptest::collection::vec(any::<u8>(), 0..120).prop_map(Marker::Anything),
    ]
}

/// A decimal number `delta` (below 10^6) away from `n`, which may be
/// longer than any integer type (start tokens have up to 58 digits).
fn shift_decimal(n: &str, delta: u64) -> String {
    let split = n.len().saturating_sub(18);
    let (head, tail) = n.split_at(split);
    let tail: u64 = tail.parse().unwrap();
    let moved = if tail + delta < 1_000_000_000_000_000_000 {
        tail + delta
    } else {
        tail - delta
    };
    let width = n.len() - split;
    format!("{head}{moved:0width$}")
}

/// Our host line and start token, as our own markers carry them.
fn ours() -> &'static (String, String) {
    static OURS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    OURS.get_or_init(|| {
        let dir = tmp();
        let path = dir.path().join("ours.lock");
        let lock = FileLock::builder(&path).soft().build().unwrap();
        let g = lock.lock().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        drop(g);
        let mut lines = text.lines().skip(1);
        (
            lines.next().unwrap().to_owned(),
            lines.next().unwrap().to_owned(),
        )
    })
}

impl Marker {
    fn bytes(&self, dead: u32) -> Vec<u8> {
        let (host, token) = ours();
        let me = std::process::id();
        match self {
            Marker::Live { token: false } => format!("{me}\n{host}\n").into_bytes(),
            Marker::Live { token: true } => format!("{me}\n{host}\n{token}\n").into_bytes(),
            Marker::Recycled { delta } => {
                let other = shift_decimal(token, *delta);
                format!("{me}\n{host}\n{other}\n").into_bytes()
            }
            Marker::Dead { token: None } => format!("{dead}\n{host}\n").into_bytes(),
            Marker::Dead { token: Some(t) } => format!("{dead}\n{host}\n{t}\n").into_bytes(),
            Marker::OtherHost { pid, host } => format!("{pid}\n{host}\n").into_bytes(),
            Marker::Empty => Vec::new(),
            Marker::Garbage(b) | Marker::Anything(b) => b.clone(),
        }
    }

    /// Whether a first attempt must break it (`Some(true)`), must leave it
    /// (`Some(false)`), or may do either.
    fn must_break(&self) -> Option<bool> {
        match self {
            Marker::Recycled { .. } | Marker::Dead { .. } => Some(true),
            Marker::Live { .. } | Marker::OtherHost { .. } | Marker::Empty | Marker::Garbage(_) => {
                Some(false)
            }
            Marker::Anything(_) => None,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// A first attempt on a marker breaks it exactly when its holder is
    /// provably gone (same host; dead, or its pid recycled), and otherwise
    /// leaves the marker byte for byte as it was.
    #[test]
    fn markers_are_judged_by_their_holder_and_left_alone_otherwise(m in marker()) {
        thread_local!(static DEAD: u32 = dead_pid());
        let dir = tmp();
        let path = dir.path().join("m.lock");
        let bytes = m.bytes(DEAD.with(|d| *d));
        std::fs::write(&path, &bytes).unwrap();
        let lock = FileLock::builder(&path).soft().build().unwrap();
        match lock.try_lock() {
            Ok(g) => {
                prop_assert_ne!(m.must_break(), Some(false), "broke {:?}", m);
                drop(g);
                prop_assert!(!path.exists());
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::WouldBlock, "{:?}: {}", m, e);
                prop_assert_ne!(m.must_break(), Some(true), "left {:?}", m);
                prop_assert_eq!(std::fs::read(&path).unwrap(), bytes);
            }
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        prop_assert!(leftovers.len() <= 1, "{:?}", leftovers);
    }
}
