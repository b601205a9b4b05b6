//! The halves of a split blocking [`ConnectedSocket`](super::ConnectedSocket)
//! (`unsplit` lives with `ConnectedSocket`, so this file does not depend on it).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use bytes::BytesMut;

use super::hang_up::closed_within;
use super::runtime::run_polled;
use crate::shared_impls::{connection_queries, fd_traits};
use crate::Message;

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
    /// Blocks until the peer has closed its end or shut down its writing,
    /// without taking any message; see [`crate::ConnectedSocket::closed`].
    pub fn closed(&self) -> io::Result<()> {
        closed_within("closed", self.inner.as_fd(), None)
    }

    /// As [`closed`](Self::closed), failing with `TimedOut` after `limit`.
    pub fn closed_timeout(&self, limit: Duration) -> io::Result<()> {
        closed_within("closed", self.inner.as_fd(), Some(limit))
    }

    /// Receives one record, or `None` at end-of-stream; see
    /// [`crate::ConnectedSocket::recv`].
    pub fn recv(&self) -> io::Result<Option<Message>> {
        run_polled("recv", None, self.inner.recv())
    }

    /// As [`recv`](Self::recv), failing with `TimedOut` after `limit`; no record
    /// is lost by the timeout.
    pub fn recv_timeout(&self, limit: Duration) -> io::Result<Option<Message>> {
        run_polled("recv", Some(limit), self.inner.recv())
    }

    /// Receives one record into caller-owned buffers; see
    /// [`crate::ConnectedSocket::recv_into`].
    pub fn recv_into(
        &self,
        data: &mut BytesMut,
        fds: &mut Vec<OwnedFd>,
    ) -> io::Result<Option<usize>> {
        run_polled("recv_into", None, self.inner.recv_into(data, fds))
    }
}

impl SendHalf {
    /// Blocks until the peer has closed its end or shut down its writing;
    /// see [`crate::SendHalf::closed`].
    pub fn closed(&self) -> io::Result<()> {
        closed_within("closed", self.inner.as_fd(), None)
    }

    /// As [`closed`](Self::closed), failing with `TimedOut` after `limit`.
    pub fn closed_timeout(&self, limit: Duration) -> io::Result<()> {
        closed_within("closed", self.inner.as_fd(), Some(limit))
    }

    /// Sends one record; see [`crate::ConnectedSocket::send`]. Blocks while the
    /// socket's buffer is full.
    pub fn send(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        run_polled("send", None, self.inner.send(data, fds))
    }

    /// As [`send`](Self::send), failing with `TimedOut` after `limit`; a timed-out
    /// send sent nothing.
    pub fn send_timeout(
        &self,
        data: &[u8],
        fds: &[BorrowedFd<'_>],
        limit: Duration,
    ) -> io::Result<()> {
        run_polled("send", Some(limit), self.inner.send(data, fds))
    }
}

fd_traits!(RecvHalf, "blocking::RecvHalf", |half| half.inner.as_fd());
fd_traits!(SendHalf, "blocking::SendHalf", |half| half.inner.as_fd());
connection_queries!(
    RecvHalf,
    |half| half.inner.address_id(),
    Ok(std::os::fd::AsFd::as_fd(&half.inner))
);
connection_queries!(
    SendHalf,
    |half| half.inner.address_id(),
    Ok(std::os::fd::AsFd::as_fd(&half.inner))
);
