//! What an uncontended lock costs, next to the raw system calls it is made of.
//!
//! `cargo bench -p wasmlock --bench uncontended`

use std::fs::File;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fs4::FileExt;
use wasmlock::FileLock;

fn uncontended(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.lock");
    let mut g = c.benchmark_group("uncontended");

    g.bench_function("syscall baseline (getppid)", |b| {
        // SAFETY: getppid has no preconditions.
        b.iter(|| black_box(unsafe { libc::getppid() }))
    });

    let raw = File::create(dir.path().join("raw.lock")).unwrap();
    g.bench_function("raw fs4 lock+unlock", |b| {
        b.iter(|| {
            FileExt::lock(&raw).unwrap();
            FileExt::unlock(&raw).unwrap();
        })
    });
    g.bench_function("raw fs4 lock+unlock + fstat", |b| {
        b.iter(|| {
            FileExt::lock(&raw).unwrap();
            black_box(fstat(&raw));
            FileExt::unlock(&raw).unwrap();
        })
    });

    let lock = FileLock::new(&path).unwrap();
    g.bench_function("native lock+unlock", |b| {
        b.iter(|| drop(black_box(lock.lock().unwrap())))
    });
    let trusting = FileLock::builder(dir.path().join("trusting.lock"))
        .recheck_path(false)
        .build()
        .unwrap();
    g.bench_function("native lock+unlock, recheck_path(false)", |b| {
        b.iter(|| drop(black_box(trusting.lock().unwrap())))
    });
    g.bench_function("native try_lock+unlock", |b| {
        b.iter(|| drop(black_box(lock.try_lock().unwrap())))
    });
    g.bench_function("native lock_shared+unlock", |b| {
        b.iter(|| drop(black_box(lock.lock_shared().unwrap())))
    });
    let reentrant = FileLock::builder(dir.path().join("reentrant.lock"))
        .reentrant()
        .build()
        .unwrap();
    {
        let _outer = reentrant.lock().unwrap();
        g.bench_function("native re-entrant lock+unlock", |b| {
            b.iter(|| drop(black_box(reentrant.lock().unwrap())))
        });
    }

    let soft = FileLock::builder(dir.path().join("bench.soft"))
        .soft()
        .build()
        .unwrap();
    g.bench_function("soft lock+unlock", |b| {
        b.iter(|| drop(black_box(soft.lock().unwrap())))
    });
    g.finish();
}

/// The check the default lock makes after winning: one `fstat`.
fn fstat(file: &File) -> libc::dev_t {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // The system call itself, as the engine makes it (glibc's `fstat` goes
    // through `fstatat` with an empty path and costs more).
    // SAFETY: a valid descriptor and a pointer to a stat buffer to fill.
    let rc = unsafe { libc::syscall(libc::SYS_fstat, file.as_raw_fd(), &mut st) };
    assert_eq!(rc, 0, "fstat failed");
    st.st_dev
}

criterion_group! {
    name = benches;
    // Each of these takes well under a microsecond: short runs are plenty.
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = uncontended
}
criterion_main!(benches);
