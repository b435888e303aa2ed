//! A lock in an etcd cluster, as one process sees it: at most one key of
//! this process under the lock's name at a time, put and waited with on
//! the entry's waiting thread, deleted in the background when the hold
//! ends.
//!
//! Every hold is a grant of its own: the manager never hands this process's
//! key from one local holder to the next ([`Backend::remote`]), so fences
//! grow with every hold and a busy process queues behind other processes
//! like everyone else.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::open::Opened;
use super::{Backend, Key, LostFuture, ReleaseFuture};
use crate::etcd::mutex::{self, Acquired, Gone, Grant, Leftover, Mine, Stop};
use crate::etcd::rpc;
use crate::etcd::rpc::range_request::SortOrder;
use crate::etcd::session::{Failure, Patience, Session};
use crate::{Error, ErrorKind, Holder, Mode, Result};
use tokio::sync::oneshot;

pub(crate) struct EtcdBackend {
    session: Arc<Session>,
    /// `NAME/`: the prefix of every key queued for the lock.
    prefix: Vec<u8>,
    display: PathBuf,
    /// How errors name the cluster: its endpoints, or not (for guests).
    service: String,
    grant: Mutex<Option<Grant>>,
    /// The deletion of the last grant's key (or an abandoned waiter's),
    /// awaited before the next put: it is the same key, this session's
    /// under this name.
    releasing: Leftover,
    /// What the latest releases found, by fence, until their releasers
    /// ask ([`Backend::flush_release`]).
    /// Releasers that never ask (a guard dropped in an async
    /// context) leave theirs: only the last [`CONFIRMATIONS`] are kept.
    confirmations: Mutex<VecDeque<(i64, oneshot::Receiver<Gone>)>>,
    stop: Arc<Stop>,
}

/// How many releases' outcomes wait for their releasers: one per release
/// in flight is enough (each acquisition here waits for the release
/// before it); more covers releasers that are slow to ask.
const CONFIRMATIONS: usize = 64;

/// The lock `name` of `session`, for the manager.
pub(crate) fn open(session: &Arc<Session>, name: &str, display: &Path, service: &str) -> Opened {
    let backend = EtcdBackend::new(session.clone(), name, display.to_path_buf(), service);
    Opened {
        key: Key::Remote(session.id, name.to_owned()),
        make: Box::new(move || Ok(Box::new(backend))),
        created: None,
    }
}

impl EtcdBackend {
    fn new(session: Arc<Session>, name: &str, display: PathBuf, service: &str) -> EtcdBackend {
        let mut prefix = name.as_bytes().to_vec();
        prefix.push(b'/');
        EtcdBackend {
            session,
            prefix,
            display,
            service: service.to_owned(),
            grant: Mutex::new(None),
            releasing: Leftover::default(),
            confirmations: Mutex::default(),
            stop: Arc::default(),
        }
    }

    fn error(&self, f: Failure) -> Error {
        error(&self.display, &self.service, f)
    }

    /// One acquisition, on the session's runtime.
    fn acquire(&self, mode: Mode, wait: bool) -> Result<bool> {
        if mode == Mode::Shared {
            return Err(Error::new(ErrorKind::Unsupported, &self.display)
                .with_detail("etcd locks are exclusive"));
        }
        let conn = self.session.conn.clone();
        let prefix = self.prefix.clone();
        let stop = self.stop.clone();
        let leftover = self.releasing.clone();
        let before = leftover.lock().unwrap().take();
        let acquired = self.session.block(async move {
            if let Some(release) = before {
                let _ = release.await;
            }
            mutex::acquire(conn, prefix, holder_value(), wait, stop, leftover).await
        });
        match acquired.map_err(|f| self.error(f))? {
            Acquired::Held(grant) => {
                tracing::debug!(key = %String::from_utf8_lossy(&grant.key), fence = grant.revision, "etcd lock granted");
                *self.grant.lock().unwrap() = Some(grant);
                Ok(true)
            }
            Acquired::Busy => Ok(false),
        }
    }

    /// The key at the head of the queue, if any.
    fn first(&self) -> Result<Option<rpc::KeyValue>> {
        let conn = self.session.conn.clone();
        let range = rpc::by_create(&self.prefix, SortOrder::Ascend, 0);
        let found = self
            .session
            .block(async move { conn.range(Patience::Timeout, range).await });
        let found = found.map_err(|f| self.error(f))?;
        Ok(found
            .kvs
            .into_iter()
            .find(|kv| mutex::same_level(&self.prefix, &kv.key)))
    }
}

fn error(display: &Path, service: &str, f: Failure) -> Error {
    let (kind, detail) = match f {
        Failure::Unreachable(why) => (ErrorKind::Unavailable, why),
        Failure::Refused(why) => (ErrorKind::Io, format!("refused: {why}")),
        Failure::NoLease => (ErrorKind::Lost, "no longer has the lease".to_owned()),
    };
    Error::new(kind, display).with_detail(format!("{service}: {detail}"))
}

fn lost_error(display: &Path, why: &str) -> Error {
    Error::new(ErrorKind::Lost, display).with_detail(format!("the hold was lost: {why}"))
}

/// Whether this thread may wait for the cluster: not on an async
/// executor's thread (nor on its blocking threads, which cannot be told
/// apart from them).
fn may_block() -> bool {
    tokio::runtime::Handle::try_current().is_err()
}

/// What a key says about its holder: `pid\nhost\nseconds since the epoch\n`
/// (etcd's own clients put an empty value).
fn holder_value() -> Vec<u8> {
    let host = crate::sys::host_name();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{}\n{host}\n{now}\n", std::process::id()).into_bytes()
}

fn parse_holder(kv: &rpc::KeyValue) -> Holder {
    let text = String::from_utf8_lossy(&kv.value);
    let mut lines = text.lines();
    let pid = lines.next().and_then(|l| l.parse().ok());
    let host = lines.next().filter(|h| !h.is_empty()).map(str::to_owned);
    let since = lines
        .next()
        .and_then(|l| l.parse().ok())
        .map(|s| UNIX_EPOCH + Duration::from_secs(s));
    let mut holder = Holder::new(pid, host, since);
    holder.lease = Some(kv.lease as u64);
    holder.fence = Some(kv.create_revision as u64);
    holder
}

impl Backend for EtcdBackend {
    fn try_acquire(&self, mode: Mode) -> Result<bool> {
        self.acquire(mode, false)
    }

    fn acquire_blocking(&self, mode: Mode, wanted: &dyn Fn() -> bool) -> Result<bool> {
        // Asked to stop from now on: anyone who withdraws after this look
        // stops the wait.
        self.stop.reset();
        self.acquire(mode, wanted())
    }

    fn interrupt(&self) {
        self.stop.set();
    }

    fn remote(&self) -> bool {
        true
    }

    fn release(&self, _mode: Mode) -> Result<()> {
        let Some(grant) = self.grant.lock().unwrap().take() else {
            return Ok(());
        };
        let lost = grant.is_lost();
        let (found, confirmation) = oneshot::channel();
        {
            let mut confirmations = self.confirmations.lock().unwrap();
            if confirmations.len() == CONFIRMATIONS {
                confirmations.pop_front();
            }
            confirmations.push_back((grant.revision, confirmation));
        }
        let conn = self.session.conn.clone();
        let mut slot = self.releasing.lock().unwrap();
        let before = slot.take();
        *slot = Some(self.session.spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            let mine = Mine::At(grant.revision);
            let deleted = mutex::delete_until_gone(&conn, &grant.key, mine, &grant.lease).await;
            let _ = found.send(deleted);
        }));
        if lost {
            return Err(lost_error(
                &self.display,
                "its key was deleted or its lease lost",
            ));
        }
        Ok(())
    }

    fn flush_release(&self, fence: Option<u64>) -> Result<()> {
        // An async caller does not wait: the next acquisition here does.
        if !may_block() {
            return Ok(());
        }
        match self.release_confirmed(fence) {
            Some(confirmed) => self.session.block(confirmed),
            None => Ok(()),
        }
    }

    fn release_confirmed(&self, fence: Option<u64>) -> Option<ReleaseFuture> {
        let fence = fence? as i64;
        let found = {
            let mut confirmations = self.confirmations.lock().unwrap();
            let at = confirmations.iter().position(|(f, _)| *f == fence)?;
            confirmations.remove(at)?.1
        };
        let timeout = self.session.conn.timeout;
        let (display, service) = (self.display.clone(), self.service.clone());
        // On the session's runtime: the caller's may have no timer.
        let confirmed = self.session.spawn(async move {
            match tokio::time::timeout(timeout, found).await {
                Ok(Ok(Gone::Deleted)) => Ok(()),
                Ok(Ok(Gone::Missing)) => Err(lost_error(
                    &display,
                    "its key was deleted by someone else before the release",
                )),
                Ok(Ok(Gone::LeaseLost)) => Err(lost_error(
                    &display,
                    "its lease was lost before the release",
                )),
                // The session's runtime is going away; the lease with it.
                Ok(Err(_)) => Ok(()),
                // Still trying: the next acquisition here waits for it.
                Err(_) => Err(error(
                    &display,
                    &service,
                    Failure::Unreachable(format!(
                        "did not confirm the release within {timeout:?}; \
                         the key goes when it does, or when the lease expires"
                    )),
                )),
            }
        });
        Some(Box::pin(async move { confirmed.await.unwrap_or(Ok(())) }))
    }

    fn lost(&self) -> bool {
        let looked = match self.grant.lock().unwrap().as_ref() {
            Some(g) => g.watch(&self.session),
            None => return false,
        };
        // A thread waits for the watch's first look (one round trip, the
        // first time), so that a deletion from before the question is
        // known; an async caller is told once the look is in.
        if let Some(looked) = looked
            && may_block()
        {
            let timeout = self.session.conn.timeout;
            self.session.block(async move {
                let _ = tokio::time::timeout(timeout, looked).await;
            });
        }
        self.grant
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(Grant::is_lost)
    }

    fn lost_signal(&self) -> Option<LostFuture> {
        let grant = self.grant.lock().unwrap();
        Some(match grant.as_ref() {
            Some(g) => {
                drop(g.watch(&self.session));
                Box::pin(g.lost())
            }
            // Released: it can no longer be lost.
            None => Box::pin(std::future::pending()),
        })
    }

    fn fence(&self) -> Option<u64> {
        self.grant
            .lock()
            .unwrap()
            .as_ref()
            .map(|g| g.revision as u64)
    }

    fn path(&self) -> &Path {
        &self.display
    }

    fn holder(&self) -> Result<Option<Holder>> {
        Ok(self.first()?.as_ref().map(parse_holder))
    }

    fn is_locked(&self) -> Result<bool> {
        Ok(self.first()?.is_some())
    }

    fn break_lock(&self, force: bool) -> Result<()> {
        if !force {
            // There are no stale holders to break: a dead holder's key goes
            // when its lease expires.
            return Ok(());
        }
        let Some(first) = self.first()? else {
            return Ok(());
        };
        // The holder it found, not whoever holds by the time it is deleted.
        let conn = self.session.conn.clone();
        let deleted = self.session.block(async move {
            mutex::delete_if(&conn, &first.key, first.create_revision, Patience::Timeout).await
        });
        deleted.map(drop).map_err(|f| self.error(f))
    }
}
