//! Absolute guest paths to (preopened directory, relative path), the way
//! wasi-libc resolves them: the longest preopen that is a prefix wins.

use std::cell::RefCell;

use wasip2::filesystem::preopens::get_directories;
use wasip2::filesystem::types::Descriptor;

use crate::{Error, ErrorKind, Result};

thread_local! {
    static PREOPENS: RefCell<Option<Vec<(Descriptor, String)>>> = const { RefCell::new(None) };
}

/// Splits `path` into the preopen it lies in and the rest, and calls `f`.
pub(crate) fn with_dir<T>(path: &str, f: impl FnOnce(&Descriptor, &str) -> Result<T>) -> Result<T> {
    PREOPENS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let dirs = cell.get_or_insert_with(get_directories);
        let (index, rest) = resolve(dirs.iter().map(|(_, name)| name.as_str()), path)?;
        f(&dirs[index].0, rest)
    })
}

/// Picks the preopen for `path`: absolute paths by the longest matching
/// preopen; relative ones against a `.` preopen, else against `/`.
pub(crate) fn resolve<'a, 'p>(
    names: impl Iterator<Item = &'a str>,
    path: &'p str,
) -> Result<(usize, &'p str)> {
    let (absolute, trimmed) = match path.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (false, path),
    };
    let mut best: Option<(usize, usize, &'p str)> = None;
    for (i, name) in names.enumerate() {
        let name = name.trim_end_matches('/');
        let candidate = if name == "." || name.is_empty() {
            // `.` serves relative paths; `/` (empty after trimming) serves all.
            if name == "." && absolute {
                continue;
            }
            // For a relative path, `.` is the better match than `/`.
            Some((usize::from(name == "."), trimmed))
        } else if let Some(prefix) = name.strip_prefix('/') {
            if !absolute {
                continue;
            }
            match trimmed.strip_prefix(prefix) {
                Some("") => Some((prefix.len(), "")),
                Some(rest) if rest.starts_with('/') => Some((prefix.len(), &rest[1..])),
                _ => None,
            }
        } else {
            None
        };
        if let Some((len, rest)) = candidate
            && best.is_none_or(|(l, _, _)| len > l)
        {
            best = Some((len, i, rest));
        }
    }
    best.map(|(_, i, rest)| (i, rest)).ok_or_else(|| {
        Error::new(
            ErrorKind::Access,
            format!("{path}: not inside any directory this plugin was given"),
        )
    })
}
