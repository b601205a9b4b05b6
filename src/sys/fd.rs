//! Calls on a descriptor of any kind: its flags, its identity, duplicating it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::libc;
use nix::sys::stat::fstat;

use crate::sys::faults::{inject, Call};

/// Sets `FD_CLOEXEC` (for descriptors a caller made without it).
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(io::Error::from)?;
    Ok(())
}

/// Sets `O_NONBLOCK` on the open file description, keeping its other flags.
#[cfg(feature = "tokio-seqpacket")]
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// `F_DUPFD_CLOEXEC`: another descriptor for the same open file description.
pub(crate) fn duplicate(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    inject(Call::Duplicate)?;
    fd.try_clone_to_owned()
}

/// Which file `fd` refers to: its `st_dev` and `st_ino`.
pub(crate) fn file_identity(fd: impl AsFd) -> io::Result<(libc::dev_t, libc::ino_t)> {
    inject(Call::Fstat)?;
    let stat = fstat(fd.as_fd()).map_err(io::Error::from)?;
    Ok((stat.st_dev, stat.st_ino))
}
