//! Calls on sockets other than sending and receiving: making pairs, asking what a
//! socket is, shutting it down, and polling it once.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

use crate::sys::faults::{inject, retry_interrupted, Call};
use nix::libc;
use nix::sys::socket::{
    getpeername, getsockopt, socketpair, sockopt, AddressFamily, SockFlag, SockType, SockaddrLike,
    SockaddrStorage, UnixCredentials,
};

/// `socketpair(AF_UNIX, kind | SOCK_CLOEXEC)`: the one way the crate makes sockets.
///
/// Blocking, as `socketpair(2)` makes them: `O_NONBLOCK` belongs to the open file
/// description, so it would travel with an end to whoever is handed it (a holder
/// of an address, the peer of a connection), and a peer's plain blocking `sendmsg`
/// would fail with `EAGAIN` on a full queue. The crate's own calls pass
/// `MSG_DONTWAIT` and never need the flag.
pub(crate) fn pair(kind: SockType) -> io::Result<(OwnedFd, OwnedFd)> {
    inject(Call::SocketPair)?;
    socketpair(AddressFamily::Unix, kind, None, SockFlag::SOCK_CLOEXEC).map_err(io::Error::from)
}

/// shutdown(2) with std's `Shutdown`.
pub(crate) fn shutdown(fd: BorrowedFd<'_>, how: Shutdown) -> io::Result<()> {
    let how = match how {
        Shutdown::Read => nix::sys::socket::Shutdown::Read,
        Shutdown::Write => nix::sys::socket::Shutdown::Write,
        Shutdown::Both => nix::sys::socket::Shutdown::Both,
    };
    nix::sys::socket::shutdown(fd.as_raw_fd(), how).map_err(io::Error::from)
}

/// `getsockopt(SO_TYPE)`: `ENOTSOCK` for a descriptor that is not a socket, and
/// `EINVAL` for a type nix has no name for.
pub(crate) fn socket_type(fd: BorrowedFd<'_>) -> Result<SockType, Errno> {
    injected_errno(Call::SockOpt)?;
    getsockopt(&fd, sockopt::SockType)
}

/// `getpeername`: the family of the peer's address (`None` when the kernel
/// reports none we know), or `ENOTCONN` for a socket with no peer.
pub(crate) fn peer_family(fd: BorrowedFd<'_>) -> Result<Option<AddressFamily>, Errno> {
    injected_errno(Call::SockOpt)?;
    getpeername::<SockaddrStorage>(fd.as_raw_fd()).map(|peer| peer.family())
}

/// `SO_PEERCRED`: who made the peer's end.
pub(crate) fn peer_credentials(fd: BorrowedFd<'_>) -> io::Result<UnixCredentials> {
    inject(Call::SockOpt)?;
    getsockopt(&fd, sockopt::PeerCredentials).map_err(io::Error::from)
}

/// `SO_SNDBUF`, as the kernel reports it (twice what was asked for).
pub(crate) fn send_buffer_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    inject(Call::SockOpt)?;
    getsockopt(&fd, sockopt::SndBuf).map_err(io::Error::from)
}

/// Whether the peer of a connected socket has hung up (or we shut down reading):
/// `poll(POLLRDHUP)` with a zero timeout. Used only after an empty read, to tell
/// end-of-stream from an empty record.
pub(crate) fn read_hung_up(socket: BorrowedFd<'_>) -> io::Result<bool> {
    let mut poll_fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    retry_interrupted(|| {
        inject(Call::Poll)?;
        // SAFETY: `poll_fd` is one valid pollfd that lives across the call;
        // timeout 0.
        if unsafe { libc::poll(&mut poll_fd, 1, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })?;
    Ok(poll_fd.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0)
}

/// [`inject`] for the calls that report a bare `Errno`.
fn injected_errno(call: Call) -> Result<(), Errno> {
    inject(call).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
}
