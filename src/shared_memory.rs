//! Sealed shared memory: [`SharedMemoryMut`] to fill, [`SharedMemory`] to share.

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::sys::memory::{self, Access, SealedObject, WritableObject};

/// The largest [`SharedMemory`] that `TryFrom<OwnedFd>` maps: 1 GiB. Use
/// [`SharedMemory::from_fd_with_limit`] for another limit.
pub const DEFAULT_SHARED_MEMORY_LIMIT: u64 = 1 << 30;

/// A writable anonymous memory object (`memfd_create` with `MFD_CLOEXEC |
/// MFD_ALLOW_SEALING`), mapped into this process and nowhere else: fill it, then
/// [`freeze`](Self::freeze) it into a [`SharedMemory`] to send.
///
/// Its descriptor is never handed out, so nothing but this value writes its
/// bytes. (A child `fork`ed while it exists shares the mapping, as with any
/// `MAP_SHARED` memory; do not write to it from both.)
///
/// # Examples
///
/// ```
/// let mut memory = tokio_imc::SharedMemoryMut::new(4096)?;
/// memory[..5].copy_from_slice(b"hello");
/// let frozen = memory.freeze()?;
/// assert_eq!(&frozen[..5], b"hello");
/// assert_eq!(frozen.len(), 4096);
/// # std::io::Result::Ok(())
/// ```
pub struct SharedMemoryMut {
    object: WritableObject,
}

impl SharedMemoryMut {
    /// A new object of `len` zero bytes (pages are allocated as they are
    /// written).
    ///
    /// # Errors
    ///
    /// What `memfd_create`, `ftruncate` or `mmap` report (`OutOfMemory`,
    /// descriptor exhaustion), or `InvalidInput` for a length the system cannot
    /// map.
    pub fn new(len: usize) -> io::Result<SharedMemoryMut> {
        Ok(SharedMemoryMut {
            object: WritableObject::new(len)?,
        })
    }

    /// Unmaps the writable view, seals the object against writing, shrinking
    /// and growing (`F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW`, then
    /// `F_SEAL_SEAL`), and maps it read-only. After this nobody, this process
    /// included, can change its bytes.
    ///
    /// # Errors
    ///
    /// What `fcntl(F_ADD_SEALS)` or `mmap` report; the object is closed.
    pub fn freeze(self) -> io::Result<SharedMemory> {
        Ok(SharedMemory::from_sealed(self.object.freeze()?))
    }
}

impl Deref for SharedMemoryMut {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.object.bytes()
    }
}

impl DerefMut for SharedMemoryMut {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.object.bytes_mut()
    }
}

impl fmt::Debug for SharedMemoryMut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemoryMut")
            .field("len", &self.len())
            .finish()
    }
}

/// An immutable memory object shared between processes: a sealed memfd, mapped
/// read-only. Send it like any descriptor ([`ConnectedSocket::send`] with
/// `&[memory.as_fd()]`) and take it back with `SharedMemory::try_from(fd)`,
/// which checks the seals and the size **before** mapping, so a lying sender
/// can neither truncate it under the mapping (`SIGBUS`) nor change its bytes
/// after they were checked.
///
/// Clones share one mapping (an `Arc`); [`into_bytes`](Self::into_bytes) makes a
/// [`bytes::Bytes`] of it without copying.
///
/// [`ConnectedSocket::send`]: crate::ConnectedSocket::send
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use std::os::fd::AsFd;
/// use tokio_imc::{ConnectedSocket, SharedMemory};
///
/// let (mut a, mut b) = ConnectedSocket::pair()?;
/// let memory = SharedMemory::copy_from_slice(b"a large payload")?;
/// a.send(b"here", &[memory.as_fd()]).await?;
/// let mut message = b.recv().await?.expect("a message");
/// let received = SharedMemory::try_from(message.fds.remove(0))?;
/// assert_eq!(&received[..], b"a large payload");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SharedMemory {
    object: Arc<SealedObject>,
}

impl SharedMemory {
    fn from_sealed(object: SealedObject) -> SharedMemory {
        SharedMemory {
            object: Arc::new(object),
        }
    }

    /// A sealed object holding a copy of `bytes`.
    ///
    /// # Errors
    ///
    /// As [`SharedMemoryMut::new`] and [`SharedMemoryMut::freeze`].
    pub fn copy_from_slice(bytes: &[u8]) -> io::Result<SharedMemory> {
        let fd = memory::sealed_copy(bytes)?;
        Ok(SharedMemory::from_sealed(SealedObject::verify(
            fd,
            u64::MAX,
            Access::Read,
        )?))
    }

    /// `TryFrom<OwnedFd>` with a size limit other than
    /// [`DEFAULT_SHARED_MEMORY_LIMIT`].
    ///
    /// # Errors
    ///
    /// `InvalidData`, naming the reason, for a descriptor that is not a memfd,
    /// lacks one of `F_SEAL_WRITE`, `F_SEAL_SHRINK`, `F_SEAL_GROW`, or is larger
    /// than `limit` (checked before mapping: a sparse object of any claimed
    /// size costs nothing); what `mmap` reports otherwise. The descriptor is
    /// closed on error.
    pub fn from_fd_with_limit(fd: OwnedFd, limit: u64) -> io::Result<SharedMemory> {
        Ok(SharedMemory::from_sealed(SealedObject::verify(
            fd,
            limit,
            Access::Read,
        )?))
    }

    /// `from_fd_with_limit` for a receiver about to read its first `len`
    /// bytes: their pages are mapped up front (see `Access::ReadFirst`).
    #[cfg_attr(not(feature = "serde"), allow(dead_code))]
    pub(crate) fn from_fd_to_read(fd: OwnedFd, limit: u64, len: usize) -> io::Result<SharedMemory> {
        Ok(SharedMemory::from_sealed(SealedObject::verify(
            fd,
            limit,
            Access::ReadFirst(len),
        )?))
    }

    /// A sealed object holding `bytes`, as a descriptor only (never mapped
    /// here): what a typed send of a large message attaches.
    #[cfg_attr(not(feature = "serde"), allow(dead_code))]
    pub(crate) fn sealed_copy_fd(bytes: &[u8]) -> io::Result<OwnedFd> {
        memory::sealed_copy(bytes)
    }

    /// Its descriptor, as `From<SharedMemory> for OwnedFd` gives it, but with
    /// an error instead of a panic when a clone's duplicate cannot be made.
    ///
    /// # Errors
    ///
    /// What `fcntl(F_DUPFD_CLOEXEC)` reports (`EMFILE`), for a clone only.
    pub fn try_into_fd(self) -> io::Result<OwnedFd> {
        match Arc::try_unwrap(self.object) {
            Ok(object) => Ok(object.into_fd()),
            Err(shared) => shared.fd().try_clone_to_owned(),
        }
    }

    /// The bytes as a [`bytes::Bytes`], without copying: the mapping lives as
    /// long as the `Bytes` (and its clones) do.
    pub fn into_bytes(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(self)
    }
}

impl Deref for SharedMemory {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.object.bytes()
    }
}

impl AsRef<[u8]> for SharedMemory {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsFd for SharedMemory {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.object.fd()
    }
}

impl TryFrom<OwnedFd> for SharedMemory {
    type Error = io::Error;

    /// Checks, then maps: see [`SharedMemory::from_fd_with_limit`] (here with
    /// [`DEFAULT_SHARED_MEMORY_LIMIT`]).
    fn try_from(fd: OwnedFd) -> io::Result<SharedMemory> {
        SharedMemory::from_fd_with_limit(fd, DEFAULT_SHARED_MEMORY_LIMIT)
    }
}

impl From<SharedMemory> for OwnedFd {
    /// The object's descriptor. The last clone unmaps and gives its own; an
    /// earlier one gives a duplicate (`F_DUPFD_CLOEXEC`), since the other clones
    /// keep theirs.
    ///
    /// # Panics
    ///
    /// If a clone cannot be duplicated because the process is out of
    /// descriptors (`EMFILE`); the last (or only) clone never panics.
    /// [`SharedMemory::try_into_fd`] reports that as an error instead.
    fn from(memory: SharedMemory) -> OwnedFd {
        match memory.try_into_fd() {
            Ok(fd) => fd,
            Err(err) => panic!("duplicating a shared memory descriptor: {err}"),
        }
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("fd", &std::os::fd::AsRawFd::as_raw_fd(&self.as_fd()))
            .field("len", &self.len())
            .finish()
    }
}
