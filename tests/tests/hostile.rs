//! Hostile paths, the same table through the native `LockDir` and through a
//! real guest's `open-at` on its preopen: each one is refused as permission
//! denied or invalid path, creates and touches nothing — outside the granted
//! directory or in it — and nothing hangs. Then fuzzed paths built from the
//! same traps (proptest; `PROPTEST_CASES` scales it up): locked inside the
//! granted directory or refused, never anything outside.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use wasmlock::{ErrorKind, Kind, LockDir};
use wasmlock_tests::{Guest, PROBE, PROBE3, Runtime};

use ErrorKind::{InvalidPath as IP, PermissionDenied as PD};

/// The granted directory with its traps, and a directory beside it.
struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    granted: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let granted = root.join("granted");
        let outside = root.join("outside");
        std::fs::create_dir_all(granted.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.lock"), b"secret").unwrap();
        std::fs::write(granted.join("file.txt"), b"data").unwrap();
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
        link(Path::new("/dev/null"), "devlink");
        mknod(&granted.join("fifo"), libc::S_IFIFO, 0);
        // A character device (like /dev/null) where one can be made.
        let dev = mknod(&granted.join("dev"), libc::S_IFCHR, libc::makedev(1, 3));
        if !dev {
            eprintln!("no device node: not root here; the device case is skipped");
        }
        Sandbox {
            _tmp: tmp,
            root,
            granted,
        }
    }

    /// Every name under the root (both directories), with length and mtime.
    fn state(&self) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
        self.state_but(None)
    }

    /// Every name outside the granted directory.
    fn outside_state(&self) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
        self.state_but(Some(&self.granted))
    }

    fn state_but(&self, skip: Option<&Path>) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
        let mut state = BTreeMap::new();
        let mut todo = vec![self.root.clone()];
        while let Some(dir) = todo.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let path = e.unwrap().path();
                if Some(path.as_path()) == skip {
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

fn mknod(path: &Path, kind: libc::mode_t, dev: libc::dev_t) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    unsafe { libc::mknod(c.as_ptr(), kind | 0o644, dev) == 0 }
}

/// The hostile paths, with the refusal each must get.
fn cases() -> Vec<(Vec<u8>, ErrorKind)> {
    let mut deep = b"a/".repeat(2100);
    deep.extend(b"x.lock");
    let text: &[(&str, ErrorKind)] = &[
        // Climbing out.
        ("..", IP),
        ("../x.lock", PD),
        ("a/../../x.lock", PD),
        ("sub/../../x.lock", PD),
        ("in/../../x.lock", PD),
        ("self/../x.lock", PD),
        // Absolute paths.
        ("/etc/passwd", PD),
        ("/x.lock", PD),
        ("//x.lock", PD),
        ("/dev/null", PD),
        // Symbolic links pointing out: relative, absolute, chained.
        ("up/x.lock", PD),
        ("out/x.lock", PD),
        ("out/secret.lock", PD),
        ("abs/x.lock", PD),
        ("chain/x.lock", PD),
        // Links as the final component, pointing anywhere.
        ("out", IP),
        ("outfile", IP),
        ("filelink", IP),
        ("devlink", IP),
        ("dangling", IP),
        ("loop1", IP),
        // Links that lead nowhere as a directory.
        ("dangling/x.lock", IP),
        ("loop1/x.lock", IP),
        // What names no file.
        ("", IP),
        (".", IP),
        ("./", IP),
        ("sub/.", IP),
        ("sub/..", IP),
        ("sub/", IP),
        ("sub", IP),
        ("file.txt/x.lock", IP),
        // NUL bytes.
        ("x\0y.lock", IP),
        ("\0", IP),
        // Windows spellings.
        ("..\\x.lock", IP),
        ("C:\\x.lock", IP),
        ("C:x.lock", IP),
        ("c:/x.lock", IP),
        ("sub\\..\\..\\x.lock", IP),
        // Windows devices, streams, and names it would shorten.
        ("CON", IP),
        ("sub/nul.lock", IP),
        ("com1/x.lock", IP),
        ("file.txt:stream", IP),
        ("x.lock.", IP),
        ("x.lock ", IP),
        // Not a regular file.
        ("fifo", IP),
    ];
    let mut cases: Vec<(Vec<u8>, ErrorKind)> = text
        .iter()
        .map(|(p, k)| (p.as_bytes().to_vec(), *k))
        .collect();
    cases.push((vec![b'n'; 256], IP));
    cases.push((deep, IP));
    cases.push((b"dev".to_vec(), IP));
    cases
}

/// Runs `f`, failing the test if it does not finish promptly.
fn promptly<T: Send + 'static>(what: String, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} hung"))
}

#[test]
fn hostile_paths_through_lock_dir_are_refused_and_touch_nothing() {
    let sb = Sandbox::new();
    let locks = LockDir::open_ambient(&sb.granted).unwrap();
    let mut native = cases();
    // Not expressible through WIT strings, but through `Path`.
    native.push((b"\xff\xfe.lock".to_vec(), IP));
    native.push((b"sub/\xc0.lock".to_vec(), IP));
    let mut checked = 0;
    for kind in [Kind::Os, Kind::Soft] {
        for (raw, want) in &native {
            if raw == b"dev" && !sb.granted.join("dev").exists() {
                continue;
            }
            let before = sb.state();
            let (locks, rel) = (locks.clone(), raw.clone());
            let result = promptly(format!("{:?}", OsStr::from_bytes(raw)), move || {
                locks
                    .builder(Path::new(OsStr::from_bytes(&rel)))
                    .kind(kind)
                    .build()
                    .and_then(|l| l.try_lock().map(drop))
            });
            let shown = String::from_utf8_lossy(raw);
            let err = result.expect_err(&format!("{shown:?} ({kind:?}) was accepted"));
            assert_eq!(err.kind(), *want, "{shown:?} ({kind:?}): {err}");
            // Named as the caller spelled it.
            assert_eq!(err.path(), sb.granted.join(OsStr::from_bytes(raw)), "{err}");
            assert_eq!(sb.state(), before, "{shown:?} ({kind:?}) changed something");
            checked += 1;
        }
    }
    eprintln!("hostile: {checked} path/kind cases refused through LockDir, nothing touched");
}

#[tokio::test]
async fn hostile_paths_through_a_guest_are_refused_and_touch_nothing() {
    let sb = Sandbox::new();
    let runtime = Runtime::new().unwrap();
    let mut checked = 0;
    // Through both interface versions: the checks are the same steps.
    for (wasm, kind) in [
        (PROBE, "os"),
        (PROBE, "soft"),
        (PROBE3, "os"),
        (PROBE3, "soft"),
    ] {
        let cases: Vec<_> = cases()
            .into_iter()
            .filter(|(raw, _)| raw != b"dev" || sb.granted.join("dev").exists())
            .collect();
        let steps: Vec<String> = cases
            .iter()
            .map(|(raw, _)| {
                let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                format!("hostile:{kind}:{hex}")
            })
            .collect();
        let before = sb.state();
        let args: Vec<&str> = steps.iter().map(String::as_str).collect();
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            runtime.run(Guest::new(wasm, &sb.granted, &args)),
        )
        .await
        .expect("the guest hung")
        .unwrap();
        out.result.clone().unwrap();
        for ((raw, want), step) in cases.iter().zip(&steps) {
            let shown = String::from_utf8_lossy(raw);
            // Refused when opened, or (a soft lock's marker path) at the
            // first attempt.
            let got = out.step(step);
            let refusal = got.strip_prefix("open ok, try ").unwrap_or(got);
            // The guest's error codes split `PermissionDenied` the way
            // wasi-filesystem does: the sandbox's refusals are `Access`.
            let want = match want {
                ErrorKind::PermissionDenied => "err Access ".to_owned(),
                other => format!("err {other:?} "),
            };
            assert!(
                refusal.starts_with(&want),
                "{shown:?} ({kind}, {wasm}): {got}"
            );
            // Errors name the path as the guest spelled it, never a host path.
            assert!(!got.contains(sb.root.to_str().unwrap()), "{got}");
            checked += 1;
        }
        assert_eq!(
            sb.state(),
            before,
            "a guest's hostile path changed something"
        );
    }
    eprintln!("hostile: {checked} path/kind/world cases refused through guests, nothing touched");
}

/// One component of a fuzzed path: the sandbox's traps, and odd bytes.
fn component() -> impl Strategy<Value = Vec<u8>> {
    let words: Vec<&[u8]> = vec![
        b"..",
        b".",
        b"",
        b"sub",
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
        b"devlink",
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

fn fuzzed_path() -> impl Strategy<Value = Vec<u8>> {
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

fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(256)))]

    /// Any path: refused with a path error naming it as given, or locked
    /// inside the granted directory; nothing outside is created or touched.
    #[test]
    fn fuzzed_lock_dir_paths_never_leave_the_sandbox(raw in fuzzed_path(), soft in any::<bool>()) {
        thread_local!(static SANDBOX: (Sandbox, LockDir) = {
            let sb = Sandbox::new();
            let locks = LockDir::open_ambient(&sb.granted).unwrap();
            (sb, locks)
        });
        SANDBOX.with(|(sb, locks)| {
            let before = sb.outside_state();
            let rel = Path::new(OsStr::from_bytes(&raw));
            let kind = if soft { Kind::Soft } else { Kind::Os };
            let result = locks.builder(rel).kind(kind).build().and_then(|l| l.try_lock().map(drop));
            if let Err(e) = &result {
                prop_assert!(
                    [PD, IP, ErrorKind::WouldBlock].contains(&e.kind()),
                    "{:?}: unexpected {:?}: {}", rel, e.kind(), e
                );
                prop_assert_eq!(e.path(), sb.granted.join(rel), "{}", e);
            }
            prop_assert_eq!(sb.outside_state(), before, "{:?} touched the outside", rel);
            Ok(())
        })?;
    }
}
