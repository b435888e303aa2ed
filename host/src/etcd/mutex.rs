//! etcd's lock protocol (the Go client's `concurrency.Mutex`, which the v3
//! lock service and `etcdctl lock` run too), done with KV transactions: a
//! waiter puts `NAME/<lease-hex>` under its lease; the key with the lowest
//! create revision holds the lock; every other waiter watches only the key
//! just ahead of it and looks again when that one is deleted. The holder's
//! create revision is its fencing token: every later grant of the name was
//! created later, so it is greater.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;
use tokio_stream::wrappers::ReceiverStream;

use super::rpc::event::EventType;
use super::rpc::kv_client::KvClient;
use super::rpc::range_request::SortOrder;
use super::rpc::watch_client::WatchClient;
use super::rpc::watch_request::RequestUnion;
use super::rpc::{self, TxnRequest, WatchCreateRequest, WatchRequest};
use super::session::{Connection, Failure, Lease};

/// One grant of a lock: this session's key, at the head of the name's queue.
pub(crate) struct Grant {
    pub(crate) key: Vec<u8>,
    /// The key's create revision: the fencing token.
    pub(crate) revision: i64,
    pub(crate) lease: Arc<Lease>,
    /// The key was deleted by someone else (an operator, `break`).
    deleted: Arc<AtomicBool>,
    watch: tokio::task::AbortHandle,
}

impl Grant {
    /// Whether the hold is gone without a release: the key deleted, or the
    /// lease it lives under lost.
    pub(crate) fn is_lost(&self) -> bool {
        self.deleted.load(Ordering::Acquire) || self.lease.is_lost()
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

/// Asks a waiting acquisition to stop: nobody in this process wants the lock
/// any more.
#[derive(Default)]
pub(crate) struct Stop {
    asked: AtomicBool,
    notify: Notify,
}

impl Stop {
    pub(crate) fn ask(&self) {
        self.asked.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub(crate) fn reset(&self) {
        self.asked.store(false, Ordering::Release);
    }

    fn asked(&self) -> bool {
        self.asked.load(Ordering::Acquire)
    }
}

/// What an acquisition came to.
pub(crate) enum Acquired {
    Held(Grant),
    /// Held by someone else, and not waited for (`wait` false, or stopped).
    Busy,
}

/// The key a session waits and holds under for the lock `prefix` (`NAME/`).
pub(crate) fn own_key(prefix: &[u8], lease: &Lease) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{:x}", lease.id).as_bytes());
    key
}

/// Takes the lock named by `prefix` (`NAME/`): puts this session's key and
/// holds if it is first; otherwise gives up at once (`wait` false), or waits
/// for the keys ahead of it until it is first or `stop` is asked. Whatever
/// ends it early deletes the key it put.
pub(crate) async fn acquire(
    session: Arc<Connection>,
    prefix: Vec<u8>,
    value: Vec<u8>,
    wait: bool,
    stop: Arc<Stop>,
) -> Result<Acquired, Failure> {
    loop {
        let lease = session.lease().await?;
        let key = own_key(&prefix, &lease);
        let mut put = Put {
            session: &session,
            key: &key,
            revision: None,
        };
        let revision = match put.put(&value, &lease).await {
            Ok(revision) => revision,
            // Revoked, though its keep-alives have not said so yet.
            Err(Failure::NoLease) => {
                lease.lose();
                continue;
            }
            Err(e) => return Err(e),
        };
        match wait_first(&session, &prefix, &key, revision, &lease, wait, &stop).await? {
            Ahead::First => {
                put.revision = None;
                drop(put);
                let deleted = Arc::new(AtomicBool::new(false));
                let watch = tokio::spawn(watch_own_key(
                    session.clone(),
                    key.clone(),
                    revision,
                    deleted.clone(),
                    lease.clone(),
                ))
                .abort_handle();
                return Ok(Acquired::Held(Grant {
                    key,
                    revision,
                    lease,
                    deleted,
                    watch,
                }));
            }
            Ahead::GaveUp => {
                put.delete().await?;
                return Ok(Acquired::Busy);
            }
            // The lease went while waiting: queue again under a new one.
            Ahead::LeaseLost => {
                put.revision = None;
                continue;
            }
        }
    }
}

/// Deletes a grant's key if it is still that grant's (its create revision).
pub(crate) async fn release(
    session: &Connection,
    key: &[u8],
    revision: i64,
) -> Result<(), Failure> {
    delete_if(session, key, revision).await
}

async fn delete_if(session: &Connection, key: &[u8], revision: i64) -> Result<(), Failure> {
    let txn = TxnRequest {
        compare: vec![rpc::created_at(key, revision)],
        success: vec![rpc::delete_op(key)],
        failure: vec![],
    };
    session
        .call(KvClient::new(session.channel.clone()).txn(txn))
        .await
        .map(drop)
}

/// This session's key while it is being put and waited with: dropped with
/// a revision, it deletes the key in the background (a cancelled wait).
struct Put<'a> {
    session: &'a Arc<Connection>,
    key: &'a [u8],
    revision: Option<i64>,
}

impl Put<'_> {
    /// Puts the key, unless it exists already (then it is a leftover of this
    /// session's: deleted first), and returns its create revision.
    async fn put(&mut self, value: &[u8], lease: &Lease) -> Result<i64, Failure> {
        loop {
            let txn = TxnRequest {
                compare: vec![rpc::created_at(self.key, 0)],
                success: vec![rpc::put_op(self.key, value.to_vec(), lease.id)],
                failure: vec![rpc::range_op(rpc::get(self.key))],
            };
            let done = self
                .session
                .call(KvClient::new(self.session.channel.clone()).txn(txn))
                .await?;
            if done.succeeded {
                self.revision = Some(done.revision());
                return Ok(done.revision());
            }
            // Etcd's trap: a second put under the same lease would reuse the
            // key and its place, and two holds would share one grant.
            match done.range(0).first() {
                Some(old) => delete_if(self.session, self.key, old.create_revision).await?,
                None => continue,
            }
        }
    }

    async fn delete(&mut self) -> Result<(), Failure> {
        match self.revision.take() {
            Some(rev) => delete_if(self.session, self.key, rev).await,
            None => Ok(()),
        }
    }
}

impl Drop for Put<'_> {
    fn drop(&mut self) {
        if let Some(rev) = self.revision.take() {
            let session = self.session.clone();
            let key = self.key.to_vec();
            // Inside the session's runtime: the wait is one of its tasks.
            tokio::spawn(async move {
                if let Err(e) = delete_if(&session, &key, rev).await {
                    tracing::warn!(key = %String::from_utf8_lossy(&key), error = ?e, "deleting an abandoned waiter key failed; it goes with the lease");
                }
            });
        }
    }
}

enum Ahead {
    First,
    GaveUp,
    LeaseLost,
}

/// Waits until `key` (created at `revision`) is the first under `prefix`.
async fn wait_first(
    session: &Connection,
    prefix: &[u8],
    key: &[u8],
    revision: i64,
    lease: &Lease,
    wait: bool,
    stop: &Stop,
) -> Result<Ahead, Failure> {
    let mut first_look = true;
    loop {
        let txn = TxnRequest {
            compare: vec![],
            success: vec![
                rpc::range_op(rpc::by_create(prefix, SortOrder::Descend, revision - 1)),
                rpc::range_op(rpc::get(key)),
            ],
            failure: vec![],
        };
        let seen = session
            .call(KvClient::new(session.channel.clone()).txn(txn))
            .await?;
        let ours = seen.range(1).first().map(|kv| kv.create_revision);
        if ours != Some(revision) {
            // Our key went while we waited: the lease expired or was revoked.
            return Ok(Ahead::LeaseLost);
        }
        let Some(ahead) = seen.range(0).first() else {
            return Ok(Ahead::First);
        };
        if first_look && !wait {
            return Ok(Ahead::GaveUp);
        }
        first_look = false;
        let stopped = stop.notify.notified();
        let lost = lease.on_lost.notified();
        tokio::pin!(stopped, lost);
        stopped.as_mut().enable();
        lost.as_mut().enable();
        if stop.asked() {
            return Ok(Ahead::GaveUp);
        }
        if lease.is_lost() {
            return Ok(Ahead::LeaseLost);
        }
        tokio::select! {
            deleted = deleted_after(session, &ahead.key, seen.revision()) => deleted?,
            () = &mut stopped => return Ok(Ahead::GaveUp),
            () = &mut lost => {}
        }
    }
}

/// Returns once `key` has been deleted after `revision` (or the watch was
/// cut short: the caller looks again either way).
async fn deleted_after(session: &Connection, key: &[u8], revision: i64) -> Result<(), Failure> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.to_vec(),
            start_revision: revision + 1,
            filters: vec![rpc::watch_create_request::FilterType::Noput as i32],
            ..Default::default()
        })),
    };
    tx.send(create).await.expect("the receiver is alive");
    let mut events = session
        .call(WatchClient::new(session.channel.clone()).watch(ReceiverStream::new(rx)))
        .await?;
    loop {
        match events.message().await {
            Ok(Some(r)) => {
                if r.canceled
                    || r.events
                        .iter()
                        .any(|e| e.r#type == EventType::Delete as i32)
                {
                    return Ok(());
                }
            }
            Ok(None) => return Ok(()),
            Err(s) => return Err(Failure::Unreachable(s.message().to_owned())),
        }
    }
}

/// Marks a grant lost when its key is deleted by someone else. Ends with
/// the lease (its keys go with it) or when the grant is released (aborted).
async fn watch_own_key(
    session: Arc<Connection>,
    key: Vec<u8>,
    revision: i64,
    deleted: Arc<AtomicBool>,
    lease: Arc<Lease>,
) {
    loop {
        match deleted_after(&session, &key, revision).await {
            Ok(()) => {
                // A cut watch returns too: is the key still ours?
                let still = session
                    .call(KvClient::new(session.channel.clone()).range(rpc::get(&key)))
                    .await
                    .map(|r| r.kvs.first().map(|kv| kv.create_revision) == Some(revision));
                if let Ok(false) = still {
                    deleted.store(true, Ordering::Release);
                    return;
                }
            }
            Err(_) if lease.is_lost() => return,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}
