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
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ConnectedSocket, RecvHalf, SendHalf};
use crate::typed::codec::{self, DEFAULT_MAX_MESSAGE_SIZE};

/// The blocking twin of [`crate::typed::Channel`].
pub struct Channel<S, R> {
    socket: ConnectedSocket,
    max_message_size: usize,
    types: PhantomData<fn(&S) -> R>,
}

/// The blocking twin of [`crate::typed::Receiver`].
pub struct Receiver<R> {
    half: RecvHalf,
    max_message_size: usize,
    types: PhantomData<fn() -> R>,
}

/// The blocking twin of [`crate::typed::Sender`].
pub struct Sender<S> {
    half: SendHalf,
    max_message_size: usize,
    types: PhantomData<fn(&S)>,
}

impl<S: Serialize, R: DeserializeOwned> Channel<S, R> {
    /// See [`crate::typed::Channel::new`].
    pub fn new(socket: ConnectedSocket) -> Channel<S, R> {
        Channel {
            socket,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            types: PhantomData,
        }
    }

    /// See [`crate::typed::Channel::with_max_message_size`].
    pub fn with_max_message_size(mut self, bytes: usize) -> Channel<S, R> {
        self.max_message_size = bytes;
        self
    }

    /// The largest encoding this channel sends or accepts, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// See [`crate::typed::Channel::send`]. Blocks while the socket's buffer is
    /// full.
    pub fn send(&mut self, value: &S) -> io::Result<()> {
        let encoded = codec::encode(value, self.max_message_size)?;
        self.socket
            .send(&encoded.record, &crate::typed::borrowed(&encoded))
    }

    /// As [`send`](Self::send), failing with `TimedOut` after `limit`; a
    /// timed-out send sent nothing.
    pub fn send_timeout(&mut self, value: &S, limit: Duration) -> io::Result<()> {
        let encoded = codec::encode(value, self.max_message_size)?;
        self.socket
            .send_timeout(&encoded.record, &crate::typed::borrowed(&encoded), limit)
    }

    /// See [`crate::typed::Channel::recv`].
    pub fn recv(&mut self) -> io::Result<Option<R>> {
        decode(self.socket.recv()?, self.max_message_size)
    }

    /// As [`recv`](Self::recv), failing with `TimedOut` after `limit`; no
    /// message is lost by the timeout.
    pub fn recv_timeout(&mut self, limit: Duration) -> io::Result<Option<R>> {
        decode(self.socket.recv_timeout(limit)?, self.max_message_size)
    }

    /// See [`crate::typed::Channel::into_split`].
    pub fn into_split(self) -> io::Result<(Receiver<R>, Sender<S>)> {
        let (recv, send) = self.socket.into_split()?;
        Ok((
            Receiver {
                half: recv,
                max_message_size: self.max_message_size,
                types: PhantomData,
            },
            Sender {
                half: send,
                max_message_size: self.max_message_size,
                types: PhantomData,
            },
        ))
    }

    /// The connection, for untyped use.
    pub fn into_inner(self) -> ConnectedSocket {
        self.socket
    }
}

impl<R: DeserializeOwned> Receiver<R> {
    /// See [`crate::typed::Receiver::recv`].
    pub fn recv(&self) -> io::Result<Option<R>> {
        decode(self.half.recv()?, self.max_message_size)
    }

    /// As [`recv`](Self::recv), failing with `TimedOut` after `limit`.
    pub fn recv_timeout(&self, limit: Duration) -> io::Result<Option<R>> {
        decode(self.half.recv_timeout(limit)?, self.max_message_size)
    }

    /// The half, for untyped use.
    pub fn into_inner(self) -> RecvHalf {
        self.half
    }
}

impl<S: Serialize> Sender<S> {
    /// See [`crate::typed::Sender::send`].
    pub fn send(&self, value: &S) -> io::Result<()> {
        let encoded = codec::encode(value, self.max_message_size)?;
        self.half
            .send(&encoded.record, &crate::typed::borrowed(&encoded))
    }

    /// As [`send`](Self::send), failing with `TimedOut` after `limit`.
    pub fn send_timeout(&self, value: &S, limit: Duration) -> io::Result<()> {
        let encoded = codec::encode(value, self.max_message_size)?;
        self.half
            .send_timeout(&encoded.record, &crate::typed::borrowed(&encoded), limit)
    }

    /// The half, for untyped use.
    pub fn into_inner(self) -> SendHalf {
        self.half
    }
}

fn decode<R: DeserializeOwned>(
    message: Option<crate::Message>,
    max: usize,
) -> io::Result<Option<R>> {
    message
        .map(|message| codec::decode(message, max))
        .transpose()
}

impl<S, R> fmt::Debug for Channel<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("blocking::typed::Channel")
            .field("socket", &self.socket)
            .finish()
    }
}

impl<R> fmt::Debug for Receiver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("blocking::typed::Receiver")
            .field("half", &self.half)
            .finish()
    }
}

impl<S> fmt::Debug for Sender<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("blocking::typed::Sender")
            .field("half", &self.half)
            .finish()
    }
}
