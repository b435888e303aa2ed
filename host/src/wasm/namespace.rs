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
///
/// With the `etcd` feature, [`Namespace::etcd`] grants a space of locks in
/// an etcd cluster instead.
#[derive(Debug, Clone)]
pub struct Namespace {
    space: Space,
}

#[derive(Debug, Clone)]
enum Space {
    Directory {
        dir: LockDir,
        kind: Kind,
    },
    #[cfg(feature = "etcd")]
    Etcd {
        cluster: crate::etcd::Cluster,
        prefix: String,
    },
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
            space: Space::Directory {
                dir,
                kind: Kind::Os,
            },
        }
    }

    /// Locks in the etcd cluster `cluster`, one tenant's: key `k` is the
    /// lock named `prefix` + `k` (escaped as for a directory, so that no
    /// key's queue nests inside another's: etcd's lock keys are
    /// `NAME/<lease-id-hex>`). Guards tell their `fence`; holds can be
    /// lost; an unreachable cluster is `unavailable`. The guest never sees
    /// the endpoints, the prefix or the lease. Exclusive locks only, no
    /// semaphores.
    ///
    /// ```
    /// use wasmlock::Namespace;
    /// use wasmlock::etcd::Cluster;
    /// let cluster = Cluster::connect(["http://127.0.0.1:2379"])?; // nothing sent yet
    /// let jobs = Namespace::etcd(&cluster, "tenants/acme/");
    /// # drop(jobs);
    /// # Ok::<(), wasmlock::Error>(())
    /// ```
    #[cfg(feature = "etcd")]
    #[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
    pub fn etcd(cluster: &crate::etcd::Cluster, prefix: impl Into<String>) -> Namespace {
        Namespace {
            space: Space::Etcd {
                cluster: cluster.clone(),
                prefix: prefix.into(),
            },
        }
    }

    /// Which kind of lock keys open in a directory (OS by default); an etcd
    /// namespace has one kind only.
    // Without the `etcd` feature there is one kind of space only.
    #[allow(irrefutable_let_patterns)]
    pub fn kind(mut self, kind: Kind) -> Namespace {
        if let Space::Directory { kind: k, .. } = &mut self.space {
            *k = kind;
        }
        self
    }

    /// The kind of file lock keys open; `None` for a cluster's locks, which
    /// the embedder allowed by granting the namespace.
    pub(crate) fn lock_kind(&self) -> Option<Kind> {
        match &self.space {
            Space::Directory { kind, .. } => Some(*kind),
            #[cfg(feature = "etcd")]
            Space::Etcd { .. } => None,
        }
    }

    /// The lock named `key`, shown in messages as `shown/<escaped key>`.
    pub(crate) fn lock(&self, shown: &str, key: &str) -> Result<FileLock> {
        let stem = escape_key(shown, key)?;
        match &self.space {
            Space::Directory { dir, kind } => dir
                .shown_as(shown)
                .builder(format!("{stem}.lock"))
                .kind(*kind)
                .build(),
            #[cfg(feature = "etcd")]
            Space::Etcd { cluster, prefix } => {
                cluster.lock_for_guest(&format!("{prefix}{stem}"), Path::new(shown).join(key))
            }
        }
    }

    /// The semaphore named `key` with `slots` permits.
    pub(crate) fn semaphore(&self, shown: &str, key: &str, slots: usize) -> Result<Semaphore> {
        let stem = escape_key(shown, key)?;
        match &self.space {
            Space::Directory { dir, .. } => dir.shown_as(shown).semaphore(&stem, slots),
            #[cfg(feature = "etcd")]
            Space::Etcd { .. } => Err(Error::new(
                ErrorKind::Unsupported,
                Path::new(shown).join(key),
            )
            .with_detail("a cluster namespace has no semaphores")),
        }
    }
}

/// `key` escaped to one plain file name (without suffix), or one etcd
/// lock name without `/`.
fn escape_key(shown: &str, key: &str) -> Result<String> {
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
    use super::escape_key;

    #[test]
    fn keys_become_one_plain_file_name() {
        assert_eq!(escape_key("ns", "job-1_a").unwrap(), "job-1_a");
        assert_eq!(
            escape_key("ns", "../etc/passwd").unwrap(),
            "%2E%2E%2Fetc%2Fpasswd"
        );
        assert_eq!(escape_key("ns", ".hidden").unwrap(), "%2Ehidden");
        assert_eq!(escape_key("ns", "a%2E").unwrap(), "a%252%45");
        assert_eq!(escape_key("ns", "ü").unwrap(), "%C3%BC");
        assert_eq!(escape_key("ns", "Job").unwrap(), "%4Aob");
        assert!(escape_key("ns", "").is_err());
        assert!(escape_key("ns", &"x".repeat(232)).is_ok());
        assert!(escape_key("ns", &"x".repeat(233)).is_err());
        assert!(escape_key("ns", &"/".repeat(78)).is_err());
    }
}
