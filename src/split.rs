//! The two halves of a split [`ConnectedSocket`](crate::ConnectedSocket): one
//! receives and one sends, each through `&self`, sharing the socket (registered
//! with the reactor, once, when either first waits).
//!
//! `into_split` and `unsplit` live with `ConnectedSocket` (`connection.rs`), so
//! this file does not depend on it.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;

use bytes::BytesMut;

use crate::shared_impls::{connection_queries, fd_traits};
use crate::sys::reactor::{Endpoint, SharedIo};
use crate::{message_engine, AddressId, Message};

/// A connection's socket, labelled with the address it was accepted through.
pub(crate) type ConnectionEndpoint = Endpoint<Option<AddressId>>;

/// Makes the halves of a connection.
pub(crate) fn split(endpoint: ConnectionEndpoint) -> (RecvHalf, SendHalf) {
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
    shared: Arc<SharedIo<ConnectionEndpoint>>,
}

/// The sending half of a [`ConnectedSocket`](crate::ConnectedSocket), from
/// [`into_split`](crate::ConnectedSocket::into_split).
///
/// Its methods take `&self`: share it (e.g. in an `Arc`) to send from many tasks;
/// their records never interleave.
pub struct SendHalf {
    shared: Arc<SharedIo<ConnectionEndpoint>>,
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

    /// The endpoint back from this half and the `send` half it was split with, or
    /// both halves if `send` came from another connection.
    pub(crate) fn reunite(
        self,
        send: SendHalf,
    ) -> Result<ConnectionEndpoint, (RecvHalf, SendHalf)> {
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
}

fd_traits!(RecvHalf, "RecvHalf", |half| half.shared.fd());
fd_traits!(SendHalf, "SendHalf", |half| half.shared.fd());
connection_queries!(
    RecvHalf,
    |half| half.shared.get_ref().label,
    Ok(half.shared.fd())
);
connection_queries!(
    SendHalf,
    |half| half.shared.get_ref().label,
    Ok(half.shared.fd())
);
