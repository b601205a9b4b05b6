//! The same API without `async`: for supervisors, command-line tools, test
//! harnesses and sandboxed helpers that are synchronous.
//!
//! Names, semantics and errors are those of the async types. Sending and
//! receiving wait with `poll(2)` on the connection's own descriptor, so a
//! thread blocked on one connection holds up no other; accepting, connecting
//! and `released` are driven by one process-wide current-thread Tokio runtime,
//! built on first use: no worker threads, no runtime per connection. Objects
//! are `Send + Sync`: a bound socket or an address can be used from several
//! threads at once, and so can the halves of a connection
//! ([`ConnectedSocket::into_split`]), whose own `send` and `recv` take
//! `&mut self`.
//!
//! # Where blocking calls may be made
//!
//! | where the blocking call is made | result |
//! | --- | --- |
//! | a plain thread | works |
//! | inside `tokio::task::spawn_blocking` (multi-thread and current-thread runtimes) | works |
//! | inside `tokio::task::block_in_place` on a multi-thread runtime | works |
//! | directly on a runtime worker thread (an async task), or inside `block_on` of any runtime | an error of kind `Other`: no panic, no stall |
//!
//! The last row would stall the runtime the thread drives: use the async API
//! there; [`BoundSocket::into_async`] and friends convert. Tokio's blocking pool
//! and `block_in_place` are where Tokio itself allows blocking, so the facade
//! works there, as other blocking facades do. (The check asks Tokio's own
//! `block_on` whether this thread may block; in a program built with
//! `panic = "abort"` it cannot ask, and every thread with a Tokio context is
//! refused.)
//!
//! ```
//! use tokio_imc::blocking;
//!
//! # fn main() -> std::io::Result<()> {
//! let (address, bound) = blocking::make_bound_socket()?;
//! let server = std::thread::spawn(move || -> std::io::Result<()> {
//!     let mut connection = bound.accept()?;
//!     while let Some(message) = connection.recv()? {
//!         connection.send(&message.data, &[])?;
//!     }
//!     Ok(())
//! });
//! let mut connection = address.connect()?;
//! connection.send(b"ping", &[])?;
//! assert_eq!(&connection.recv()?.expect("an echo").data[..], b"ping");
//! drop(connection);
//! server.join().expect("server thread")?;
//! # Ok(()) }
//! ```

mod address;
mod bound;
mod connection;
mod conversions;
mod hang_up;
mod runtime;
mod split;
#[cfg(feature = "serde")]
pub mod typed;

use std::io;

pub use crate::Message;
pub use address::SocketAddress;
pub use bound::BoundSocket;
pub use connection::ConnectedSocket;
pub use split::{RecvHalf, SendHalf};

/// Makes a bound socket and its address; see [`crate::make_bound_socket`].
pub fn make_bound_socket() -> io::Result<(SocketAddress, BoundSocket)> {
    let (address, bound) = crate::make_bound_socket()?;
    Ok((
        SocketAddress { inner: address },
        BoundSocket { inner: bound },
    ))
}
