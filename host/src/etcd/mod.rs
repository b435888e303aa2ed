//! Locks in an etcd cluster: for processes on several machines.
//!
//! A [`Cluster`] is this process's connection to one etcd cluster; its
//! [`lock`](Cluster::lock) opens a lock by name, a [`FileLock`] with the
//! same guards, [`Wait`](crate::Wait) values, and sync and async methods as
//! a lock on a file. What differs:
//!
//! - **Every hold has a fencing token** ([`LockGuard::fence`]): its key's
//!   create revision, greater for every later hold of the name anywhere in
//!   the cluster. A lease is not a lock without it: a holder paused past
//!   its lease (a stopped process, a long GC, a suspended VM) still thinks
//!   it holds the lock while another has it. Send the token with every
//!   write the lock protects, and have the resource refuse tokens lower
//!   than the highest it has seen.
//! - **A hold can be lost** ([`LockGuard::is_lost`]): its lease expired
//!   (keep-alives did not get through for a TTL), an operator revoked it,
//!   or someone deleted its key. Losing is reported, never silent: the
//!   release deletes the key only if it is still the hold's, so `unlock`
//!   on a thread, and `unlock_async` anywhere, fail with
//!   [`ErrorKind::Lost`] even if nobody asked before.
//! - **A dead holder's lock is freed when its lease expires**, a TTL after
//!   its last keep-alive (file locks: at once).
//! - **Errors**: [`ErrorKind::Unavailable`]
//!   when the cluster cannot be reached, naming the lock and the endpoints.
//!   While a caller waits, a request that does not get through (a member
//!   gone, an election, a broken connection) is asked again, on another
//!   member when the [`Cluster`] was given several, until the wait ends or
//!   the call [`timeout`](ClusterBuilder::timeout) passes: give it every
//!   member. A try asks once.
//! - **Exclusive only**: shared requests fail with
//!   [`ErrorKind::Unsupported`].
//!
//! The keys follow etcd's own lock protocol (`NAME/<lease-id-hex>` under the
//! holder's lease, the lowest create revision holds), so these locks and
//! `etcdctl lock NAME` exclude each other. One lease per [`Cluster`],
//! kept alive at a third of its TTL, serves all its locks; waiters in this
//! process queue here first-in first-out and cost one key and two watches
//! per name in the cluster, however many they are. No polling: a waiting
//! key watches the one just ahead of it, and itself.
//!
//! ```no_run
//! use std::time::Duration;
//! use wasmlock::etcd::Cluster;
//!
//! let cluster = Cluster::builder()
//!     .endpoint("http://127.0.0.1:2379")
//!     .ttl(Duration::from_secs(5))
//!     .connect()?;
//! let lock = cluster.lock("jobs/nightly")?;
//! let guard = lock.lock_timeout(Duration::from_secs(10))?;
//! let token = guard.fence().expect("etcd holds have fences");
//! // ... write, passing `token` to the resource ...
//! # let _ = token;
//! drop(guard);
//! # Ok::<(), wasmlock::Error>(())
//! ```
//!
//! [`LockGuard::fence`]: crate::LockGuard::fence
//! [`LockGuard::is_lost`]: crate::LockGuard::is_lost
//! [`ErrorKind::Lost`]: crate::ErrorKind::Lost
//! [`ErrorKind::Unavailable`]: crate::ErrorKind::Unavailable
//! [`ErrorKind::Unsupported`]: crate::ErrorKind::Unsupported

pub(crate) mod flag;
pub(crate) mod mutex;
pub(crate) mod rpc;
pub(crate) mod session;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::{Error, ErrorKind, FileLock, Result};
use session::Session;

/// The longest lock name, in bytes.
pub const MAX_NAME_LEN: usize = 4096;

/// This process's connection to one etcd cluster, and the lease its locks
/// live under. Cheap to clone: clones share both.
///
/// Dropping the last clone (and the last lock opened through it) revokes
/// the lease, so that keys still being deleted go at once.
#[derive(Clone, Debug)]
pub struct Cluster {
    session: Arc<Session>,
}

/// Settings for a [`Cluster`].
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    endpoints: Vec<String>,
    ttl: Duration,
    timeout: Duration,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            endpoints: Vec::new(),
            ttl: Duration::from_secs(5),
            timeout: Duration::from_secs(3),
        }
    }
}

impl ClusterBuilder {
    /// Adds an endpoint, such as `http://127.0.0.1:2379`. Given several
    /// (the members of one cluster), requests are spread over them, and
    /// one that a member cannot answer is asked again of another.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoints.push(url.into());
        self
    }

    /// The lease TTL (default 5 s; etcd's floor is 2 s): how long after a
    /// holder's last keep-alive its lock is freed, and how long a holder cut
    /// off from the cluster may take to learn it lost the lock. Whole
    /// seconds; at least 1.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// How long one call to the cluster may take, retries included,
    /// before it counts as unreachable (default 3 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Makes the connection. Nothing is sent yet: the first lock grants the
    /// lease, and an unreachable cluster shows there, as
    /// [`ErrorKind::Unavailable`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidPath`] for no endpoint or one that is not a URL;
    /// [`ErrorKind::Io`] if the connection's thread cannot start.
    pub fn connect(self) -> Result<Cluster> {
        let shown = self.endpoints.join(",");
        let bad = |detail: String| Error::new(ErrorKind::InvalidPath, &shown).with_detail(detail);
        if self.endpoints.is_empty() {
            return Err(bad("no etcd endpoint given".into()));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wasmlock-etcd")
            .enable_all()
            .build()
            .map_err(|e| {
                Error::from_io(e, std::path::Path::new(&shown))
                    .with_detail("starting the etcd thread")
            })?;
        let mut endpoints = Vec::new();
        for url in &self.endpoints {
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| bad(format!("not an endpoint URL: {url}: {e}")))?
                .connect_timeout(self.timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(self.ttl / 3)
                .keep_alive_timeout(self.timeout)
                .keep_alive_while_idle(true);
            endpoints.push(endpoint);
        }
        let channel = {
            let _in_runtime = runtime.enter();
            match endpoints.len() {
                1 => endpoints.remove(0).connect_lazy(),
                _ => Channel::balance_list(endpoints.into_iter()),
            }
        };
        let session = Session::new(runtime, channel, shown, self.ttl, self.timeout);
        Ok(Cluster {
            session: Arc::new(session),
        })
    }
}

impl Cluster {
    /// Settings for a connection.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// A connection to the cluster at `endpoints` with the default settings.
    ///
    /// # Errors
    ///
    /// As [`ClusterBuilder::connect`].
    pub fn connect<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Result<Cluster> {
        endpoints
            .into_iter()
            .fold(Cluster::builder(), ClusterBuilder::endpoint)
            .connect()
    }

    /// The lock `name`: its keys are `name/<lease-id-hex>`, as for
    /// `etcdctl lock name`. Nothing is sent until it is locked.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidPath`] for an empty name, one longer than
    /// [`MAX_NAME_LEN`], or one with a NUL byte.
    pub fn lock(&self, name: &str) -> Result<FileLock> {
        let display = PathBuf::from(format!("etcd:{name}"));
        let bad = |detail: &str| Error::new(ErrorKind::InvalidPath, &display).with_detail(detail);
        if name.is_empty() {
            return Err(bad("empty lock name"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(bad("lock name longer than 4096 bytes"));
        }
        if name.contains('\0') {
            return Err(bad("lock name with a NUL byte"));
        }
        let service = format!("etcd at {}", self.session.conn.endpoints);
        Ok(FileLock::remote(
            self.session.clone(),
            name.to_owned(),
            display,
            service,
        ))
    }

    /// The lock `name` for a guest, shown to it as `display`, and its
    /// errors naming neither the endpoints nor the name.
    #[cfg(feature = "wasmtime")]
    pub(crate) fn lock_for_guest(&self, name: &str, display: PathBuf) -> Result<FileLock> {
        self.lock(name).map_err(|e| {
            Error::new(e.kind(), &display).with_detail("the key is too long for the lock service")
        })?;
        Ok(FileLock::remote(
            self.session.clone(),
            name.to_owned(),
            display,
            "the lock service".to_owned(),
        ))
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        self.session.conn.ttl
    }
}
