//! Calls on sockets other than sending and receiving: making pairs, asking what a
//! socket is, shutting it down, and polling it once.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

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

/// `SO_PASSRIGHTS` in asm-generic's numbering (libc has no name for it yet).
/// The architectures with a socket.h of their own number it otherwise; there
/// it is not set, and the receive-side check works alone.
#[cfg(not(any(
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
)))]
const SO_PASSRIGHTS: Option<libc::c_int> = Some(83);
#[cfg(any(
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
const SO_PASSRIGHTS: Option<libc::c_int> = None;

/// `setsockopt(SO_PASSRIGHTS, 0)` (Linux 6.16 and later): the kernel refuses
/// every later `sendmsg` with descriptors to this socket (`EPERM` for the
/// sender). Records queued before it still carry theirs. `ENOPROTOOPT` on an
/// older kernel.
pub(crate) fn refuse_descriptors(socket: BorrowedFd<'_>) -> io::Result<()> {
    let Some(option) = SO_PASSRIGHTS else {
        return Err(io::Error::from_raw_os_error(libc::ENOPROTOOPT));
    };
    inject(Call::PassRights)?;
    let off: libc::c_int = 0;
    // SAFETY: `off` is a live c_int for the call, and its size is what we pass.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&off as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until the peer of `socket` hangs up (or shuts down writing, or we shut
/// down reading), for at most `limit` (`None`: without a limit): `poll` for
/// `POLLRDHUP` alone, so records arriving meanwhile neither wake it nor are
/// touched. Whether it hung up.
pub(crate) fn wait_hung_up(socket: BorrowedFd<'_>, limit: Option<Duration>) -> io::Result<bool> {
    wait_for(
        socket,
        libc::POLLRDHUP,
        limit.map(|limit| Instant::now() + limit),
    )
}

/// Waits with `poll(2)` until `socket` reports one of `events` (or a hang-up
/// or an error, which the next operation on it reports), until `deadline` if
/// there is one. Whether it did; `false` once the deadline has passed.
pub(crate) fn wait_for(
    socket: BorrowedFd<'_>,
    events: libc::c_short,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    loop {
        let timeout = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Rounded up, so a wait never ends before its deadline.
                let millis = left.as_nanos().div_ceil(1_000_000);
                libc::c_int::try_from(millis).unwrap_or(libc::c_int::MAX)
            }
        };
        let mut poll_fd = libc::pollfd {
            fd: socket.as_raw_fd(),
            events,
            revents: 0,
        };
        let polled = inject(Call::Poll).and_then(|()| {
            // SAFETY: `poll_fd` is one valid pollfd that lives across the call.
            match unsafe { libc::poll(&mut poll_fd, 1, timeout) } {
                ready if ready < 0 => Err(io::Error::last_os_error()),
                _ => Ok(()),
            }
        });
        match polled {
            // A signal: wait again, for what is left of the deadline.
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
            Ok(()) => {}
        }
        if poll_fd.revents & libc::POLLNVAL != 0 {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        if poll_fd.revents & (events | libc::POLLHUP | libc::POLLERR) != 0 {
            return Ok(true);
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Ok(false);
        }
    }
}

/// [`inject`] for the calls that report a bare `Errno`.
fn injected_errno(call: Call) -> Result<(), Errno> {
    inject(call).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
}
