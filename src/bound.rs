//! [`BoundSocket`]: the server end of a bound pair, and [`make_bound_socket`].

use std::fmt;
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard};
use std::task::{ready, Context, Poll, Waker};

use nix::sys::socket::SockType;
use tokio::io::Interest;
use tokio::sync::Notify;

use crate::address_set::AddressSet;
use crate::request::{self, Taken};
use crate::sys::endpoint::Admission;
use crate::sys::reactor::{Reactive, SharedIo};
use crate::sys::{endpoint, msg, socket};
use crate::{validate, AddressId, AddressPolicy, ConnectedSocket, SocketAddress};
use std::sync::Arc;

/// How many failed receives `revoke` of the original address tolerates while it
/// drops the queued requests.
const DRAIN_ATTEMPTS: u32 = 16;

/// Makes a bound socket and its address: `socketpair(AF_UNIX, SOCK_STREAM)`. No
/// name is created anywhere; the address is the only way in.
///
/// No runtime is needed to make one; `accept` and `connect` need a Tokio runtime
/// when they wait (or use [`crate::blocking`]).
///
/// # Errors
///
/// Fails when the process is out of descriptors.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let (address, bound) = tokio_imc::make_bound_socket()?;
/// tokio::spawn(async move {
///     loop {
///         match bound.accept().await {
///             Ok(mut connection) => {
///                 tokio::spawn(async move {
///                     while let Ok(Some(message)) = connection.recv().await {
///                         let _ = connection.send(&message.data, &[]).await;
///                     }
///                 });
///             }
///             // Final: no address is left (see `BoundSocket::accept`).
///             Err(e) if e.kind() == std::io::ErrorKind::NotConnected => break,
///             // Transient: back off, then keep serving.
///             Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
///         }
///     }
/// });
/// let mut connection = address.connect().await?;
/// connection.send(b"ping", &[]).await?;
/// assert_eq!(&connection.recv().await?.unwrap().data[..], b"ping");
/// # Ok(()) }
/// ```
pub fn make_bound_socket() -> io::Result<(SocketAddress, BoundSocket)> {
    let (address, bound) = socket::pair(SockType::Stream)?;
    Ok((
        SocketAddress::from_checked(address),
        BoundSocket::from_checked(bound)?,
    ))
}

/// The server end of a bound pair: [`accept`](Self::accept) receives the
/// connections that holders of its [`SocketAddress`] make.
///
/// Any number of tasks may accept on one `BoundSocket` at once; each request goes
/// to exactly one of them. Dropping it (and every duplicate) refuses later connects
/// and ends the connections still queued.
///
/// # Addresses as capabilities
///
/// Every holder of the original address shares one open file description: any of
/// them can shut it down or fill its queue for all. [`mint_address`](Self::mint_address)
/// gives each holder an address of its own instead, which the server can tell apart
/// ([`ConnectedSocket::address_id`]) and [`revoke`](Self::revoke) alone.
pub struct BoundSocket {
    /// The original bound end.
    io: SharedIo<OwnedFd>,
    /// The original address's id.
    id: AddressId,
    /// Made by the first `mint_address`; from then on `accept` serves every
    /// address through it.
    set: OnceLock<AddressSet>,
    /// Wakes `accept` calls waiting on the original alone when the set appears.
    set_made: Notify,
    /// Set by `revoke` of the original: requests read from it are dropped.
    original_revoked: AtomicBool,
    /// Makes `revoke` and accept attempts exclusive (see [`Self::revoke`]).
    admission: RwLock<()>,
    /// The waker of a `poll_accept` waiting on the original alone, woken when
    /// the set appears.
    accept_waker: Mutex<Option<Waker>>,
}

impl BoundSocket {
    pub(crate) fn from_checked(fd: OwnedFd) -> io::Result<Self> {
        Ok(BoundSocket {
            io: SharedIo::new(fd),
            id: AddressId::next()?,
            set: OnceLock::new(),
            set_made: Notify::new(),
            original_revoked: AtomicBool::new(false),
            admission: RwLock::new(()),
            accept_waker: Mutex::new(None),
        })
    }

    /// The id of the original address (the one [`make_bound_socket`] returned).
    pub fn address_id(&self) -> AddressId {
        self.id
    }

    /// Waits for the next well-formed connect request and returns its connection.
    ///
    /// Malformed requests (a byte other than `c`, no descriptor, several, one that
    /// is not a connected `AF_UNIX` `SOCK_SEQPACKET` socket, or one whose
    /// descriptors could not all be received because this process ran out of them,
    /// `MSG_CTRUNC`) are dropped with a rate-limited `tracing` warning, their
    /// descriptors closed and their clients' connections ended, and `accept` keeps
    /// waiting: no holder can make it fail, whatever it sends.
    ///
    /// # Errors
    ///
    /// Which errors are final:
    /// - `NotConnected`: final. Every [`SocketAddress`] of this socket is closed
    ///   (or a holder shut the address down, or it was revoked) and the queue is
    ///   empty: no connection can arrive any more, and every later call fails the
    ///   same way at once (until [`mint_address`](Self::mint_address) makes a new
    ///   one). Stop accepting.
    /// - Outside a Tokio runtime with IO enabled, when it has to wait: final for
    ///   that context (use [`crate::blocking`]).
    /// - Anything else comes from the operating system (e.g. `ENOMEM` while
    ///   registering with the reactor) and is transient: back off briefly and call
    ///   again, as with `EMFILE` from tokio's `TcpListener::accept`.
    ///
    /// A server loop that keeps serving:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// # let (address, bound) = tokio_imc::make_bound_socket()?;
    /// # drop(address);
    /// loop {
    ///     match bound.accept().await {
    ///         Ok(connection) => {
    ///             tokio::spawn(async move { /* serve `connection` */ drop(connection) });
    ///         }
    ///         // No address is left: nothing can arrive any more.
    ///         Err(e) if e.kind() == std::io::ErrorKind::NotConnected => break,
    ///         // Transient: back off, then keep serving.
    ///         Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Revocation
    ///
    /// Once [`revoke`](Self::revoke) of an address has returned, no `accept` that
    /// starts afterwards, on any thread, returns a connection through it; an
    /// `accept` already running either took its request before the revoke (and
    /// returns it) or drops it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a request is taken off the socket only by the call that returns
    /// its connection in the same poll, so a dropped future loses no request.
    pub async fn accept(&self) -> io::Result<ConnectedSocket> {
        loop {
            if let Some(set) = self.set.get() {
                return self.accept_from_set(set).await;
            }
            if let Some(connection) = self.accept_original().await? {
                return Ok(connection);
            }
        }
    }

    /// [`accept`](Self::accept) as a poll, for `Stream` adapters (see also
    /// [`incoming`](Self::incoming)): `Ready` with what `accept` would return,
    /// `Pending` (with `cx`'s waker registered) while no request is queued. A
    /// `Pending` poll accepted nothing; a malformed request is dropped as by
    /// `accept`, and the poll then yields (`Pending`, woken at once) so a flood
    /// cannot hold the thread.
    ///
    /// Tokio keeps the waker of the last poll only (as with its own
    /// `UnixListener::poll_accept`): poll from one task at a time. Tasks that
    /// accept on one socket at once use [`accept`](Self::accept), which wakes
    /// each of them.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<ConnectedSocket>> {
        let dropped = loop {
            if let Some(set) = self.set.get() {
                let original = self.io.fd();
                let mut io = set.io();
                let attempt = ready!(io.poll_io(cx, Interest::READABLE, |_| {
                    self.take_from_set(set, original)
                }))?;
                match attempt {
                    Some(connection) => return Poll::Ready(Ok(connection)),
                    None => break true,
                }
            }
            let mut io = &self.io;
            match io.poll_io(cx, Interest::READABLE, |fd| self.take_from_original(fd)) {
                Poll::Ready(Ok(Some(connection))) => return Poll::Ready(Ok(connection)),
                Poll::Ready(Ok(None)) => break true,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => {}
            }
            // Waiting on the original alone: be woken when the set appears too.
            *self.accept_waker() = Some(cx.waker().clone());
            if self.set.get().is_none() {
                break false;
            }
        };
        if dropped {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    fn accept_waker(&self) -> MutexGuard<'_, Option<Waker>> {
        self.accept_waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Accepts from the original address alone; `None` when minting began, so the
    /// caller switches to the set.
    async fn accept_original(&self) -> io::Result<Option<ConnectedSocket>> {
        let set_made = self.set_made.notified();
        tokio::pin!(set_made);
        set_made.as_mut().enable();
        loop {
            if self.set.get().is_some() {
                return Ok(None);
            }
            let mut io = &self.io;
            let take = io.io(Interest::READABLE, |fd| self.take_from_original(fd));
            tokio::pin!(take);
            // `take` first: a request it took is returned, never dropped.
            let taken = std::future::poll_fn(|cx| match take.as_mut().poll(cx) {
                Poll::Ready(taken) => Poll::Ready(Some(taken)),
                Poll::Pending => set_made.as_mut().poll(cx).map(|()| None),
            });
            match taken.await {
                None => return Ok(None),
                Some(taken) => match taken? {
                    Some(connection) => return Ok(Some(connection)),
                    // Dropped: give other tasks a turn between dropped requests,
                    // so a flood of garbage cannot monopolise the thread.
                    None => tokio::task::consume_budget().await,
                },
            }
        }
    }

    /// Takes one request from the original address and judges it: the connection,
    /// `None` for a request dropped (malformed, or the address is revoked), or an
    /// error (`WouldBlock` when none is queued, `NotConnected` when no address is
    /// left). Runs under the admission lock, so a concurrent `revoke` of the
    /// original comes wholly before (the request is dropped) or after.
    fn take_from_original(&self, original: BorrowedFd<'_>) -> io::Result<Option<ConnectedSocket>> {
        let _admitting = self.admitting();
        let raw = request::receive(original)?;
        // Revoked: a queued request is dropped unjudged (and unlogged).
        if raw.is_request() && self.original_revoked.load(Ordering::Acquire) {
            return Ok(None);
        }
        match request::judge_raw(raw, self.id) {
            Taken::Connection(fd) => Ok(Some(self.connection(fd, self.id, None))),
            Taken::Dropped => Ok(None),
            Taken::NoAddresses => Err(request::no_addresses()),
        }
    }

    /// Takes one request from the next ready address of the set and judges it,
    /// as [`take_from_original`](Self::take_from_original) does for the
    /// original. The connection is made (and enters the register `disconnect`
    /// reads) under the admission lock: a `revoke` then `disconnect` either
    /// finds it there or keeps it from being admitted.
    fn take_from_set(
        &self,
        set: &AddressSet,
        original: BorrowedFd<'_>,
    ) -> io::Result<Option<ConnectedSocket>> {
        let _admitting = self.admitting();
        let taken = set.try_accept(original)?;
        Ok(taken.map(|(fd, id, admission)| self.connection(fd, id, admission)))
    }

    /// Shared by every accept attempt between taking a request off a socket and
    /// making its connection; `revoke` takes it exclusively.
    fn admitting(&self) -> RwLockReadGuard<'_, ()> {
        self.admission
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn accept_from_set(&self, set: &AddressSet) -> io::Result<ConnectedSocket> {
        let original = self.io.fd();
        loop {
            let mut io = set.io();
            let attempt = io
                .io(Interest::READABLE, |_| self.take_from_set(set, original))
                .await?;
            match attempt {
                Some(connection) => return Ok(connection),
                // Dropped: as in `accept_original`.
                None => tokio::task::consume_budget().await,
            }
        }
    }

    /// The same bound socket (ids, minted addresses and all), deregistered from
    /// its reactor (for moving between the blocking facade and async code).
    pub(crate) fn unregistered(self) -> Self {
        let BoundSocket {
            io,
            id,
            set,
            original_revoked,
            ..
        } = self;
        let moved = OnceLock::new();
        if let Some(set) = set.into_inner() {
            let _ = moved.set(set.unregistered());
        }
        BoundSocket {
            io: io.unregistered(),
            id,
            set: moved,
            set_made: Notify::new(),
            original_revoked,
            admission: RwLock::new(()),
            accept_waker: Mutex::new(None),
        }
    }

    fn connection(
        &self,
        fd: OwnedFd,
        id: AddressId,
        admission: Option<Arc<dyn Admission>>,
    ) -> ConnectedSocket {
        tracing::debug!(address_id = %id, fd = fd.as_raw_fd(), "accepted");
        ConnectedSocket::accepted(fd, id, admission)
    }

    /// Makes a new address for this bound socket: its own socket pair, so its
    /// holders share nothing with the holders of any other address. Connections
    /// through it report its id from [`ConnectedSocket::address_id`].
    ///
    /// The wire protocol is unchanged: a client cannot tell a minted address from
    /// the original. The first call switches `accept` to serving every address in
    /// turn through one epoll set; the cost of one `accept` does not grow with the
    /// number of addresses.
    ///
    /// # Errors
    ///
    /// Fails when the process is out of descriptors (each minted address holds two
    /// while both ends are in this process, one once the address is handed out), or
    /// after 2<sup>32</sup> − 1 addresses were made in this process.
    pub fn mint_address(&self) -> io::Result<(AddressId, SocketAddress)> {
        self.mint_address_with(AddressPolicy::new())
    }

    /// As [`mint_address`](Self::mint_address), for an address with limits:
    /// how many connections it admits in total, how many may be open at once,
    /// when it expires, whether its connections may carry descriptors (see
    /// [`AddressPolicy`]). The server alone enforces them; a holder cannot
    /// tell, and the wire protocol is unchanged.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a policy that would admit nothing
    /// (`max_connections(0)`, `max_open(0)`); otherwise as `mint_address`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// use tokio_imc::{make_bound_socket, AddressPolicy};
    ///
    /// let (_address, bound) = make_bound_socket()?;
    /// // This holder may keep two connections open at once.
    /// let (id, address) = bound.mint_address_with(AddressPolicy::new().max_open(2))?;
    /// let (_c1, s1) = tokio::try_join!(address.connect(), bound.accept())?;
    /// let (_c2, _s2) = tokio::try_join!(address.connect(), bound.accept())?;
    /// let _c3 = address.connect().await?; // queued, not admitted yet
    /// let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), bound.accept());
    /// assert!(waiting.await.is_err(), "two are open: the third waits");
    /// drop(s1); // room for one more
    /// assert_eq!(bound.accept().await?.address_id(), Some(id));
    /// # Ok(()) }
    /// ```
    pub fn mint_address_with(
        &self,
        policy: AddressPolicy,
    ) -> io::Result<(AddressId, SocketAddress)> {
        let set = self.address_set()?;
        let (id, address) = set.mint(policy)?;
        tracing::debug!(address_id = %id, ?policy, "minted an address");
        Ok((id, SocketAddress::from_checked(address)))
    }

    /// Waits for the next address, original or minted, that every holder has
    /// closed (every copy of its descriptor gone, or shut down by a holder)
    /// and whose queued requests were all read: the server can drop what it
    /// keeps for that holder. Each such address is reported once, oldest
    /// first, whenever it happened (also before the first call). Revoked,
    /// expired and used-up addresses are not reported: they went by the
    /// server's own action.
    ///
    /// Needs no `accept` to run meanwhile; an address whose holders left with
    /// requests still queued is reported once `accept` has read them.
    /// Calling it switches `accept` to the address set, as
    /// [`mint_address`](Self::mint_address) does.
    ///
    /// # Errors
    ///
    /// `NotConnected` when this socket serves no address any more and every
    /// release was reported (until a new one is minted). Otherwise transient
    /// errors from the operating system (`ENOMEM` and the like).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an address is taken off the queue of releases only by the
    /// poll that returns it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let (_address, bound) = tokio_imc::make_bound_socket()?;
    /// let (id, address) = bound.mint_address()?;
    /// drop(address); // its one holder is gone
    /// assert_eq!(bound.released().await?, id);
    /// # Ok(()) }
    /// ```
    pub async fn released(&self) -> io::Result<AddressId> {
        let set = self.address_set()?;
        let original = self.io.fd();
        loop {
            let mut io = set.hang_ups(original)?;
            let attempt = io
                .io(Interest::READABLE, |_| set.try_release(original))
                .await?;
            match attempt {
                Some(id) => return Ok(id),
                // A member changed state: give other tasks a turn.
                None => tokio::task::consume_budget().await,
            }
        }
    }

    fn address_set(&self) -> io::Result<&AddressSet> {
        if let Some(set) = self.set.get() {
            return Ok(set);
        }
        let set = AddressSet::new(self.io.fd(), self.id)?;
        if self.original_revoked.load(Ordering::Acquire) {
            set.remove(self.id, self.io.fd())?;
        }
        // Another thread may have won the race; its set is the one kept.
        let _ = self.set.set(set);
        self.set_made.notify_waiters();
        if let Some(waker) = self.accept_waker().take() {
            waker.wake();
        }
        self.set
            .get()
            .ok_or_else(|| io::Error::other("the address set could not be initialised"))
    }

    /// Revokes one address: its holders' later connects fail with
    /// `ConnectionRefused`, and requests already queued on it are dropped (their
    /// clients see their connections end). Other addresses are not disturbed.
    ///
    /// Revoking the original address shuts it down for every holder of it.
    ///
    /// What it leaves alone: connections already accepted through the address
    /// keep working. To cut a holder off completely, revoke, then
    /// [`disconnect`](Self::disconnect) (in that order: once `revoke` returns,
    /// no new connection is admitted through the address).
    ///
    /// # Errors
    ///
    /// `NotFound` for an id this socket does not serve (any more).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let (_address, bound) = tokio_imc::make_bound_socket()?;
    /// let (bob, bobs_address) = bound.mint_address()?;
    /// let (mut bobs_end, mut ours) = tokio::try_join!(bobs_address.connect(), bound.accept())?;
    /// bound.revoke(bob)?; // bob can connect no more
    /// assert_eq!(bound.disconnect(bob)?, 1); // and his live connection ends
    /// assert!(bobs_end.recv().await?.is_none());
    /// assert!(bobs_end.send(b"still there?", &[]).await.is_err());
    /// assert!(ours.recv().await?.is_none());
    /// # Ok(()) }
    /// ```
    pub fn revoke(&self, id: AddressId) -> io::Result<()> {
        // No accept attempt is between taking a request and judging it while we
        // hold this: each one finished before (its connection counts as accepted
        // before the revoke) or starts after, and then finds the address gone.
        let _exclusive = self
            .admission
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if id == self.id {
            return self.revoke_original();
        }
        match self.set.get() {
            Some(set) => set.remove(id, self.io.fd()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("address {id} was never minted by this bound socket"),
            )),
        }?;
        tracing::debug!(address_id = %id, "revoked");
        Ok(())
    }

    /// Ends every live connection admitted through address `id`, wherever it
    /// is (in any task, split or not, async or blocking): both directions are
    /// shut down, so the peer reads end-of-stream and its sends fail with
    /// `BrokenPipe`, and so do ours. Returns how many connections it ended.
    ///
    /// Together with [`revoke`](Self::revoke) (first) it cuts a holder off
    /// completely. The server need not keep its connections for this: each one
    /// is known by address (a few words of memory a connection, taken on
    /// accept and given back when it is dropped). A connection turned into a
    /// plain descriptor (`OwnedFd::from`) is no longer reached. The register is
    /// this process's: a connection's descriptor sent to another process is
    /// ended too only because `shutdown` acts on the socket both share.
    ///
    /// # Errors
    ///
    /// `NotFound` for an id that was never an address of this bound socket.
    pub fn disconnect(&self, id: AddressId) -> io::Result<usize> {
        let ours = id == self.id || self.set.get().is_some_and(|set| set.ever_minted(id));
        if !ours {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("address {id} was never an address of this bound socket"),
            ));
        }
        let ended = endpoint::shut_down_admitted(id);
        tracing::debug!(address_id = %id, connections = ended, "disconnected");
        Ok(ended)
    }

    fn revoke_original(&self) -> io::Result<()> {
        if self.original_revoked.swap(true, Ordering::AcqRel) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("address {} is already revoked", self.id),
            ));
        }
        let original = self.io.fd();
        let cut_off = || -> io::Result<()> {
            // Holders' sends now fail with EPIPE; and its end-of-stream wakes
            // any `accept` waiting on the set (see `AddressSet::remove`).
            match self.set.get() {
                // Under the set's lock, so a `released` cannot see our own
                // shutdown as the holders leaving.
                Some(set) => set.shut_down_and_remove(self.id, original),
                None => socket::shutdown(original, Shutdown::Both),
            }
        };
        if let Err(err) = cut_off() {
            // Still served: a later revoke may try again.
            self.original_revoked.store(false, Ordering::Release);
            return Err(err);
        }
        // Drop what is already queued (their clients see their connections end).
        // A failed receive (`ENOMEM`) must not end this early: once the original
        // is out of the address set nothing reads it again, and a request left
        // queued would leave its client waiting for as long as the server lives.
        let mut failures = 0;
        loop {
            match msg::recv_request(original) {
                Ok((Some(_), dropped)) => drop(dropped),
                Ok((None, _)) => break,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    failures += 1;
                    if failures == DRAIN_ATTEMPTS {
                        tracing::warn!(address_id = %self.id, error = %err, "revoke: requests queued on the original address could not all be dropped");
                        break;
                    }
                }
            }
        }
        tracing::debug!(address_id = %self.id, "revoked the original address");
        Ok(())
    }
}

impl fmt::Debug for BoundSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundSocket")
            .field("fd", &self.as_raw_fd())
            .field("address_id", &self.id)
            .finish()
    }
}

impl AsFd for BoundSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.fd()
    }
}

impl AsRawFd for BoundSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.io.fd().as_raw_fd()
    }
}

impl From<BoundSocket> for OwnedFd {
    /// The original bound end alone: addresses minted from this socket are revoked.
    fn from(bound: BoundSocket) -> OwnedFd {
        let BoundSocket { io, set, .. } = bound;
        drop(set); // the set refers to the original; it goes first
        io.into_inner()
    }
}

impl TryFrom<OwnedFd> for BoundSocket {
    type Error = io::Error;

    /// Adopts the server end of a bound pair: a connected `AF_UNIX` `SOCK_STREAM`
    /// socket (made close-on-exec). Fails with `InvalidInput` for anything else.
    /// Needs no runtime.
    fn try_from(fd: OwnedFd) -> io::Result<Self> {
        validate::adopt(&fd, "BoundSocket", &[SockType::Stream])?;
        Self::from_checked(fd)
    }
}
