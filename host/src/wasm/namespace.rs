//! Namespaces: spaces of named locks an embedder grants a guest, the way it
//! preopens directories. A guest names a lock by key; the host decides where
//! the lock lives, and the guest never learns it.

use std::path::Path;

use crate::{Error, ErrorKind, FileLock, Kind, LockDir, Result, Semaphore};

/// The longest file name a key becomes (escaped, with its suffix): below
/// the 255 bytes every common file system allows, with room for a
/// semaphore's slot suffix.
const MAX_FILE_NAME: usize = 240;

/// A space of named locks to grant a guest with
/// [`WasmLockCtxBuilder::namespace`](crate::WasmLockCtxBuilder::namespace).
///
/// This one is a directory of lock files on the host: key `k` is the lock
/// file `k.lock` (semaphores: `k.NN.lock`), with every byte of the key other
/// than lower-case ASCII letters, digits, `-` and `_` escaped as `%XX`, so no
/// key can name a directory, a hidden file, or anything outside, and keys
/// that differ in case stay apart on case-insensitive file systems. The guest needs no
/// preopened directory to coordinate, and cannot reach this one otherwise.
///
/// ```
/// use wasmlock::{Kind, Namespace};
/// # let dir = tempfile::tempdir().unwrap();
/// let jobs = Namespace::directory(dir.path())?.kind(Kind::Os);
/// # drop(jobs);
/// # Ok::<(), wasmlock::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Namespace {
    dir: LockDir,
    kind: Kind,
}

impl Namespace {
    /// The directory at `path` (created if missing), with OS locks.
    ///
    /// # Errors
    ///
    /// I/O errors opening or creating the directory, naming it.
    pub fn directory(path: impl AsRef<Path>) -> Result<Namespace> {
        Ok(Namespace::in_dir(LockDir::open_ambient(path)?))
    }

    /// A directory capability the embedder already holds, with OS locks.
    pub fn in_dir(dir: LockDir) -> Namespace {
        Namespace {
            dir,
            kind: Kind::Os,
        }
    }

    /// Which kind of lock keys open (OS by default).
    pub fn kind(mut self, kind: Kind) -> Namespace {
        self.kind = kind;
        self
    }

    pub(crate) fn lock_kind(&self) -> Kind {
        self.kind
    }

    /// The lock named `key`, shown in messages as `shown/<escaped key>`.
    pub(crate) fn lock(&self, shown: &str, key: &str) -> Result<FileLock> {
        let file = format!("{}.lock", file_stem(shown, key)?);
        self.dir
            .shown_as(shown)
            .builder(file)
            .kind(self.kind)
            .build()
    }

    /// The semaphore named `key` with `slots` permits.
    pub(crate) fn semaphore(&self, shown: &str, key: &str, slots: usize) -> Result<Semaphore> {
        self.dir
            .shown_as(shown)
            .semaphore(&file_stem(shown, key)?, slots)
    }
}

/// The escaped file name (without suffix) of `key`.
fn file_stem(shown: &str, key: &str) -> Result<String> {
    let refuse = |detail: &str| {
        Err(
            Error::new(ErrorKind::InvalidPath, Path::new(shown).join(key))
                .with_detail(detail.to_owned()),
        )
    };
    if key.is_empty() {
        return refuse("a key is a non-empty string");
    }
    let mut stem = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' {
            stem.push(b as char);
        } else {
            stem.push_str(&format!("%{b:02X}"));
        }
        if stem.len() > MAX_FILE_NAME - ".NN.lock".len() {
            return refuse("the key is too long (its escaped file name would pass 240 bytes)");
        }
    }
    Ok(stem)
}

#[cfg(test)]
mod tests {
    use super::file_stem;

    #[test]
    fn keys_become_one_plain_file_name() {
        assert_eq!(file_stem("ns", "job-1_a").unwrap(), "job-1_a");
        assert_eq!(
            file_stem("ns", "../etc/passwd").unwrap(),
            "%2E%2E%2Fetc%2Fpasswd"
        );
        assert_eq!(file_stem("ns", ".hidden").unwrap(), "%2Ehidden");
        assert_eq!(file_stem("ns", "a%2E").unwrap(), "a%252%45");
        assert_eq!(file_stem("ns", "ü").unwrap(), "%C3%BC");
        assert_eq!(file_stem("ns", "Job").unwrap(), "%4Aob");
        assert!(file_stem("ns", "").is_err());
        assert!(file_stem("ns", &"x".repeat(232)).is_ok());
        assert!(file_stem("ns", &"x".repeat(233)).is_err());
        assert!(file_stem("ns", &"/".repeat(78)).is_err());
    }
}
