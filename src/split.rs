//! The two halves of a split [`ConnectedSocket`]: one receives and one sends, each
//! through `&self`, sharing the socket (registered with the reactor, once, when
//! either first waits).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

use bytes::BytesMut;

use crate::sys::LazyIo;
use crate::wait::Endpoint;
use crate::{records, AddressId, ConnectedSocket, Credentials, Message};

/// Makes the halves of a connection.
pub(crate) fn split(endpoint: Endpoint) -> (RecvHalf, SendHalf) {
    let shared = Arc::new(LazyIo::new(endpoint));
    (
        RecvHalf {
            shared: shared.clone(),
        },
        SendHalf { shared },
    )
}

/// The receiving half of a [`ConnectedSocket`], from
/// [`into_split`](ConnectedSocket::into_split).
///
/// Its methods take `&self`. Two tasks receiving at once each get whole records,
/// in no particular order between them.
pub struct RecvHalf {
    shared: Arc<LazyIo<Endpoint>>,
}

/// The sending half of a [`ConnectedSocket`], from
/// [`into_split`](ConnectedSocket::into_split).
///
/// Its methods take `&self`: share it (e.g. in an `Arc`) to send from many tasks;
/// their records never interleave.
pub struct SendHalf {
    shared: Arc<LazyIo<Endpoint>>,
}

impl RecvHalf {
    /// Receives one record; see [`ConnectedSocket::recv`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`ConnectedSocket::recv`].
    pub async fn recv(&self) -> io::Result<Option<Message>> {
        records::recv(&mut &*self.shared).await
    }

    /// Receives one record into caller-owned buffers; see
    /// [`ConnectedSocket::recv_into`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`ConnectedSocket::recv`].
    pub async fn recv_into(
        &self,
        data: &mut BytesMut,
        fds: &mut Vec<OwnedFd>,
    ) -> io::Result<Option<usize>> {
        records::recv_into(&mut &*self.shared, data, fds).await
    }

    /// Puts the connection back together from this half and the `send` half it
    /// was split with; if `send` came from another connection, both are returned.
    pub fn unsplit(self, send: SendHalf) -> Result<ConnectedSocket, (RecvHalf, SendHalf)> {
        if !Arc::ptr_eq(&self.shared, &send.shared) {
            return Err((self, send));
        }
        drop(send);
        match Arc::try_unwrap(self.shared) {
            Ok(shared) => Ok(ConnectedSocket::from_endpoint(shared.into_inner())),
            Err(_) => unreachable!("the two halves are the only holders of the socket"),
        }
    }
}

impl SendHalf {
    /// Sends one record; see [`ConnectedSocket::send`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`ConnectedSocket::send`].
    pub async fn send(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        records::send(&mut &*self.shared, data, fds).await
    }
}

/// What both halves offer alike.
macro_rules! half_common {
    ($half:ident) => {
        impl $half {
            /// See [`ConnectedSocket::address_id`].
            pub fn address_id(&self) -> Option<AddressId> {
                self.shared.get_ref().address_id
            }

            /// See [`ConnectedSocket::peer_credentials`].
            pub fn peer_credentials(&self) -> io::Result<Credentials> {
                Credentials::of_peer(self.as_fd())
            }

            /// Shuts down one or both directions of the whole connection; see
            /// [`ConnectedSocket::shutdown`].
            pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
                crate::connection::shutdown(self.as_fd(), how)
            }
        }

        impl AsFd for $half {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.shared.fd()
            }
        }

        impl AsRawFd for $half {
            fn as_raw_fd(&self) -> RawFd {
                self.shared.fd().as_raw_fd()
            }
        }

        impl fmt::Debug for $half {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($half))
                    .field("fd", &self.as_raw_fd())
                    .finish()
            }
        }
    };
}

half_common!(RecvHalf);
half_common!(SendHalf);
