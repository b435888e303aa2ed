//! Paths, permissions, the sandbox and the lock file's lifecycle.

mod common;

#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use wasmlock::{ErrorKind, FileLock, LockDir};

#[test]
#[ignore = "helper: runs only as a child process"]
fn child_entry() {
    child_main();
}

/// A temporary directory an unprivileged child can enter.
fn tmp() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

#[cfg(unix)]
fn kind_of(path: impl AsRef<Path>) -> ErrorKind {
    match FileLock::new(path).and_then(|l| l.try_lock().map(drop)) {
        Ok(()) => panic!("expected an error"),
        Err(e) => e.kind(),
    }
}

// Symbolic links need a privilege on Windows.
#[cfg(unix)]
#[test]
fn invalid_paths_are_refused_with_the_path_named() {
    let dir = tmp();
    std::fs::create_dir(dir.path().join("adir")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join("link")).unwrap();
    std::fs::write(dir.path().join("target"), "").unwrap();
    let cases = [
        String::new(),
        ".".into(),
        "..".into(),
        format!("{}/", p(dir.path())),
        format!("{}/adir", p(dir.path())),
        format!("{}/adir/.", p(dir.path())),
        format!("{}/link", p(dir.path())),
        format!("{}/{}", p(dir.path()), "n".repeat(300)),
    ];
    for case in &cases {
        let e = FileLock::new(case)
            .and_then(|l| l.try_lock().map(drop))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidPath, "{case:?}: {e}");
        assert_eq!(e.path(), Path::new(case), "the error names the path");
    }
    let nul = std::ffi::OsStr::new("a\0b");
    assert_eq!(kind_of(nul), ErrorKind::InvalidPath);
    // The symlink target was not touched, the directory not replaced.
    assert!(dir.path().join("adir").is_dir());
}

// FIFOs and device nodes are Unix files.
#[cfg(unix)]
#[test]
fn fifos_and_devices_are_refused_at_once_without_hanging() {
    let dir = tmp();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(p(&fifo)).unwrap();
    // SAFETY: mkfifo with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let t = std::time::Instant::now();
    assert_eq!(kind_of(&fifo), ErrorKind::InvalidPath);
    assert_eq!(kind_of("/dev/null"), ErrorKind::InvalidPath);
    let soft = FileLock::builder(&fifo).soft().build().unwrap();
    assert_eq!(soft.try_lock().unwrap_err().kind(), ErrorKind::InvalidPath);
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
}

/// Two spellings that differ only in case are one file where the file
/// system folds case (NTFS; APFS by default) and two elsewhere (ext4,
/// tmpfs): one lock there, OS and soft, in this process and from another
/// one; two locks elsewhere. On Windows it must fold.
#[test]
fn names_that_differ_in_case_are_one_lock_where_they_are_one_file() {
    for kind in [wasmlock::Kind::Os, wasmlock::Kind::Soft] {
        let dir = tmp();
        let (lower, upper) = (dir.path().join("case.lock"), dir.path().join("CASE.LOCK"));
        let lock = |path: &Path| FileLock::builder(path).kind(kind).build().unwrap();
        let first = lock(&lower);
        let held = first.try_lock().unwrap();
        // The file system's own answer: the lock file or marker exists now.
        let one_file = upper.exists();
        assert!(one_file || !cfg!(windows), "{kind:?}: Windows folds case");
        let here = lock(&upper).try_lock().map(drop);
        let k = if kind == wasmlock::Kind::Soft {
            "soft"
        } else {
            "os"
        };
        let mut child = Child::spawn(&["try", p(&upper), "ex", k]);
        let there = child.expect("RESULT", LONG);
        child.finish();
        if one_file {
            assert_eq!(here.unwrap_err().kind(), ErrorKind::WouldBlock, "{kind:?}");
            assert_eq!(there, "WouldBlock", "{kind:?}");
        } else {
            here.unwrap();
            assert_eq!(there, "ok", "{kind:?}");
        }
        drop(held);
    }
}

/// A file opened for overlapped I/O cannot be locked by a call that
/// returns once the lock is granted: refused, naming the problem, before
/// any lock is asked for. The same file opened as `std` opens files locks.
#[cfg(windows)]
#[test]
fn a_file_opened_for_overlapped_io_is_refused() {
    use std::os::windows::fs::OpenOptionsExt;
    const FILE_FLAG_OVERLAPPED: u32 = 0x4000_0000;
    let dir = tmp();
    let path = dir.path().join("overlapped.dat");
    let open = |flags| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .custom_flags(flags)
            .open(&path)
            .unwrap()
    };
    let refused = FileLock::from_file(open(FILE_FLAG_OVERLAPPED))
        .and_then(|l| l.try_lock().map(drop))
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unsupported, "{refused}");
    assert!(refused.to_string().contains("overlapped"), "{refused}");
    drop(FileLock::from_file(open(0)).unwrap().try_lock().unwrap());
}

// Unix permission bits.
#[cfg(unix)]
#[test]
fn read_only_directory_and_file_give_permission_denied_at_once() {
    let dir = tmp();
    let ro_dir = dir.path().join("ro");
    std::fs::create_dir(&ro_dir).unwrap();
    std::fs::set_permissions(&ro_dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let ro_file = dir.path().join("ro.lock");
    std::fs::write(&ro_file, "").unwrap();
    std::fs::set_permissions(&ro_file, std::fs::Permissions::from_mode(0o444)).unwrap();

    for (path, k) in [
        (ro_dir.join("x.lock"), "os"),
        (ro_dir.join("x.lock"), "soft"),
        (ro_file.clone(), "os"),
        (ro_dir.join("sub/x.lock"), "os"),
    ] {
        let t = std::time::Instant::now();
        let mut c = Child::spawn_unprivileged(&["try", p(&path), "ex", k]);
        assert_eq!(c.expect("RESULT", LONG), "PermissionDenied", "{path:?} {k}");
        c.finish();
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "no waiting"
        );
    }
    assert!(!ro_dir.join("x.lock").exists());
}

#[test]
fn missing_parent_directories_are_created() {
    let dir = tmp();
    let path = dir.path().join("a/b/c/deep.lock");
    let lock = FileLock::new(&path).unwrap();
    drop(lock.lock().unwrap());
    assert!(path.is_file());
    let locks = LockDir::open_ambient(dir.path().join("granted")).unwrap();
    drop(locks.file_lock("x/y/z.lock").unwrap().lock().unwrap());
    assert!(dir.path().join("granted/x/y/z.lock").is_file());
    // `.` names nothing, at the end of the directories too.
    drop(locks.file_lock("p/./q/./r.lock").unwrap().lock().unwrap());
    assert!(dir.path().join("granted/p/q/r.lock").is_file());
}

// Symbolic links need a privilege on Windows; its own ways out are in
// `windows_ways_out_are_refused_and_nothing_is_created`.
#[cfg(unix)]
#[test]
fn the_sandbox_refuses_every_way_out_and_creates_nothing_outside() {
    let outer = tmp();
    let root = outer.path().join("root");
    std::fs::create_dir_all(root.join("inside")).unwrap();
    std::fs::create_dir(outer.path().join("outside")).unwrap();
    std::os::unix::fs::symlink(outer.path().join("outside"), root.join("out-link")).unwrap();
    std::os::unix::fs::symlink("../outside", root.join("rel-out")).unwrap();
    std::os::unix::fs::symlink("inside", root.join("in-link")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
    let locks = LockDir::open_ambient(&root).unwrap();

    let refused = [
        ("../escape.lock", ErrorKind::PermissionDenied),
        ("a/../../escape.lock", ErrorKind::PermissionDenied),
        ("inside/../../escape.lock", ErrorKind::PermissionDenied),
        ("/tmp/abs.lock", ErrorKind::PermissionDenied),
        ("out-link/x.lock", ErrorKind::PermissionDenied),
        ("rel-out/x.lock", ErrorKind::PermissionDenied),
        ("etc/x.lock", ErrorKind::PermissionDenied),
        ("out-link/new/x.lock", ErrorKind::PermissionDenied),
        ("", ErrorKind::InvalidPath),
        (".", ErrorKind::InvalidPath),
        ("inside/", ErrorKind::InvalidPath),
        ("a\\b.lock", ErrorKind::InvalidPath),
        ("in-link", ErrorKind::InvalidPath),
    ];
    for (rel, want) in refused {
        for soft in [false, true] {
            let r = locks
                .builder(rel)
                .kind(if soft {
                    wasmlock::Kind::Soft
                } else {
                    wasmlock::Kind::Os
                })
                .build()
                .and_then(|l| l.try_lock().map(drop));
            let e = r.expect_err(rel);
            assert_eq!(e.kind(), want, "{rel:?} (soft: {soft}): {e}");
            assert_eq!(e.path(), root.join(rel), "names the path as given: {e}");
        }
    }
    assert_eq!(
        std::fs::read_dir(outer.path().join("outside"))
            .unwrap()
            .count(),
        0,
        "nothing was created outside"
    );
    assert!(!outer.path().join("escape.lock").exists());
    // Going down and up again inside is fine, and so is a link that stays in.
    drop(
        locks
            .file_lock("inside/../ok.lock")
            .unwrap()
            .lock()
            .unwrap(),
    );
    drop(locks.file_lock("in-link/ok.lock").unwrap().lock().unwrap());
    assert!(root.join("ok.lock").is_file());
    assert!(root.join("inside/ok.lock").is_file());
}

// Unix permission bits.
#[cfg(unix)]
#[test]
fn a_read_only_granted_directory_cannot_create_lock_files() {
    let dir = tmp();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut c = Child::spawn_unprivileged(&["try-in", p(dir.path()), "jobs/1.lock", "os"]);
    assert_eq!(c.expect("RESULT", LONG), "PermissionDenied");
    c.finish();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
}

#[test]
fn the_lock_file_is_kept_after_release_and_never_written() {
    let dir = tmp();
    let path = dir.path().join("keep.lock");
    let lock = FileLock::new(&path).unwrap();
    drop(lock.lock().unwrap());
    assert!(path.exists());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    std::fs::write(&path, "user data").unwrap();
    drop(lock.lock().unwrap());
    drop(lock.lock_shared().unwrap());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "user data");
}

// Unix permission bits.
#[cfg(unix)]
#[test]
fn a_contender_never_touches_the_holders_file() {
    let dir = tmp();
    let path = dir.path().join("holder.lock");
    let holder = FileLock::builder(&path).mode(0o600).build().unwrap();
    let g = holder.lock().unwrap();
    std::fs::write(&path, "holder's bytes").unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    std::thread::scope(|s| {
        s.spawn(|| {
            let contender = FileLock::builder(&path).mode(0o666).build().unwrap();
            assert!(contender.try_lock().is_err());
            assert!(contender.lock_timeout(SHORT).is_err());
        });
    });
    assert_eq!(mode(&path), 0o600, "the contender did not chmod");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "holder's bytes");
    drop(g);
    // The next winner applies its explicit mode, overriding the umask.
    let winner = FileLock::builder(&path).mode(0o666).build().unwrap();
    drop(winner.lock().unwrap());
    assert_eq!(mode(&path), 0o666);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "holder's bytes");
}

// The umask is a Unix thing.
#[cfg(unix)]
#[test]
fn without_an_explicit_mode_the_umask_decides() {
    let dir = tmp();
    let ours = dir.path().join("default.lock");
    drop(FileLock::new(&ours).unwrap().lock().unwrap());
    let plain = dir.path().join("plain");
    std::fs::File::create(&plain).unwrap(); // 0o666 & !umask, like ours
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&ours), mode(&plain));
}

/// Windows' own ways out of a granted directory and its special names:
/// refused on every system, so a path means the same everywhere (under
/// wine these are what Windows itself would read). Nothing is created,
/// inside or out.
#[test]
fn windows_ways_out_are_refused_and_nothing_is_created() {
    let outer = tmp();
    let root = outer.path().join("root");
    std::fs::create_dir_all(root.join("inside")).unwrap();
    std::fs::create_dir(outer.path().join("outside")).unwrap();
    let locks = LockDir::open_ambient(&root).unwrap();
    // The drive the sandbox is on, where there is one.
    let drive = std::path::absolute(&root)
        .unwrap()
        .to_string_lossy()
        .get(..2)
        .filter(|d| d.ends_with(':'))
        .unwrap_or("C:")
        .to_owned();
    let refused = [
        "..\\escape.lock".to_owned(),
        "inside\\..\\..\\escape.lock".into(),
        "\\escape.lock".into(),
        format!("{drive}\\escape.lock"),
        format!("{drive}escape.lock"),
        format!("{drive}/escape.lock"),
        "\\\\localhost\\C$\\escape.lock".into(),
        "\\\\?\\C:\\escape.lock".into(),
        "\\\\.\\NUL".into(),
        "CON".into(),
        "nul.lock".into(),
        "inside/aux.txt".into(),
        "COM1".into(),
        "lpt1/x.lock".into(),
        "conin$".into(),
        "x.lock:stream".into(),
        "x.lock::$DATA".into(),
        "x.lock.".into(),
        "x.lock ".into(),
        "inside./x.lock".into(),
    ];
    for rel in &refused {
        for kind in [wasmlock::Kind::Os, wasmlock::Kind::Soft] {
            let e = locks
                .builder(rel)
                .kind(kind)
                .build()
                .and_then(|l| l.try_lock().map(drop))
                .expect_err(rel);
            assert_eq!(e.kind(), ErrorKind::InvalidPath, "{rel:?} ({kind:?}): {e}");
        }
    }
    let names = |dir: &Path| -> Vec<_> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    };
    // Rooted at the drive: outside, wherever the sandbox is.
    let e = locks.file_lock("/escape.lock").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(names(&outer.path().join("outside")).is_empty());
    assert_eq!(names(&root), ["inside"]);
    assert!(names(&root.join("inside")).is_empty());
    assert!(!outer.path().join("escape.lock").exists());
    // A name that only looks like one of them is an ordinary file.
    drop(locks.file_lock("console.lock").unwrap().lock().unwrap());
    drop(
        locks
            .file_lock("inside/com10.lock")
            .unwrap()
            .lock()
            .unwrap(),
    );
    assert!(root.join("console.lock").is_file());
}
