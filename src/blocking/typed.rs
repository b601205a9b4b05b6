//! The blocking twin of [`crate::typed`] (feature `serde`): the same names,
//! plus timeouts.
//!
//! ```
//! use tokio_imc::blocking::{self, typed::Channel};
//!
//! # fn main() -> std::io::Result<()> {
//! let (a, b) = blocking::ConnectedSocket::pair()?;
//! let mut a: Channel<String, ()> = Channel::new(a);
//! let mut b: Channel<(), String> = Channel::new(b);
//! a.send(&"hello".to_string())?;
//! assert_eq!(b.recv()?.as_deref(), Some("hello"));
//! # Ok(()) }
//! ```

use std::fmt;
use std::io;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::runtime::run_polled;
use super::{ConnectedSocket, RecvHalf, SendHalf};
use crate::typed;

/// The blocking twin of [`crate::typed::Channel`]: the async channel, its
/// waits made with `poll(2)` on its own descriptor.
pub struct Channel<S, R> {
    inner: typed::Channel<S, R>,
}

/// The blocking twin of [`crate::typed::Receiver`].
pub struct Receiver<R> {
    inner: typed::Receiver<R>,
}

/// The blocking twin of [`crate::typed::Sender`].
pub struct Sender<S> {
    inner: typed::Sender<S>,
}

impl<S: Serialize, R: DeserializeOwned> Channel<S, R> {
    /// See [`crate::typed::Channel::new`].
    pub fn new(socket: ConnectedSocket) -> Channel<S, R> {
        Channel {
            inner: typed::Channel::new(socket.inner),
        }
    }

    /// See [`crate::typed::Channel::with_max_message_size`].
    pub fn with_max_message_size(self, bytes: usize) -> Channel<S, R> {
        Channel {
            inner: self.inner.with_max_message_size(bytes),
        }
    }

    /// The largest encoding this channel sends or accepts, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.inner.max_message_size()
    }

    /// See [`crate::typed::Channel::send`]. Blocks while the socket's buffer is
    /// full.
    pub fn send(&mut self, value: &S) -> io::Result<()> {
        run_polled("send", None, self.inner.send(value))
    }

    /// As [`send`](Self::send), failing with `TimedOut` after `limit`; a
    /// timed-out send sent nothing.
    pub fn send_timeout(&mut self, value: &S, limit: Duration) -> io::Result<()> {
        run_polled("send", Some(limit), self.inner.send(value))
    }

    /// See [`crate::typed::Channel::recv`].
    pub fn recv(&mut self) -> io::Result<Option<R>> {
        run_polled("recv", None, self.inner.recv())
    }

    /// As [`recv`](Self::recv), failing with `TimedOut` after `limit`; no
    /// message is lost by the timeout.
    pub fn recv_timeout(&mut self, limit: Duration) -> io::Result<Option<R>> {
        run_polled("recv", Some(limit), self.inner.recv())
    }

    /// See [`crate::typed::Channel::into_split`].
    pub fn into_split(self) -> io::Result<(Receiver<R>, Sender<S>)> {
        let (recv, send) = self.inner.into_split()?;
        Ok((Receiver { inner: recv }, Sender { inner: send }))
    }

    /// The connection, for untyped use.
    pub fn into_inner(self) -> ConnectedSocket {
        ConnectedSocket {
            inner: self.inner.into_inner(),
        }
    }
}

impl<R: DeserializeOwned> Receiver<R> {
    /// See [`crate::typed::Receiver::recv`].
    pub fn recv(&self) -> io::Result<Option<R>> {
        run_polled("recv", None, self.inner.recv())
    }

    /// As [`recv`](Self::recv), failing with `TimedOut` after `limit`.
    pub fn recv_timeout(&self, limit: Duration) -> io::Result<Option<R>> {
        run_polled("recv", Some(limit), self.inner.recv())
    }

    /// The half, for untyped use.
    pub fn into_inner(self) -> RecvHalf {
        RecvHalf {
            inner: self.inner.into_inner(),
        }
    }
}

impl<S: Serialize> Sender<S> {
    /// See [`crate::typed::Sender::send`].
    pub fn send(&self, value: &S) -> io::Result<()> {
        run_polled("send", None, self.inner.send(value))
    }

    /// As [`send`](Self::send), failing with `TimedOut` after `limit`.
    pub fn send_timeout(&self, value: &S, limit: Duration) -> io::Result<()> {
        run_polled("send", Some(limit), self.inner.send(value))
    }

    /// The half, for untyped use.
    pub fn into_inner(self) -> SendHalf {
        SendHalf {
            inner: self.inner.into_inner(),
        }
    }
}

impl<S, R> fmt::Debug for Channel<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blocking::{:?}", self.inner)
    }
}

impl<R> fmt::Debug for Receiver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blocking::{:?}", self.inner)
    }
}

impl<S> fmt::Debug for Sender<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blocking::{:?}", self.inner)
    }
}
