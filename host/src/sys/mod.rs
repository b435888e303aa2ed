//! Operating-system specifics. Only Unix is implemented; the rest of the
//! crate talks to this module, never to `libc` directly.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(not(unix))]
compile_error!("wasmlock currently supports Unix hosts only");
