//! The two halves of a split [`ConnectedSocket`](crate::ConnectedSocket): one
//! receives and one sends, each through `&self`, sharing the socket (registered
//! with the reactor, once, when either first waits).
//!
//! `into_split` and `unsplit` live with `ConnectedSocket` (`connection.rs`), so
//! this file does not depend on it.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;

use crate::shared_impls::{connection_queries, fd_traits};
use crate::sys::endpoint::Endpoint;
use crate::sys::reactor::SharedIo;
use crate::{message_engine, Message};

/// Makes the halves of a connection.
pub(crate) fn split(endpoint: Endpoint) -> (RecvHalf, SendHalf) {
    let shared = Arc::new(SharedIo::new(endpoint));
    (
        RecvHalf {
            shared: shared.clone(),
        },
        SendHalf { shared },
    )
}

/// The receiving half of a [`ConnectedSocket`](crate::ConnectedSocket), from
/// [`into_split`](crate::ConnectedSocket::into_split).
///
/// Its methods take `&self`. Two tasks receiving at once each get whole records,
/// in no particular order between them.
pub struct RecvHalf {
    shared: Arc<SharedIo<Endpoint>>,
}

/// The sending half of a [`ConnectedSocket`](crate::ConnectedSocket), from
/// [`into_split`](crate::ConnectedSocket::into_split).
///
/// Its methods take `&self`: share it (e.g. in an `Arc`) to send from many tasks;
/// their records never interleave.
pub struct SendHalf {
    shared: Arc<SharedIo<Endpoint>>,
}

impl RecvHalf {
    /// Receives one record; see [`ConnectedSocket::recv`](crate::ConnectedSocket::recv).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`ConnectedSocket::recv`](crate::ConnectedSocket::recv).
    pub async fn recv(&self) -> io::Result<Option<Message>> {
        message_engine::recv(&mut &*self.shared).await
    }

    /// [`recv`](Self::recv) as a poll, with the same results and limits; a
    /// `Pending` poll took nothing. This half also implements
    /// `futures_core::Stream<Item = io::Result<Message>>` over it, ending at
    /// end-of-stream.
    ///
    /// Tokio keeps the waker of the last poll only (as with its own `poll_*`
    /// methods): poll from one task at a time. Tasks that share the half and
    /// receive at once use [`recv`](Self::recv), which wakes each of them.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Message>>> {
        message_engine::poll_recv(&mut &*self.shared, cx)
    }

    /// Receives one record into caller-owned buffers; see
    /// [`ConnectedSocket::recv_into`](crate::ConnectedSocket::recv_into).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`ConnectedSocket::recv`](crate::ConnectedSocket::recv).
    pub async fn recv_into(
        &self,
        data: &mut BytesMut,
        fds: &mut Vec<OwnedFd>,
    ) -> io::Result<Option<usize>> {
        message_engine::recv_into(&mut &*self.shared, data, fds).await
    }

    /// Waits until the peer has closed its end or shut down its writing,
    /// without taking any message; see
    /// [`ConnectedSocket::closed`](crate::ConnectedSocket::closed). A `recv`
    /// on this half at the same time (`select!` of both) misses nothing.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it takes nothing.
    pub async fn closed(&self) -> io::Result<()> {
        crate::sys::reactor::hung_up(self.shared.fd()).await
    }

    /// The endpoint back from this half and the `send` half it was split with, or
    /// both halves if `send` came from another connection.
    pub(crate) fn reunite(self, send: SendHalf) -> Result<Endpoint, (RecvHalf, SendHalf)> {
        if !Arc::ptr_eq(&self.shared, &send.shared) {
            return Err((self, send));
        }
        drop(send);
        match Arc::try_unwrap(self.shared) {
            Ok(shared) => Ok(shared.into_inner()),
            Err(_) => unreachable!("the two halves are the only holders of the socket"),
        }
    }
}

impl SendHalf {
    /// Sends one record; see [`ConnectedSocket::send`](crate::ConnectedSocket::send).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`ConnectedSocket::send`](crate::ConnectedSocket::send).
    pub async fn send(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        message_engine::send(&mut &*self.shared, data, fds).await
    }

    /// Waits until the peer has closed its end or shut down its writing
    /// (a peer that only shut down writing may still read what this half
    /// sends), without taking any message;
    /// see [`ConnectedSocket::closed`](crate::ConnectedSocket::closed).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it takes nothing.
    pub async fn closed(&self) -> io::Result<()> {
        crate::sys::reactor::hung_up(self.shared.fd()).await
    }

    /// [`send`](Self::send) as a poll, with the same results and limits; a
    /// `Pending` poll sent nothing. Poll from one task at a time (see
    /// [`RecvHalf::poll_recv`]).
    pub fn poll_send(
        &self,
        cx: &mut Context<'_>,
        data: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Poll<io::Result<()>> {
        message_engine::poll_send(&mut &*self.shared, cx, data, fds)
    }
}

impl futures_core::Stream for RecvHalf {
    type Item = io::Result<Message>;

    /// The next record; `None` at end-of-stream. Cancel safe, as `recv`.
    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_recv(cx).map(Result::transpose)
    }
}

fd_traits!(RecvHalf, "RecvHalf", |half| half.shared.fd());
fd_traits!(SendHalf, "SendHalf", |half| half.shared.fd());
connection_queries!(
    RecvHalf,
    |half| half.shared.get_ref().address(),
    Ok(half.shared.fd())
);
connection_queries!(
    SendHalf,
    |half| half.shared.get_ref().address(),
    Ok(half.shared.fd())
);
