//! `sendmsg`/`recvmsg` with descriptors, and taking ownership of the descriptors
//! the kernel installed for us.
//!
//! Flags are fixed here, once, for every caller:
//! - sends pass `MSG_NOSIGNAL` (a closed peer is `EPIPE`, never `SIGPIPE`) and
//!   `MSG_DONTWAIT`;
//! - receives pass `MSG_CMSG_CLOEXEC` (received descriptors are close-on-exec from
//!   the moment they exist) and `MSG_DONTWAIT`.
//!
//! `MSG_DONTWAIT` matters because `O_NONBLOCK` lives on the open file description,
//! which a peer holding a duplicate can clear at any time: the per-call flag makes
//! the call non-blocking whatever the descriptor's flags say, so a runtime thread
//! can never be put to sleep by a peer.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use bytes::{BufMut, BytesMut};
use nix::libc;

use crate::ancillary::{self, ControlBuffer, Record, RightsBuffer};
use crate::sys::faults::{inject, retry_interrupted, Call};

const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
const RECV_FLAGS: libc::c_int = libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT;

/// What one `recvmsg` delivered.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// Bytes copied into the caller's buffers.
    pub len: usize,
    /// `MSG_TRUNC`: the record was longer than the buffers; the rest is lost.
    pub data_truncated: bool,
    /// `MSG_CTRUNC`: control data was cut, so descriptors were lost (most often
    /// the kernel could not install them: `EMFILE`).
    pub control_truncated: bool,
    /// The `SCM_RIGHTS` descriptors, owned from the moment the call returned.
    pub fds: Vec<OwnedFd>,
    /// Descriptors that arrived outside `SCM_RIGHTS` (`SCM_PIDFD`); already closed.
    pub stray_fds: usize,
    /// Control records of other kinds, ignored.
    pub other_records: usize,
    /// `SCM_TIMESTAMP` records: harmless (no descriptor, no data), so not
    /// counted as other records. They arrive while [`record_queued`] has
    /// `SO_TIMESTAMP` on for a peek, or when a peer turned it on through a
    /// duplicate of our end.
    pub timestamps: usize,
    /// The control data did not parse to the end.
    pub malformed_control: bool,
}

impl Received {
    /// True for end-of-stream on a connection-oriented socket: no bytes, no control.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0 && self.fds.is_empty() && !self.data_truncated && !self.control_truncated
    }
}

/// [sendmsg(2)] one record: `data` plus `fds` in one `SCM_RIGHTS` message.
///
/// [sendmsg(2)]: https://man7.org/linux/man-pages/man2/sendmsg.2.html
pub(crate) fn send_msg(
    socket: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if fds.is_empty() {
        return send(socket, data);
    }
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header (null pointers, zero lengths).
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    let mut rights = RightsBuffer::new();
    let control = rights.encode(fds)?;
    header.msg_control = control.as_ptr() as *mut libc::c_void;
    header.msg_controllen = control.len() as _;
    retry_interrupted(|| {
        inject(Call::SendMsg)?;
        // SAFETY: `header` points at `iov` and `control`, which outlive the call;
        // the kernel only reads through them on send.
        let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &header, SEND_FLAGS) };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(sent as usize)
        }
    })
}

/// [send(2)] one record without descriptors: the kernel's single-buffer path, no
/// `msghdr` or iovec to copy in.
///
/// [send(2)]: https://man7.org/linux/man-pages/man2/send.2.html
fn send(socket: BorrowedFd<'_>, data: &[u8]) -> io::Result<usize> {
    retry_interrupted(|| {
        inject(Call::Send)?;
        // SAFETY: `data` is a live buffer of `data.len()` bytes that the kernel only
        // reads.
        let sent = unsafe {
            libc::send(
                socket.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                SEND_FLAGS,
            )
        };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(sent as usize)
        }
    })
}

/// [recvmsg(2)] one record into `head`, spilling into `tail`, and takes ownership of
/// every descriptor the kernel installed before looking at anything else.
///
/// [recvmsg(2)]: https://man7.org/linux/man-pages/man2/recvmsg.2.html
fn recv_msg(
    socket: BorrowedFd<'_>,
    head: &mut [MaybeUninit<u8>],
    tail: &mut [MaybeUninit<u8>],
) -> io::Result<Received> {
    recv_msg_with(socket, head, tail, RECV_FLAGS)
}

/// [`recv_msg`] with `flags` (which must include [`RECV_FLAGS`]).
fn recv_msg_with(
    socket: BorrowedFd<'_>,
    head: &mut [MaybeUninit<u8>],
    tail: &mut [MaybeUninit<u8>],
    flags: libc::c_int,
) -> io::Result<Received> {
    debug_assert_eq!(flags & RECV_FLAGS, RECV_FLAGS);
    let mut control = ControlBuffer::new();
    let control_space = control.as_mut_bytes();
    let mut iov = [
        libc::iovec {
            iov_base: head.as_mut_ptr().cast(),
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: tail.as_mut_ptr().cast(),
            iov_len: tail.len(),
        },
    ];
    // SAFETY: an all-zero msghdr is a valid empty header (null pointers, zero lengths).
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = iov.as_mut_ptr();
    header.msg_iovlen = if tail.is_empty() { 1 } else { 2 };
    header.msg_control = control_space.as_mut_ptr().cast();
    header.msg_controllen = control_space.len() as _;
    let got = retry_interrupted(|| {
        inject(Call::RecvMsg)?;
        // SAFETY: every pointer in `header` refers to a live, writable buffer of
        // the stated length that outlives the call; the kernel writes at most
        // those lengths.
        let got = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut header, flags) };
        if got < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(got)
        }
    })?;
    let control_bytes = control.filled(header.msg_controllen as usize);

    let mut received = Received {
        len: got as usize,
        data_truncated: header.msg_flags & libc::MSG_TRUNC != 0,
        control_truncated: header.msg_flags & libc::MSG_CTRUNC != 0,
        ..Received::default()
    };
    for record in ancillary::parse(control_bytes) {
        match record {
            Record::Rights(numbers) => {
                for raw in numbers {
                    match adopt_received(raw) {
                        Some(fd) => received.fds.push(fd),
                        // The kernel reports a failure to install one with
                        // MSG_CTRUNC; treat a negative number the same way.
                        None => received.control_truncated = true,
                    }
                }
            }
            Record::PidFd(numbers) => {
                // A pidfd the kernel could not make arrives as a negative errno
                // (e.g. -EMFILE): nothing to close, but still a stray record.
                for raw in numbers {
                    match adopt_received(raw) {
                        Some(_closed_on_drop) => received.stray_fds += 1,
                        None => received.other_records += 1,
                    }
                }
            }
            Record::Other {
                level: libc::SOL_SOCKET,
                kind: libc::SCM_TIMESTAMP,
            } => received.timestamps += 1,
            Record::Other { .. } => received.other_records += 1,
            Record::Malformed => received.malformed_control = true,
        }
    }
    Ok(received)
}

/// Takes ownership of a descriptor number from a control record; `None` for a
/// negative number, which is an error code and never a descriptor.
fn adopt_received(raw: RawFd) -> Option<OwnedFd> {
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is non-negative and comes from a control record the kernel
    // wrote in the recvmsg call that just returned: it installed this descriptor in
    // our table for us, and nothing else in the process knows its number yet, so
    // we are its only owner. That "comes from" rests on `ancillary::parse`
    // returning only numbers inside the `SCM_RIGHTS` payloads of the bytes the
    // kernel filled (`ControlBuffer::filled`): `ancillary.rs` is trusted code for
    // this block (bounds-checked, property-tested and fuzzed; see ARCHITECTURE.md).
    Some(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Receives one record of at most `limit` bytes and appends its bytes to `buf`.
///
/// The kernel writes the record straight into `buf`'s spare room (up to `limit`
/// bytes of it) and, only if that room is smaller than `limit`, spills the rest
/// into `spill`, from where it is copied onto the end of `buf`. So a record that
/// fits the room is copied once, and a record longer than `limit` is always
/// truncated by the kernel (`MSG_TRUNC`), whatever `buf`'s capacity.
///
/// On return `buf` holds exactly its old bytes followed by the record's first
/// `received.len` bytes, and `spill` is empty (its capacity is kept for reuse).
pub(crate) fn recv_appending(
    socket: BorrowedFd<'_>,
    buf: &mut BytesMut,
    spill: &mut Vec<u8>,
    limit: usize,
) -> io::Result<Received> {
    let room = (buf.capacity() - buf.len()).min(limit);
    spill.clear();
    // Exact: the spill buffer lives as long as its thread, so it should not keep
    // more than the largest shortfall it has covered.
    spill.reserve_exact(limit - room);
    let head = &mut buf.spare_capacity_mut()[..room];
    let tail = &mut spill.spare_capacity_mut()[..limit - room];
    let mut received = recv_msg(socket, head, tail)?;
    // recvmsg never reports more than the iovecs hold; clamp anyway, so the
    // lengths below can never exceed what was written.
    received.len = received.len.min(limit);
    let in_head = received.len.min(room);
    // SAFETY: recvmsg filled the iovecs in order with `received.len` bytes (at most
    // `room + (limit - room)`): the first `in_head` bytes of `buf`'s spare room,
    // then the first `received.len - in_head` bytes of `spill`'s spare capacity,
    // which was empty before (`clear` above). Those bytes are initialised.
    unsafe {
        buf.advance_mut(in_head);
        spill.set_len(received.len - in_head);
    }
    buf.extend_from_slice(spill);
    spill.clear();
    Ok(received)
}

/// Receives one connect request: exactly one byte, never more, so that two requests
/// on a stream socket can never merge; plus its control data.
pub(crate) fn recv_request(socket: BorrowedFd<'_>) -> io::Result<(Option<u8>, Received)> {
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    let received = recv_msg(socket, &mut byte, &mut [])?;
    let value = if received.len == 1 {
        // SAFETY: recvmsg reported one byte written to `byte`.
        Some(unsafe { byte[0].assume_init() })
    } else {
        None
    };
    Ok((value, received))
}

/// Whether a bound socket (a stream) is at end-of-stream with nothing queued:
/// every holder of its address closed it and every request was read. A
/// one-byte `MSG_PEEK` without room for control data, so a queued request's
/// descriptors are not even installed.
pub(crate) fn at_end_of_stream(bound: BorrowedFd<'_>) -> io::Result<bool> {
    use nix::sys::socket::{recv, MsgFlags};
    let mut byte = [0u8; 1];
    let peeked = retry_interrupted(|| {
        inject(Call::RecvMsg)?;
        Ok(recv(
            bound.as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        )?)
    });
    match peeked {
        Ok(len) => Ok(len == 0),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(err) => Err(err),
    }
}

/// After an empty read from a peer that has hung up: whether a record (even an
/// empty one) is still queued, as opposed to end-of-stream, which reads as empty
/// too.
///
/// While `SO_TIMESTAMP` is on, the kernel attaches a timestamp to every record it
/// delivers, and nothing to end-of-stream. So it is turned on for one `MSG_PEEK`
/// and off again. Descriptors a peek installs are closed at once.
///
/// One check at a time in the process: two receivers of one socket (a shared
/// `RecvHalf`) must not turn the option off under each other's peek. A receiver
/// that is not peeking may get a timestamp meanwhile; it is ignored
/// ([`Received::timestamps`]).
pub(crate) fn record_queued(socket: BorrowedFd<'_>) -> io::Result<bool> {
    use nix::sys::socket::{setsockopt, sockopt::ReceiveTimestamp};
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    inject(Call::SockOpt)?;
    setsockopt(&socket, ReceiveTimestamp, &true)?;
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    let mut peek = || recv_msg_with(socket, &mut byte, &mut [], RECV_FLAGS | libc::MSG_PEEK);
    // A peer that closed with records of ours unread leaves ECONNRESET pending
    // (reported once, ahead of what it sent): it says nothing of what is queued.
    let peeked = match peek() {
        Err(err) if err.raw_os_error() == Some(libc::ECONNRESET) => peek(),
        other => other,
    };
    setsockopt(&socket, ReceiveTimestamp, &false)?;
    let peeked = peeked?;
    Ok(peeked.len > 0
        || peeked.data_truncated
        || peeked.control_truncated
        || !peeked.fds.is_empty()
        || peeked.timestamps > 0
        || peeked.other_records > 0)
}
