//! The halves of a split blocking [`ConnectedSocket`](super::ConnectedSocket).

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use bytes::BytesMut;
use std::time::Duration;

use super::conversions::blocking_fd;
use super::runtime::{block_on, block_on_timeout};
use crate::{AddressId, Credentials, Message};

/// The blocking twin of [`crate::RecvHalf`]: receives through `&self`, so one
/// thread can receive while others send.
pub struct RecvHalf {
    pub(super) inner: crate::RecvHalf,
}

/// The blocking twin of [`crate::SendHalf`]: sends through `&self`, from any
/// number of threads; their records never interleave.
pub struct SendHalf {
    pub(super) inner: crate::SendHalf,
}

impl RecvHalf {
    /// Receives one record, or `None` at end-of-stream; see
    /// [`crate::ConnectedSocket::recv`].
    pub fn recv(&self) -> io::Result<Option<Message>> {
        block_on("recv", self.inner.recv())?
    }

    /// As [`recv`](Self::recv), failing with `TimedOut` after `limit`; no record
    /// is lost by the timeout.
    pub fn recv_timeout(&self, limit: Duration) -> io::Result<Option<Message>> {
        block_on_timeout("recv", limit, self.inner.recv())
    }

    /// Receives one record into caller-owned buffers; see
    /// [`crate::ConnectedSocket::recv_into`].
    pub fn recv_into(
        &self,
        data: &mut BytesMut,
        fds: &mut Vec<OwnedFd>,
    ) -> io::Result<Option<usize>> {
        block_on("recv_into", self.inner.recv_into(data, fds))?
    }

    /// Puts the connection back together; see [`crate::RecvHalf::unsplit`].
    pub fn unsplit(self, send: SendHalf) -> Result<super::ConnectedSocket, (RecvHalf, SendHalf)> {
        match self.inner.unsplit(send.inner) {
            Ok(inner) => Ok(super::ConnectedSocket { inner }),
            Err((recv, send)) => Err((RecvHalf { inner: recv }, SendHalf { inner: send })),
        }
    }
}

impl SendHalf {
    /// Sends one record; see [`crate::ConnectedSocket::send`]. Blocks while the
    /// socket's buffer is full.
    pub fn send(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        block_on("send", self.inner.send(data, fds))?
    }
}

/// What both halves offer alike, as the async halves do.
macro_rules! half_common {
    ($half:ident) => {
        impl $half {
            /// See [`crate::ConnectedSocket::address_id`].
            pub fn address_id(&self) -> Option<AddressId> {
                self.inner.address_id()
            }

            /// See [`crate::ConnectedSocket::peer_credentials`].
            pub fn peer_credentials(&self) -> io::Result<Credentials> {
                self.inner.peer_credentials()
            }

            /// Shuts down one or both directions of the whole connection; see
            /// [`crate::ConnectedSocket::shutdown`].
            pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
                self.inner.shutdown(how)
            }
        }

        blocking_fd!($half);
    };
}

half_common!(RecvHalf);
half_common!(SendHalf);
