//! Fuzzing (proptest, stable Rust) of the soft-lock marker parser and the
//! stale-holder judgement behind it: whatever a marker file holds, a first
//! attempt breaks it exactly when its holder is provably gone. The fuzzing
//! of `LockDir` paths is in `tests/tests/hostile.rs`, beside the table of
//! hostile paths it shares its traps with. `PROPTEST_CASES` scales both up
//! (CI runs more cases than a local `cargo test`).

mod common;

use common::*;
use proptest::prelude::*;
use wasmlock::{ErrorKind, FileLock};

#[test]
#[ignore = "helper: runs only as a child process"]
fn child_entry() {
    child_main();
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
