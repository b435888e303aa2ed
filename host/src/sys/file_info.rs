//! What the engine learns of a file and asks of an open, on every system.

/// The parts of a file's information the engine needs: its identity
/// (device and inode on Unix; volume serial number and file index on
/// Windows), its times, its links, whether it is a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub mtime_ns: i128,
    /// The inode's change time (NTFS's `ChangeTime`): a rename moves it.
    pub ctime_ns: i128,
    pub nlink: u64,
    pub is_file: bool,
}

impl Stat {
    pub(crate) fn key(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

/// How to open the lock file.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Create {
    /// Open an existing file for reading and writing, never truncate.
    Existing,
    /// Create it; fail if it exists.
    New,
    /// Create a soft marker; fail if it exists.
    Marker,
    /// Open an existing soft marker for reading and writing.
    MarkerOpen,
    /// Open an existing file read-only (reading a marker).
    ReadOnly,
}
