//! The few system calls the command-line tool makes itself: Unix (`unix`)
//! and Windows (`windows`), with the same names.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::*;
