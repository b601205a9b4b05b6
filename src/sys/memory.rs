//! Anonymous memory objects (`memfd_create`), their seals and their mappings.
//!
//! Two kinds, each owning its descriptor and its mapping together so that the
//! soundness of handing out `&[u8]` or `&mut [u8]` rests on this file alone:
//! - [`WritableObject`]: one this process made and never shares until it is
//!   frozen, so nothing else can write to its pages while we hold `&mut`;
//! - [`SealedObject`]: one whose seals were checked before it was mapped, so
//!   nobody, its creator included, can change, shrink or grow it again: its
//!   bytes are immutable and reading them can never fault (`SIGBUS`; huge-page
//!   objects, which could, are refused).

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::sys::stat::{fstat, SFlag};

/// The seals a shared object must carry: no write, no shrink, no grow.
pub(crate) const REQUIRED_SEALS: SealFlag = SealFlag::F_SEAL_WRITE
    .union(SealFlag::F_SEAL_SHRINK)
    .union(SealFlag::F_SEAL_GROW);

/// Slack for [`Access::ReadFirst`]: an object is "not much longer" than the
/// bytes to read if it ends within a page of them.
const PAGE: usize = 4096;

/// How a mapping is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read and written by its one owner.
    Write,
    /// Read, perhaps only in part: pages are mapped as they are touched.
    Read,
    /// Its first `n` bytes read whole and soon: every page mapped up front
    /// (`MAP_POPULATE`, one call instead of a fault per page), but only when
    /// the object is not much longer than that, so a sender cannot make us
    /// populate a large sparse object for a short message.
    ReadFirst(usize),
}

/// A mapping of `len` bytes, unmapped on drop. `len == 0` maps nothing (`mmap`
/// refuses empty mappings).
#[derive(Debug)]
struct Mapping {
    start: Option<NonNull<u8>>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; which threads may
// read or write it is governed by the `&`/`&mut` borrows handed out below.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only gives out `&[u8]`.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, len: usize, access: Access) -> io::Result<Mapping> {
        let Some(length) = NonZeroUsize::new(len) else {
            return Ok(Mapping { start: None, len });
        };
        let (protection, flags) = match access {
            Access::Write => (
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            ),
            Access::Read => (ProtFlags::PROT_READ, MapFlags::MAP_SHARED),
            Access::ReadFirst(n) if len <= n.saturating_add(PAGE) => (
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED | MapFlags::MAP_POPULATE,
            ),
            Access::ReadFirst(_) => (ProtFlags::PROT_READ, MapFlags::MAP_SHARED),
        };
        // SAFETY: a fresh mapping at an address the kernel picks (no existing
        // memory is replaced); `fd` is an open memory object of at least `len`
        // bytes, checked by both callers, so no page of it is past the end.
        let start = unsafe { mmap(None, length, protection, flags, fd, 0) }.map_err(|err| {
            io::Error::from(err).with_context(format!("mmap of a {len}-byte memory object"))
        })?;
        Ok(Mapping {
            start: Some(start.cast()),
            len,
        })
    }

    fn bytes(&self) -> &[u8] {
        match self.start {
            // SAFETY: `start` is a live mapping of `len` readable bytes, unmapped
            // only by `drop`, which the borrow of `self` excludes.
            Some(start) => unsafe { std::slice::from_raw_parts(start.as_ptr(), self.len) },
            None => &[],
        }
    }

    /// # Safety
    ///
    /// The mapping must be writable and nothing outside this value may write
    /// to its pages while the slice lives.
    unsafe fn bytes_mut(&mut self) -> &mut [u8] {
        match self.start {
            // SAFETY: as in `bytes`; exclusive by `&mut self` and the caller's
            // promise that no other writer exists.
            Some(start) => unsafe { std::slice::from_raw_parts_mut(start.as_ptr(), self.len) },
            None => &mut [],
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if let Some(start) = self.start {
            // SAFETY: `start`/`len` is the mapping `Mapping::new` made, still
            // mapped; no borrow of its bytes outlives `self`.
            if let Err(err) = unsafe { munmap(start.cast(), self.len) } {
                tracing::warn!(error = %err, len = self.len, "munmap of a shared memory object failed");
            }
        }
    }
}

/// A memory object this process made, mapped for writing, and never shared
/// until [`freeze`](Self::freeze): its descriptor is not handed out.
#[derive(Debug)]
pub(crate) struct WritableObject {
    // Field order: unmapped before the descriptor closes (either order is
    // correct; this one is the natural one).
    mapping: Mapping,
    fd: OwnedFd,
}

impl WritableObject {
    /// `memfd_create(MFD_CLOEXEC | MFD_ALLOW_SEALING)` of `len` zero bytes.
    pub(crate) fn new(len: usize) -> io::Result<WritableObject> {
        let fd = new_object(len)?;
        let mapping = Mapping::new(fd.as_fd(), len, Access::Write)?;
        Ok(WritableObject { mapping, fd })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.mapping.bytes()
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is writable (made so in `new`) and its descriptor
        // never left this value, so no other mapping or `write(2)` reaches it.
        // (A child forked meanwhile shares the mapping; see `SharedMemoryMut`.)
        unsafe { self.mapping.bytes_mut() }
    }

    /// Unmaps the writable view, seals the object (`F_SEAL_WRITE`,
    /// `F_SEAL_SHRINK`, `F_SEAL_GROW`, then `F_SEAL_SEAL`) and maps it read-only.
    pub(crate) fn freeze(self) -> io::Result<SealedObject> {
        let WritableObject { mapping, fd } = self;
        let len = mapping.len;
        // F_SEAL_WRITE is refused (EBUSY) while a writable shared mapping exists.
        drop(mapping);
        seal(&fd)?;
        let mapping = Mapping::new(fd.as_fd(), len, Access::Read)?;
        Ok(SealedObject { mapping, fd })
    }
}

/// A sealed memory object holding a copy of `bytes`, written with `pwrite(2)`
/// and never mapped here: the kernel copies into its pages directly, without a
/// page fault per page.
pub(crate) fn sealed_copy(bytes: &[u8]) -> io::Result<OwnedFd> {
    let fd = new_object(bytes.len())?;
    let mut written = 0;
    while written < bytes.len() {
        let offset = i64::try_from(written).map_err(|_| too_large(bytes.len()))?;
        match nix::sys::uio::pwrite(&fd, &bytes[written..], offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(err) => {
                return Err(io::Error::from(err).with_context("pwrite into a memory object"))
            }
        }
    }
    seal(&fd)?;
    Ok(fd)
}

/// `memfd_create(MFD_CLOEXEC | MFD_ALLOW_SEALING)` of `len` zero bytes.
fn new_object(len: usize) -> io::Result<OwnedFd> {
    let fd = memfd_create(
        c"tokio-imc",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(|err| io::Error::from(err).with_context("memfd_create"))?;
    let size = i64::try_from(len).map_err(|_| too_large(len))?;
    nix::unistd::ftruncate(&fd, size).map_err(|err| {
        io::Error::from(err).with_context(format!("ftruncate of a memory object to {len} bytes"))
    })?;
    Ok(fd)
}

/// `F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW`, then `F_SEAL_SEAL`.
fn seal(fd: &OwnedFd) -> io::Result<()> {
    fcntl(
        fd,
        FcntlArg::F_ADD_SEALS(REQUIRED_SEALS | SealFlag::F_SEAL_SEAL),
    )
    .map_err(|err| io::Error::from(err).with_context("F_ADD_SEALS on a memory object"))?;
    Ok(())
}

/// A memory object whose seals and size were checked before it was mapped
/// read-only.
#[derive(Debug)]
pub(crate) struct SealedObject {
    mapping: Mapping,
    fd: OwnedFd,
}

impl SealedObject {
    /// Checks `fd` (a memory object carrying at least [`REQUIRED_SEALS`], of at
    /// most `limit` bytes) and maps it read-only. The checks come before the
    /// mapping, in this order, because each makes the next one hold: once
    /// `F_SEAL_SHRINK | F_SEAL_GROW` are seen (seals are never removed) the
    /// size read after them is the size for good.
    pub(crate) fn verify(fd: OwnedFd, limit: u64, access: Access) -> io::Result<SealedObject> {
        let seals = fcntl(&fd, FcntlArg::F_GET_SEALS).map_err(|err| {
            invalid(format!(
                "not a memory object that can carry seals (F_GET_SEALS: {err}); a shared \
                 memory descriptor must be a sealed memfd"
            ))
        })?;
        let seals = SealFlag::from_bits_truncate(seals);
        let missing = REQUIRED_SEALS - seals;
        if !missing.is_empty() {
            return Err(invalid(format!(
                "a memory object without the seals {missing:?}: its sender could still change, \
                 shrink or grow it under our mapping"
            )));
        }
        // Hugetlbfs objects take seals too, but a page can still fail to
        // appear at fault time (the hugetlb cgroup limit): SIGBUS.
        let filesystem = nix::sys::statfs::fstatfs(&fd)
            .map_err(|err| io::Error::from(err).with_context("fstatfs"))?;
        if filesystem.filesystem_type() == nix::sys::statfs::HUGETLBFS_MAGIC {
            return Err(invalid(
                "a huge-page memory object (hugetlbfs): reading it can fault with SIGBUS".into(),
            ));
        }
        let stat = fstat(&fd).map_err(|err| io::Error::from(err).with_context("fstat"))?;
        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(invalid(
                "a sealed descriptor that is not a memory object".into(),
            ));
        }
        let size = u64::try_from(stat.st_size).map_err(|_| invalid("a negative size".into()))?;
        if size > limit {
            return Err(invalid(format!(
                "a memory object of {size} bytes is larger than the limit of {limit} bytes"
            )));
        }
        let len = usize::try_from(size).map_err(|_| too_large(usize::MAX))?;
        let mapping = Mapping::new(fd.as_fd(), len, access)?;
        Ok(SealedObject { mapping, fd })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.mapping.bytes()
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Its descriptor, the mapping undone.
    pub(crate) fn into_fd(self) -> OwnedFd {
        let SealedObject { mapping, fd } = self;
        drop(mapping);
        fd
    }
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

fn too_large(len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("a memory object of {len} bytes is larger than this system can map"),
    )
}

/// Adds what was being done to an error, keeping its kind.
trait WithContext {
    fn with_context(self, what: impl std::fmt::Display) -> io::Error;
}

impl WithContext for io::Error {
    fn with_context(self, what: impl std::fmt::Display) -> io::Error {
        io::Error::new(self.kind(), format!("{what}: {self}"))
    }
}
