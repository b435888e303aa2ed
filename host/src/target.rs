//! Where a path-based lock lives: a root (an ambient directory or a granted
//! one), the relative parent below it and the file name, checked once.
//!
//! Both `LockDir` and the lock handles build on this; it depends on neither.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use crate::sys::{self, DirFd};
use crate::{Error, ErrorKind, Result};

pub(crate) type Refusal = (ErrorKind, &'static str);

/// The longest path the system calls take, with its NUL.
const PATH_MAX: usize = 4096;

/// Where a path-based lock lives: a root, a relative parent, a file name.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    root: Root,
    parent: PathBuf,
    pub(crate) name: OsString,
    /// `name` for the `*at` syscalls, made once (`split` refuses NUL bytes).
    pub(crate) cname: sys::Name,
    pub(crate) display: PathBuf,
}

#[derive(Clone)]
enum Root {
    Ambient(PathBuf),
    Dir(Arc<Dir>),
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Root::Ambient(p) => write!(f, "Ambient({})", p.display()),
            Root::Dir(_) => f.write_str("Dir"),
        }
    }
}

/// Splits a path into parent and final component, refusing what cannot
/// name a lock file.
fn split(path: &Path) -> std::result::Result<(&Path, &OsStr), Refusal> {
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.is_empty() {
        return Err((ErrorKind::InvalidPath, "the path is empty"));
    }
    if bytes.contains(&0) {
        return Err((ErrorKind::InvalidPath, "the path contains a NUL byte"));
    }
    if bytes.len() >= PATH_MAX {
        return Err((ErrorKind::InvalidPath, "the path is longer than 4095 bytes"));
    }
    // Windows takes `\\` as a separator too, and `C:` before one is a
    // drive whose root the separator names.
    let separator = |b: &u8| *b == b'/' || (cfg!(windows) && *b == b'\\');
    let (parent, name) = match bytes.iter().rposition(separator) {
        Some(i) if i == 0 || (cfg!(windows) && bytes[..i].ends_with(b":")) => {
            (&bytes[..=i], &bytes[i + 1..])
        }
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (&b""[..], bytes),
    };
    match name {
        b"" => return Err((ErrorKind::InvalidPath, "the path names a directory")),
        b"." | b".." => return Err((ErrorKind::InvalidPath, "the path names a directory")),
        _ => {}
    }
    if name.len() > 255 {
        return Err((
            ErrorKind::InvalidPath,
            "the file name is longer than 255 bytes",
        ));
    }
    // SAFETY: both are split off the encoded bytes of an `OsStr` at an
    // ASCII separator, which std allows.
    let (parent, name) = unsafe {
        (
            OsStr::from_encoded_bytes_unchecked(parent),
            OsStr::from_encoded_bytes_unchecked(name),
        )
    };
    Ok((Path::new(parent), name))
}

/// What Windows makes of a path component other than a file of that name:
/// a device (`CON`, `NUL`, `COM1`, with or without an extension), a stream
/// of another file (`name:stream`), or the name without its trailing dots
/// and spaces. A sandbox refuses such names on every system, so that a
/// guest gets the same answer everywhere.
fn windows_meaning(part: &OsStr) -> Option<&'static str> {
    let part = part.to_str()?;
    if part.contains(':') {
        return Some("a colon names a drive or a file's stream on Windows");
    }
    if part.ends_with(['.', ' ']) {
        return Some("Windows drops trailing dots and spaces from names");
    }
    let stem = part.split('.').next().unwrap_or(part).trim_end_matches(' ');
    let stem = stem.to_ascii_uppercase();
    // `COM0`-`COM9`, `COM¹`-`COM³`, and the same for `LPT`.
    let port = |n: &str| {
        let mut digits = n.chars();
        digits
            .next()
            .is_some_and(|d| d.is_ascii_digit() || "¹²³".contains(d))
            && digits.next().is_none()
    };
    let device = matches!(
        stem.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) || (stem.strip_prefix("COM"))
        .or_else(|| stem.strip_prefix("LPT"))
        .is_some_and(port);
    device.then_some("the name is a device on Windows")
}

impl Target {
    /// A lock path in the ambient file system.
    pub(crate) fn ambient(path: &Path) -> std::result::Result<Target, Refusal> {
        let (parent, name) = split(path)?;
        let root = if parent.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            parent.to_path_buf()
        };
        Ok(Target {
            root: Root::Ambient(root),
            parent: PathBuf::new(),
            name: name.to_owned(),
            cname: sys::name(name).expect("split refuses NUL"),
            display: path.to_path_buf(),
        })
    }

    /// A lock path inside a granted directory, shown as `display`/`rel`.
    pub(crate) fn inside(
        dir: &Arc<Dir>,
        display: &Path,
        rel: &Path,
    ) -> std::result::Result<Target, Refusal> {
        let (parent, name) = split(rel)?;
        // Paths that mean something else elsewhere are refused rather than
        // taken literally: a guest may have been written for Windows. This
        // comes first, so that `C:\x` gets the same answer on every system.
        let bytes = rel.as_os_str().as_encoded_bytes();
        if bytes.contains(&b'\\') {
            return Err((
                ErrorKind::InvalidPath,
                "a backslash is not a path separator here; use '/'",
            ));
        }
        if let [letter, b':', ..] = bytes
            && letter.is_ascii_alphabetic()
        {
            return Err((ErrorKind::InvalidPath, "drive letters name nothing here"));
        }
        // `/x` is rooted on Windows too (at the current drive).
        if rel.is_absolute() || rel.has_root() {
            return Err((
                ErrorKind::PermissionDenied,
                "absolute paths are outside the lock directory",
            ));
        }
        if std::str::from_utf8(bytes).is_err() {
            return Err((ErrorKind::InvalidPath, "the path is not valid UTF-8"));
        }
        if let Some(why) = parent
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(part) => Some(part),
                _ => None,
            })
            .chain([name])
            .find_map(windows_meaning)
        {
            return Err((ErrorKind::InvalidPath, why));
        }
        // Refuse `..` that climbs above the top before touching anything;
        // symbolic links that point out are refused by cap-std when resolved.
        let mut depth = 0usize;
        for part in parent.components() {
            match part {
                std::path::Component::ParentDir if depth == 0 => {
                    return Err((
                        ErrorKind::PermissionDenied,
                        "the path leads outside the lock directory",
                    ));
                }
                std::path::Component::ParentDir => depth -= 1,
                std::path::Component::Normal(_) => depth += 1,
                _ => {}
            }
        }
        Ok(Target {
            root: Root::Dir(dir.clone()),
            // `.` names nothing, but cap-std's `create_dir_all` stumbles over
            // a `.` at the end; `..` stays, for the resolver to judge.
            parent: parent
                .components()
                .filter(|c| *c != std::path::Component::CurDir)
                .collect(),
            name: name.to_owned(),
            cname: sys::name(name).expect("split refuses NUL"),
            display: display.join(rel),
        })
    }

    /// Opens the parent directory, creating what is missing inside the root.
    pub(crate) fn open_parent(&self) -> Result<Arc<DirFd>> {
        let dir = match &self.root {
            Root::Ambient(root) => open_ambient_dir(root).map_err(|e| {
                let dangling = leads_nowhere(
                    root,
                    |p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_symlink()),
                    |p| std::fs::metadata(p),
                );
                nowhere_if(e.at(&self.display), dangling)
            })?,
            Root::Dir(root) => open_inside(root, &self.parent).map_err(|e| {
                let dangling = leads_nowhere(
                    &self.parent,
                    |p| root.symlink_metadata(p).is_ok_and(|m| m.is_symlink()),
                    |p| root.metadata(p).map(drop),
                );
                nowhere_if(Error::from_io(e, &self.display), dangling)
            })?,
        };
        Ok(Arc::new(sys::dir_fd(dir)))
    }
}

/// Opens `parent` inside `root`, creating what is missing.
fn open_inside(root: &Dir, parent: &Path) -> std::io::Result<Dir> {
    if parent.as_os_str().is_empty() {
        return root.try_clone();
    }
    // Open first: only a missing directory is created, and a link that leads
    // out is refused by the resolver, not by mkdir.
    match root.open_dir(parent) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match root.create_dir_all(parent) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
            root.open_dir(parent)
        }
        other => other,
    }
}

/// Whether a directory on `path`'s way is a symbolic link to nothing: what
/// made opening or creating it fail, if anything did. (A link that resolves
/// to somewhere it may not lead, or cannot be followed, is another matter.)
fn leads_nowhere<T>(
    path: &Path,
    is_link: impl Fn(&Path) -> bool,
    follow: impl Fn(&Path) -> std::io::Result<T>,
) -> bool {
    path.ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .any(|a| is_link(a) && follow(a).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound))
}

/// A directory that cannot be made because a link on the way leads nowhere
/// is a bad path, not an I/O failure.
fn nowhere_if(err: Error, dangling: bool) -> Error {
    if !dangling {
        return err;
    }
    err.kind_to(ErrorKind::InvalidPath)
        .with_detail("a directory on the path is a symbolic link that leads nowhere")
}

pub(crate) fn open_ambient_dir(path: &Path) -> Result<Dir> {
    let err = |e: std::io::Error| Error::from_io(e, path);
    if !path.as_os_str().is_empty() && !path.exists() {
        std::fs::create_dir_all(path).map_err(err)?;
    }
    Dir::open_ambient_dir(path, ambient_authority()).map_err(err)
}

impl Target {
    /// The parent directory if it exists; creates nothing.
    pub(crate) fn open_parent_existing(&self) -> Option<Arc<DirFd>> {
        let dir = match &self.root {
            Root::Ambient(root) => Dir::open_ambient_dir(root, ambient_authority()).ok()?,
            Root::Dir(root) if self.parent.as_os_str().is_empty() => root.try_clone().ok()?,
            Root::Dir(root) => root.open_dir(&self.parent).ok()?,
        };
        Some(Arc::new(sys::dir_fd(dir)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_refuses_what_cannot_be_a_file() {
        for bad in ["", ".", "..", "a/", "a/.", "a/..", "/", "x\0y"] {
            let err = split(Path::new(bad)).unwrap_err();
            assert_eq!(err.0, ErrorKind::InvalidPath, "{bad:?}");
        }
        assert_eq!(
            split(Path::new("a/b/c.lock")).unwrap(),
            (Path::new("a/b"), OsStr::new("c.lock"))
        );
        assert_eq!(
            split(Path::new("/c.lock")).unwrap(),
            (Path::new("/"), OsStr::new("c.lock"))
        );
    }

    #[test]
    fn names_windows_reads_otherwise_are_refused() {
        for bad in [
            "CON",
            "nul",
            "Aux.lock",
            "com1",
            "LPT9.txt",
            "COM¹",
            "con .lock",
            "a.lock:s",
            "x.",
            "x ",
            "conin$",
        ] {
            assert!(windows_meaning(OsStr::new(bad)).is_some(), "{bad:?}");
        }
        for fine in [
            "console", "nul1", "com10", "a.lock", ".hidden", "lpt", "x.y",
        ] {
            assert_eq!(windows_meaning(OsStr::new(fine)), None, "{fine:?}");
        }
    }
}
