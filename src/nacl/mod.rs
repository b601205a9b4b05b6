//! Native Client's typed message layer, for talking to an unmodified NaCl
//! module or runtime.
//!
//! A NaCl module never sends bare records: its `imc_sendmsg` goes through the
//! trusted runtime's `NaClImcSendTypedMessage`, which puts a 16-byte header and a
//! description of each descriptor in front of the data, and NaCl's receiver
//! refuses a record without them (`EIO`). [`Connection`] speaks that layer over a
//! [`ConnectedSocket`]: [`Connection::send`] writes NaCl's header for the
//! [`Descriptor`]s given, [`Connection::recv`] checks and strips it. The layout is
//! in `PROTOCOL.md`.
//!
//! Only the kinds tokio-imc can represent travel: host files, connection
//! capabilities ([`SocketAddress`]), shared memory and data sockets
//! ([`ConnectedSocket`]). Any other kind, and anything malformed, is refused with
//! `InvalidData`, every descriptor that came with it closed. NaCl's limits hold
//! on this path: at most [`MAX_DESCRIPTORS`] descriptors and [`MAX_DATA`] bytes
//! of data per message (`InvalidInput` before anything is sent). Type tags follow
//! current native_client sources; some old NaCl builds numbered them differently.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use tokio_imc::{nacl, ConnectedSocket};
//!
//! let (a, b) = ConnectedSocket::pair()?;
//! let (mut a, mut b) = (nacl::Connection::new(a), nacl::Connection::new(b));
//! let (address, _bound) = tokio_imc::make_bound_socket()?;
//! a.send(b"connect here", &[nacl::Descriptor::Address(address)]).await?;
//! let message = b.recv().await?.expect("a is open");
//! assert_eq!(&message.data[..], b"connect here");
//! assert!(matches!(message.descriptors[..], [nacl::Descriptor::Address(_)]));
//! # Ok(()) }
//! ```

mod codec;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use bytes::Bytes;

use crate::{ConnectedSocket, SocketAddress};
use codec::{Entry, Kind};
pub use codec::{MAX_DATA, MAX_DESCRIPTORS};

/// `NACL_ABI_O_RDWR`: the flags NaCl gives a shared memory descriptor.
const READ_WRITE: u32 = 2;

/// A descriptor in a NaCl typed message, with what NaCl says about it.
#[derive(Debug)]
pub enum Descriptor {
    /// `NACL_DESC_HOST_IO`: a host file and its NaCl open flags (`NACL_ABI_O_*`:
    /// access mode 0 read, 1 write, 2 read-write, plus `O_CREAT` 0o100, `O_EXCL`
    /// 0o200, `O_TRUNC` 0o1000, `O_APPEND` 0o2000).
    HostFile {
        /// The file.
        fd: OwnedFd,
        /// Its NaCl open flags.
        open_flags: i32,
    },
    /// `NACL_DESC_CONN_CAP_FD`: a connection capability, an address to connect to.
    Address(SocketAddress),
    /// `NACL_DESC_SHM`: shared memory of `size` bytes.
    SharedMemory {
        /// The memory object.
        fd: OwnedFd,
        /// Its size as NaCl states it.
        size: u64,
    },
    /// `NACL_DESC_TRANSFERABLE_DATA_SOCKET`: a connected socket (NaCl itself
    /// carries only data on one it received this way).
    ///
    /// One received this way was made by the peer, which may keep a duplicate
    /// and change its flags: keep it a [`ConnectedSocket`] (whose calls never
    /// depend on them) and do not hand it to `ConnectedSocket::into_seqpacket`
    /// (feature `tokio-seqpacket`), which refuses
    /// accepted connections for that reason but cannot tell this one from a
    /// socket of your own.
    Socket(ConnectedSocket),
}

impl Descriptor {
    fn entry(&self) -> io::Result<Entry> {
        Ok(match self {
            Descriptor::HostFile { open_flags, .. } => Entry {
                kind: Kind::HostFile {
                    open_flags: *open_flags,
                },
                // NaCl's own sender puts the access mode in the flags word.
                flags: (*open_flags & 3) as u32,
            },
            Descriptor::Address(_) => Entry {
                kind: Kind::Address,
                flags: 0,
            },
            Descriptor::SharedMemory { size, .. } => Entry {
                kind: Kind::SharedMemory {
                    size: i64::try_from(*size).map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("NaCl typed message: shared memory size {size} exceeds i64"),
                        )
                    })?,
                },
                flags: READ_WRITE,
            },
            Descriptor::Socket(_) => Entry {
                kind: Kind::Socket,
                flags: 0,
            },
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Descriptor::HostFile { fd, .. } | Descriptor::SharedMemory { fd, .. } => fd.as_fd(),
            Descriptor::Address(address) => address.as_fd(),
            Descriptor::Socket(socket) => socket.as_fd(),
        }
    }

    /// Makes the descriptor an entry says `fd` is; fails (closing `fd`) when it
    /// is not that kind of socket.
    fn from_entry(kind: Kind, fd: OwnedFd) -> io::Result<Descriptor> {
        let refused = |err: io::Error| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("NaCl typed message: a descriptor is not what its entry says: {err}"),
            )
        };
        Ok(match kind {
            Kind::HostFile { open_flags } => Descriptor::HostFile { fd, open_flags },
            Kind::Address => Descriptor::Address(SocketAddress::try_from(fd).map_err(refused)?),
            // `decode` refuses negative sizes.
            Kind::SharedMemory { size } => Descriptor::SharedMemory {
                fd,
                size: size.unsigned_abs(),
            },
            Kind::Socket => Descriptor::Socket(ConnectedSocket::try_from(fd).map_err(refused)?),
        })
    }
}

/// One typed message received: its data and its descriptors, in order.
#[derive(Debug)]
pub struct TypedMessage {
    /// The user data (NaCl's header stripped).
    pub data: Bytes,
    /// The descriptors, in the order the sender listed them.
    pub descriptors: Vec<Descriptor>,
}

/// A connection that speaks NaCl's typed message layer.
pub struct Connection {
    socket: ConnectedSocket,
}

impl Connection {
    /// Speaks the typed layer over `socket` (e.g. one accepted from, or connected
    /// to, a NaCl module).
    pub fn new(socket: ConnectedSocket) -> Self {
        Connection { socket }
    }

    /// The connection back, for the datagram layer.
    pub fn into_inner(self) -> ConnectedSocket {
        self.socket
    }

    /// Sends one typed message: NaCl's header describing `descriptors`, then
    /// `data`, with the descriptors, in one record. The caller keeps its
    /// descriptors; the receiver gets duplicates.
    ///
    /// # Errors
    ///
    /// `InvalidInput`, before anything is sent, for more than [`MAX_DESCRIPTORS`]
    /// descriptors, more than [`MAX_DATA`] bytes, host file open flags NaCl
    /// refuses, or a size NaCl cannot state; otherwise as
    /// [`ConnectedSocket::send`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`ConnectedSocket::send`]: the message is one record, sent
    /// whole or not at all.
    pub async fn send(&mut self, data: &[u8], descriptors: &[Descriptor]) -> io::Result<()> {
        let entries = descriptors
            .iter()
            .map(Descriptor::entry)
            .collect::<io::Result<Vec<_>>>()?;
        let mut record = codec::encode_prefix(&entries, data.len())?;
        record.extend_from_slice(data);
        let fds: Vec<BorrowedFd<'_>> = descriptors.iter().map(Descriptor::fd).collect();
        self.socket.send(&record, &fds).await
    }

    /// Receives one typed message, or `None` at end-of-stream.
    ///
    /// # Errors
    ///
    /// `InvalidData`, with the record dropped and every descriptor that came
    /// with it closed, for a record that is not exactly a well-formed typed
    /// message: a wrong protocol word, a header or section length that does not
    /// fit, a type tag tokio-imc does not represent, a malformed entry, as many
    /// descriptors as entries not arriving, more than NaCl's limits, or a
    /// descriptor that is not the socket its entry says. The connection stays
    /// usable. Otherwise as [`ConnectedSocket::recv`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`ConnectedSocket::recv`].
    pub async fn recv(&mut self) -> io::Result<Option<TypedMessage>> {
        let Some(message) = self.socket.recv().await? else {
            return Ok(None);
        };
        let parsed = codec::decode(&message.data, message.fds.len())?;
        let descriptors = parsed
            .entries
            .iter()
            .zip(message.fds)
            .map(|(entry, fd)| Descriptor::from_entry(entry.kind, fd))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Some(TypedMessage {
            data: message.data.slice(parsed.data_start..),
            descriptors,
        }))
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("nacl::Connection")
            .field("socket", &self.socket)
            .finish()
    }
}
