//! [`BoundSocket`]: the server end of a bound pair, and [`make_bound_socket`].

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::request::{self, Verdict};
use crate::{runtime, sys, validate, ConnectedSocket, SocketAddress};

/// Makes a bound socket and its address: `socketpair(AF_UNIX, SOCK_STREAM)`. No
/// name is created anywhere; the address is the only way in.
///
/// # Errors
///
/// Fails outside a Tokio runtime, or when the process is out of descriptors.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let (address, bound) = tokio_imc::make_bound_socket()?;
/// tokio::spawn(async move {
///     while let Ok(connection) = bound.accept().await {
///         tokio::spawn(async move {
///             while let Ok(Some(message)) = connection.recv().await {
///                 let _ = connection.send(&message.data, &[]).await;
///             }
///         });
///     }
/// });
/// let connection = address.connect().await?;
/// connection.send(b"ping", &[]).await?;
/// assert_eq!(&connection.recv().await?.unwrap().data[..], b"ping");
/// # Ok(()) }
/// ```
pub fn make_bound_socket() -> io::Result<(SocketAddress, BoundSocket)> {
    runtime::require("a bound socket")?;
    let (address, bound) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(io::Error::from)?;
    Ok((
        SocketAddress::from_checked(address)?,
        BoundSocket::from_checked(bound)?,
    ))
}

/// The server end of a bound pair: [`accept`](Self::accept) receives the
/// connections that holders of its [`SocketAddress`] make.
///
/// Any number of tasks may accept on one `BoundSocket` at once; each request goes
/// to exactly one of them. Dropping it (and every duplicate) refuses later connects
/// and ends the connections still queued.
pub struct BoundSocket {
    io: AsyncFd<OwnedFd>,
}

impl BoundSocket {
    pub(crate) fn from_checked(fd: OwnedFd) -> io::Result<Self> {
        Ok(BoundSocket {
            io: runtime::register(fd, "a BoundSocket")?,
        })
    }

    /// Waits for the next well-formed connect request and returns its connection.
    ///
    /// Malformed requests (a byte other than `c`, no descriptor, several, or one
    /// that is not a connected `AF_UNIX` `SOCK_SEQPACKET` socket) are dropped with a
    /// `tracing` warning, their descriptors closed, and `accept` keeps waiting: one
    /// bad client cannot stop the server.
    ///
    /// # Errors
    ///
    /// - `NotConnected` once every [`SocketAddress`] of this socket is closed (or a
    ///   holder shut the address down) and the queue is empty: no connection can
    ///   arrive any more, and every later call fails the same way at once.
    /// - `Other` when a request's descriptor could not be received (`MSG_CTRUNC`,
    ///   most often `EMFILE`): back off and call again. That request is dropped and
    ///   its client sees its connection end; the next request is unaffected.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a request is taken off the socket only by the call that returns
    /// its connection in the same poll, so a dropped future loses no request.
    pub async fn accept(&self) -> io::Result<ConnectedSocket> {
        loop {
            let (byte, received) = self
                .io
                .async_io(Interest::READABLE, |fd| sys::recv_request(fd.as_fd()))
                .await?;
            match request::judge(byte, received) {
                Verdict::Connect(fd) => {
                    tracing::debug!(
                        bound = self.as_raw_fd(),
                        connection = fd.as_raw_fd(),
                        "accepted"
                    );
                    return ConnectedSocket::from_checked(fd);
                }
                Verdict::Reject(reason) => {
                    tracing::warn!(bound = self.as_raw_fd(), %reason, "dropped a malformed connect request");
                }
                Verdict::Exhausted(err) => return Err(err),
                Verdict::NoAddresses => return Err(no_addresses()),
            }
        }
    }
}

fn no_addresses() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "accept: every SocketAddress of this bound socket is closed (or was shut down), \
         so no connection can arrive any more",
    )
}

impl fmt::Debug for BoundSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundSocket")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

impl AsFd for BoundSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}

impl AsRawFd for BoundSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.io.as_raw_fd()
    }
}

impl From<BoundSocket> for OwnedFd {
    fn from(bound: BoundSocket) -> OwnedFd {
        bound.io.into_inner()
    }
}

impl TryFrom<OwnedFd> for BoundSocket {
    type Error = io::Error;

    /// Adopts the server end of a bound pair: a connected `AF_UNIX` `SOCK_STREAM`
    /// socket (made close-on-exec). Fails with `InvalidInput` for anything else, and
    /// with an error, not a panic, outside a Tokio runtime.
    fn try_from(fd: OwnedFd) -> io::Result<Self> {
        validate::adopt(&fd, "BoundSocket", &[SockType::Stream])?;
        Self::from_checked(fd)
    }
}
