//! [`ConnectedSocket`], blocking.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use bytes::BytesMut;

use super::conversions::blocking_wrapper;
use super::hang_up::closed_within;
use super::runtime::run_polled;
use super::split::{RecvHalf, SendHalf};
use crate::shared_impls::connection_queries;
use crate::Message;

/// The blocking twin of [`crate::ConnectedSocket`].
pub struct ConnectedSocket {
    pub(super) inner: crate::ConnectedSocket,
}

blocking_wrapper!(ConnectedSocket, crate::ConnectedSocket);
connection_queries!(
    ConnectedSocket,
    |connection| connection.inner.address_id(),
    connection.inner.fd()
);

impl ConnectedSocket {
    /// Creates a connected pair.
    pub fn pair() -> io::Result<(ConnectedSocket, ConnectedSocket)> {
        let (a, b) = crate::ConnectedSocket::pair()?;
        Ok((ConnectedSocket { inner: a }, ConnectedSocket { inner: b }))
    }

    /// Sends one record; see [`crate::ConnectedSocket::send`]. Blocks while the
    /// socket's buffer is full.
    pub fn send(&mut self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        run_polled("send", None, self.inner.send(data, fds))
    }

    /// As [`send`](Self::send), failing with `TimedOut` after `limit`; a timed-out
    /// send sent nothing.
    pub fn send_timeout(
        &mut self,
        data: &[u8],
        fds: &[BorrowedFd<'_>],
        limit: Duration,
    ) -> io::Result<()> {
        run_polled("send", Some(limit), self.inner.send(data, fds))
    }

    /// Blocks until the peer has closed its end or shut down its writing,
    /// without taking any message; see [`crate::ConnectedSocket::closed`].
    /// A `poll(2)` for the hang-up alone: records arriving meanwhile neither
    /// wake it nor are touched.
    pub fn closed(&self) -> io::Result<()> {
        closed_within("closed", self.inner.fd()?, None)
    }

    /// As [`closed`](Self::closed), failing with `TimedOut` after `limit`.
    pub fn closed_timeout(&self, limit: Duration) -> io::Result<()> {
        closed_within("closed", self.inner.fd()?, Some(limit))
    }

    /// Receives one record, or `None` at end-of-stream; see
    /// [`crate::ConnectedSocket::recv`].
    pub fn recv(&mut self) -> io::Result<Option<Message>> {
        run_polled("recv", None, self.inner.recv())
    }

    /// As [`recv`](Self::recv), failing with `TimedOut` after `limit`; no record
    /// is lost by the timeout.
    pub fn recv_timeout(&mut self, limit: Duration) -> io::Result<Option<Message>> {
        run_polled("recv", Some(limit), self.inner.recv())
    }

    /// Receives one record into caller-owned buffers, appending its bytes to
    /// `data` and its descriptors to `fds`; see
    /// [`crate::ConnectedSocket::recv_into`].
    pub fn recv_into(
        &mut self,
        data: &mut BytesMut,
        fds: &mut Vec<OwnedFd>,
    ) -> io::Result<Option<usize>> {
        run_polled("recv_into", None, self.inner.recv_into(data, fds))
    }

    /// Splits the connection into halves that work through `&self`, for one
    /// thread to receive while others send; see
    /// [`crate::ConnectedSocket::into_split`].
    ///
    /// ```
    /// use tokio_imc::blocking::ConnectedSocket;
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let (a, mut b) = ConnectedSocket::pair()?;
    /// let (receiver, sender) = a.into_split()?;
    /// let echo = std::thread::spawn(move || -> std::io::Result<()> {
    ///     while let Some(message) = receiver.recv()? {
    ///         sender.send(&message.data, &[])?;
    ///     }
    ///     Ok(())
    /// });
    /// b.send(b"ping", &[])?;
    /// assert_eq!(&b.recv()?.expect("an echo").data[..], b"ping");
    /// drop(b);
    /// echo.join().expect("echo thread")?;
    /// # Ok(()) }
    /// ```
    pub fn into_split(self) -> io::Result<(RecvHalf, SendHalf)> {
        let (recv, send) = self.inner.into_split()?;
        Ok((RecvHalf { inner: recv }, SendHalf { inner: send }))
    }

    /// Takes the connection a parent passed under `name` (see [`crate::handoff`]),
    /// with the checks and errors of [`crate::ConnectedSocket::from_env_named`].
    pub fn from_env_named(name: &str) -> io::Result<ConnectedSocket> {
        let inner = crate::ConnectedSocket::from_env_named(name)?;
        Ok(ConnectedSocket { inner })
    }
}

impl RecvHalf {
    /// Puts the connection back together; see [`crate::RecvHalf::unsplit`].
    pub fn unsplit(self, send: SendHalf) -> Result<ConnectedSocket, (RecvHalf, SendHalf)> {
        match self.inner.unsplit(send.inner) {
            Ok(inner) => Ok(ConnectedSocket { inner }),
            Err((recv, send)) => Err((RecvHalf { inner: recv }, SendHalf { inner: send })),
        }
    }
}
