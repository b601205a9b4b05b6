//! The identity of the process at the other end of a connection.

use std::io;
use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, sockopt};

/// The credentials of the process that created a connection's socket pair
/// (`SO_PEERCRED`). For a connection returned by
/// [`BoundSocket::accept`](crate::BoundSocket::accept) that is the process that
/// called `connect`, whichever process holds the socket now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
        let cred = getsockopt(&socket, sockopt::PeerCredentials).map_err(io::Error::from)?;
        Ok(Credentials {
            pid: cred.pid(),
            uid: cred.uid(),
            gid: cred.gid(),
        })
    }
}
