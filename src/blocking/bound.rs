//! [`BoundSocket`], blocking.

use std::io;
use std::time::Duration;

use super::conversions::blocking_wrapper;
use super::runtime::{block_on, block_on_timeout};
use super::{ConnectedSocket, SocketAddress};
use crate::{AddressId, AddressPolicy};

/// The blocking twin of [`crate::BoundSocket`].
pub struct BoundSocket {
    pub(super) inner: crate::BoundSocket,
}

blocking_wrapper!(BoundSocket, crate::BoundSocket);

impl BoundSocket {
    /// Blocks until a well-formed connect request arrives; see
    /// [`crate::BoundSocket::accept`] for what is dropped and what fails.
    ///
    /// # Errors
    ///
    /// As the async `accept`: `NotConnected` is final (no address is left). Called
    /// on a thread that drives a Tokio runtime it fails with `Other` every time
    /// there (final for that thread). Anything else comes from the operating
    /// system and is transient: back off briefly and call again. A server loop
    /// that keeps serving:
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// # let (address, bound) = tokio_imc::blocking::make_bound_socket()?;
    /// # drop(address);
    /// loop {
    ///     match bound.accept() {
    ///         Ok(connection) => {
    ///             std::thread::spawn(move || { /* serve `connection` */ drop(connection) });
    ///         }
    ///         // No address is left: nothing can arrive any more.
    ///         Err(e) if e.kind() == std::io::ErrorKind::NotConnected => break,
    ///         // Transient: back off, then keep serving.
    ///         Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn accept(&self) -> io::Result<ConnectedSocket> {
        let inner = block_on("accept", self.inner.accept())??;
        Ok(ConnectedSocket { inner })
    }

    /// As [`accept`](Self::accept), failing with `TimedOut` after `limit`; no
    /// request is lost by the timeout.
    pub fn accept_timeout(&self, limit: Duration) -> io::Result<ConnectedSocket> {
        let inner = block_on_timeout("accept", limit, self.inner.accept())?;
        Ok(ConnectedSocket { inner })
    }

    /// Mints an address of its own for one holder; see
    /// [`crate::BoundSocket::mint_address`].
    pub fn mint_address(&self) -> io::Result<(AddressId, SocketAddress)> {
        let (id, inner) = self.inner.mint_address()?;
        Ok((id, SocketAddress { inner }))
    }

    /// Mints an address with limits; see
    /// [`crate::BoundSocket::mint_address_with`].
    pub fn mint_address_with(
        &self,
        policy: AddressPolicy,
    ) -> io::Result<(AddressId, SocketAddress)> {
        let (id, inner) = self.inner.mint_address_with(policy)?;
        Ok((id, SocketAddress { inner }))
    }

    /// Blocks until the next address every holder has closed; see
    /// [`crate::BoundSocket::released`].
    pub fn released(&self) -> io::Result<AddressId> {
        block_on("released", self.inner.released())?
    }

    /// As [`released`](Self::released), failing with `TimedOut` after
    /// `limit`; no release is lost by the timeout.
    pub fn released_timeout(&self, limit: Duration) -> io::Result<AddressId> {
        block_on_timeout("released", limit, self.inner.released())
    }

    /// Revokes one address; see [`crate::BoundSocket::revoke`].
    pub fn revoke(&self, id: AddressId) -> io::Result<()> {
        self.inner.revoke(id)
    }

    /// Ends every live connection admitted through an address; see
    /// [`crate::BoundSocket::disconnect`].
    ///
    /// # Errors
    ///
    /// As [`crate::BoundSocket::disconnect`].
    pub fn disconnect(&self, id: AddressId) -> io::Result<usize> {
        self.inner.disconnect(id)
    }

    /// The id of the original address.
    pub fn address_id(&self) -> AddressId {
        self.inner.address_id()
    }
}
