//! A process's connection to one etcd cluster: the runtime its calls run on,
//! the channel, and the lease its lock keys live under, kept alive at a
//! third of its TTL.
//!
//! One lease serves every lock of the session (etcd's lock protocol keys a
//! waiter by lease, and one key per name per lease is all the manager ever
//! asks for, since it queues this process's waiters itself). When the lease
//! is lost — expired because keep-alives did not get through, revoked by an
//! operator — every hold under it is lost, and the next acquisition grants
//! a fresh one.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::flag::Flag;
use super::rpc::kv_client::KvClient;
use super::rpc::lease_client::LeaseClient;
use super::rpc::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, RangeRequest, RangeResponse,
    TxnRequest, TxnResponse,
};

/// Why a call to the cluster failed, before it is tied to a lock.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The cluster could not be reached in time, or the connection broke.
    Unreachable(String),
    /// The cluster answered with an error.
    Refused(String),
    /// The cluster does not have the lease (revoked, expired).
    NoLease,
}

impl Failure {
    fn from_status(s: tonic::Status) -> Failure {
        use tonic::Code;
        match s.code() {
            _ if unreachable(&s) => Failure::Unreachable(s.message().to_owned()),
            Code::NotFound => Failure::NoLease,
            _ => Failure::Refused(format!("{:?}: {}", s.code(), s.message())),
        }
    }
}

/// Whether `status` says the cluster was not reached, or not all the way:
/// a member gone or without a leader (`Unavailable`), a connection that
/// broke under the request (hyper's errors come as `Unknown` "transport
/// error"), a request cut off. Asking again may get through.
fn unreachable(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

/// A lease this session's keys live under.
pub(crate) struct Lease {
    pub(crate) id: i64,
    /// Until when the cluster is known to keep it: the time the last
    /// keep-alive that was answered was *sent*, plus the TTL it was given,
    /// on a clock that counts suspended time ([`now`]).
    deadline: Mutex<Duration>,
    /// Set for good once the lease is lost: an answer that comes after the
    /// deadline passed does not bring back holds already reported lost (it
    /// stops the keep-alives instead, which revoke the lease).
    lost: Flag,
}

impl Lease {
    fn new(id: i64, deadline: Duration) -> Lease {
        Lease {
            id,
            deadline: Mutex::new(deadline),
            lost: Flag::default(),
        }
    }

    /// Lost, or past the time the cluster was known to keep it: a holder
    /// that was stopped past its TTL knows as soon as it runs again.
    pub(crate) fn is_lost(&self) -> bool {
        if !self.lost.is_set() && now() >= self.deadline() {
            self.lose();
        }
        self.lost.is_set()
    }

    fn deadline(&self) -> Duration {
        *self.deadline.lock().unwrap()
    }

    /// The deadline on tokio's clock, which stands still while the machine
    /// sleeps: a timer for it may fire late, never [`Lease::is_lost`].
    fn deadline_timer(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.deadline().saturating_sub(now())
    }

    /// Marks the lease lost (the cluster said so, or its deadline passed).
    pub(crate) fn lose(&self) {
        if self.lost.set() {
            tracing::warn!(lease = format_args!("{:x}", self.id), "etcd lease lost");
        }
    }

    /// Returns once the lease is lost: at its deadline at the latest (the
    /// keep-alive task marks it then).
    pub(crate) async fn lost(&self) {
        self.lost.wait().await
    }
}

/// Now, on the clock lease deadlines are kept on: the cluster's clock goes
/// on while this machine sleeps, so a deadline must pass then too.
fn now() -> Duration {
    crate::sys::since_boot()
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// One process's connection to one cluster: the thread its calls run on,
/// and the [`Connection`] they use.
pub(crate) struct Session {
    pub(crate) id: u64,
    runtime: Option<Runtime>,
    handle: Handle,
    /// What tasks on the runtime hold (never the session itself, whose
    /// drop waits for the runtime).
    pub(crate) conn: Arc<Connection>,
}

/// The channel to the cluster, the settings, and the current lease.
pub(crate) struct Connection {
    /// The endpoints, for messages.
    pub(crate) endpoints: String,
    pub(crate) channel: Channel,
    pub(crate) ttl: Duration,
    /// How long one call may take before the cluster counts as unreachable.
    pub(crate) timeout: Duration,
    lease: tokio::sync::Mutex<Option<Arc<Lease>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("endpoints", &self.conn.endpoints)
            .field("ttl", &self.conn.ttl)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(
        runtime: Runtime,
        channel: Channel,
        endpoints: String,
        ttl: Duration,
        timeout: Duration,
    ) -> Session {
        Session {
            id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            conn: Arc::new(Connection {
                endpoints,
                channel,
                ttl,
                timeout,
                lease: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// Runs `fut` on the session's runtime and blocks the calling thread
    /// until it is done (any thread, in an async context too: the future
    /// does not run on the caller's executor).
    pub(crate) fn block<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .expect("the etcd runtime stopped with a call pending")
    }

    /// Starts `fut` on the session's runtime.
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.handle.spawn(fut)
    }
}

/// How long a call asks again while the cluster cannot be reached (a member
/// gone or without a leader, a connection broken: given several endpoints,
/// the channel's next pick is another member).
#[derive(Clone, Copy)]
pub(crate) enum Patience<'a> {
    /// One attempt: try-once requests never wait, and a deletion's caller
    /// asks again itself, knowing that an attempt without an answer may
    /// have been applied.
    Once,
    /// Until the call timeout.
    Timeout,
    /// Until the call timeout, or until nobody waits any more.
    Until(&'a Flag),
}

impl Connection {
    /// One request, bounded by the session's timeout, sent again as
    /// `patience` says. Requests sent again may have been applied already:
    /// a put compares that its key is absent (and finds it if so), looks and
    /// watches change nothing, and a lease granted twice leaves one that
    /// expires unused.
    pub(crate) async fn call<T, Fut>(
        &self,
        patience: Patience<'_>,
        mut send: impl FnMut(Channel) -> Fut,
    ) -> Result<T, Failure>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        retried(self.timeout, patience, || send(self.channel.clone())).await
    }

    /// A transaction ([`call`](Self::call)).
    pub(crate) async fn txn(
        &self,
        patience: Patience<'_>,
        txn: TxnRequest,
    ) -> Result<TxnResponse, Failure> {
        self.call(patience, |channel| {
            let txn = txn.clone();
            async move { KvClient::new(channel).txn(txn).await }
        })
        .await
    }

    /// A look ([`call`](Self::call)).
    pub(crate) async fn range(
        &self,
        patience: Patience<'_>,
        range: RangeRequest,
    ) -> Result<RangeResponse, Failure> {
        self.call(patience, |channel| {
            let range = range.clone();
            async move { KvClient::new(channel).range(range).await }
        })
        .await
    }

    /// The session's lease, granted first if there is none or it was lost.
    pub(crate) async fn lease(&self, patience: Patience<'_>) -> Result<Arc<Lease>, Failure> {
        let mut current = self.lease.lock().await;
        if let Some(lease) = &*current
            && !lease.is_lost()
        {
            return Ok(lease.clone());
        }
        let sent = now();
        let ttl = self.ttl.as_secs().max(1) as i64;
        let granted = self
            .call(patience, |channel| async move {
                let grant = LeaseGrantRequest { ttl, id: 0 };
                LeaseClient::new(channel).lease_grant(grant).await
            })
            .await?;
        if !granted.error.is_empty() {
            return Err(Failure::Refused(granted.error));
        }
        let lease = Arc::new(Lease::new(
            granted.id,
            sent + Duration::from_secs(granted.ttl.max(0) as u64),
        ));
        tracing::debug!(
            lease = format_args!("{:x}", granted.id),
            ttl = granted.ttl,
            "etcd lease granted"
        );
        tokio::spawn(keep_alive_or_revoke(
            self.channel.clone(),
            lease.clone(),
            self.ttl / 3,
            self.timeout,
        ));
        *current = Some(lease.clone());
        Ok(lease)
    }
}

impl Drop for Session {
    /// Revokes the lease, so that keys whose deletion is still under way go
    /// at once rather than at its expiry, then stops the runtime.
    fn drop(&mut self) {
        let lease = self.conn.lease.try_lock().ok().and_then(|mut l| l.take());
        if let Some(lease) = lease.filter(|l| !l.is_lost()) {
            let channel = self.conn.channel.clone();
            let timeout = self.conn.timeout;
            let id = lease.id;
            let revoked = self.block(async move { revoke(&channel, id, timeout).await });
            // Revoked on purpose: nothing to warn about.
            lease.lost.set();
            if let Err(e) = revoked {
                tracing::warn!(lease = format_args!("{id:x}"), error = ?e, "revoking the etcd lease failed; its keys go when it expires");
            }
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// How long one attempt of a request that will be made again may take: a
/// share of the call `timeout`. etcd answers a proposal lost to a change of
/// leader only after its own request timeout (7 s by default), and a new
/// leader is usually there long before.
pub(crate) fn attempt(timeout: Duration) -> Duration {
    timeout / 4
}

/// Revokes the lease `id`, asking again while the cluster cannot be reached
/// until `timeout` passes.
async fn revoke(channel: &Channel, id: i64, timeout: Duration) -> Result<(), Failure> {
    retried(timeout, Patience::Timeout, || {
        let mut client = LeaseClient::new(channel.clone());
        async move { client.lease_revoke(LeaseRevokeRequest { id }).await }
    })
    .await
    .map(drop)
}

/// [`Connection::call`], for calls made without one.
async fn retried<T, Fut>(
    timeout: Duration,
    patience: Patience<'_>,
    mut send: impl FnMut() -> Fut,
) -> Result<T, Failure>
where
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    const FIRST_PAUSE: Duration = Duration::from_millis(20);
    const LONGEST_PAUSE: Duration = Duration::from_millis(500);
    let deadline = tokio::time::Instant::now() + timeout;
    // Every request asked again is safe to repeat (above).
    let attempt = match patience {
        Patience::Once => timeout,
        Patience::Timeout | Patience::Until(_) => attempt(timeout),
    };
    let mut pause = FIRST_PAUSE;
    loop {
        let until = deadline.min(tokio::time::Instant::now() + attempt);
        let answered = tokio::time::timeout_at(until, send()).await;
        let unavailable = match &answered {
            Ok(Err(status)) => unreachable(status),
            Ok(Ok(_)) => false,
            Err(_) => true,
        };
        let again = match patience {
            Patience::Once => false,
            Patience::Timeout => unavailable,
            Patience::Until(stop) => unavailable && !stop.is_set(),
        };
        if !again || tokio::time::Instant::now() + pause >= deadline {
            return answer(answered, timeout);
        }
        match &answered {
            Ok(Err(status)) => {
                tracing::debug!(code = ?status.code(), error = %status.message(), "etcd unreachable; asking again");
            }
            _ => tracing::debug!("etcd did not answer within {attempt:?}; asking again"),
        }
        let paused = tokio::time::sleep(pause);
        match patience {
            Patience::Until(stop) => tokio::select! {
                () = paused => {}
                () = stop.wait() => return answer(answered, timeout),
            },
            _ => paused.await,
        }
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// One attempt of a call, bounded by `timeout`.
async fn call<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Failure> {
    answer(tokio::time::timeout(timeout, fut).await, timeout)
}

fn answer<T>(
    answered: Result<Result<tonic::Response<T>, tonic::Status>, tokio::time::error::Elapsed>,
    timeout: Duration,
) -> Result<T, Failure> {
    match answered {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(Failure::from_status(status)),
        Err(_) => Err(Failure::Unreachable(format!(
            "no answer within {timeout:?}"
        ))),
    }
}

/// Keeps `lease` alive every `period` until it is lost ([`keep_alive`]),
/// then revokes it unless the cluster said it had it no more: a lease this
/// process stopped trusting must not keep its keys (a waiter's key left
/// for the lease to take along) at the head of a queue. etcd 3.4 renews
/// every lease when a new leader is elected, so under frequent elections a
/// lease nobody keeps alive may not expire on its own.
async fn keep_alive_or_revoke(
    channel: Channel,
    lease: Arc<Lease>,
    period: Duration,
    timeout: Duration,
) {
    if keep_alive(channel.clone(), &lease, period, timeout).await == Ended::Gone {
        return;
    }
    // Asked until the cluster answers: the keys must not wait for an expiry
    // that elections may keep putting off.
    loop {
        match revoke(&channel, lease.id, timeout).await {
            Ok(()) | Err(Failure::NoLease) => return,
            Err(Failure::Refused(e)) => {
                tracing::warn!(lease = format_args!("{:x}", lease.id), error = %e, "revoking a lost etcd lease was refused; its keys go when it expires");
                return;
            }
            Err(Failure::Unreachable(_)) => {}
        }
    }
}

/// Why keep-alives ended.
#[derive(PartialEq, Eq)]
enum Ended {
    /// The cluster answered TTL 0: it has the lease no more.
    Gone,
    /// Given up on here: not answered before its deadline, or marked lost.
    Given,
}

/// Keeps `lease` alive every `period` until it is lost: answered with TTL 0
/// (expired or revoked), not answered before its deadline (the cluster
/// cannot be reached), or marked lost here. A broken stream is opened again
/// while there is time.
async fn keep_alive(channel: Channel, lease: &Lease, period: Duration, timeout: Duration) -> Ended {
    let retry = Duration::from_millis(200).min(period);
    let deadline = || lease.deadline_timer();
    loop {
        if lease.is_lost() {
            return Ended::Given;
        }
        let (tx, rx) = mpsc::channel(4);
        // When each request still unanswered was sent: an answer extends
        // the lease from the time its request left, not from its arrival.
        let mut sent = std::collections::VecDeque::new();
        // The first request goes before the stream is open: etcd answers
        // the opening only with the first keep-alive's answer.
        sent.push_back(now());
        let request = LeaseKeepAliveRequest { id: lease.id };
        tx.try_send(request).expect("an empty channel");
        let mut client = LeaseClient::new(channel.clone());
        // A member that does not answer within a period (stopped, waiting
        // for a leader, or stuck renewing on a leadership it lost) is not
        // given the rest of the TTL: the stream is opened again, on another
        // member when there are several.
        let patience = period.min(timeout);
        let opened = tokio::select! {
            opened = call(patience, client.lease_keep_alive(ReceiverStream::new(rx))) => opened,
            () = tokio::time::sleep_until(deadline()) => continue,
            () = lease.lost() => continue,
        };
        if let Err(e) = &opened {
            tracing::debug!(lease = format_args!("{:x}", lease.id), error = ?e, "etcd keep-alive stream not opened");
        }
        if let Ok(mut answers) = opened {
            // Sent every `period` whatever the answers do: a slow answer
            // must not push the next request towards the deadline.
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if sent.front().is_some_and(|&at| now().saturating_sub(at) >= patience) {
                            tracing::debug!(lease = format_args!("{:x}", lease.id), "etcd keep-alive unanswered for {patience:?}; opening the stream again");
                            break;
                        }
                        if tx.try_send(LeaseKeepAliveRequest { id: lease.id }).is_ok() {
                            sent.push_back(now());
                        }
                    }
                    answer = answers.message() => match answer {
                        Ok(Some(a)) if a.ttl > 0 => {
                            let at = sent.pop_front().unwrap_or_else(now);
                            *lease.deadline.lock().unwrap() = at + Duration::from_secs(a.ttl as u64);
                        }
                        Ok(Some(_)) => {
                            lease.lose();
                            return Ended::Gone;
                        }
                        Ok(None) | Err(_) => {
                            tracing::debug!(lease = format_args!("{:x}", lease.id), "etcd keep-alive stream ended; opening it again");
                            break;
                        }
                    },
                    () = tokio::time::sleep_until(deadline()) => break,
                    () = lease.lost() => break,
                }
            }
        }
        tokio::time::sleep_until(deadline().min(tokio::time::Instant::now() + retry)).await;
    }
}
