//! Registration with the Tokio runtime, with a clear error instead of Tokio's panic
//! when there is no runtime.

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;

use crate::sys;

/// Fails with a message naming `what` when called outside a Tokio runtime.
pub fn require(what: &str) -> io::Result<()> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Ok(()),
        Err(_) => Err(io::Error::other(format!(
            "{what} must be created inside a Tokio runtime with IO enabled \
             (or use tokio_imc::blocking)"
        ))),
    }
}

/// Registers `fd` with the current runtime's reactor.
pub fn register(fd: OwnedFd, what: &str) -> io::Result<AsyncFd<OwnedFd>> {
    require(what)?;
    sys::register(fd)
}
