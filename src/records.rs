//! Sending and receiving records on a connection, whichever way it waits (see
//! [`Wait`]): the one implementation behind [`ConnectedSocket`](crate::ConnectedSocket)
//! and its split halves.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use bytes::{Bytes, BytesMut};
use nix::sys::socket::{getsockopt, sockopt};
use tokio::io::Interest;

use crate::ancillary::{too_many_fds, MAX_FDS_PER_MESSAGE};
use crate::peer_warning::peer_warn;
use crate::sys::{self, Received};
use crate::wait::Wait;
use crate::Message;

/// The largest record `recv` takes. Above the largest a peer without
/// `CAP_NET_ADMIN` can send (`2 * net.core.wmem_max - 32`, 425,952 bytes with the
/// default sysctls); a larger record is reported as truncated, never cut silently.
pub const MAX_RECV_SIZE: usize = 512 * 1024;

thread_local! {
    /// The length of the last record received on this thread: the guess for the
    /// next one, which decides how it is received.
    static LAST_RECORD: Cell<usize> = const { Cell::new(0) };

    /// Where a record lands when the buffer it is received into may be too small
    /// for it. One per thread, allocated on first use; the kernel only touches
    /// the pages a record needs.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Sends one record (see [`ConnectedSocket::send`](crate::ConnectedSocket::send)).
pub(crate) async fn send(
    io: &mut impl Wait,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    check_sendable(data, fds)?;
    match io
        .io(Interest::WRITABLE, |fd| sys::send_msg(fd, data, fds))
        .await
    {
        Ok(_) => Ok(()),
        Err(err) => Err(send_error(io, err, data.len())),
    }
}

/// Receives one record as a [`Message`] (see
/// [`ConnectedSocket::recv`](crate::ConnectedSocket::recv)).
pub(crate) async fn recv(io: &mut impl Wait) -> io::Result<Option<Message>> {
    loop {
        let (received, data) = io.io(Interest::READABLE, receive_owned).await?;
        match judge(io.fd()?, received, data.len())? {
            Judged::Record(fds) => return Ok(Some(Message { data, fds })),
            Judged::End => return Ok(None),
            Judged::Skipped => {}
        }
    }
}

/// One `recvmsg` for [`recv`], into a new buffer: allocated exactly for a small
/// record (received in the thread's scratch buffer, then copied), or at the
/// expected size for a large one (received straight into it).
fn receive_owned(fd: BorrowedFd<'_>) -> io::Result<(Received, Bytes)> {
    let mut data = BytesMut::new();
    let received = receive_appending(fd, &mut data)?;
    Ok((received, data.freeze()))
}

/// One `recvmsg`, appending the record's bytes to `data` (see `sys::recv_into`),
/// with this thread's scratch buffer and size guess.
fn receive_appending(fd: BorrowedFd<'_>, data: &mut BytesMut) -> io::Result<Received> {
    let expected = LAST_RECORD.with(Cell::get);
    SCRATCH.with(|scratch| {
        sys::recv_into(fd, data, &mut scratch.borrow_mut(), MAX_RECV_SIZE, expected)
    })
}

/// Receives one record into caller-owned buffers (see
/// [`ConnectedSocket::recv_into`](crate::ConnectedSocket::recv_into)).
pub(crate) async fn recv_into(
    io: &mut impl Wait,
    data: &mut BytesMut,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<Option<usize>> {
    let start = data.len();
    loop {
        let received = io
            .io(Interest::READABLE, |fd| receive_appending(fd, data))
            .await?;
        match judge(io.fd()?, received, data.len() - start) {
            Ok(Judged::Record(mut record_fds)) => {
                fds.append(&mut record_fds);
                return Ok(Some(data.len() - start));
            }
            Ok(Judged::End) => return Ok(None),
            Ok(Judged::Skipped) => {}
            Err(err) => {
                data.truncate(start);
                return Err(err);
            }
        }
    }
}

/// What one `recvmsg` turned out to be.
enum Judged {
    /// A record, with its descriptors.
    Record(Vec<OwnedFd>),
    /// End-of-stream.
    End,
    /// An empty record from a peer that is still connected: skipped.
    Skipped,
}

/// Turns one `recvmsg` result (of `len` bytes kept) into a record, end-of-stream,
/// a skipped empty record, or an error (the record dropped).
fn judge(fd: BorrowedFd<'_>, received: Received, len: usize) -> io::Result<Judged> {
    if received.stray_fds > 0 || received.other_records > 0 || received.malformed_control {
        peer_warn!(
            fd = fd.as_raw_fd(),
            stray_fds = received.stray_fds,
            other_records = received.other_records,
            malformed = received.malformed_control,
            "closed descriptors and ignored control data that came outside SCM_RIGHTS"
        );
    }
    if received.data_truncated {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "received a record longer than {MAX_RECV_SIZE} bytes; it was dropped and its {} descriptor(s) closed",
                received.fds.len()
            ),
        ));
    }
    if received.control_truncated {
        return Err(io::Error::other(format!(
            "a record's descriptors did not all arrive (MSG_CTRUNC, most often because this process \
             is out of descriptors: EMFILE); the record was dropped and the {} that arrived were closed",
            received.fds.len()
        )));
    }
    if !received.is_empty() {
        LAST_RECORD.with(|last| last.set(len));
        return Ok(Judged::Record(received.fds));
    }
    if sys::read_hung_up(fd)? {
        return Ok(Judged::End);
    }
    peer_warn!(
        fd = fd.as_raw_fd(),
        "skipped an empty record from a connected peer"
    );
    Ok(Judged::Skipped)
}

/// Names the limit an oversized record broke.
fn send_error(io: &impl Wait, err: io::Error, len: usize) -> io::Error {
    if err.raw_os_error() != Some(nix::libc::EMSGSIZE) {
        return err;
    }
    let sndbuf = io
        .fd()
        .and_then(|fd| getsockopt(&fd, sockopt::SndBuf).map_err(io::Error::from));
    let limit = sndbuf.map_or_else(
        |_| "SO_SNDBUF minus 32".to_string(),
        |sndbuf| format!("{} bytes: SO_SNDBUF minus 32", sndbuf.saturating_sub(32)),
    );
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "a record of {len} bytes is larger than this socket's maximum record size ({limit})"
        ),
    )
}

/// Refuses, before any syscall, what the kernel would refuse or misreport.
pub(crate) fn check_sendable(data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(too_many_fds(fds.len()));
    }
    if data.is_empty() && fds.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a message needs at least one byte or one descriptor: an empty SOCK_SEQPACKET \
             record cannot be told apart from end-of-stream",
        ));
    }
    Ok(())
}
