//! [`ConnectedSocket`]: a `SOCK_SEQPACKET` connection that carries messages of
//! bytes plus descriptors, with boundaries kept.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use bytes::BytesMut;
use nix::sys::socket::{getsockopt, socketpair, sockopt, AddressFamily, SockFlag, SockType};
use tokio::io::Interest;
use tokio_seqpacket::UnixSeqpacket;

use crate::ancillary::{too_many_fds, MAX_FDS_PER_MESSAGE};
use crate::peer_warning::peer_warn;
use crate::sys::{self, LazyIo, Received};
use crate::{validate, AddressId, Credentials, Message};

/// The largest record `recv` takes. Above the largest a peer without
/// `CAP_NET_ADMIN` can send (`2 * net.core.wmem_max - 32`, 425,952 bytes with the
/// default sysctls); a larger record is reported as truncated, never cut silently.
pub const MAX_RECV_SIZE: usize = 512 * 1024;

thread_local! {
    /// The length of the last record received on this thread: the guess for the
    /// next one, which decides how it is received (see `sys::recv_into`).
    static LAST_RECORD: Cell<usize> = const { Cell::new(0) };

    /// Where a record lands when the caller's buffer may be too small for it,
    /// before it is appended. One per thread, allocated on first use; the kernel
    /// only touches the pages a record needs.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A connected `SOCK_SEQPACKET` socket: each [`send`](Self::send) is one record of
/// bytes and descriptors, delivered whole to one [`recv`](Self::recv).
///
/// All methods take `&self`: one task may send while another receives, and
/// concurrent senders never interleave their records.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use std::os::fd::AsFd;
/// use tokio_imc::ConnectedSocket;
///
/// let (a, b) = ConnectedSocket::pair()?;
/// let file = std::fs::File::open("/dev/null")?;
/// a.send(b"here is a file", &[file.as_fd()]).await?;
/// let message = b.recv().await?.expect("a is still open");
/// assert_eq!(&message.data[..], b"here is a file");
/// assert_eq!(message.fds.len(), 1);
/// # Ok(()) }
/// ```
pub struct ConnectedSocket {
    io: LazyIo<Endpoint>,
}

/// The socket and what the connection knows about itself, kept together so the
/// id fills the padding after the descriptor (a connection is 48 bytes).
pub(crate) struct Endpoint {
    fd: OwnedFd,
    /// The address an accepted connection came through.
    address_id: Option<AddressId>,
}

impl AsFd for Endpoint {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl ConnectedSocket {
    /// Wraps a descriptor already known to be a connected, close-on-exec,
    /// non-blocking `AF_UNIX` `SOCK_SEQPACKET` socket.
    pub(crate) fn from_checked(fd: OwnedFd) -> Self {
        Self::with_address_id(fd, None)
    }

    /// A connection accepted through the address `id`.
    pub(crate) fn accepted(fd: OwnedFd, id: AddressId) -> Self {
        Self::with_address_id(fd, Some(id))
    }

    fn with_address_id(fd: OwnedFd, address_id: Option<AddressId>) -> Self {
        ConnectedSocket {
            io: LazyIo::new(Endpoint { fd, address_id }),
        }
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
        self.io.get_ref().address_id
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
    pub async fn send(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        check_sendable(data, fds)?;
        self.io
            .async_io(Interest::WRITABLE, |fd| sys::send_msg(fd, data, fds))
            .await
            .map(drop)
            .map_err(|err| self.send_error(err, data.len()))
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
    /// - it was longer than [`MAX_RECV_SIZE`] (`InvalidData`);
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
    pub async fn recv(&self) -> io::Result<Option<Message>> {
        // Empty: the receive sizes it. A small record is then allocated exactly, so
        // `freeze` needs no second allocation (it does when length != capacity).
        let mut data = BytesMut::new();
        let mut fds = Vec::new();
        Ok(self.recv_into(&mut data, &mut fds).await?.map(|_| Message {
            data: data.freeze(),
            fds,
        }))
    }

    /// Receives one record into caller-owned buffers: its bytes are appended to
    /// `data` and its descriptors to `fds`. Returns the record's length, or `None`
    /// at end-of-stream. Reusing `data` across calls avoids an allocation per record;
    /// with [`MAX_RECV_SIZE`] bytes of spare capacity the record is received straight
    /// into it, with no copy at all.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv); on error `data` and `fds` are left as they were.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv`](Self::recv).
    pub async fn recv_into(
        &self,
        data: &mut BytesMut,
        fds: &mut Vec<OwnedFd>,
    ) -> io::Result<Option<usize>> {
        let start = data.len();
        loop {
            let received = self
                .io
                .async_io(Interest::READABLE, |fd| {
                    let expected = LAST_RECORD.with(Cell::get);
                    SCRATCH.with(|scratch| {
                        sys::recv_into(fd, data, &mut scratch.borrow_mut(), MAX_RECV_SIZE, expected)
                    })
                })
                .await?;
            match self.classify(received, start, data)? {
                Some(mut record_fds) => {
                    let len = data.len() - start;
                    LAST_RECORD.with(|last| last.set(len));
                    fds.append(&mut record_fds);
                    return Ok(Some(len));
                }
                None if sys::read_hung_up(self.io.fd())? => return Ok(None),
                None => peer_warn!(
                    fd = self.as_raw_fd(),
                    "skipped an empty record from a connected peer"
                ),
            }
        }
    }

    /// Turns one `recvmsg` result into the record's descriptors, an error, or
    /// `None` for an empty record. Undoes what was appended to `data` on error.
    fn classify(
        &self,
        received: Received,
        start: usize,
        data: &mut BytesMut,
    ) -> io::Result<Option<Vec<OwnedFd>>> {
        if received.stray_fds > 0 || received.other_records > 0 || received.malformed_control {
            peer_warn!(
                fd = self.as_raw_fd(),
                stray_fds = received.stray_fds,
                other_records = received.other_records,
                malformed = received.malformed_control,
                "closed descriptors and ignored control data that came outside SCM_RIGHTS"
            );
        }
        if received.data_truncated {
            data.truncate(start);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "received a record longer than {MAX_RECV_SIZE} bytes; it was dropped and its {} descriptor(s) closed",
                    received.fds.len()
                ),
            ));
        }
        if received.control_truncated {
            data.truncate(start);
            return Err(io::Error::other(format!(
                "a record's descriptors did not all arrive (MSG_CTRUNC, most often because this process \
                 is out of descriptors: EMFILE); the record was dropped and the {} that arrived were closed",
                received.fds.len()
            )));
        }
        if received.is_empty() {
            return Ok(None);
        }
        Ok(Some(received.fds))
    }

    fn send_error(&self, err: io::Error, len: usize) -> io::Error {
        if err.raw_os_error() != Some(nix::libc::EMSGSIZE) {
            return err;
        }
        let limit = getsockopt(&self.io.fd(), sockopt::SndBuf).map_or_else(
            |_| "SO_SNDBUF minus 32".to_string(),
            |sndbuf| format!("{} bytes: SO_SNDBUF minus 32", sndbuf.saturating_sub(32)),
        );
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a record of {len} bytes is larger than this socket's maximum record size ({limit})"),
        )
    }

    /// The credentials of the process that created the peer's end of the pair.
    ///
    /// On a connection returned by [`BoundSocket::accept`](crate::BoundSocket::accept)
    /// this is the process that called `connect` (it made the pair), even if another
    /// process holds that end now.
    pub fn peer_credentials(&self) -> io::Result<Credentials> {
        Credentials::of_peer(self.io.fd())
    }

    /// Shuts down one or both directions (see shutdown(2)). The peer's `recv` then
    /// returns `None` once it has read what was queued.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => nix::sys::socket::Shutdown::Read,
            Shutdown::Write => nix::sys::socket::Shutdown::Write,
            Shutdown::Both => nix::sys::socket::Shutdown::Both,
        };
        nix::sys::socket::shutdown(self.as_raw_fd(), how).map_err(io::Error::from)
    }
}

/// Refuses, before any syscall, what the kernel would refuse or misreport.
pub(crate) fn check_sendable(data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(too_many_fds(fds.len()));
    }
    if data.is_empty() && fds.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a message needs at least one byte or one descriptor: an empty SOCK_SEQPACKET \
             record cannot be told apart from end-of-stream",
        ));
    }
    Ok(())
}

/// `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK)`.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(io::Error::from)
}

impl fmt::Debug for ConnectedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectedSocket")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}

impl AsFd for ConnectedSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.fd()
    }
}

impl AsRawFd for ConnectedSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.io.fd().as_raw_fd()
    }
}

impl From<ConnectedSocket> for OwnedFd {
    fn from(socket: ConnectedSocket) -> OwnedFd {
        socket.io.into_inner().fd
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
    pub fn into_seqpacket(self) -> io::Result<UnixSeqpacket> {
        crate::runtime::require("a UnixSeqpacket")?;
        UnixSeqpacket::try_from(OwnedFd::from(self))
    }
}

impl ConnectedSocket {
    /// Takes the connection the parent passed under `name` (see
    /// [`handoff`](crate::handoff)), validates it and removes it from the environment.
    ///
    /// # Errors
    ///
    /// As [`SocketAddress::from_env_named`](crate::SocketAddress::from_env_named).
    pub fn from_env_named(name: &str) -> io::Result<ConnectedSocket> {
        ConnectedSocket::try_from(crate::handoff::take(name)?)
    }
}
