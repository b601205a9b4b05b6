//! Filesystem-free Unix-domain IPC for Tokio, after Native Client's IMC layer.
//!
//! A server calls [`make_bound_socket`] and gets a [`BoundSocket`] and its
//! [`SocketAddress`]. The address is a file descriptor, not a name: nothing appears
//! in the filesystem or the abstract namespace, and only processes that were given
//! the descriptor (by inheritance, or inside a [`Message`]) can connect. Each
//! connection is a [`ConnectedSocket`] that carries messages of bytes plus file
//! descriptors, boundaries kept.
//!
//! The wire protocol (see `PROTOCOL.md`) is three system calls: `connect` sends the
//! byte `c` with one end of a fresh `SOCK_SEQPACKET` pair through the address;
//! `accept` receives that end.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let (address, bound) = tokio_imc::make_bound_socket()?;
//! let server = tokio::spawn(async move {
//!     let mut connection = bound.accept().await?;
//!     let message = connection.recv().await?.expect("a message");
//!     connection.send(&message.data, &[]).await?;
//!     std::io::Result::Ok(())
//! });
//! let mut connection = address.connect().await?;
//! connection.send(b"hello", &[]).await?;
//! assert_eq!(&connection.recv().await?.expect("a reply").data[..], b"hello");
//! server.await??;
//! # Ok(()) }
//! ```
//!
//! Peers are not trusted: malformed connect requests are dropped with a warning,
//! every descriptor the crate creates or receives is owned and close-on-exec, every
//! send passes `MSG_NOSIGNAL`, and every send and receive passes `MSG_DONTWAIT` so a
//! peer that clears `O_NONBLOCK` on a shared descriptor cannot block the runtime.
#![deny(missing_docs, missing_debug_implementations, unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "tokio-imc supports Linux only: it relies on MSG_CMSG_CLOEXEC, SO_PEERCRED and \
     Linux's SOCK_SEQPACKET semantics for AF_UNIX"
);

// Layers, lowest first; each file imports only from the layers below it (see
// ARCHITECTURE.md, and tests/architecture.rs, which checks it).
// 0: plain data.
mod address_id;
mod address_policy;
mod ancillary;
mod message;
mod peer_warning;
// 1: every system call and every `unsafe` block.
mod sys;
// 2: what the public types are made of.
mod address_set;
mod admission;
pub mod handoff;
mod message_engine;
mod request;
mod validate;
// 3: the public types, one a file.
mod address;
mod bound;
mod connection;
mod credentials;
mod incoming;
#[cfg(feature = "tokio-seqpacket")]
mod seqpacket_interop;
mod shared_impls;
mod shared_memory;
mod split;
// 4: built on the public types.
pub mod blocking;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub mod nacl;
#[cfg(feature = "serde")]
pub mod typed;

/// Deterministic system-call fault injection, for this crate's own tests (the
/// `fault-injection` feature; never enable it in a build you ship). See
/// [`FaultPlan`](faults::FaultPlan).
#[cfg(feature = "fault-injection")]
pub mod faults {
    pub use crate::sys::faults::{Call, FaultGuard, FaultPlan, FaultReport};
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use address::SocketAddress;
pub use address_id::AddressId;
pub use address_policy::AddressPolicy;
pub use ancillary::MAX_FDS_PER_MESSAGE;
pub use bound::{make_bound_socket, BoundSocket};
pub use connection::ConnectedSocket;
pub use credentials::Credentials;
pub use incoming::Incoming;
pub use message::Message;
pub use message_engine::MAX_RECV_SIZE;
pub use shared_memory::{SharedMemory, SharedMemoryMut, DEFAULT_SHARED_MEMORY_LIMIT};
pub use split::{RecvHalf, SendHalf};
