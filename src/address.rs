//! [`SocketAddress`]: the client end of a bound pair, a descriptor that lets its
//! holder connect.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::libc;
use nix::sys::socket::SockType;
use tokio::io::Interest;

use crate::request::REQUEST_BYTE;
use crate::sys::reactor::{Reactive, SharedIo};
use crate::sys::{fd, msg, socket};
use crate::{validate, ConnectedSocket};

/// The address of a [`BoundSocket`](crate::BoundSocket): not a name but a
/// descriptor. Only a holder can connect, and it can be handed on: to a child by
/// inheritance (see [`handoff`](crate::handoff)) or to any process inside a
/// [`Message`](crate::Message).
///
/// Every holder of a duplicate shares one open file description with the others.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let (address, bound) = tokio_imc::make_bound_socket()?;
/// let (mut client, mut server) = tokio::try_join!(address.connect(), bound.accept())?;
/// client.send(b"hello", &[]).await?;
/// assert_eq!(&server.recv().await?.unwrap().data[..], b"hello");
/// # Ok(()) }
/// ```
pub struct SocketAddress {
    io: SharedIo<OwnedFd>,
}

impl SocketAddress {
    pub(crate) fn from_checked(fd: OwnedFd) -> Self {
        SocketAddress {
            io: SharedIo::new(fd),
        }
    }

    /// Connects to the bound socket: makes a `SOCK_SEQPACKET` pair, sends one end
    /// with the byte `c` through the address, and returns the other end.
    ///
    /// Succeeding means the request is queued at the server, not that it was
    /// accepted: if the server drops its bound socket first, the connection's
    /// `recv` returns `None` and `send` fails with `BrokenPipe`.
    ///
    /// # Errors
    ///
    /// - `ConnectionRefused` at once when the server is gone (every
    ///   [`BoundSocket`](crate::BoundSocket) duplicate closed), revoked this
    ///   address, or a holder shut the address down. No `SIGPIPE` is raised.
    /// - `Other` naming `ETOOMANYREFS` when this user has too many descriptors in
    ///   flight (the server is not accepting).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. While the server's queue is full the future waits; dropping it
    /// then sends nothing. The request is one `sendmsg`, so it is sent whole or not
    /// at all, and a dropped future never leaves a descriptor behind.
    pub async fn connect(&self) -> io::Result<ConnectedSocket> {
        let (kept, sent) = socket::pair(SockType::SeqPacket)?;
        let mut io = &self.io;
        io.io(Interest::WRITABLE, |fd| {
            msg::send_msg(fd, &[REQUEST_BYTE], &[sent.as_fd()])
        })
        .await
        .map_err(|err| {
            let err = connect_error(err);
            tracing::debug!(address_fd = self.as_raw_fd(), error = %err, "connect failed");
            err
        })?;
        drop(sent);
        tracing::debug!(
            address_fd = self.as_raw_fd(),
            fd = kept.as_raw_fd(),
            "connect request sent"
        );
        Ok(ConnectedSocket::from_checked(kept))
    }

    /// The same address, deregistered from its reactor (for moving between the
    /// blocking facade and async code).
    pub(crate) fn unregistered(self) -> Self {
        SocketAddress {
            io: self.io.unregistered(),
        }
    }

    /// Duplicates the address (`F_DUPFD_CLOEXEC`); the copy connects to the same
    /// bound socket.
    ///
    /// # Errors
    ///
    /// Fails when the process is out of descriptors.
    pub fn try_clone(&self) -> io::Result<SocketAddress> {
        Ok(Self::from_checked(fd::duplicate(self.io.fd())?))
    }
}

fn connect_error(err: io::Error) -> io::Error {
    match err.raw_os_error() {
        Some(libc::EPIPE | libc::ECONNRESET | libc::ECONNREFUSED | libc::ENOTCONN) => {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "connect: refused: this address leads to no server any more (its BoundSocket \
             was dropped, the server revoked the address, or a holder shut it down)",
            )
        }
        Some(libc::ETOOMANYREFS) => io::Error::other(
            "connect: too many descriptors in flight for this user (ETOOMANYREFS): \
             the server is not accepting connections",
        ),
        _ => err,
    }
}

impl fmt::Debug for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketAddress")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

impl AsFd for SocketAddress {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.fd()
    }
}

impl AsRawFd for SocketAddress {
    fn as_raw_fd(&self) -> RawFd {
        self.io.fd().as_raw_fd()
    }
}

impl From<SocketAddress> for OwnedFd {
    fn from(address: SocketAddress) -> OwnedFd {
        address.io.into_inner()
    }
}

/// The socket types an address may have: ours are `SOCK_STREAM`, Native Client
/// made `SOCK_SEQPACKET` ones.
const ADDRESS_TYPES: &[SockType] = &[SockType::Stream, SockType::SeqPacket];

impl TryFrom<OwnedFd> for SocketAddress {
    type Error = io::Error;

    /// Adopts a received or inherited address: a connected `AF_UNIX` socket of type
    /// `SOCK_STREAM` (ours) or `SOCK_SEQPACKET` (as Native Client made them). Makes
    /// it close-on-exec. Fails with `InvalidInput` for anything else. Needs no
    /// runtime.
    fn try_from(fd: OwnedFd) -> io::Result<Self> {
        validate::adopt(&fd, "SocketAddress", ADDRESS_TYPES)?;
        Ok(Self::from_checked(fd))
    }
}

impl SocketAddress {
    /// Takes the address the parent passed as [`handoff::ADDRESS`](crate::handoff::ADDRESS)
    /// (see [`handoff`](crate::handoff)): checks it, then takes ownership. The
    /// environment is not changed; the entry is handed out once per process.
    ///
    /// # Errors
    ///
    /// As [`handoff::take`](crate::handoff::take) (`NotFound` when nothing was
    /// passed under that name or it was already taken, `InvalidData` for a
    /// malformed or stale entry), and `InvalidInput` when the descriptor is not a
    /// connected `AF_UNIX` stream or seqpacket socket. The type is checked before
    /// ownership is taken: a refused descriptor is left open and its entry
    /// untaken, so [`handoff::take`](crate::handoff::take) can still take it.
    pub fn from_env() -> io::Result<SocketAddress> {
        Self::from_env_named(crate::handoff::ADDRESS)
    }

    /// As [`from_env`](Self::from_env), for the descriptor passed under `name`.
    pub fn from_env_named(name: &str) -> io::Result<SocketAddress> {
        let fd = crate::handoff::take_checked(name, |fd| {
            validate::check(fd, "SocketAddress", ADDRESS_TYPES).map(drop)
        })?;
        Ok(Self::from_checked(fd))
    }
}
