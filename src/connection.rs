//! [`ConnectedSocket`]: a `SOCK_SEQPACKET` connection that carries messages of
//! bytes plus descriptors, with boundaries kept.

use std::fmt;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::task::{Context, Poll};

use bytes::BytesMut;
use nix::sys::socket::SockType;

use crate::split::{RecvHalf, SendHalf};
use crate::sys::endpoint::{Admission, Endpoint};
use crate::sys::reactor::{ExclusiveIo, Reactive};
use crate::sys::socket;
use crate::{message_engine, validate, AddressId, Credentials, Message};
use std::sync::Arc;

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
    io: ExclusiveIo<Endpoint>,
}

impl ConnectedSocket {
    /// Wraps a descriptor already known to be a connected, close-on-exec
    /// `AF_UNIX` `SOCK_SEQPACKET` socket (blocking or not: every call passes
    /// `MSG_DONTWAIT`).
    pub(crate) fn from_checked(fd: OwnedFd) -> Self {
        Self::with_address_id(fd, None)
    }

    /// A connection accepted through the address `id`.
    pub(crate) fn accepted(
        fd: OwnedFd,
        id: AddressId,
        admission: Option<Arc<dyn Admission>>,
    ) -> Self {
        Self::from_endpoint(Endpoint::new(fd, Some(id), admission))
    }

    fn with_address_id(fd: OwnedFd, address_id: Option<AddressId>) -> Self {
        Self::from_endpoint(Endpoint::new(fd, address_id, None))
    }

    /// The same connection (address id included), deregistered from its reactor
    /// (for moving between the blocking facade and async code).
    pub(crate) fn unregistered(self) -> Self {
        ConnectedSocket {
            io: self.io.unregistered(),
        }
    }

    /// The address an accepted connection came through (see
    /// [`BoundSocket::mint_address`](crate::BoundSocket::mint_address)), for
    /// per-holder policy. `None` for connections from [`pair`](Self::pair),
    /// [`SocketAddress::connect`](crate::SocketAddress::connect) or a descriptor.
    pub fn address_id(&self) -> Option<AddressId> {
        self.io
            .get_ref()
            .ok()
            .and_then(|endpoint| endpoint.address())
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
        let (a, b) = socket::pair(SockType::SeqPacket)?;
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
        std::future::poll_fn(|cx| self.poll_send(cx, data, fds)).await
    }

    /// [`send`](Self::send) as a poll, for `Sink`-like adapters: `Ready` once the
    /// record is sent (or refused, as `send` would), `Pending` (with `cx`'s waker
    /// registered) while the socket's buffer is full. Same limits and errors as
    /// `send`; a `Pending` poll sent nothing.
    pub fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Poll<io::Result<()>> {
        message_engine::poll_send(&mut self.io, cx, data, fds)
    }

    /// Waits until the peer has closed its end (or died, or shut down its
    /// writing; or this end was shut down for reading), **without taking any
    /// message off the socket**: records still queued are received as usual
    /// afterwards. Resolves at once if that has happened already.
    ///
    /// It never touches the readiness `recv` waits on, so it cannot make a
    /// receive miss a record. While waiting it holds one extra descriptor (a
    /// private epoll instance that reports only the hang-up, so records
    /// arriving meanwhile do not wake it); a connection that never calls it
    /// pays nothing.
    ///
    /// # Errors
    ///
    /// Outside a Tokio runtime with IO enabled, when it has to wait (use
    /// [`crate::blocking`]); `EMFILE` and the like from the operating system.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it takes nothing, so dropping it loses nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let (mut a, b) = tokio_imc::ConnectedSocket::pair()?;
    /// let mut b = b;
    /// b.send(b"last words", &[]).await?;
    /// drop(b);
    /// a.closed().await?;
    /// // Nothing was taken: the record is still there.
    /// assert_eq!(&a.recv().await?.unwrap().data[..], b"last words");
    /// assert!(a.recv().await?.is_none());
    /// # Ok(()) }
    /// ```
    pub async fn closed(&self) -> io::Result<()> {
        crate::sys::reactor::hung_up(self.io.fd()?).await
    }

    /// Receives one record, or `None` once the peer has closed its end (or this end
    /// was shut down for reading) and every queued record was read.
    ///
    /// A peer that closed (or died) with records we sent it still unread ends the
    /// conversation like any other close: the records it had sent us are still
    /// received, then `None`. (Linux reports the unread records once, as
    /// `ECONNRESET`; `recv` reads past it, with a `debug` event. Our unread
    /// records are lost with the peer, and a later `send` fails with
    /// `BrokenPipe`.) So `while let Some(message) = connection.recv().await? {}`
    /// ends cleanly on an ordinary close.
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
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`recv`](Self::recv) as a poll, for `Stream` adapters: `Ready` with what
    /// `recv` would return, `Pending` (with `cx`'s waker registered) while nothing
    /// is queued. A `Pending` poll took nothing off the socket.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Message>>> {
        message_engine::poll_recv(&mut self.io, cx)
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
        std::future::poll_fn(|cx| message_engine::poll_recv_into(&mut self.io, cx, data, fds)).await
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
        Ok(crate::split::split(self.io.into_inner()?))
    }

    /// The descriptor, unless it was lost to a panic while registering.
    pub(crate) fn fd(&self) -> io::Result<BorrowedFd<'_>> {
        self.io.fd()
    }

    /// The connection's endpoint, deregistered.
    pub(crate) fn into_endpoint(self) -> io::Result<Endpoint> {
        self.io.into_inner()
    }

    /// A connection, not registered with any reactor, from its endpoint.
    fn from_endpoint(endpoint: Endpoint) -> Self {
        ConnectedSocket {
            io: ExclusiveIo::new(endpoint),
        }
    }

    /// The credentials of the process that created the peer's end of the pair.
    ///
    /// On a connection returned by [`BoundSocket::accept`](crate::BoundSocket::accept)
    /// this is the process that called `connect` (it made the pair), even if another
    /// process holds that end now.
    ///
    /// # Errors
    ///
    /// What `getsockopt(SO_PEERCRED)` reports (in practice only `NotConnected`
    /// for a connection whose descriptor was lost to a panic while registering).
    pub fn peer_credentials(&self) -> io::Result<Credentials> {
        Credentials::of_peer(self.io.fd()?)
    }

    /// Shuts down one or both directions (see shutdown(2)). The peer's `recv` then
    /// returns `None` once it has read what was queued.
    ///
    /// # Errors
    ///
    /// What shutdown(2) reports: `NotConnected` once the peer's end is gone (or
    /// for a connection whose descriptor was lost to a panic while registering).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        socket::shutdown(self.io.fd()?, how)
    }
}

impl RecvHalf {
    /// Puts the connection back together from this half and the `send` half it
    /// was split with; if `send` came from another connection, both are returned.
    pub fn unsplit(self, send: SendHalf) -> Result<ConnectedSocket, (RecvHalf, SendHalf)> {
        self.reunite(send).map(ConnectedSocket::from_endpoint)
    }
}

impl fmt::Debug for ConnectedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("ConnectedSocket");
        match self.io.get_ref() {
            Ok(endpoint) => debug.field("fd", &endpoint.as_raw_fd()),
            Err(_) => debug.field("fd", &"lost"),
        };
        debug
            .field("address_id", &self.address_id())
            .field("registered", &self.io.is_registered())
            .finish()
    }
}

impl AsFd for ConnectedSocket {
    /// # Panics
    ///
    /// Only if an earlier registration with the reactor panicked (Tokio does when
    /// the runtime has IO disabled), which took the descriptor with it.
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self.io.fd() {
            Ok(fd) => fd,
            Err(err) => panic!("{err}"),
        }
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
        match socket.into_endpoint() {
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
