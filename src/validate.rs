//! Checks that a descriptor someone handed us is the socket it claims to be.
//!
//! Two syscalls answer every question: `getsockopt(SO_TYPE)` (is it a socket, of
//! which type) and `getpeername` (which family, and is it connected). They run on
//! every accepted connection, so nothing else is asked.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockType};

use crate::sys;

/// Why a descriptor is not the socket we need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FdProblem {
    /// Not a socket at all (a pipe, a file, a memfd, ...).
    NotASocket,
    /// A socket of a type we do not accept (`SOCK_*` value).
    WrongType(i32),
    /// A socket of another address family (`AF_*` value).
    WrongFamily(i32),
    /// A socket with no peer.
    NotConnected,
    /// The check itself failed.
    Os(Errno),
}

impl fmt::Display for FdProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdProblem::NotASocket => write!(f, "the descriptor is not a socket"),
            FdProblem::WrongType(t) => write!(f, "the socket has type {} ({t})", type_name(*t)),
            FdProblem::WrongFamily(af) => write!(f, "the socket is not AF_UNIX (family {af})"),
            FdProblem::NotConnected => write!(f, "the socket is not connected"),
            FdProblem::Os(errno) => {
                write!(f, "the socket could not be inspected: {}", errno.desc())
            }
        }
    }
}

fn type_name(raw: i32) -> &'static str {
    match raw {
        nix::libc::SOCK_STREAM => "SOCK_STREAM",
        nix::libc::SOCK_DGRAM => "SOCK_DGRAM",
        nix::libc::SOCK_SEQPACKET => "SOCK_SEQPACKET",
        nix::libc::SOCK_RAW => "SOCK_RAW",
        _ => "unknown",
    }
}

/// Checks that `fd` is a connected `AF_UNIX` socket of one of the `accepted` types,
/// and returns its type.
pub(crate) fn connected_unix_socket(
    fd: BorrowedFd<'_>,
    accepted: &[SockType],
) -> Result<SockType, FdProblem> {
    let kind = match sys::socket::socket_type(fd) {
        Ok(kind) => kind,
        Err(Errno::ENOTSOCK) => return Err(FdProblem::NotASocket),
        // nix reports a type it has no name for as EINVAL.
        Err(Errno::EINVAL) => return Err(FdProblem::WrongType(-1)),
        Err(errno) => return Err(FdProblem::Os(errno)),
    };
    if !accepted.contains(&kind) {
        return Err(FdProblem::WrongType(kind as i32));
    }
    match sys::socket::peer_family(fd) {
        Ok(Some(AddressFamily::Unix)) => Ok(kind),
        Ok(family) => Err(FdProblem::WrongFamily(family.map_or(-1, |af| af as i32))),
        Err(Errno::ENOTCONN) => Err(FdProblem::NotConnected),
        Err(errno) => Err(FdProblem::Os(errno)),
    }
}

/// Checks, without taking it, that `fd` can become a `what`: a connected `AF_UNIX`
/// socket of one of the `accepted` types. `InvalidInput` naming the problem
/// otherwise; the descriptor is not touched either way.
pub(crate) fn check(fd: BorrowedFd<'_>, what: &str, accepted: &[SockType]) -> io::Result<SockType> {
    connected_unix_socket(fd, accepted).map_err(|problem| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot make a {what} from this descriptor: {problem}"),
        )
    })
}

/// Validates a descriptor a caller converts into one of our types, and makes it
/// close-on-exec (the caller may have made it without `O_CLOEXEC`).
pub(crate) fn adopt(fd: &OwnedFd, what: &str, accepted: &[SockType]) -> io::Result<SockType> {
    let kind = check(fd.as_fd(), what, accepted)?;
    sys::fd::set_cloexec(fd.as_fd())?;
    Ok(kind)
}
