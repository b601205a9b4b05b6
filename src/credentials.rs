//! The identity of the process at the other end of a connection.

use std::io;
use std::os::fd::AsFd;

use crate::sys;

/// The credentials of the process that created a connection's socket pair
/// (`SO_PEERCRED`). For a connection returned by
/// [`BoundSocket::accept`](crate::BoundSocket::accept) that is the process that
/// called `connect`, whichever process holds the socket now.
///
/// The fields are public to read; the type is `#[non_exhaustive]`, so only the
/// crate makes one and fields can be added (as tokio's `UCred` keeps its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Credentials {
    /// Process id, as seen from the receiver's PID namespace (0 if unknown).
    pub pid: i32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

impl Credentials {
    pub(crate) fn of_peer(socket: impl AsFd) -> io::Result<Self> {
        let cred = sys::socket::peer_credentials(socket.as_fd())?;
        Ok(Credentials {
            pid: cred.pid(),
            uid: cred.uid(),
            gid: cred.gid(),
        })
    }
}
