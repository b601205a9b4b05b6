//! How an operation on a connection waits: it is tried directly first, and the
//! socket is registered with the reactor only once something would block.
//!
//! A connection's whole state is one [`ConnectionIo`]: 32 bytes, the size of
//! Tokio's `AsyncFd` (and of a `tokio::net::UnixStream`), because the unregistered
//! variant fits in the registered one's niche. Registering replaces the variant,
//! so it needs `&mut`; the halves of a split connection share their socket
//! through `&` and register it through a synchronised cell instead.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::sys::LazyIo;
use crate::AddressId;

/// The socket and what the connection knows about itself: 8 bytes.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// Private, and never replaced: `sys::register_endpoint` relies on it.
    fd: OwnedFd,
    /// The address an accepted connection came through.
    pub(crate) address_id: Option<AddressId>,
}

impl Endpoint {
    pub(crate) fn new(fd: OwnedFd, address_id: Option<AddressId>) -> Self {
        Endpoint { fd, address_id }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for Endpoint {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Endpoint {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Runs non-blocking operations on a connection until they do not block.
pub(crate) trait Wait {
    /// The connection's descriptor.
    fn fd(&self) -> io::Result<BorrowedFd<'_>>;

    /// Runs `op` until it does not fail with `WouldBlock`, waiting for `interest`
    /// between tries.
    async fn io<R>(
        &mut self,
        interest: Interest,
        op: impl FnMut(BorrowedFd<'_>) -> io::Result<R>,
    ) -> io::Result<R>;
}

/// A connection's socket, registered with a reactor or not yet.
#[derive(Debug)]
pub(crate) enum ConnectionIo {
    /// Not registered: operations are tried directly, and no runtime is needed
    /// until one would block.
    Direct(Endpoint),
    /// Registered with the reactor of the runtime it first waited in.
    Registered(AsyncFd<Endpoint>),
    /// Only while registering; left behind only if registering panicked (Tokio
    /// panics when the runtime has IO disabled), and then the descriptor is gone.
    Vacant,
}

impl ConnectionIo {
    pub(crate) fn endpoint(&self) -> io::Result<&Endpoint> {
        match self {
            ConnectionIo::Direct(endpoint) => Ok(endpoint),
            ConnectionIo::Registered(registered) => Ok(registered.get_ref()),
            ConnectionIo::Vacant => Err(vacant()),
        }
    }

    /// The endpoint, deregistered if it was registered.
    pub(crate) fn into_endpoint(self) -> io::Result<Endpoint> {
        match self {
            ConnectionIo::Direct(endpoint) => Ok(endpoint),
            ConnectionIo::Registered(registered) => Ok(registered.into_inner()),
            ConnectionIo::Vacant => Err(vacant()),
        }
    }

    /// The registration, made now in the current runtime if there is none yet.
    pub(crate) fn registered(&mut self) -> io::Result<&AsyncFd<Endpoint>> {
        if let ConnectionIo::Direct(_) = self {
            crate::runtime::require("waiting on a tokio-imc connection")?;
            let ConnectionIo::Direct(endpoint) = std::mem::replace(self, ConnectionIo::Vacant)
            else {
                unreachable!("checked to be Direct above");
            };
            match crate::sys::register_endpoint(endpoint) {
                Ok(registered) => *self = ConnectionIo::Registered(registered),
                Err((endpoint, err)) => {
                    *self = ConnectionIo::Direct(endpoint);
                    return Err(err);
                }
            }
        }
        match self {
            ConnectionIo::Registered(registered) => Ok(registered),
            _ => Err(vacant()),
        }
    }
}

impl Wait for ConnectionIo {
    fn fd(&self) -> io::Result<BorrowedFd<'_>> {
        Ok(self.endpoint()?.fd())
    }

    async fn io<R>(
        &mut self,
        interest: Interest,
        mut op: impl FnMut(BorrowedFd<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        if let ConnectionIo::Direct(endpoint) = self {
            match op(endpoint.fd()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
        }
        self.registered()?
            .async_io(interest, |endpoint| op(endpoint.fd()))
            .await
    }
}

/// The halves of a split connection share one socket through `&`, so they
/// register it lazily through a synchronised cell (see [`LazyIo`]).
impl Wait for &LazyIo<Endpoint> {
    fn fd(&self) -> io::Result<BorrowedFd<'_>> {
        Ok(LazyIo::fd(self))
    }

    async fn io<R>(
        &mut self,
        interest: Interest,
        op: impl FnMut(BorrowedFd<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        self.async_io(interest, op).await
    }
}

fn vacant() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "this connection lost its descriptor when registering it with the reactor panicked",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_no_larger_than_a_tokio_unix_stream() {
        assert!(
            std::mem::size_of::<ConnectionIo>() <= std::mem::size_of::<tokio::net::UnixStream>()
        );
        assert_eq!(std::mem::size_of::<Endpoint>(), 8);
    }
}
