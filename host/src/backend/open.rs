//! Opening the file behind a lock and choosing its backend: what identifies
//! it in the process ([`Key`]) and how to make its backend if the process
//! has none for it yet.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use super::os::OsBackend;
use super::soft::SoftBackend;
use super::{Backend, Key};
use crate::sys::{self, Create, DirFd, OpenFailure};
use crate::target::Target;
use crate::{Error, ErrorKind, Kind, Result};

/// The backend maker for a lock file that was opened (or a marker directory).
pub(crate) type Make = Box<dyn FnOnce() -> Result<Box<dyn Backend>>>;

/// A lock file, opened.
pub(crate) struct Opened {
    pub(crate) key: Key,
    pub(crate) make: Make,
    /// The lock file was created by this call (device, inode).
    pub(crate) created: Option<(u64, u64)>,
}

/// An OS lock on a file the caller opened.
pub(crate) fn open_file(file: &File, display: &Path) -> Result<Opened> {
    let io = |e| Error::from_io(e, display);
    if !sys::is_synchronous(file).map_err(io)? {
        return Err(Error::new(ErrorKind::Unsupported, display).with_detail(
            "the file was opened for overlapped I/O, which a kernel lock cannot wait on; \
                 open it without FILE_FLAG_OVERLAPPED",
        ));
    }
    let st = sys::fstat(file).map_err(io)?;
    let dup = file.try_clone().map_err(io)?;
    let display = display.to_path_buf();
    Ok(Opened {
        key: Key::Os(st.dev, st.ino),
        make: Box::new(move || Ok(Box::new(OsBackend::new(dup, display)))),
        created: None,
    })
}

/// The lock file of `target` (created if missing) in its opened `parent`.
pub(crate) fn open_path(
    target: &Target,
    parent: Arc<DirFd>,
    kind: Kind,
    file_mode: Option<u32>,
) -> Result<Opened> {
    let path = target.display.clone();
    let name = target.cname.clone();
    let io = |e: std::io::Error| classify_open(e, &path);
    match kind {
        Kind::Os => {
            let (file, made) = open_lock_file(&parent, &name).map_err(io)?;
            let st = sys::fstat(&file).map_err(io)?;
            if !st.is_file {
                return Err(
                    Error::new(ErrorKind::InvalidPath, &path).with_detail("not a regular file")
                );
            }
            Ok(Opened {
                key: Key::Os(st.dev, st.ino),
                make: Box::new(move || Ok(Box::new(OsBackend::new(file, path)))),
                created: made.then(|| st.key()),
            })
        }
        Kind::Soft => {
            let st = sys::dir_stat(&parent).map_err(io)?;
            Ok(Opened {
                key: Key::Soft(st.dev, st.ino, target.name.clone()),
                make: Box::new(move || {
                    Ok(Box::new(SoftBackend::new(parent, name, path, file_mode)))
                }),
                created: None,
            })
        }
    }
}

/// Opens the lock file, creating it if missing; says whether we created it.
/// Opening an existing file without `O_CREAT` also avoids the refusal that
/// sticky directories (`/tmp`) give for another user's file.
fn open_lock_file(dir: &DirFd, name: &sys::Name) -> std::io::Result<(File, bool)> {
    loop {
        match sys::open_at(dir, name, Create::New, 0o666) {
            Ok(f) => return Ok((f, true)),
            Err(e) if sys::is_exists(&e) => {}
            Err(e) => return Err(e),
        }
        match sys::open_at(dir, name, Create::Existing, 0) {
            Ok(f) => return Ok((f, false)),
            // Removed between the two opens: create it after all.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

fn classify_open(e: std::io::Error, path: &Path) -> Error {
    match sys::open_failure(&e) {
        Some(OpenFailure::NotAFile) => {
            Error::new(ErrorKind::InvalidPath, path).with_detail("not a regular file")
        }
        Some(OpenFailure::Because(detail)) => Error::from_io(e, path).with_detail(detail),
        None => Error::from_io(e, path),
    }
}
