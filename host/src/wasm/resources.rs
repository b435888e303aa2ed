//! The host side of the guest's handles. Handles hold nothing but their
//! quota unit: holds belong to guards (`guard.rs`).

use std::sync::Arc;

use super::ctx::Slot;
use super::namespace::Namespace;
use crate::{FileLock, Semaphore};

/// A guest's lock handle (`wasmlock:lock/locks.lock`).
#[derive(Debug)]
pub struct GuestLock {
    pub(crate) lock: Arc<FileLock>,
    /// Opened on a descriptor without write access: holds are limited to
    /// what the embedder allows for read-only files.
    pub(crate) read_only: bool,
    pub(crate) _handle: Slot,
}

/// A guest's semaphore handle (`wasmlock:lock/locks.semaphore`).
#[derive(Debug)]
pub struct GuestSemaphore {
    pub(crate) sem: Arc<Semaphore>,
    pub(crate) _handle: Slot,
}

/// A namespace granted to the guest (`wasmlock:lock/locks.namespace`).
#[derive(Debug)]
pub struct GuestNamespace {
    pub(crate) name: String,
    pub(crate) namespace: Namespace,
    pub(crate) _handle: Slot,
}
