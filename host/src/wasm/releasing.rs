//! The releases of a guest's guards that must finish off the call that
//! began them, and the waits of later calls for them.

use tokio::sync::watch;
use wasmtime_wasi::runtime::with_ambient_tokio_runtime;

/// The releases of a guest's guards that had to finish off the executor
/// (a soft marker whose turn a breaker holds, an etcd key's deletion, a hold
/// the host's timer is ending). Each runs to its end on a task of its own,
/// whatever happens to the call that started it: cancelling a WASI 0.3
/// call or dropping the store never strands a release half done. Each lock
/// call of the guest first waits for the releases begun before it, so it
/// never finds the guest's own old hold; there are never more than the
/// guards the guest held at once.
#[derive(Debug, Default)]
pub(crate) struct Releasing(Vec<watch::Receiver<()>>);

/// The releases under way when a call began, to wait for without the
/// store: any number of a guest's tasks may wait for the same ones.
#[derive(Debug)]
pub(crate) struct Earlier(Vec<watch::Receiver<()>>);

impl Releasing {
    /// Runs `release` to its end on a task of its own.
    pub(super) fn push(&mut self, release: impl Future<Output = ()> + Send + 'static) {
        self.forget_ended();
        let (ended, watch) = watch::channel(());
        // Detached: dropping a tokio `JoinHandle` leaves its task running.
        drop(with_ambient_tokio_runtime(|| {
            tokio::task::spawn(async move {
                release.await;
                drop(ended);
            })
        }));
        self.0.push(watch);
    }

    /// The releases under way now.
    pub(crate) fn earlier(&mut self) -> Earlier {
        self.forget_ended();
        Earlier(self.0.clone())
    }

    /// Waits until the releases under way now are done.
    pub(crate) async fn settle(&mut self) {
        self.earlier().settled().await;
    }

    fn forget_ended(&mut self) {
        // A release's channel closes when its task ends, or is dropped
        // with a runtime shutting down (the guard's drop releases then).
        self.0.retain(|r| r.has_changed().is_ok());
    }
}

impl Earlier {
    /// Whether no release was under way.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Waits until these releases are done. Cancel safe: the releases go on.
    pub(crate) async fn settled(self) {
        for mut release in self.0 {
            // Nothing is ever sent: this returns when the release's task
            // ends (`Err`: the sender is gone).
            let _ = release.changed().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;
    use tokio::time::timeout;

    use super::*;

    /// A release that ends when `finish` is sent (or dropped).
    fn release_until(releasing: &mut Releasing) -> oneshot::Sender<()> {
        let (finish, finished) = oneshot::channel::<()>();
        releasing.push(async move {
            let _ = finished.await;
        });
        finish
    }

    #[tokio::test]
    async fn every_snapshot_waits_for_the_release_and_no_longer() {
        let mut releasing = Releasing::default();
        let finish = release_until(&mut releasing);
        let (first, second) = (releasing.earlier(), releasing.earlier());
        let first = tokio::spawn(first.settled());
        let second = tokio::spawn(second.settled());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!first.is_finished() && !second.is_finished());
        finish.send(()).unwrap();
        timeout(Duration::from_secs(5), first)
            .await
            .unwrap()
            .unwrap();
        timeout(Duration::from_secs(5), second)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_the_release_running() {
        let mut releasing = Releasing::default();
        let (ran, done) = oneshot::channel();
        let (finish, finished) = oneshot::channel::<()>();
        releasing.push(async move {
            let _ = finished.await;
            ran.send(()).unwrap();
        });
        let cancelled = timeout(Duration::from_millis(20), releasing.settle()).await;
        assert!(cancelled.is_err(), "settled before the release ended");
        finish.send(()).unwrap();
        timeout(Duration::from_secs(5), done)
            .await
            .unwrap()
            .unwrap();
        timeout(Duration::from_secs(5), releasing.settle())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_later_release_is_not_waited_for() {
        let mut releasing = Releasing::default();
        let first = release_until(&mut releasing);
        let earlier = releasing.earlier();
        let _later = release_until(&mut releasing);
        first.send(()).unwrap();
        timeout(Duration::from_secs(5), earlier.settled())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn ended_releases_are_forgotten() {
        let mut releasing = Releasing::default();
        for _ in 0..100 {
            release_until(&mut releasing).send(()).unwrap();
            releasing.settle().await;
        }
        assert!(releasing.earlier().is_empty(), "ended releases kept");
        let _running = release_until(&mut releasing);
        assert_eq!(releasing.earlier().0.len(), 1);
    }
}
