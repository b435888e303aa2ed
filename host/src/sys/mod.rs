//! Operating-system specifics: Unix (`unix/`) and Windows (`windows/`), and
//! what both build on (kernel locks through fs4, the identity written into
//! soft markers). The rest of the crate talks to this module, never to
//! `libc` or `windows-sys` directly.

mod file_info;
mod flock;
mod identity;
mod meaning;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as os;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as os;

pub(crate) use file_info::{Create, Stat};
pub(crate) use flock::{flock_release, flock_try, flock_wait};
pub(crate) use identity::{StartToken, host_name};
pub(crate) use meaning::{Meaning, OpenFailure};
pub(crate) use os::*;

#[cfg(not(any(unix, windows)))]
compile_error!("wasmlock supports Unix and Windows hosts");
