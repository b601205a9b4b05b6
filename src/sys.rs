//! Every `unsafe` block in the crate: `sendmsg`/`recvmsg` with descriptors, and
//! taking ownership of descriptors the kernel installed for us or a parent passed us.
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
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use bytes::{BufMut, BytesMut};
use nix::libc;

use crate::ancillary::{self, ControlBuffer, Record, RightsBuffer};

const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
const RECV_FLAGS: libc::c_int = libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT;

/// What one `recvmsg` delivered.
#[derive(Debug, Default)]
pub struct Received {
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
    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.fds.is_empty() && !self.data_truncated && !self.control_truncated
    }
}

/// [sendmsg(2)] one record: `data` plus `fds` in one `SCM_RIGHTS` message.
///
/// [sendmsg(2)]: https://man7.org/linux/man-pages/man2/sendmsg.2.html
pub fn send_msg(socket: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
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
    // SAFETY: `header` points at `iov` and `control`, which outlive the call; the
    // kernel only reads through them on send.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &header, SEND_FLAGS) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// [send(2)] one record without descriptors: the kernel's single-buffer path, no
/// `msghdr` or iovec to copy in.
///
/// [send(2)]: https://man7.org/linux/man-pages/man2/send.2.html
fn send(socket: BorrowedFd<'_>, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is a live buffer of `data.len()` bytes that the kernel only reads.
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
    // SAFETY: every pointer in `header` refers to a live, writable buffer of the
    // stated length that outlives the call; the kernel writes at most those lengths.
    let got = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut header, flags) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
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
    // we are its only owner.
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
pub fn recv_appending(
    socket: BorrowedFd<'_>,
    buf: &mut BytesMut,
    spill: &mut Vec<u8>,
    limit: usize,
) -> io::Result<Received> {
    let room = (buf.capacity() - buf.len()).min(limit);
    spill.clear();
    spill.reserve(limit - room);
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
pub fn recv_request(socket: BorrowedFd<'_>) -> io::Result<(Option<u8>, Received)> {
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

/// Types that own exactly one open descriptor for as long as they live, and always
/// report it from `as_fd`: what [`LazyIo`] can register.
///
/// # Safety
///
/// [`LazyIo`] registers the number `as_fd` returns and relies on it staying open,
/// and the same, until the owner is dropped. An implementation that returned
/// another descriptor, or let it be closed or replaced, would leave the reactor
/// watching a number that may be reused.
pub unsafe trait OwnsFd: AsFd {}

// SAFETY: an `OwnedFd` closes its descriptor only when dropped and never changes it.
unsafe impl OwnsFd for OwnedFd {}

// SAFETY: `EpollSet` owns the epoll instance's `OwnedFd` (a private field never
// replaced) and returns it from `as_fd`.
unsafe impl OwnsFd for crate::address_set::EpollSet {}

// SAFETY: an `Endpoint` owns its `OwnedFd` (a field private to `wait.rs`, set when
// the endpoint is made and moved out only by consuming it) and returns it from
// `as_fd`.
unsafe impl OwnsFd for crate::wait::Endpoint {}

/// Registers a connection's endpoint with the current runtime's reactor; on
/// failure the endpoint comes back with the error.
pub fn register_endpoint(
    endpoint: crate::wait::Endpoint,
) -> Result<tokio::io::unix::AsyncFd<crate::wait::Endpoint>, (crate::wait::Endpoint, io::Error)> {
    // SAFETY: an `Endpoint` owns its descriptor: the field is private to
    // `wait.rs`, set only when the endpoint is made and moved out only by consuming
    // it, and the crate never reaches an `Endpoint` inside an `AsyncFd` mutably
    // (no `get_mut`/`ready_mut`/`readable_mut`), so it cannot be replaced. So the
    // descriptor stays open, and the same, until the `AsyncFd` is dropped (which
    // deregisters it before the endpoint, and so the descriptor, is dropped) or
    // `into_inner` gives the endpoint back.
    unsafe { tokio::io::unix::AsyncFd::register(endpoint) }.map_err(|failed| failed.into_parts())
}

/// The number of a descriptor that a [`LazyIo`] owns, as registered with Tokio.
#[derive(Debug)]
pub struct FdNumber(RawFd);

impl AsRawFd for FdNumber {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Serialises first registrations, so two tasks cannot both add one descriptor
/// to the reactor (the second `epoll_ctl` would fail with `EEXIST`).
static REGISTERING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A descriptor that is registered with the Tokio reactor only when an operation
/// on it would block.
///
/// Every operation is first tried directly; most connections exchange a few
/// records and close without ever waiting, and then never pay for
/// `epoll_ctl(ADD)`/`epoll_ctl(DEL)` or a reactor turn to learn their readiness.
/// Once registered, operations go through the reactor's readiness as usual.
pub struct LazyIo<T: OwnsFd> {
    // Declared before `owner`: dropped, so deregistered, before the descriptor
    // closes. `into_inner` keeps that order too.
    registration: std::sync::OnceLock<tokio::io::unix::AsyncFd<FdNumber>>,
    owner: T,
}

impl<T: OwnsFd> LazyIo<T> {
    /// Wraps `owner`; nothing is registered yet, and no runtime is needed.
    pub fn new(owner: T) -> Self {
        LazyIo {
            registration: std::sync::OnceLock::new(),
            owner,
        }
    }

    /// The owner.
    pub fn get_ref(&self) -> &T {
        &self.owner
    }

    /// The descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.owner.as_fd()
    }

    /// Deregisters (if registered) and returns the owner.
    pub fn into_inner(self) -> T {
        let LazyIo {
            registration,
            owner,
        } = self;
        drop(registration);
        owner
    }

    /// The same owner, deregistered: it registers again, with whichever runtime
    /// it next waits in.
    pub fn unregistered(self) -> Self {
        LazyIo::new(self.into_inner())
    }

    /// Whether the descriptor is registered with a reactor yet.
    pub fn is_registered(&self) -> bool {
        self.registration.get().is_some()
    }

    /// The registration, made on first use in the current runtime.
    pub fn registration(&self) -> io::Result<&tokio::io::unix::AsyncFd<FdNumber>> {
        if let Some(registration) = self.registration.get() {
            return Ok(registration);
        }
        crate::runtime::require("waiting on a tokio-imc socket")?;
        let _guard = REGISTERING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(registration) = self.registration.get() {
            return Ok(registration);
        }
        let number = FdNumber(self.owner.as_fd().as_raw_fd());
        // SAFETY: `number` is the descriptor `self.owner` owns. The registration
        // is stored in `self` next to the owner and is dropped before it (field
        // order, and `into_inner`), so the descriptor stays open, and the same,
        // for the registration's whole life.
        let registration =
            unsafe { tokio::io::unix::AsyncFd::register(number) }.map_err(io::Error::from)?;
        let _ = self.registration.set(registration);
        self.registration
            .get()
            .ok_or_else(|| io::Error::other("the reactor registration could not be stored"))
    }

    /// Runs `op` until it does not return `WouldBlock`: first directly if not yet
    /// registered, then each time the reactor reports `interest`.
    pub async fn async_io<R>(
        &self,
        interest: tokio::io::Interest,
        mut op: impl FnMut(BorrowedFd<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        if !self.is_registered() {
            match op(self.fd()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
        }
        self.registration()?
            .async_io(interest, |_| op(self.fd()))
            .await
    }
}

/// Arranges for `fds` to survive `exec` into the child that `command` spawns, at
/// their current numbers, and for every other descriptor to be close-on-exec there.
/// The descriptors move into the command and are closed with it in this process.
pub fn keep_across_exec(command: &mut std::process::Command, fds: Vec<OwnedFd>) {
    use std::os::unix::process::CommandExt;

    let numbers: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let hook = move || {
        // Owned here so they stay open until the command is dropped.
        let _owned = &fds;
        // SAFETY (both calls): raw syscalls only, which are async-signal-safe as
        // pre_exec requires; they change descriptor flags, not memory.
        // close_range(3, ~0, CLOSE_RANGE_CLOEXEC) (Linux 5.11) marks every other
        // descriptor close-on-exec so nothing else leaks; on older kernels it fails
        // and our own descriptors were close-on-exec already.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        for &fd in &numbers {
            // SAFETY: see above; `fd` is open (owned by `_owned`).
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe syscalls and allocates nothing.
    unsafe { command.pre_exec(hook) };
}

/// Takes ownership of descriptor `number`, which our parent passed us, once it is
/// known to be open, to have been inherited, and to pass `check`; until then it is
/// only borrowed. A descriptor that fails any of these is left exactly as it was:
/// open (if it was), its flags unchanged, owned by nobody.
///
/// A descriptor that survived `exec` has `FD_CLOEXEC` clear; everything this
/// process opened itself (Rust's standard library, Tokio and this crate all open
/// close-on-exec) has it set. So a close-on-exec number is refused, untouched: a
/// stale or forged variable cannot make us take, and later close, a descriptor
/// that something else in this process owns. `check` then proves the rest (in
/// [`crate::handoff`]: that it is the very file the parent named, and of the type
/// the caller needs) on a borrow that cannot outlive the call.
///
/// The caller guarantees that `number` is handed out once: [`crate::handoff`]
/// calls this under its lock, only for a number it has not handed out before, and
/// records the number as taken before releasing the lock.
pub fn take_inherited(
    number: RawFd,
    check: impl FnOnce(BorrowedFd<'_>) -> io::Result<()>,
) -> io::Result<OwnedFd> {
    let flags = if number < 0 {
        -1
    } else {
        // SAFETY: F_GETFD on a number reads that descriptor's flags (or fails with
        // EBADF); it touches no memory and changes nothing.
        unsafe { libc::fcntl(number, libc::F_GETFD) }
    };
    if flags == -1 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("inherited descriptor {number} is not open in this process"),
        ));
    }
    if flags & libc::FD_CLOEXEC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "descriptor {number} was not inherited (it is close-on-exec, so this process \
                 opened it): the variable naming it is stale; it was left alone"
            ),
        ));
    }
    {
        // SAFETY: `borrow_raw` needs the descriptor to stay open for the borrow's
        // life. It is open (F_GETFD just succeeded). It is not close-on-exec, so it
        // was inherited across exec rather than opened by this process's Rust code,
        // and a descriptor inherited and named in the hand-off variable belongs to
        // the hand-off until taken: nothing else in the process owns it, so nothing
        // may close it (closing a descriptor one does not own breaks I/O safety).
        // By this function's contract it has not been taken before, and takes are
        // serialised, so no `OwnedFd` for it exists that could close it meanwhile.
        // The borrow is lent to `check` only, which must accept it for any
        // lifetime and so cannot keep it, and it ends before ownership is taken
        // below.
        let borrowed = unsafe { BorrowedFd::borrow_raw(number) };
        check(borrowed)?;
    }
    // SAFETY: the descriptor is open and inherited, owned by nothing else in this
    // process (see the borrow above, which has ended), and by this function's
    // contract handed out this once, so this `OwnedFd` is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(number) })
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
pub fn record_queued(socket: BorrowedFd<'_>) -> io::Result<bool> {
    use nix::sys::socket::{setsockopt, sockopt::ReceiveTimestamp};
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    setsockopt(&socket, ReceiveTimestamp, &true)?;
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    let peeked = recv_msg_with(socket, &mut byte, &mut [], RECV_FLAGS | libc::MSG_PEEK);
    setsockopt(&socket, ReceiveTimestamp, &false)?;
    let peeked = peeked?;
    Ok(peeked.len > 0
        || peeked.data_truncated
        || peeked.control_truncated
        || !peeked.fds.is_empty()
        || peeked.timestamps > 0
        || peeked.other_records > 0)
}

/// Whether the peer of a connected socket has hung up (or we shut down reading):
/// `poll(POLLRDHUP)` with a zero timeout. Used only after an empty read, to tell
/// end-of-stream from an empty record.
pub fn read_hung_up(socket: BorrowedFd<'_>) -> io::Result<bool> {
    let mut poll_fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `poll_fd` is one valid pollfd that lives across the call; timeout 0.
    if unsafe { libc::poll(&mut poll_fd, 1, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(poll_fd.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0)
}
