//! The check that turns Tokio's "no reactor" panic into an error.

use std::io;

/// Fails with a message naming `what` when called outside a Tokio runtime.
pub fn require(what: &str) -> io::Result<()> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Ok(()),
        Err(_) => Err(io::Error::other(format!(
            "{what} needs a Tokio runtime with IO enabled (outside one, use tokio_imc::blocking)"
        ))),
    }
}
