//! Conversions to and from tokio-seqpacket's `UnixSeqpacket` (feature
//! `tokio-seqpacket`), for code that speaks its API.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use tokio_seqpacket::UnixSeqpacket;

use crate::sys::{fd, reactor};
use crate::ConnectedSocket;

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
    /// - `Unsupported` for a connection returned by
    ///   [`BoundSocket::accept`](crate::BoundSocket::accept), which is then closed
    ///   (check [`address_id`](Self::address_id) first: it is `Some` exactly for
    ///   those). An accepted socket was made by the peer, which can keep a
    ///   duplicate and clear `O_NONBLOCK` on it at any time; tokio-seqpacket's
    ///   calls do not pass `MSG_DONTWAIT` as this crate's do, so such a peer could
    ///   then block a runtime thread in `recvmsg`. Connections this process made
    ///   ([`pair`](Self::pair),
    ///   [`SocketAddress::connect`](crate::SocketAddress::connect)) convert; for
    ///   one adopted from a descriptor, the caller vouches that no untrusted
    ///   process holds a duplicate of it.
    /// - `Other` outside a Tokio runtime with IO enabled, and whatever
    ///   `fcntl(F_SETFL)` or the registration with the reactor report.
    pub fn into_seqpacket(self) -> io::Result<UnixSeqpacket> {
        reactor::require_runtime("a UnixSeqpacket")?;
        let endpoint = self.into_endpoint()?;
        if let Some(id) = endpoint.address() {
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
        let socket = endpoint.into_fd();
        fd::set_nonblocking(socket.as_fd())?;
        UnixSeqpacket::try_from(socket)
    }
}
