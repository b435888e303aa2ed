//! Namespaces: named locks the host granted, with no directory at all.

use std::cell::RefCell;
use std::rc::Rc;

use crate::bindings::wasmlock::lock::{locks, namespaces};
use crate::{Error, ErrorKind, Lock, Result, Semaphore};

/// The namespaces the host granted, by name, listed once.
type Granted = Vec<(String, Rc<locks::Namespace>)>;

thread_local! {
    static GRANTED: RefCell<Option<Granted>> = const { RefCell::new(None) };
}

/// A space of named locks the host granted this plugin, the way it grants
/// directories. Keys are any non-empty strings; the host decides where the
/// locks live (a directory of lock files, a lock service) and the plugin
/// never learns it.
///
/// ```no_run
/// use wasmlock_guest::Namespace;
/// let jobs = Namespace::get("jobs")?;
/// let lock = jobs.lock("invoice/2026-12")?;
/// let _guard = lock.lock()?;
/// # Ok::<(), wasmlock_guest::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Namespace {
    raw: Rc<locks::Namespace>,
    name: String,
}

impl Namespace {
    /// The names of the namespaces the host granted.
    pub fn list() -> Vec<String> {
        with_granted(|granted| granted.iter().map(|(name, _)| name.clone()).collect())
    }

    /// The namespace the host granted as `name`
    /// ([`ErrorKind::Access`] if there is none).
    pub fn get(name: &str) -> Result<Namespace> {
        with_granted(|granted| {
            granted
                .iter()
                .find(|(n, _)| n == name)
                .map(|(n, raw)| Namespace {
                    raw: raw.clone(),
                    name: n.clone(),
                })
        })
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Access,
                format!("{name}: no namespace of that name was granted to this plugin"),
            )
        })
    }

    /// The lock named `key`.
    pub fn lock(&self, key: &str) -> Result<Lock> {
        let shown = format!("{}:{key}", self.name);
        let raw = self.raw.open(key).map_err(|e| Error::about(&shown, e))?;
        Ok(Lock::new(raw, &shown))
    }

    /// The semaphore named `key` with `slots` permits.
    pub fn semaphore(&self, key: &str, slots: u32) -> Result<Semaphore> {
        let shown = format!("{}:{key}", self.name);
        let raw = self
            .raw
            .open_semaphore(key, slots)
            .map_err(|e| Error::about(&shown, e))?;
        Ok(Semaphore::new(raw, &shown))
    }
}

fn with_granted<T>(f: impl FnOnce(&Granted) -> T) -> T {
    GRANTED.with(|cell| {
        let mut cell = cell.borrow_mut();
        let granted = cell.get_or_insert_with(|| {
            namespaces::get_namespaces()
                .into_iter()
                .map(|(ns, name)| (name, Rc::new(ns)))
                .collect()
        });
        f(granted)
    })
}
