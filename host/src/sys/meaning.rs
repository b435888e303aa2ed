//! What an OS error means for a lock, as each system's error codes map to
//! it (`unix/errno.rs`, `windows/errno.rs`).

/// What an OS error means for a lock, for the errors that say more than
/// their text. The crate's `ErrorKind` is built from this, above `sys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Meaning {
    Refused,
    BadPath,
    NoLocks,
    Deadlock,
    Quota,
}

/// Why opening a lock file failed, when the error code says more than its
/// text.
pub(crate) enum OpenFailure {
    /// Whatever the OS says (no reader on a FIFO, ...), a device that
    /// refuses to open cannot be a lock file. (Unix's FIFOs; Windows
    /// opens devices by name, which the sandbox refuses.)
    #[cfg_attr(windows, allow(dead_code))]
    NotAFile,
    /// An explanation for the message.
    Because(&'static str),
}
