//! The connect request: what a well-formed one is, what is wrong with the rest,
//! and [`receive`] + [`judge_raw`], the one handler both accept paths use (the
//! receive alone runs under a caller's lock).
//!
//! A request is exactly the byte `c` with exactly one descriptor: a connected
//! `AF_UNIX` `SOCK_SEQPACKET` socket. Anything else is dropped (its descriptors are
//! closed when the [`Received`] is dropped) and the reason is logged.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::socket::SockType;

use crate::peer_warning::peer_warn;
use crate::sys::msg::{self, Received};
use crate::validate::{self, FdProblem};
use crate::AddressId;

/// The one byte a connect request carries.
pub(crate) const REQUEST_BYTE: u8 = b'c';

/// What to do with one `recvmsg` from a bound socket.
#[derive(Debug)]
enum Verdict {
    /// A well-formed request: this is the connection.
    Connect(OwnedFd),
    /// A malformed request, dropped.
    Reject(Rejection),
    /// End of stream: no address can reach this bound socket any more.
    NoAddresses,
}

/// Why a request was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rejection {
    /// The byte was not `c`.
    WrongByte(u8),
    /// The byte came with no descriptor.
    NoDescriptor,
    /// More than one descriptor.
    TooManyDescriptors(usize),
    /// The descriptor is not a connected `AF_UNIX` `SOCK_SEQPACKET` socket.
    BadDescriptor(FdProblem),
    /// The descriptor could not be checked: a system call of ours failed (e.g.
    /// `ENOMEM`), not the peer. Dropped all the same: nothing unchecked becomes
    /// a connection.
    Unchecked(nix::errno::Errno),
    /// Its descriptors did not all arrive (`MSG_CTRUNC`): this process ran out of
    /// descriptors (`EMFILE`), most often because the request carried many.
    DescriptorsLost,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::WrongByte(b) => write!(f, "the request byte was {b:#04x}, not 'c'"),
            Rejection::NoDescriptor => write!(f, "the request carried no descriptor"),
            Rejection::TooManyDescriptors(n) => {
                write!(f, "the request carried {n} descriptors, not one")
            }
            Rejection::BadDescriptor(problem) => {
                write!(f, "the request's descriptor is unusable: {problem}")
            }
            Rejection::Unchecked(errno) => write!(
                f,
                "the request's descriptor could not be checked ({errno}: this process is short \
                 of resources, not a fault of the peer); its client sees its connection closed"
            ),
            Rejection::DescriptorsLost => write!(
                f,
                "the request's descriptors could not all be received (MSG_CTRUNC: this process \
                 ran out of descriptors, EMFILE, most often because the request carried many); \
                 its client sees its connection closed"
            ),
        }
    }
}

/// Judges one request. Whatever is not returned is closed on return.
fn judge(byte: Option<u8>, mut received: Received) -> Verdict {
    if received.control_truncated {
        return Verdict::Reject(Rejection::DescriptorsLost);
    }
    let Some(byte) = byte else {
        return Verdict::NoAddresses;
    };
    if byte != REQUEST_BYTE {
        return Verdict::Reject(Rejection::WrongByte(byte));
    }
    match received.fds.len() {
        0 => return Verdict::Reject(Rejection::NoDescriptor),
        1 => {}
        n => return Verdict::Reject(Rejection::TooManyDescriptors(n)),
    }
    let fd = received.fds.swap_remove(0);
    match validate::connected_unix_socket(fd.as_fd(), &[SockType::SeqPacket]) {
        Ok(_) => Verdict::Connect(fd),
        Err(FdProblem::Os(errno)) => Verdict::Reject(Rejection::Unchecked(errno)),
        Err(problem) => Verdict::Reject(Rejection::BadDescriptor(problem)),
    }
}

/// What came of one request taken off an address.
#[derive(Debug)]
pub(crate) enum Taken {
    /// A well-formed request: this is the connection.
    Connection(OwnedFd),
    /// A malformed request, dropped with a warning.
    Dropped,
    /// End of stream: every holder of the address has closed it.
    NoAddresses,
}

/// One request as it came off a bound socket, not yet judged.
#[derive(Debug)]
pub(crate) struct Raw {
    byte: Option<u8>,
    received: Received,
}

impl Raw {
    /// Whether this is a request at all (not end-of-stream), whatever its shape.
    pub(crate) fn is_request(&self) -> bool {
        self.byte.is_some()
    }
}

/// Takes one request off `bound`: the one system call, kept apart from
/// [`judge_raw`] so that callers holding a lock hold it only for this.
/// `WouldBlock` when none is queued.
pub(crate) fn receive(bound: BorrowedFd<'_>) -> io::Result<Raw> {
    let (byte, received) = msg::recv_request(bound)?;
    Ok(Raw { byte, received })
}

/// Judges a request that came through address `id`: what is not returned is
/// closed, and a rejected request is reported with a rate-limited warning.
pub(crate) fn judge_raw(raw: Raw, id: AddressId) -> Taken {
    match judge(raw.byte, raw.received) {
        Verdict::Connect(fd) => Taken::Connection(fd),
        Verdict::Reject(reason) => {
            if let Rejection::Unchecked(_) = reason {
                peer_warn!(address_id = %id, %reason, "dropped a connect request it could not check");
            } else {
                peer_warn!(address_id = %id, %reason, "dropped a malformed connect request");
            }
            Taken::Dropped
        }
        Verdict::NoAddresses => Taken::NoAddresses,
    }
}

/// `accept`'s final error: no address is left.
pub(crate) fn no_addresses() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "accept: every SocketAddress of this bound socket is closed (or was shut down), \
         so no connection can arrive any more",
    )
}
