//! Typed messages (feature `serde`): serde values encoded with
//! [postcard](https://docs.rs/postcard), descriptors in slots, any size.
//!
//! A [`Channel<S, R>`] sends `S` and receives `R` over a [`ConnectedSocket`].
//! A value can hold descriptors in *slots*: [`Fd`], [`SocketAddress`],
//! [`ConnectedSocket`] and [`SharedMemory`] implement `Serialize` and
//! `Deserialize` here, and travel as indices into the record's descriptor
//! array. So a message can be
//!
//! ```
//! # use tokio_imc::{SharedMemory, SocketAddress, typed::Fd};
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Job { id: u64, input: SharedMemory, reply_to: SocketAddress, log: Fd }
//! ```
//!
//! Each message is one record, whatever its size: an encoding whose record would
//! not fit the socket's send buffer (`SO_SNDBUF` minus 32 bytes, about 208 KiB)
//! travels in a sealed [`SharedMemory`] attached to the record, so concurrent
//! senders never interleave fragments, and the receiver decodes straight from
//! the read-only mapping. The format is in PROTOCOL.md.
//!
//! Against a lying peer, a received record that is malformed in any way (a slot
//! past the descriptor array or claimed twice, a descriptor no slot claims, a
//! descriptor of the wrong kind in a slot, an unsealed memory object, truncated
//! or trailing bytes, a length it cannot back) is an error of kind
//! `InvalidData` naming the reason; its descriptors are all closed and the next
//! message is received normally. A claimed length never allocates beyond what
//! the record holds.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use tokio_imc::typed::Channel;
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! enum Request { Add(u64, u64) }
//!
//! let (a, b) = tokio_imc::ConnectedSocket::pair()?;
//! let mut client: Channel<Request, u64> = Channel::new(a);
//! let mut server: Channel<u64, Request> = Channel::new(b);
//! client.send(&Request::Add(2, 3)).await?;
//! let Some(Request::Add(x, y)) = server.recv().await? else { panic!() };
//! server.send(&(x + y)).await?;
//! assert_eq!(client.recv().await?, Some(5));
//! # Ok(()) }
//! ```
//!
//! [`ConnectedSocket`]: crate::ConnectedSocket
//! [`SocketAddress`]: crate::SocketAddress
//! [`SharedMemory`]: crate::SharedMemory

mod channel;
mod codec;
mod slots;

pub use channel::{Channel, Receiver, Sender};
pub use codec::DEFAULT_MAX_MESSAGE_SIZE;
pub use slots::Fd;
