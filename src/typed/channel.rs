//! [`Channel`] and its halves.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::codec::{self, Encoded, DEFAULT_MAX_MESSAGE_SIZE};
use crate::{ConnectedSocket, RecvHalf, SendHalf};

/// A typed connection: sends `S`, receives `R` (see the [module](super) docs).
pub struct Channel<S, R> {
    socket: ConnectedSocket,
    max_message_size: usize,
    record_limit: usize,
    // fn pointers: a channel holds no S or R, so it is Send + Sync whatever they are.
    types: PhantomData<fn(&S) -> R>,
}

/// The receiving half of a [`Channel`], usable through `&self`.
pub struct Receiver<R> {
    half: RecvHalf,
    max_message_size: usize,
    types: PhantomData<fn() -> R>,
}

/// The sending half of a [`Channel`], usable through `&self`.
pub struct Sender<S> {
    half: SendHalf,
    max_message_size: usize,
    record_limit: usize,
    types: PhantomData<fn(&S)>,
}

impl<S: Serialize, R: DeserializeOwned> Channel<S, R> {
    /// A typed channel over `socket`, with a maximum message size of
    /// [`DEFAULT_MAX_MESSAGE_SIZE`].
    pub fn new(socket: ConnectedSocket) -> Channel<S, R> {
        let record_limit = socket
            .fd()
            .map_or(codec::FALLBACK_RECORD_LIMIT, codec::record_limit);
        Channel {
            record_limit,
            socket,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            types: PhantomData,
        }
    }

    /// Sets the largest encoding this channel sends or accepts, in bytes.
    pub fn with_max_message_size(mut self, bytes: usize) -> Channel<S, R> {
        self.max_message_size = bytes;
        self
    }

    /// The largest encoding this channel sends or accepts, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Sends one message as one record.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an encoding above the maximum size, more than 253
    /// descriptor slots (252 for a message in shared memory), or a value that
    /// does not serialize; otherwise as [`ConnectedSocket::send`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the message is encoded before the first await, and a
    /// cancelled send sent nothing.
    pub async fn send(&mut self, value: &S) -> io::Result<()> {
        let encoded = codec::encode(value, self.max_message_size, self.record_limit)?;
        self.socket.send(&encoded.record, &borrowed(&encoded)).await
    }

    /// Receives one message, or `None` at end-of-stream.
    ///
    /// # Errors
    ///
    /// `InvalidData`, naming the reason, for a record that does not decode to
    /// an `R`: the record is dropped with every descriptor it carried, and the
    /// next call receives the next message. Otherwise as
    /// [`ConnectedSocket::recv`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled receive took no record off the socket.
    pub async fn recv(&mut self) -> io::Result<Option<R>> {
        match self.socket.recv().await? {
            Some(message) => codec::decode(message, self.max_message_size).map(Some),
            None => Ok(None),
        }
    }

    /// Splits into halves that work through `&self`, for one task that sends
    /// and another that receives.
    ///
    /// # Errors
    ///
    /// As [`ConnectedSocket::into_split`].
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
                record_limit: self.record_limit,
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
    /// As [`Channel::recv`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Channel::recv`].
    pub async fn recv(&self) -> io::Result<Option<R>> {
        match self.half.recv().await? {
            Some(message) => codec::decode(message, self.max_message_size).map(Some),
            None => Ok(None),
        }
    }

    /// The half, for untyped use.
    pub fn into_inner(self) -> RecvHalf {
        self.half
    }
}

impl<S: Serialize> Sender<S> {
    /// As [`Channel::send`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Channel::send`].
    pub async fn send(&self, value: &S) -> io::Result<()> {
        let encoded = codec::encode(value, self.max_message_size, self.record_limit)?;
        self.half.send(&encoded.record, &borrowed(&encoded)).await
    }

    /// The half, for untyped use.
    pub fn into_inner(self) -> SendHalf {
        self.half
    }
}

fn borrowed(encoded: &Encoded) -> Vec<BorrowedFd<'_>> {
    encoded.fds.iter().map(AsFd::as_fd).collect()
}

impl<S, R> fmt::Debug for Channel<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("typed::Channel")
            .field("socket", &self.socket)
            .field("max_message_size", &self.max_message_size)
            .finish()
    }
}

impl<R> fmt::Debug for Receiver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("typed::Receiver")
            .field("half", &self.half)
            .finish()
    }
}

impl<S> fmt::Debug for Sender<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("typed::Sender")
            .field("half", &self.half)
            .finish()
    }
}
