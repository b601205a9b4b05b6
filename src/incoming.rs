//! [`Incoming`]: a bound socket's connections as a `Stream`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::{BoundSocket, ConnectedSocket};

/// The connections of a [`BoundSocket`], from
/// [`BoundSocket::incoming`]: a `futures_core::Stream` of
/// `io::Result<ConnectedSocket>` that ends when no address is left.
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct Incoming<'a> {
    bound: &'a BoundSocket,
    ended: bool,
}

impl<'a> Incoming<'a> {
    fn new(bound: &'a BoundSocket) -> Self {
        Incoming {
            bound,
            ended: false,
        }
    }
}

impl BoundSocket {
    /// The connections as a `futures_core::Stream`, one [`poll_accept`](Self::poll_accept)
    /// a item: transient errors are items, and the stream ends when no address is
    /// left (the final `NotConnected` of `accept`), for good: an address
    /// minted after that is served by a new `incoming()` or `accept`. Poll it
    /// from one task at a time, as `poll_accept`.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let (address, bound) = tokio_imc::make_bound_socket()?;
    /// let _client = address.connect().await?;
    /// let mut incoming = bound.incoming().take(1);
    /// let connection = incoming.next().await.expect("one")?;
    /// assert_eq!(connection.address_id(), Some(bound.address_id()));
    /// # Ok(()) }
    /// ```
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming::new(self)
    }
}

impl futures_core::Stream for Incoming<'_> {
    type Item = io::Result<ConnectedSocket>;

    /// The next connection; a transient error as an item; `None` once no address
    /// is left. Cancel safe, as `accept`.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match std::task::ready!(self.bound.poll_accept(cx)) {
            Err(err) if err.kind() == io::ErrorKind::NotConnected => {
                self.ended = true;
                Poll::Ready(None)
            }
            other => Poll::Ready(Some(other)),
        }
    }
}
