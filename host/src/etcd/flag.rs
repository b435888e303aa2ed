//! A flag that is set once something has happened, and a way to wait for
//! it without polling.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Something that has happened, and whoever waits for it.
#[derive(Default)]
pub(crate) struct Flag {
    set: AtomicBool,
    notify: Notify,
}

impl Flag {
    /// Sets the flag and wakes whoever waits; says whether it was unset.
    pub(crate) fn set(&self) -> bool {
        let was = self.set.swap(true, Ordering::AcqRel);
        self.notify.notify_waiters();
        !was
    }

    pub(crate) fn reset(&self) {
        self.set.store(false, Ordering::Release);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    pub(crate) async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !self.is_set() {
            notified.await;
        }
    }
}
