//! Scenario 7: locks in etcd against etcd's own lock service — the `Lock`
//! and `Unlock` RPCs that etcd-client's `lock`/`unlock` and `etcdctl lock`
//! call — on a local etcd the benchmark starts: hand-off latency between
//! two processes, and an uncontended lock+unlock: its time, and how many
//! requests etcd received for it (counted by etcd itself, in its metrics).

use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use wasmlock::FileLock;
use wasmlock::etcd::Cluster;

use super::handoff::{Placement, measure, percentile};
use super::{Figure, Report, Result, Sizes};
use crate::etcd::Etcd;

#[allow(clippy::all, missing_docs, unreachable_pub)]
mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}
#[allow(clippy::all, missing_docs, unreachable_pub)]
mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

use etcdserverpb::lease_client::LeaseClient;
use etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
use v3lockpb::lock_client::LockClient;
use v3lockpb::{LockRequest, UnlockRequest};

/// How long a holder keeps the lock before handing it over. etcd's own
/// waiters (the Go client's, which its lock service runs) watch the key
/// ahead from the revision they looked at, a past one by the time the watch
/// starts, and etcd catches such watches up every 100 ms: a release in the
/// first 100 ms of a wait reaches them only then. Ours watch from the next
/// revision and are woken at once. The judged figure holds past that
/// window, where the baseline is at its best; the short hold is shown too.
const SETTLED: Duration = Duration::from_millis(150);
const QUICK: Duration = Duration::from_millis(20);

/// Each variant runs this many times, in turns with the other.
const BLOCKS: u32 = 4;

/// The lock `name` in the cluster at `url`, ours.
pub(super) fn ours(url: &str, name: &str) -> Result<FileLock> {
    // The lock keeps the connection (and its lease) for as long as it lives.
    Ok(Cluster::connect([url])?.lock(name)?)
}

/// etcd's lock service through a plain gRPC client, as etcd-client uses it:
/// one lease, then `Lock` (which waits in the server) and `Unlock`.
pub(super) struct RawLock {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
    lease: i64,
    name: Vec<u8>,
    key: Option<Vec<u8>>,
}

impl RawLock {
    pub(super) fn connect(url: &str, name: &str) -> Result<RawLock> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let channel = runtime.block_on(Endpoint::from_shared(url.to_owned())?.connect())?;
        // Outlives any run of the benchmark; revoked on drop.
        let grant = LeaseGrantRequest { ttl: 600, id: 0 };
        let lease = runtime
            .block_on(LeaseClient::new(channel.clone()).lease_grant(grant))?
            .into_inner()
            .id;
        Ok(RawLock {
            runtime,
            channel,
            lease,
            name: name.as_bytes().to_vec(),
            key: None,
        })
    }

    pub(super) fn lock(&mut self) -> Result<()> {
        let request = LockRequest {
            name: self.name.clone(),
            lease: self.lease,
        };
        let granted = self
            .runtime
            .block_on(LockClient::new(self.channel.clone()).lock(request))?;
        self.key = Some(granted.into_inner().key);
        Ok(())
    }

    pub(super) fn unlock(&mut self) -> Result<()> {
        let key = self.key.take().ok_or("not held")?;
        self.runtime
            .block_on(LockClient::new(self.channel.clone()).unlock(UnlockRequest { key }))?;
        Ok(())
    }
}

impl Drop for RawLock {
    fn drop(&mut self) {
        let revoke = LeaseRevokeRequest { id: self.lease };
        let _ = self
            .runtime
            .block_on(LeaseClient::new(self.channel.clone()).lease_revoke(revoke));
    }
}

/// Requests etcd has received so far, by its own count
/// (`grpc_server_msg_received_total` over every method), without the
/// leases' keep-alives, which come on a timer, not per lock.
fn requests_received(etcd: &Etcd) -> Result<f64> {
    let total = etcd.metric("grpc_server_msg_received_total", |labels| {
        !labels.contains("grpc_method=\"LeaseKeepAlive\"")
    });
    if total == 0.0 {
        return Err(format!("no gRPC request counts in {}/metrics", etcd.url).into());
    }
    Ok(total)
}

/// `pairs` uncontended lock+unlock pairs (after one to warm up): the time
/// per pair in microseconds, and the requests etcd received per pair.
fn uncontended(
    etcd: &Etcd,
    pairs: u32,
    mut pair: impl FnMut() -> Result<()>,
) -> Result<(f64, f64)> {
    pair()?;
    let before = requests_received(etcd)?;
    let started = Instant::now();
    for _ in 0..pairs {
        pair()?;
    }
    let took = started.elapsed();
    let requests = requests_received(etcd)? - before;
    Ok((
        took.as_secs_f64() * 1e6 / f64::from(pairs),
        requests / f64::from(pairs),
    ))
}

pub(super) fn run(sizes: &Sizes, report: &mut Report) -> Result<()> {
    let Some(etcd) = Etcd::start() else {
        eprintln!("  scenario 7 skipped: no etcd here (Debian etcd-server, etcd-client)");
        return Ok(());
    };
    let url = etcd.url.as_str();

    let per_block = sizes.etcd_handoffs.div_ceil(BLOCKS);
    let n = per_block * BLOCKS;
    for hold in [SETTLED, QUICK] {
        let variants = ["etcd-raw", "etcd"];
        let mut samples: [Vec<u64>; 2] = Default::default();
        for _ in 0..BLOCKS {
            for (v, s) in variants.iter().zip(&mut samples) {
                s.extend(measure(v, url, per_block, Placement::Scheduler, hold)?);
            }
        }
        let [(raw50, raw99), (ours50, ours99)] = samples.map(|mut s| {
            s.sort_unstable();
            (percentile(&s, 50), percentile(&s, 99))
        });
        let held = format!("held {} ms", hold.as_millis());
        let p50 = Figure::new(
            7,
            format!("etcd lock hand-off, p50 ({n}x, {held})"),
            ours50,
            "us",
        )
        .against("etcd Lock/Unlock RPCs, p50", raw50);
        report.push(if hold == SETTLED {
            p50.target("<= 1.25", ours50 / raw50 <= 1.25)
        } else {
            p50
        });
        report.push(
            Figure::new(7, format!("etcd lock hand-off, p99 ({held})"), ours99, "us")
                .against("etcd Lock/Unlock RPCs, p99", raw99),
        );
    }

    let pairs = sizes.etcd_pairs;
    let mut raw = RawLock::connect(url, "uncontended-raw")?;
    let (raw_us, raw_requests) = uncontended(&etcd, pairs, || {
        raw.lock()?;
        raw.unlock()
    })?;
    drop(raw);
    let lock = ours(url, "uncontended")?;
    let (ours_us, ours_requests) = uncontended(&etcd, pairs, || Ok(lock.lock()?.unlock()?))?;
    report.push(
        Figure::new(
            7,
            format!("etcd uncontended lock+unlock ({pairs}x)"),
            ours_us,
            "us",
        )
        .against("etcd Lock+Unlock RPCs", raw_us),
    );
    report.push(
        Figure::new(
            7,
            "etcd requests per uncontended lock+unlock",
            ours_requests,
            "req",
        )
        .against("etcd Lock+Unlock RPCs", raw_requests)
        .target("<= baseline", ours_requests <= raw_requests),
    );
    Ok(())
}
