//! etcd's lock protocol (the Go client's `concurrency.Mutex`, which the v3
//! lock service and `etcdctl lock` run too), done with KV transactions: a
//! waiter puts `NAME/<lease-hex>` under its lease; the key with the lowest
//! create revision holds the lock; every other waiter watches only the key
//! just ahead of it and looks again when that one is deleted. The holder's
//! create revision is its fencing token: every later grant of the name was
//! created later, so it is greater.

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;

use super::flag::Flag;
use super::rpc::event::EventType;
use super::rpc::range_request::SortOrder;
use super::rpc::watch_client::WatchClient;
use super::rpc::watch_request::RequestUnion;
use super::rpc::{self, RangeRequest, TxnRequest, WatchCreateRequest, WatchRequest};
use super::session::{Connection, Failure, Lease, Patience, Session, attempt};

/// How many keys a put's look returns with it: the head of the queue is
/// the first that is not a nested lock's (nested names are rare; when all
/// of them are, a full look follows).
const LOOK: i64 = 8;

/// One grant of a lock: this session's key, at the head of the name's queue.
pub(crate) struct Grant {
    pub(crate) key: Vec<u8>,
    /// The key's create revision: the fencing token.
    pub(crate) revision: i64,
    pub(crate) lease: Arc<Lease>,
    /// The key was deleted by someone else (an operator, `break`).
    deleted: Arc<Flag>,
    /// The watch has looked at the key once (or tried to).
    looked: Arc<Flag>,
    conn: Arc<Connection>,
    /// The watch that sets `deleted`, started by the first question whether
    /// the hold was lost: a grant nobody asks about costs no watch, so an
    /// uncontended lock+unlock is two round trips, as with etcd's own
    /// `Lock` and `Unlock`. It looks at the key first, so a deletion from
    /// before the question is known after one round trip.
    watch: std::sync::OnceLock<tokio::task::AbortHandle>,
}

impl Grant {
    fn new(key: Vec<u8>, revision: i64, lease: Arc<Lease>, conn: Arc<Connection>) -> Grant {
        Grant {
            key,
            revision,
            lease,
            deleted: Arc::default(),
            looked: Arc::default(),
            conn,
            watch: std::sync::OnceLock::new(),
        }
    }

    /// Whether the hold is known to be gone without a release: the key
    /// deleted (once [`watch`](Self::watch) has seen it), or the lease it
    /// lives under lost.
    pub(crate) fn is_lost(&self) -> bool {
        self.deleted.is_set() || self.lease.is_lost()
    }

    /// Starts watching the key on `session`'s runtime, once, and returns
    /// a future that is ready once the watch has looked at the key (or
    /// tried to), so that [`is_lost`](Self::is_lost) knows what the
    /// cluster knew then; `None` once it has.
    pub(crate) fn watch(
        &self,
        session: &Session,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        self.watch.get_or_init(|| {
            session
                .spawn(watch_own_key(
                    self.conn.clone(),
                    self.key.clone(),
                    self.revision,
                    self.deleted.clone(),
                    self.looked.clone(),
                    self.lease.clone(),
                ))
                .abort_handle()
        });
        let looked = self.looked.clone();
        let waited = async move { looked.wait().await };
        (!self.looked.is_set()).then_some(waited)
    }

    /// Returns once the hold is lost: the key's deletion and the lease's
    /// loss are pushed (the [`watch`](Self::watch), which the caller
    /// starts; the keep-alive task at the lease's deadline), nothing is
    /// polled.
    pub(crate) fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (deleted, lease) = (self.deleted.clone(), self.lease.clone());
        async move {
            tokio::select! {
                () = deleted.wait() => {}
                () = lease.lost() => {}
            }
        }
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.get() {
            watch.abort();
        }
    }
}

/// Asks a waiting acquisition to stop (set): nobody in this process wants
/// the lock any more.
pub(crate) type Stop = Flag;

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

/// Where a background deletion of this session's key for one lock is, so
/// that the next put of that key waits for it (it is the same key).
pub(crate) type Leftover = Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>;

/// Takes the lock named by `prefix` (`NAME/`): puts this session's key and
/// holds if it is first; otherwise gives up at once (`wait` false), or waits
/// for the keys ahead of it until it is first or `stop` is asked. Whatever
/// ends it early deletes the key it put, or may have put, in the background
/// until that is done (`leftover`): a key left under a lease that is kept
/// alive would get the lock one day and hold it for nobody.
pub(crate) async fn acquire(
    session: Arc<Connection>,
    prefix: Vec<u8>,
    value: Vec<u8>,
    wait: bool,
    stop: Arc<Stop>,
    leftover: Leftover,
) -> Result<Acquired, Failure> {
    // A try-once request never waits, not even for a cluster electing a
    // leader; a wait asks again until its caller gives up.
    let patience = match wait {
        true => Patience::Until(&stop),
        false => Patience::Once,
    };
    loop {
        let lease = session.lease(patience).await?;
        let key = own_key(&prefix, &lease);
        let mut put = Put {
            session: &session,
            prefix: &prefix,
            key: &key,
            lease: &lease,
            mine: Mine::Absent,
            leftover: &leftover,
        };
        let (revision, head) = match put.put(&value, patience).await {
            Ok(queued) => queued,
            // Revoked, though its keep-alives have not said so yet.
            Err(Failure::NoLease) => {
                put.mine = Mine::Absent;
                lease.lose();
                continue;
            }
            Err(e) => return Err(e),
        };
        let ahead = match head {
            Head::Mine => Ahead::First,
            Head::Other if !wait => Ahead::GaveUp,
            Head::Other | Head::Unknown => {
                wait_first(&session, &prefix, &key, revision, &lease, patience).await?
            }
        };
        match ahead {
            Ahead::First => {
                put.mine = Mine::Absent;
                drop(put);
                return Ok(Acquired::Held(Grant::new(key, revision, lease, session)));
            }
            Ahead::GaveUp => {
                put.delete().await?;
                return Ok(Acquired::Busy);
            }
            // The lease went while waiting, and the key with it: queue
            // again under a new one.
            Ahead::LeaseLost => {
                put.mine = Mine::Absent;
                continue;
            }
        }
    }
}

/// Whether this session's key for a lock exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mine {
    Absent,
    /// Put, with this create revision.
    At(i64),
    /// Maybe put: a put whose answer never came.
    Unknown,
}

/// What deleting this session's key came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gone {
    /// It was there as expected (or may have been, and is gone now: an
    /// attempt whose answer never came may have deleted it).
    Deleted,
    /// Someone else had deleted it (an operator, a forced break): for a
    /// grant, the hold was lost before its release.
    Missing,
    /// Its lease was lost, and the key with it.
    LeaseLost,
}

/// Deletes this session's `key` until it is gone, or its lease is (the key
/// with it): a grant's release, a waiter's abandoned key.
pub(crate) async fn delete_until_gone(
    session: &Connection,
    key: &[u8],
    mine: Mine,
    lease: &Lease,
) -> Gone {
    // Made again when not answered in time, as a repeatable call is.
    let per_attempt = attempt(session.timeout);
    let mut unsure = false;
    loop {
        let deleted = tokio::time::timeout(per_attempt, delete_mine(session, key, mine))
            .await
            .unwrap_or_else(|_| {
                Err(Failure::Unreachable(format!(
                    "no answer within {per_attempt:?}"
                )))
            });
        match deleted {
            Ok(true) => return Gone::Deleted,
            Ok(false) if unsure => return Gone::Deleted,
            Ok(false) => return Gone::Missing,
            Err(_) if lease.is_lost() => return Gone::LeaseLost,
            Err(e) => {
                unsure = true;
                tracing::warn!(key = %String::from_utf8_lossy(key), error = ?e, "deleting an etcd lock key failed; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Deletes this session's `key` as `mine` says it is, asking once; says
/// whether it was there as expected.
async fn delete_mine(session: &Connection, key: &[u8], mine: Mine) -> Result<bool, Failure> {
    match mine {
        Mine::At(revision) => delete_if(session, key, revision, Patience::Once).await,
        // No grant of this session's can be using the key meanwhile: the
        // next put of it waits for this deletion.
        Mine::Unknown => delete_any(session, key, Patience::Once).await,
        Mine::Absent => Ok(true),
    }
}

/// Deletes `key` if it is still the one created at `revision` (someone who
/// deleted it meanwhile may have made a new one), and says whether it was.
pub(crate) async fn delete_if(
    session: &Connection,
    key: &[u8],
    revision: i64,
    patience: Patience<'_>,
) -> Result<bool, Failure> {
    delete(session, key, vec![rpc::created_at(key, revision)], patience).await
}

async fn delete_any(
    session: &Connection,
    key: &[u8],
    patience: Patience<'_>,
) -> Result<bool, Failure> {
    delete(session, key, vec![], patience).await
}

/// Deletes `key` if `compare` holds; says whether it held.
async fn delete(
    session: &Connection,
    key: &[u8],
    compare: Vec<rpc::Compare>,
    patience: Patience<'_>,
) -> Result<bool, Failure> {
    let txn = TxnRequest {
        compare,
        success: vec![rpc::delete_op(key)],
        failure: vec![],
    };
    session.txn(patience, txn).await.map(|done| done.succeeded)
}

/// This session's key while it is being put and waited with: dropped while
/// it may exist, it is deleted in the background (a cancelled or failed
/// wait), and the next put waits for that.
struct Put<'a> {
    session: &'a Arc<Connection>,
    /// `NAME/`: what the put looks at.
    prefix: &'a [u8],
    key: &'a [u8],
    lease: &'a Arc<Lease>,
    mine: Mine,
    leftover: &'a Leftover,
}

impl Put<'_> {
    /// Puts the key, unless it exists already (then it is a leftover of this
    /// session's: deleted first), and returns its create revision and whose
    /// key heads the queue, looked at in the same transaction (one round
    /// trip for an uncontended lock, as etcd's Go client takes).
    async fn put(&mut self, value: &[u8], patience: Patience<'_>) -> Result<(i64, Head), Failure> {
        loop {
            let txn = TxnRequest {
                compare: vec![rpc::created_at(self.key, 0)],
                success: vec![
                    rpc::put_op(self.key, value.to_vec(), self.lease.id),
                    rpc::range_op(RangeRequest {
                        keys_only: true,
                        limit: LOOK,
                        ..rpc::by_create(self.prefix, SortOrder::Ascend, 0)
                    }),
                ],
                failure: vec![rpc::range_op(rpc::get(self.key))],
            };
            self.mine = Mine::Unknown;
            let done = self.session.txn(patience, txn).await?;
            if done.succeeded {
                self.mine = Mine::At(done.revision());
                let head = match done
                    .range(1)
                    .iter()
                    .find(|kv| same_level(self.prefix, &kv.key))
                {
                    Some(kv) if kv.key == self.key => Head::Mine,
                    Some(_) => Head::Other,
                    None => Head::Unknown,
                };
                return Ok((done.revision(), head));
            }
            // Etcd's trap: a second put under the same lease would reuse the
            // key and its place, and two holds would share one grant.
            match done.range(0).first() {
                Some(old) => {
                    delete_if(self.session, self.key, old.create_revision, patience).await?;
                }
                None => continue,
            }
        }
    }

    async fn delete(&mut self) -> Result<(), Failure> {
        // Once: a key left behind is deleted in the background.
        delete_mine(self.session, self.key, self.mine).await?;
        // Gone either way: deleted now, or before by someone else.
        self.mine = Mine::Absent;
        Ok(())
    }
}

impl Drop for Put<'_> {
    fn drop(&mut self) {
        if self.mine == Mine::Absent {
            return;
        }
        let (session, key, mine) = (self.session.clone(), self.key.to_vec(), self.mine);
        let lease = self.lease.clone();
        let mut slot = self.leftover.lock().unwrap();
        let before = slot.take();
        // Inside the session's runtime: the wait is one of its tasks.
        *slot = Some(tokio::spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            delete_until_gone(&session, &key, mine, &lease).await;
        }));
    }
}

/// Whether `key` is one of the lock `prefix`'s own (`NAME/<lease>`), not a
/// key of a lock whose name nests inside it (`NAME/sub/<lease>`).
pub(crate) fn same_level(prefix: &[u8], key: &[u8]) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| !rest.contains(&b'/'))
}

/// Whose key heads a lock's queue, as a put saw it.
enum Head {
    Mine,
    Other,
    /// Not among the keys the put looked at.
    Unknown,
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
    patience: Patience<'_>,
) -> Result<Ahead, Failure> {
    // Serializable looks read the member's own state, without a round of
    // consensus (half a millisecond or more on every hand-off). A stale
    // view cannot grant wrongly: a view that has our key has every key
    // created before it, so if it shows none of them, each was deleted
    // while our key was there, and we were first (if our key went after
    // that, the hold was lost after it was granted, as any hold can be). A
    // view without our key may only be behind our put: that is asked again
    // with a linearizable look before we queue again.
    let mut serializable = true;
    loop {
        let txn = TxnRequest {
            compare: vec![],
            success: vec![
                rpc::range_op(RangeRequest {
                    keys_only: true,
                    serializable,
                    ..rpc::by_create(prefix, SortOrder::Descend, revision - 1)
                }),
                rpc::range_op(RangeRequest {
                    serializable,
                    ..rpc::get(key)
                }),
            ],
            failure: vec![],
        };
        let seen = session.txn(patience, txn).await?;
        let ours = seen.range(1).first().map(|kv| kv.create_revision);
        if ours != Some(revision) {
            if serializable {
                serializable = false;
                continue;
            }
            // Our key went while we waited: the lease expired or was revoked.
            return Ok(Ahead::LeaseLost);
        }
        serializable = true;
        let mut keys_ahead = seen
            .range(0)
            .iter()
            .filter(|kv| same_level(prefix, &kv.key));
        let Some(ahead) = keys_ahead.next() else {
            return Ok(Ahead::First);
        };
        // No key can join those ahead of ours: once the last one goes, we
        // are first, if ours is still there.
        let last_ahead = keys_ahead.next().is_none();
        // Only a wait has someone to stop it (a try asks once).
        let Patience::Until(stop) = patience else {
            return Ok(Ahead::GaveUp);
        };
        if stop.is_set() {
            return Ok(Ahead::GaveUp);
        }
        let watched = [key, &ahead.key[..]];
        tokio::select! {
            deleted = first_deletion_heard(session, &watched, seen.revision(), patience) => match deleted? {
                // Ours gone: with the lease, or by an operator.
                Some(Deletion { which: 0, .. }) => return Ok(Ahead::LeaseLost),
                // The last key ahead gone while ours was still there.
                Some(Deletion { in_order: true, .. }) if last_ahead => return Ok(Ahead::First),
                // Otherwise the next look tells.
                _ => {}
            },
            () = stop.wait() => return Ok(Ahead::GaveUp),
            // Its keys go with it (revoked, or expiring).
            () = lease.lost() => return Ok(Ahead::LeaseLost),
        }
    }
}

/// Returns once `key` has been deleted after `revision` (or the watch was
/// cut short: the caller looks again either way).
async fn deleted_after(session: &Connection, key: &[u8], revision: i64) -> Result<(), Failure> {
    first_deletion_heard(session, &[key], revision, Patience::Timeout)
        .await
        .map(drop)
}

/// A deletion a watch told of.
struct Deletion {
    /// Which of the watched keys went.
    which: usize,
    /// Whether a deletion of the first key before this one would have been
    /// heard of first.
    in_order: bool,
}

/// Watches `keys` from after `revision` on and tells of the first deletion
/// of one of them it hears of, or `None` if the watch was cut short. Each
/// key has a watch of its own, all on one stream: a range over them would
/// also tell of every key between them (other waiters', N of them for each
/// of N waiters). Whether no deletion of the first key can come after one
/// it preceded is told with the deletion ([`Deletion::in_order`]).
async fn first_deletion_heard(
    session: &Connection,
    keys: &[&[u8]],
    revision: i64,
    patience: Patience<'_>,
) -> Result<Option<Deletion>, Failure> {
    // After a watch cut short, the caller looks and watches again: not at
    // the speed of round trips while a member is going away or catching
    // up (a watch from a revision it has compacted is cancelled).
    const CUT_SHORT: std::time::Duration = std::time::Duration::from_millis(50);
    debug_assert!(!keys.is_empty(), "a key to watch");
    let creates: Vec<WatchRequest> = keys
        .iter()
        .map(|key| WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: key.to_vec(),
                start_revision: revision + 1,
                filters: vec![rpc::watch_create_request::FilterType::Noput as i32],
                ..Default::default()
            })),
        })
        .collect();
    // The request stream stays open while the watch is wanted: etcd ends
    // the watch when it closes.
    let (_requests, mut events) = session
        .call(patience, |channel| {
            let creates = creates.clone();
            async move {
                let (tx, rx) = tokio::sync::mpsc::channel(creates.len());
                for create in creates {
                    tx.try_send(create).expect("room for every watch");
                }
                let opened = WatchClient::new(channel)
                    .watch(ReceiverStream::new(rx))
                    .await;
                opened.map(|r| r.map(|events| (tx, events)))
            }
        })
        .await?;
    // A watch made before the member applied any revision past `revision`
    // hears of each deletion as it is applied, in turn with the stream's
    // other watches; one made later is caught up in a batch of its own, in
    // no set order with them. The answer to each creation gives the
    // member's revision when that watch was made (read just before it up to
    // etcd 3.4.37, 3.5.21 and 3.6.1, just after it since): if no answer is
    // past `revision`, every watch but perhaps the last was made in time,
    // the first key's among them, so a deletion of the first key is heard
    // of before any later one. This rests on etcd's own server (a gRPC
    // proxy may batch differently). Two cases are left, in which a hold is
    // granted whose key is already gone, as if an operator had deleted it
    // right after the grant (`is_lost()` looks first and says so, the
    // release says `Lost`, and its fence is below the next holder's): one
    // request that deletes both keys at once (`etcdctl del --prefix`), whose
    // events reach the two watches in no set order, and a member restored
    // from a snapshot (one far behind), which catches all its watches up
    // in batches. A look after every deletion would close them at a third
    // more per hand-off.
    let mut created = 0;
    let mut in_order = true;
    loop {
        match events.message().await {
            Ok(Some(r)) => {
                if r.canceled {
                    tokio::time::sleep(CUT_SHORT).await;
                    return Ok(None);
                }
                if r.created {
                    created += 1;
                    in_order &= r.header.as_ref().is_some_and(|h| h.revision <= revision);
                }
                let deleted = |key: &&[u8]| {
                    r.events.iter().any(|e| {
                        e.r#type == EventType::Delete as i32
                            && e.kv.as_ref().is_some_and(|kv| kv.key == *key)
                    })
                };
                if let Some(which) = keys.iter().position(deleted) {
                    // Each watch's answer to its creation comes before its
                    // events, and the creations are answered in turn: all
                    // are counted by now (checked all the same).
                    let in_order = in_order && created == keys.len();
                    return Ok(Some(Deletion { which, in_order }));
                }
            }
            // Broken (a member gone): the caller's next look, which asks
            // as patiently as the caller, tells whether the cluster is.
            Ok(None) | Err(_) => {
                tokio::time::sleep(CUT_SHORT).await;
                return Ok(None);
            }
        }
    }
}

/// Marks a grant lost when its key is deleted by someone else. Ends with
/// the lease (its keys go with it) or when the grant is released (aborted).
async fn watch_own_key(
    session: Arc<Connection>,
    key: Vec<u8>,
    revision: i64,
    deleted: Arc<Flag>,
    looked: Arc<Flag>,
    lease: Arc<Lease>,
) {
    const AGAIN: std::time::Duration = std::time::Duration::from_millis(200);
    loop {
        // Looked at first (again after a cut watch), then watched from the
        // look's revision on: etcd catches a watch from a past revision up
        // only every 100 ms, and cancels one from a compacted revision.
        let look = session.range(Patience::Timeout, rpc::get(&key)).await;
        let from = match look {
            Ok(r) if r.kvs.first().map(|kv| kv.create_revision) == Some(revision) => {
                r.header.map_or(revision, |h| h.revision)
            }
            Ok(_) => {
                deleted.set();
                looked.set();
                return;
            }
            Err(_) => {
                // Not known either way: what the lease says stands.
                looked.set();
                if lease.is_lost() {
                    return;
                }
                tokio::time::sleep(AGAIN).await;
                continue;
            }
        };
        looked.set();
        match deleted_after(&session, &key, from).await {
            Ok(()) => {}
            Err(_) if lease.is_lost() => return,
            Err(_) => tokio::time::sleep(AGAIN).await,
        }
    }
}
