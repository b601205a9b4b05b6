//! [`SocketAddress`], blocking.

use std::io;
use std::time::Duration;

use super::conversions::blocking_wrapper;
use super::runtime::{block_on, block_on_timeout};
use super::ConnectedSocket;

/// The blocking twin of [`crate::SocketAddress`].
pub struct SocketAddress {
    pub(super) inner: crate::SocketAddress,
}

blocking_wrapper!(SocketAddress, crate::SocketAddress);

impl SocketAddress {
    /// Connects; see [`crate::SocketAddress::connect`]. Blocks while the server's
    /// queue is full.
    pub fn connect(&self) -> io::Result<ConnectedSocket> {
        let inner = block_on("connect", self.inner.connect())??;
        Ok(ConnectedSocket { inner })
    }

    /// As [`connect`](Self::connect), failing with `TimedOut` after `limit`; a
    /// timed-out connect sent nothing.
    pub fn connect_timeout(&self, limit: Duration) -> io::Result<ConnectedSocket> {
        let inner = block_on_timeout("connect", limit, self.inner.connect())?;
        Ok(ConnectedSocket { inner })
    }

    /// Duplicates the address.
    pub fn try_clone(&self) -> io::Result<SocketAddress> {
        let inner = self.inner.try_clone()?;
        Ok(SocketAddress { inner })
    }

    /// Takes the address a parent passed (see [`crate::handoff`]), with the
    /// checks and errors of [`crate::SocketAddress::from_env`].
    pub fn from_env() -> io::Result<SocketAddress> {
        Self::from_env_named(crate::handoff::ADDRESS)
    }

    /// Takes the address a parent passed under `name`; see
    /// [`crate::SocketAddress::from_env_named`].
    pub fn from_env_named(name: &str) -> io::Result<SocketAddress> {
        let inner = crate::SocketAddress::from_env_named(name)?;
        Ok(SocketAddress { inner })
    }
}
