//! [`ConnectedSocket`]: a `SOCK_SEQPACKET` connection that carries messages of
//! bytes plus descriptors, with boundaries kept.

use std::fmt;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use bytes::BytesMut;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use tokio_seqpacket::UnixSeqpacket;

use crate::split::{RecvHalf, SendHalf};
use crate::wait::{ConnectionIo, Endpoint, Wait};
use crate::{records, validate, AddressId, Credentials, Message};

/// A connected `SOCK_SEQPACKET` socket: each [`send`](Self::send) is one record of
/// bytes and descriptors, delivered whole to one [`recv`](Self::recv).
///
/// `send` and `recv` take `&mut self`, like reads and writes on a
/// `tokio::net::UnixStream`: a connection is 32 bytes, as small as a `UnixStream`,
/// and registers with the reactor only once an operation would block (so a short
/// exchange never pays for `epoll_ctl`). To send from one task while another
/// receives, or from many tasks at once, [`into_split`](Self::into_split) it:
/// the halves work through `&self`, and concurrent senders never interleave their
/// records.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use std::os::fd::AsFd;
/// use tokio_imc::ConnectedSocket;
///
/// let (mut a, mut b) = ConnectedSocket::pair()?;
/// let file = std::fs::File::open("/dev/null")?;
/// a.send(b"here is a file", &[file.as_fd()]).await?;
/// let message = b.recv().await?.expect("a is still open");
/// assert_eq!(&message.data[..], b"here is a file");
/// assert_eq!(message.fds.len(), 1);
/// # Ok(()) }
/// ```
pub struct ConnectedSocket {
    io: ConnectionIo,
}

impl ConnectedSocket {
    /// Wraps a descriptor already known to be a connected, close-on-exec
    /// `AF_UNIX` `SOCK_SEQPACKET` socket (blocking or not: every call passes
    /// `MSG_DONTWAIT`).
    pub(crate) fn from_checked(fd: OwnedFd) -> Self {
        Self::with_address_id(fd, None)
    }

    /// A connection accepted through the address `id`.
    pub(crate) fn accepted(fd: OwnedFd, id: AddressId) -> Self {
        Self::with_address_id(fd, Some(id))
    }

    fn with_address_id(fd: OwnedFd, address_id: Option<AddressId>) -> Self {
        Self::from_endpoint(Endpoint::new(fd, address_id))
    }

    /// The same connection (address id included), deregistered from its reactor
    /// (for moving between the blocking facade and async code).
    pub(crate) fn unregistered(self) -> Self {
        ConnectedSocket {
            io: self
                .io
                .into_endpoint()
                .map_or(ConnectionIo::Vacant, ConnectionIo::Direct),
        }
    }

    fn endpoint(&self) -> &Endpoint {
        match self.io.endpoint() {
            Ok(endpoint) => endpoint,
            Err(err) => panic!("{err}"),
        }
    }

    /// The address an accepted connection came through (see
    /// [`BoundSocket::mint_address`](crate::BoundSocket::mint_address)), for
    /// per-holder policy. `None` for connections from [`pair`](Self::pair),
    /// [`SocketAddress::connect`](crate::SocketAddress::connect) or a descriptor.
    pub fn address_id(&self) -> Option<AddressId> {
        self.io
            .endpoint()
            .ok()
            .and_then(|endpoint| endpoint.address_id)
    }

    /// Creates a connected pair, as `socketpair(AF_UNIX, SOCK_SEQPACKET)` does.
    ///
    /// No runtime is needed to make one; operations that wait need a Tokio
    /// runtime (or use [`crate::blocking`]).
    ///
    /// # Errors
    ///
    /// Fails when the process is out of descriptors.
    pub fn pair() -> io::Result<(ConnectedSocket, ConnectedSocket)> {
        let (a, b) = seqpacket_pair()?;
        Ok((Self::from_checked(a), Self::from_checked(b)))
    }

    /// Sends one record: `data` plus `fds`, all or nothing.
    ///
    /// The descriptors are duplicated into the receiver; the caller keeps its own.
    ///
    /// # Errors
    ///
    /// - `InvalidInput`, before anything is sent, for more than 253 descriptors
    ///   (`SCM_MAX_FD`), for a record longer than the socket's maximum record size
    ///   (its `SO_SNDBUF` minus 32 bytes), and for a message with neither bytes nor
    ///   descriptors (on `SOCK_SEQPACKET` an empty record reads as end-of-stream).
    /// - `BrokenPipe` when the peer has closed its end (no `SIGPIPE` is raised).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, nothing was sent.
    /// A record is sent in one `sendmsg` call that either takes all of it or none.
    pub async fn send(&mut self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        records::send(&mut self.io, data, fds).await
    }

    /// Receives one record, or `None` once the peer has closed its end (or this end
    /// was shut down for reading) and every queued record was read.
    ///
    /// If the peer closed (or died) while records we sent it were still unread,
    /// Linux reports that once, as `ConnectionReset`, before the records the peer
    /// had sent: call `recv` again to read those, then `None`.
    ///
    /// # Errors
    ///
    /// The record is dropped and every descriptor that did arrive is closed when:
    /// - it was longer than [`MAX_RECV_SIZE`](crate::MAX_RECV_SIZE) (`InvalidData`);
    /// - its control data was truncated, so descriptors were lost (`Other`; most
    ///   often this process is out of descriptors, `EMFILE`).
    ///
    /// The socket stays usable after either error. Descriptors that a peer made the
    /// kernel attach outside `SCM_RIGHTS` (e.g. `SCM_PIDFD` after setting
    /// `SO_PASSPIDFD` on a duplicate of our end) are closed with a warning, and an
    /// empty record from a peer that is still connected is skipped with a warning.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a record is taken off the socket only by the `recvmsg` call whose
    /// result is returned in the same poll, so a dropped future loses nothing.
    pub async fn recv(&mut self) -> io::Result<Option<Message>> {
        records::recv(&mut self.io).await
    }

    /// Receives one record into caller-owned buffers: its bytes are appended to
    /// `data` and its descriptors to `fds`. Returns the record's length, or `None`
    /// at end-of-stream. Reusing `data` across calls avoids an allocation per
    /// record; with [`MAX_RECV_SIZE`](crate::MAX_RECV_SIZE) bytes of spare capacity
    /// the record is received straight into it, with no copy at all.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv); on error `data` and `fds` are left as they were.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv`](Self::recv).
    pub async fn recv_into(
        &mut self,
        data: &mut BytesMut,
        fds: &mut Vec<OwnedFd>,
    ) -> io::Result<Option<usize>> {
        records::recv_into(&mut self.io, data, fds).await
    }

    /// Splits the connection into a receiving and a sending half that work
    /// through `&self`, for one task to receive while others send (each half can
    /// be shared, e.g. in an `Arc`). [`RecvHalf::unsplit`] puts them back together.
    ///
    /// Needs no runtime: the halves register the socket with the reactor when one
    /// of them first waits, as a connection does.
    ///
    /// # Errors
    ///
    /// Fails (`NotConnected`) only for a connection whose descriptor was lost to a
    /// panic while registering (see its `AsFd` implementation).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let (a, mut b) = tokio_imc::ConnectedSocket::pair()?;
    /// let (receiver, sender) = a.into_split()?;
    /// let echo = tokio::spawn(async move {
    ///     while let Some(message) = receiver.recv().await? {
    ///         sender.send(&message.data, &[]).await?;
    ///     }
    ///     std::io::Result::Ok(())
    /// });
    /// b.send(b"ping", &[]).await?;
    /// assert_eq!(&b.recv().await?.expect("an echo").data[..], b"ping");
    /// drop(b);
    /// echo.await??;
    /// # Ok(()) }
    /// ```
    pub fn into_split(self) -> io::Result<(RecvHalf, SendHalf)> {
        Ok(crate::split::split(self.io.into_endpoint()?))
    }

    /// A connection, not registered with any reactor, from its endpoint.
    pub(crate) fn from_endpoint(endpoint: Endpoint) -> Self {
        ConnectedSocket {
            io: ConnectionIo::Direct(endpoint),
        }
    }

    /// The credentials of the process that created the peer's end of the pair.
    ///
    /// On a connection returned by [`BoundSocket::accept`](crate::BoundSocket::accept)
    /// this is the process that called `connect` (it made the pair), even if another
    /// process holds that end now.
    pub fn peer_credentials(&self) -> io::Result<Credentials> {
        Credentials::of_peer(self.io.fd()?)
    }

    /// Shuts down one or both directions (see shutdown(2)). The peer's `recv` then
    /// returns `None` once it has read what was queued.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        shutdown(self.io.fd()?, how)
    }
}

/// shutdown(2) with std's `Shutdown`.
pub(crate) fn shutdown(fd: BorrowedFd<'_>, how: Shutdown) -> io::Result<()> {
    let how = match how {
        Shutdown::Read => nix::sys::socket::Shutdown::Read,
        Shutdown::Write => nix::sys::socket::Shutdown::Write,
        Shutdown::Both => nix::sys::socket::Shutdown::Both,
    };
    nix::sys::socket::shutdown(fd.as_raw_fd(), how).map_err(io::Error::from)
}

/// `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)`: blocking, as
/// `socketpair(2)` makes them, for the reason given at `bound::stream_pair`.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

impl fmt::Debug for ConnectedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("ConnectedSocket");
        match self.io.endpoint() {
            Ok(endpoint) => debug.field("fd", &endpoint.fd().as_raw_fd()),
            Err(_) => debug.field("fd", &"lost"),
        };
        debug
            .field(
                "registered",
                &matches!(self.io, ConnectionIo::Registered(_)),
            )
            .finish()
    }
}

impl AsFd for ConnectedSocket {
    /// # Panics
    ///
    /// Only if an earlier registration with the reactor panicked (Tokio does when
    /// the runtime has IO disabled), which took the descriptor with it.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.endpoint().fd()
    }
}

impl AsRawFd for ConnectedSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl From<ConnectedSocket> for OwnedFd {
    /// The connection's descriptor, deregistered from its reactor.
    ///
    /// # Panics
    ///
    /// As [`AsFd`](#impl-AsFd-for-ConnectedSocket): only for a connection whose
    /// descriptor was lost to a panic while registering.
    fn from(socket: ConnectedSocket) -> OwnedFd {
        match socket.io.into_endpoint() {
            Ok(endpoint) => endpoint.into_fd(),
            Err(err) => panic!("{err}"),
        }
    }
}

impl TryFrom<OwnedFd> for ConnectedSocket {
    type Error = io::Error;

    /// Adopts a connected `AF_UNIX` `SOCK_SEQPACKET` socket (and makes it
    /// close-on-exec). Fails with `InvalidInput` for anything else. Needs no
    /// runtime.
    fn try_from(fd: OwnedFd) -> io::Result<Self> {
        validate::adopt(&fd, "ConnectedSocket", &[SockType::SeqPacket])?;
        Ok(Self::from_checked(fd))
    }
}

impl TryFrom<UnixSeqpacket> for ConnectedSocket {
    type Error = io::Error;

    /// Takes over a tokio-seqpacket socket (validated as for `OwnedFd`).
    fn try_from(socket: UnixSeqpacket) -> io::Result<Self> {
        Self::try_from(OwnedFd::from(socket))
    }
}

impl ConnectedSocket {
    /// Hands the socket to tokio-seqpacket, registered with the current runtime,
    /// for code that speaks its API.
    ///
    /// # Errors
    ///
    /// `Unsupported` for a connection returned by
    /// [`BoundSocket::accept`](crate::BoundSocket::accept), which is then closed
    /// (check [`address_id`](Self::address_id) first: it is `Some` exactly for
    /// those). An accepted socket was made by the peer, which can keep a duplicate
    /// and clear `O_NONBLOCK` on it at any time; tokio-seqpacket's calls do not pass
    /// `MSG_DONTWAIT` as this crate's do, so such a peer could then block a runtime
    /// thread in `recvmsg`. Connections this process made ([`pair`](Self::pair),
    /// [`SocketAddress::connect`](crate::SocketAddress::connect)) convert; for one
    /// adopted from a descriptor, the caller vouches that no untrusted process holds
    /// a duplicate of it.
    pub fn into_seqpacket(self) -> io::Result<UnixSeqpacket> {
        crate::runtime::require("a UnixSeqpacket")?;
        let endpoint = self.io.into_endpoint()?;
        if let Some(id) = endpoint.address_id {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "into_seqpacket: refused for a connection accepted through address {id}: its \
                     peer made the socket and may keep a duplicate and clear O_NONBLOCK, which \
                     would let it block tokio-seqpacket's recvmsg (it does not pass MSG_DONTWAIT) \
                     and the runtime thread with it; keep it a ConnectedSocket"
                ),
            ));
        }
        // tokio-seqpacket relies on O_NONBLOCK, which the crate does not set on the
        // sockets it makes; this one's description is not shared with the peer
        // (checked above), so setting it here changes nothing for anyone else.
        let fd = endpoint.into_fd();
        let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
        let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
        fcntl(&fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
        UnixSeqpacket::try_from(fd)
    }
}

impl ConnectedSocket {
    /// Takes the connection the parent passed under `name` (see
    /// [`handoff`](crate::handoff)): checks it is a connected `AF_UNIX`
    /// `SOCK_SEQPACKET` socket, then takes ownership. The environment is not
    /// changed; the entry is handed out once per process.
    ///
    /// # Errors
    ///
    /// As [`SocketAddress::from_env_named`](crate::SocketAddress::from_env_named):
    /// a descriptor of the wrong type (`InvalidInput`) is left open and its entry
    /// untaken.
    pub fn from_env_named(name: &str) -> io::Result<ConnectedSocket> {
        let fd = crate::handoff::take_checked(name, |fd| {
            validate::check(fd, "ConnectedSocket", &[SockType::SeqPacket]).map(drop)
        })?;
        Ok(ConnectedSocket::from_checked(fd))
    }
}
