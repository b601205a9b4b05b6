//! The message engine: sending and receiving records on a connection, whichever
//! way it waits (see [`Reactive`]): the one implementation behind
//! [`ConnectedSocket`](crate::ConnectedSocket) and its split halves, with the
//! receive-size policy (where each record lands, and how much memory it keeps).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::Interest;

use crate::ancillary::{too_many_fds, MAX_FDS_PER_MESSAGE};
use crate::peer_warning::peer_warn;
use crate::sys::endpoint::Endpoint;
use crate::sys::msg::{self, Received};
use crate::sys::reactor::{ExclusiveIo, Reactive, SharedIo};
use crate::sys::socket;
use crate::Message;

/// The largest record `recv` takes. Above the largest a peer without
/// `CAP_NET_ADMIN` can send (`2 * net.core.wmem_max - 32`, 425,952 bytes with the
/// default sysctls); a larger record is reported as truncated, never cut silently.
pub const MAX_RECV_SIZE: usize = 512 * 1024;

thread_local! {
    /// The length of the last record `recv` received on this thread: a guess
    /// for the next one, which decides only where it is received (see
    /// [`receive_owned`]); a wrong guess costs time, never memory kept.
    static LAST_RECORD: Cell<usize> = const { Cell::new(0) };

    /// Where the part of a record that does not fit the buffer it is received
    /// into lands first. One per thread, allocated on first use; the kernel only
    /// touches the pages a record needs.
    static SPILL: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Records expected to be at most this long are received into the spill buffer
/// and copied into an exact allocation; longer ones straight into a buffer of
/// the expected size.
const SMALL: usize = 2048;

/// A connection as the engine sees it: something to wait on, and the endpoint
/// (whose address's policy may refuse descriptors).
pub(crate) trait Connection: Reactive {
    /// The endpoint.
    fn endpoint(&self) -> io::Result<&Endpoint>;
}

impl Connection for ExclusiveIo<Endpoint> {
    fn endpoint(&self) -> io::Result<&Endpoint> {
        self.get_ref()
    }
}

impl Connection for &SharedIo<Endpoint> {
    fn endpoint(&self) -> io::Result<&Endpoint> {
        Ok(self.get_ref())
    }
}

/// [`send`] as a poll (see
/// [`ConnectedSocket::poll_send`](crate::ConnectedSocket::poll_send)).
pub(crate) fn poll_send(
    io: &mut impl Reactive,
    cx: &mut Context<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Poll<io::Result<()>> {
    check_sendable(data, fds)?;
    match ready!(io.poll_io(cx, Interest::WRITABLE, |fd| msg::send_msg(fd, data, fds))) {
        Ok(_) => Poll::Ready(Ok(())),
        Err(err) => Poll::Ready(Err(send_error(io, err, data.len()))),
    }
}

/// [`recv`] as a poll (see
/// [`ConnectedSocket::poll_recv`](crate::ConnectedSocket::poll_recv)).
pub(crate) fn poll_recv(
    io: &mut impl Connection,
    cx: &mut Context<'_>,
) -> Poll<io::Result<Option<Message>>> {
    loop {
        let (received, data) = ready!(io.poll_io(cx, Interest::READABLE, receive_owned))?;
        if let Some(done) = message(io, received, data)? {
            return Poll::Ready(Ok(done));
        }
    }
}

/// [`recv_into`] as a poll.
pub(crate) fn poll_recv_into(
    io: &mut impl Connection,
    cx: &mut Context<'_>,
    data: &mut BytesMut,
    fds: &mut Vec<OwnedFd>,
) -> Poll<io::Result<Option<usize>>> {
    let start = data.len();
    loop {
        let received = ready!(io.poll_io(cx, Interest::READABLE, |fd| {
            past_reset(fd, |fd| receive_appending(fd, data))
        }))?;
        if let Some(done) = appended(io, received, data, start, fds)? {
            return Poll::Ready(Ok(done));
        }
    }
}

/// Sends one record (see [`ConnectedSocket::send`](crate::ConnectedSocket::send)).
pub(crate) async fn send(
    io: &mut impl Reactive,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    check_sendable(data, fds)?;
    match io
        .io(Interest::WRITABLE, |fd| msg::send_msg(fd, data, fds))
        .await
    {
        Ok(_) => Ok(()),
        Err(err) => Err(send_error(io, err, data.len())),
    }
}

/// Receives one record as a [`Message`] (see
/// [`ConnectedSocket::recv`](crate::ConnectedSocket::recv)).
pub(crate) async fn recv(io: &mut impl Connection) -> io::Result<Option<Message>> {
    loop {
        let (received, data) = io.io(Interest::READABLE, receive_owned).await?;
        if let Some(done) = message(io, received, data)? {
            return Ok(done);
        }
    }
}

/// What one receive for `recv` gives: `None` to receive again (an empty record
/// skipped), else the message or the end.
fn message(
    io: &impl Connection,
    received: Received,
    data: Bytes,
) -> io::Result<Option<Option<Message>>> {
    Ok(match judge(io, received)? {
        Judged::Record(fds) => Some(Some(Message { data, fds })),
        Judged::End => Some(None),
        Judged::Skipped => None,
    })
}

/// What one receive for `recv_into` gives (as [`message`]); on error `data` is
/// cut back to `start`.
fn appended(
    io: &impl Connection,
    received: Received,
    data: &mut BytesMut,
    start: usize,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<Option<Option<usize>>> {
    match judge(io, received) {
        Ok(Judged::Record(mut record_fds)) => {
            fds.append(&mut record_fds);
            Ok(Some(Some(data.len() - start)))
        }
        Ok(Judged::End) => Ok(Some(None)),
        Ok(Judged::Skipped) => Ok(None),
        Err(err) => {
            data.truncate(start);
            Err(err)
        }
    }
}

/// One `recvmsg` for [`recv`], into a new buffer.
fn receive_owned(fd: BorrowedFd<'_>) -> io::Result<(Received, Bytes)> {
    let (received, data) = past_reset(fd, receive_new)?;
    Ok((received, data.freeze()))
}

/// Runs `receive` again after `ECONNRESET`. Linux reports "the peer closed with
/// records of ours unread" once, as `ECONNRESET`, ahead of the records the peer
/// had sent us; for the receiving side it is an ordinary end of the
/// conversation, so the records queued for us are read on, and then
/// end-of-stream. (Our unread records are lost with the peer; a later send fails
/// with `BrokenPipe`.)
fn past_reset<R>(
    fd: BorrowedFd<'_>,
    mut receive: impl FnMut(BorrowedFd<'_>) -> io::Result<R>,
) -> io::Result<R> {
    match receive(fd) {
        Err(err) if err.raw_os_error() == Some(nix::libc::ECONNRESET) => {
            tracing::debug!(
                fd = fd.as_raw_fd(),
                "the peer closed with records of ours unread; reading what it sent"
            );
            receive(fd)
        }
        other => other,
    }
}

/// One `recvmsg` into a new buffer: a small record (as guessed from the last
/// one) lands in the spill buffer and is copied into an exact allocation; a
/// large one is received straight into a buffer of the guessed size. Whatever
/// the guess, the buffer returned has at most twice the record's length (or 8
/// bytes) of capacity, so one peer's large record never makes another's small
/// one pin memory.
fn receive_new(fd: BorrowedFd<'_>) -> io::Result<(Received, BytesMut)> {
    let expected = LAST_RECORD.with(Cell::get);
    let mut data = if expected > SMALL {
        BytesMut::with_capacity(expected.min(MAX_RECV_SIZE))
    } else {
        BytesMut::new()
    };
    let received = receive_appending(fd, &mut data)?;
    LAST_RECORD.with(|last| last.set(received.len));
    // A small record was copied out of the spill buffer into an exact
    // allocation; a guessed buffer is kept only if the guess was not too large.
    if expected > SMALL && data.capacity() / 2 > data.len() {
        data = BytesMut::from(&data[..]);
    }
    Ok((received, data))
}

/// One `recvmsg`, appending the record's bytes to `data` (see
/// `msg::recv_appending`), with this thread's spill buffer.
fn receive_appending(fd: BorrowedFd<'_>, data: &mut BytesMut) -> io::Result<Received> {
    SPILL.with(|spill| msg::recv_appending(fd, data, &mut spill.borrow_mut(), MAX_RECV_SIZE))
}

/// Receives one record into caller-owned buffers (see
/// [`ConnectedSocket::recv_into`](crate::ConnectedSocket::recv_into)).
pub(crate) async fn recv_into(
    io: &mut impl Connection,
    data: &mut BytesMut,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<Option<usize>> {
    let start = data.len();
    loop {
        let received = io
            .io(Interest::READABLE, |fd| {
                past_reset(fd, |fd| receive_appending(fd, data))
            })
            .await?;
        if let Some(done) = appended(io, received, data, start, fds)? {
            return Ok(done);
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

/// Turns one `recvmsg` result into a record, end-of-stream,
/// a skipped empty record, or an error (the record dropped): truncated, or
/// carrying descriptors where the connection's address refuses them.
fn judge(io: &impl Connection, received: Received) -> io::Result<Judged> {
    let fd = io.fd()?;
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
    if !received.fds.is_empty() && io.endpoint()?.refuses_descriptors() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "a record arrived with {} descriptor(s) on a connection whose address refuses \
                 them (AddressPolicy::descriptors(false)); it was dropped and they were closed",
                received.fds.len()
            ),
        ));
    }
    if !received.is_empty() {
        return Ok(Judged::Record(received.fds));
    }
    // End-of-stream reads as an empty record; a peer that sent an empty record
    // and hung up may still have records queued behind it.
    if socket::read_hung_up(fd)? && !msg::record_queued(fd)? {
        return Ok(Judged::End);
    }
    peer_warn!(
        fd = fd.as_raw_fd(),
        "skipped an empty record from a connected peer"
    );
    Ok(Judged::Skipped)
}

/// Names the limit an oversized record broke.
fn send_error(io: &impl Reactive, err: io::Error, len: usize) -> io::Error {
    if err.raw_os_error() != Some(nix::libc::EMSGSIZE) {
        return err;
    }
    let sndbuf = io.fd().and_then(socket::send_buffer_size);
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

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use proptest::prelude::*;

    use super::*;

    fn payload(seed: usize, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(131) ^ seed) as u8)
            .collect()
    }

    fn pair() -> (OwnedFd, OwnedFd) {
        socket::pair(nix::sys::socket::SockType::SeqPacket).expect("a socket pair")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// `msg::recv_appending` against a model, over limits, buffer shapes,
        /// dirty spill buffers and records shorter and longer than the limit.
        #[test]
        fn appending_matches_the_model(
            limit in 1usize..=3000,
            capacity in 0usize..=6000,
            initial in 0usize..=6000,
            spill_len in 0usize..=5000,
            lens in proptest::collection::vec(1usize..=4000, 1..8),
        ) {
            let (a, b) = pair();
            let mut buf = BytesMut::with_capacity(capacity);
            buf.extend_from_slice(&payload(99, initial.min(capacity)));
            let mut model = buf.to_vec();
            // A spill buffer left dirty by earlier records: its old bytes must
            // never reach `buf`.
            let mut spill = payload(77, spill_len);
            for (n, &len) in lens.iter().enumerate() {
                let sent = payload(n, len);
                msg::send_msg(a.as_fd(), &sent, &[]).expect("send");
                let spill_capacity = spill.capacity();
                let received = msg::recv_appending(b.as_fd(), &mut buf, &mut spill, limit)
                    .expect("recv");
                // It grows only to cover what the room in `buf` lacks.
                prop_assert!(spill.capacity() <= spill_capacity.max(limit));
                let kept = len.min(limit);
                prop_assert_eq!(received.data_truncated, len > limit);
                prop_assert_eq!(received.len, kept);
                model.extend_from_slice(&sent[..kept]);
                prop_assert!(buf[..] == model[..], "record {} of {} bytes, limit {}", n, len, limit);
                prop_assert!(spill.is_empty());
                spill.extend_from_slice(&payload(1000 + n, spill_len));
            }
        }

        /// `recv`'s buffers hold exactly the record and never more than twice
        /// its length, whatever the records before it on this thread.
        #[test]
        fn owned_buffers_are_exact_and_never_much_larger_than_the_record(
            lens in proptest::collection::vec(
                prop_oneof![1usize..=64, 1usize..=4096, 2000usize..=212_960],
                1..12,
            ),
        ) {
            let (a, b) = pair();
            for (n, &len) in lens.iter().enumerate() {
                let sent = payload(n, len);
                msg::send_msg(a.as_fd(), &sent, &[]).expect("send");
                let (received, data) = receive_new(b.as_fd()).expect("recv");
                prop_assert_eq!(received.len, len);
                prop_assert!(data[..] == sent[..], "record {} of {} bytes", n, len);
                prop_assert!(
                    data.capacity() <= 2 * len.max(8),
                    "a {}-byte record kept {} bytes", len, data.capacity()
                );
            }
        }
    }

    #[test]
    fn small_records_after_a_large_one_keep_their_own_size() {
        let (a, b) = pair();
        msg::send_msg(a.as_fd(), &payload(0, 200_000), &[]).expect("send");
        receive_new(b.as_fd()).expect("recv");
        for n in 0..100 {
            msg::send_msg(a.as_fd(), &payload(n, 16), &[]).expect("send");
            let (_, data) = receive_new(b.as_fd()).expect("recv");
            // The promise, not an allocator detail: at most twice the length.
            assert!(
                (16..=32).contains(&data.capacity()),
                "record {n} after a 200 KB one kept {} bytes",
                data.capacity()
            );
        }
    }
}
