//! Waiting: every operation is tried directly first, and its descriptor is
//! registered with Tokio's reactor only once something would block.
//!
//! Most connections exchange a few records and close without ever waiting, and
//! then never pay for `epoll_ctl(ADD)`/`epoll_ctl(DEL)` or a reactor turn. The
//! one primitive is [`Reactive::io`]; it has two holders:
//!
//! - [`ExclusiveIo`], for objects used through `&mut` (a `ConnectedSocket`): 32
//!   bytes, the size of Tokio's `AsyncFd` (and of a `tokio::net::UnixStream`),
//!   because the unregistered state fits in the registered one's niche.
//!   Registering replaces the state, hence `&mut`.
//! - [`SharedIo`], for objects used through `&` by many tasks at once (bound
//!   sockets, addresses, the halves of a split connection): the registration sits
//!   in a synchronised cell beside the owner.
//!
//! Registering is `unsafe` (Tokio watches a descriptor *number*, which must stay
//! open and the same for the registration's life). That is promised by
//! [`OwnsFd`]; every type that implements it is defined in `sys/` with private
//! fields (`EpollSet` here, `Endpoint` in `endpoint.rs`), so that the promise
//! can be checked there and nowhere else.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::timerfd::TimerFd;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::sys::faults::{inject, retry_interrupted, Call};
use crate::sys::socket;

thread_local! {
    /// Set by the blocking facade around one call (see [`polled`]).
    static POLLED: Cell<Option<Polled>> = const { Cell::new(None) };
}

/// How this thread's operations wait inside [`polled`].
#[derive(Clone, Copy)]
struct Polled {
    deadline: Option<Instant>,
    timed_out: bool,
}

/// Runs `call` with this thread's operations waiting by `poll(2)` on their own
/// descriptor, until `deadline` if there is one, instead of registering with
/// a reactor: what the blocking facade's data path does, so that a thread
/// blocked on one connection holds up nobody else, and no runtime is driven
/// (or handed between threads) for a send or a receive. A registered
/// descriptor is polled too: its reactor's readiness may then be stale, which
/// costs its next async attempt one `WouldBlock`, never a lost wake-up (the
/// kernel reports every arrival to the reactor whoever reads it). Also returns
/// whether an operation gave up at the deadline (with `TimedOut`, having taken
/// nothing).
pub(crate) fn polled<R>(deadline: Option<Instant>, call: impl FnOnce() -> R) -> (R, bool) {
    struct Restore(Option<Polled>);
    impl Drop for Restore {
        fn drop(&mut self) {
            POLLED.set(self.0);
        }
    }
    let outer = Restore(POLLED.replace(Some(Polled {
        deadline,
        timed_out: false,
    })));
    let done = call();
    let timed_out = POLLED.get().is_some_and(|polled| polled.timed_out);
    drop(outer);
    (done, timed_out)
}

/// Inside [`polled`]: `op` until it does not fail with `WouldBlock`, waiting
/// for `interest` with `poll(2)` in between. `None` outside it.
fn polled_io<R>(
    fd: BorrowedFd<'_>,
    interest: Interest,
    op: &mut impl FnMut(BorrowedFd<'_>) -> io::Result<R>,
) -> Option<io::Result<R>> {
    let polled = POLLED.get()?;
    let events = match interest.is_writable() {
        true => nix::libc::POLLOUT,
        false => nix::libc::POLLIN,
    };
    // A spurious `EAGAIN` first is honest here too: `poll` then reports the
    // real readiness.
    let mut attempt = inject(Call::FirstTry).and_then(|()| op(fd));
    loop {
        match attempt {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return Some(done),
        }
        match socket::wait_for(fd, events, polled.deadline) {
            Ok(true) => {}
            Ok(false) => {
                POLLED.set(Some(Polled {
                    timed_out: true,
                    ..polled
                }));
                return Some(Err(io::ErrorKind::TimedOut.into()));
            }
            Err(err) => return Some(Err(err)),
        }
        attempt = op(fd);
    }
}

/// Fails with a message naming `what` when called outside a Tokio runtime, where
/// registering would panic.
pub(crate) fn require_runtime(what: &str) -> io::Result<()> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Ok(()),
        Err(_) => Err(io::Error::other(format!(
            "{what} needs a Tokio runtime with IO enabled (outside one, use tokio_imc::blocking)"
        ))),
    }
}

/// Waits until the peer of the connected socket `socket` hangs up (closes its
/// end or shuts down its writing; or this end was shut down for reading),
/// without reading anything.
///
/// The socket's own registration is left alone: clearing its readiness
/// while records are queued would make a concurrent receive miss them. A
/// private epoll instance watching only `EPOLLRDHUP` is registered instead,
/// made only if the peer has not hung up already, and closed on return or
/// when the future is dropped: records arriving meanwhile do not wake it.
pub(crate) async fn hung_up(socket: BorrowedFd<'_>) -> io::Result<()> {
    if crate::sys::socket::read_hung_up(socket)? {
        return Ok(());
    }
    require_runtime("closed")?;
    let watch = EpollSet::new()?;
    watch.add_hang_up(socket, 0)?;
    let watch = SharedIo::new(watch);
    let mut io = &watch;
    io.io(Interest::READABLE, |_| {
        match watch.get_ref().next_ready()? {
            Some(_) => Ok(()),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    })
    .await
}

/// Types that own exactly one open descriptor for as long as they live, and always
/// report it from `as_fd`/`as_raw_fd`: what this module registers.
///
/// # Safety
///
/// The reactor watches the number `as_raw_fd` returns and relies on it staying
/// open, and the same, until the owner is dropped or taken back out. An
/// implementation that returned another descriptor, or let it be closed or
/// replaced through `&self`, would leave the reactor watching a number that may be
/// reused.
pub(crate) unsafe trait OwnsFd: AsFd + AsRawFd {}

// SAFETY: an `OwnedFd` closes its descriptor only when dropped and never changes it.
unsafe impl OwnsFd for OwnedFd {}

/// A private epoll instance whose members are level-triggered, owning its
/// descriptor; registered with Tokio as one descriptor.
#[derive(Debug)]
pub(crate) struct EpollSet {
    /// Private and never replaced: what `OwnsFd` below relies on.
    epoll: Epoll,
    /// A member (token [`EpollSet::FLAG`]) that is readable while raised: a
    /// condition every waiter must wake for, which no watched socket reports
    /// (a member deleted from the set reports nothing). Rung from anywhere
    /// through a [`Doorbell`].
    flag: Option<Arc<EventFd>>,
    /// A one-shot timer member (token [`EpollSet::TIMER`]), made on first use.
    timer: OnceLock<TimerFd>,
}

/// Rings an [`EpollSet`]'s flag from anywhere (e.g. from a connection's `Drop`
/// on another thread): the set becomes readable until the flag is lowered.
#[derive(Clone, Debug)]
pub(crate) struct Doorbell(Arc<EventFd>);

impl Doorbell {
    /// Raises the flag.
    pub(crate) fn ring(&self) {
        // Fails only if the counter would overflow, which a flag never does.
        if let Err(err) = self.0.write(1) {
            tracing::warn!(error = %err, "could not raise an epoll set's flag");
        }
    }
}

impl EpollSet {
    /// `epoll_create1(EPOLL_CLOEXEC)`, with no member.
    pub(crate) fn new() -> io::Result<Self> {
        inject(Call::EpollCreate)?;
        Ok(EpollSet {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            flag: None,
            timer: OnceLock::new(),
        })
    }

    /// A set whose one first member is its flag ([`EpollSet::FLAG`]), lowered.
    pub(crate) fn with_flag() -> io::Result<Self> {
        let mut set = Self::new()?;
        let flag = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        set.add(flag.as_fd(), Self::FLAG)?;
        set.flag = Some(Arc::new(flag));
        Ok(set)
    }

    /// The token of the flag (no address id is 0).
    pub(crate) const FLAG: u64 = 0;

    /// The token of the timer (above every address id, which are 32-bit).
    pub(crate) const TIMER: u64 = 1 << 32;

    /// Something that raises this set's flag (`None` for a set made without one).
    pub(crate) fn doorbell(&self) -> Option<Doorbell> {
        self.flag.clone().map(Doorbell)
    }

    /// Raises the flag: readable until [`lower_flag`](Self::lower_flag).
    pub(crate) fn raise_flag(&self) {
        if let Some(doorbell) = self.doorbell() {
            doorbell.ring();
        }
    }

    /// Lowers the flag.
    pub(crate) fn lower_flag(&self) {
        if let Some(flag) = &self.flag {
            // `EAGAIN` when it was not raised: nothing to undo.
            let _ = flag.read();
        }
    }

    /// Watches `fd` for readability, reported with `token`.
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        self.add_for(fd, EpollFlags::EPOLLIN, token)
    }

    /// Watches `fd` for its peer hanging up (`EPOLLRDHUP`; hang-ups and errors
    /// are always reported), not for data: reported with `token`.
    pub(crate) fn add_hang_up(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        self.add_for(fd, EpollFlags::EPOLLRDHUP, token)
    }

    fn add_for(&self, fd: BorrowedFd<'_>, events: EpollFlags, token: u64) -> io::Result<()> {
        inject(Call::EpollAdd)?;
        let event = EpollEvent::new(events, token);
        self.epoll.add(fd, event).map_err(io::Error::from)
    }

    /// Stops watching `fd`.
    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.epoll.delete(fd).map_err(io::Error::from)
    }

    /// Sets the timer to fire once after `after`, or disarms it (`None`): either
    /// way it is no longer readable until it fires again. Made, and added with
    /// token [`EpollSet::TIMER`], on first use.
    pub(crate) fn set_timer(&self, after: Option<Duration>) -> io::Result<()> {
        use nix::sys::time::TimeSpec;
        use nix::sys::timerfd::{ClockId, Expiration, TimerFlags, TimerSetTimeFlags};
        let timer = match self.timer.get() {
            Some(timer) => timer,
            None => {
                if after.is_none() {
                    return Ok(());
                }
                inject(Call::Timer)?;
                let flags = TimerFlags::TFD_CLOEXEC | TimerFlags::TFD_NONBLOCK;
                let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, flags)?;
                self.add(timer.as_fd(), Self::TIMER)?;
                // Only the caller's lock makes timers here: this cannot be set.
                let _ = self.timer.set(timer);
                self.timer.get().ok_or_else(|| io::Error::other("timer"))?
            }
        };
        inject(Call::Timer)?;
        match after {
            // A zero `it_value` would disarm it: fire after 1 ns instead.
            Some(after) => timer.set(
                Expiration::OneShot(TimeSpec::from_duration(after.max(Duration::from_nanos(1)))),
                TimerSetTimeFlags::empty(),
            ),
            None => timer.unset(),
        }
        .map_err(io::Error::from)
    }

    /// The token of one ready member, without waiting. The kernel moves a
    /// reported member to the back of its ready list, so ready members are
    /// reported in turn.
    pub(crate) fn next_ready(&self) -> io::Result<Option<u64>> {
        let mut events = [EpollEvent::empty()];
        let ready = retry_interrupted(|| {
            inject(Call::EpollWait)?;
            Ok(self.epoll.wait(&mut events, EpollTimeout::ZERO)?)
        })?;
        Ok((ready > 0).then(|| events[0].data()))
    }
}

impl AsFd for EpollSet {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

impl AsRawFd for EpollSet {
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.0.as_raw_fd()
    }
}

// SAFETY: the epoll instance's `OwnedFd` is a private field never replaced, and
// `as_fd`/`as_raw_fd` report it.
unsafe impl OwnsFd for EpollSet {}

/// Something that runs non-blocking operations on one descriptor until they do
/// not block: the one "try first, register only if it would block" loop.
pub(crate) trait Reactive {
    /// What the reactor registration holds.
    type Watched: AsRawFd;

    /// The descriptor.
    fn fd(&self) -> io::Result<BorrowedFd<'_>>;

    /// Whether the descriptor is registered with a reactor yet.
    fn is_registered(&self) -> bool;

    /// The registration (made now, in the current runtime, if there is none yet)
    /// and the descriptor.
    fn registration(&mut self) -> io::Result<(&AsyncFd<Self::Watched>, BorrowedFd<'_>)>;

    /// The direct attempt of [`io`](Self::io) and [`poll_io`](Self::poll_io):
    /// `op`'s result, unless the descriptor is registered already or `op` would
    /// block.
    fn try_unregistered<R>(
        &self,
        op: &mut impl FnMut(BorrowedFd<'_>) -> io::Result<R>,
    ) -> Option<io::Result<R>> {
        if self.is_registered() {
            return None;
        }
        match inject(Call::FirstTry).and_then(|()| op(self.fd()?)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            done => Some(done),
        }
    }

    /// Runs `op` until it does not fail with `WouldBlock`: once directly while the
    /// descriptor is not registered, then each time the reactor reports
    /// `interest`. `op` runs only inside a poll of the returned future, and its
    /// result is returned from that same poll, so dropping the future between
    /// polls loses nothing that `op` took.
    async fn io<R>(
        &mut self,
        interest: Interest,
        mut op: impl FnMut(BorrowedFd<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        if let Some(done) = polled_io(self.fd()?, interest, &mut op) {
            return done;
        }
        if let Some(done) = self.try_unregistered(&mut op) {
            return done;
        }
        let (registration, fd) = self.registration()?;
        registration.async_io(interest, |_| op(fd)).await
    }

    /// [`io`](Self::io) as a poll: `op` is tried directly while the descriptor is
    /// not registered, then each time the reactor reports `interest`, and
    /// `Pending` registers `cx`'s waker.
    ///
    /// Tokio keeps one waker per direction here (the last one polled), where
    /// [`io`](Self::io) wakes every waiting task: a shared owner polled from
    /// several tasks at once must use `io`.
    fn poll_io<R>(
        &mut self,
        cx: &mut Context<'_>,
        interest: Interest,
        mut op: impl FnMut(BorrowedFd<'_>) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        if let Some(done) = polled_io(self.fd()?, interest, &mut op) {
            return Poll::Ready(done);
        }
        if let Some(done) = self.try_unregistered(&mut op) {
            return Poll::Ready(done);
        }
        let (registration, fd) = self.registration()?;
        loop {
            let mut ready = if interest.is_writable() {
                ready!(registration.poll_write_ready(cx))?
            } else {
                ready!(registration.poll_read_ready(cx))?
            };
            // `try_io` clears the readiness only on `WouldBlock`, then we poll
            // again, which registers the waker.
            if let Ok(done) = ready.try_io(|_| op(fd)) {
                return Poll::Ready(done);
            }
        }
    }
}

/// An owner used through `&mut`, registered on first wait.
#[derive(Debug)]
pub(crate) struct ExclusiveIo<T: OwnsFd>(State<T>);

/// Private: the crate never reaches an `AsyncFd` here mutably (no `get_mut`,
/// `ready_mut`, `readable_mut`), so its owner cannot be replaced while registered.
#[derive(Debug)]
enum State<T: OwnsFd> {
    /// Not registered: operations are tried directly, and no runtime is needed
    /// until one would block.
    Direct(T),
    /// Registered with the reactor of the runtime it first waited in.
    Registered(AsyncFd<T>),
    /// Only while registering; left behind only if registering panicked (Tokio
    /// panics when the runtime has IO disabled), and then the descriptor is gone.
    Vacant,
}

impl<T: OwnsFd> ExclusiveIo<T> {
    /// Wraps `owner`; nothing is registered yet, and no runtime is needed.
    pub(crate) fn new(owner: T) -> Self {
        ExclusiveIo(State::Direct(owner))
    }

    /// The owner, unless it was lost to a panic while registering.
    pub(crate) fn get_ref(&self) -> io::Result<&T> {
        match &self.0 {
            State::Direct(owner) => Ok(owner),
            State::Registered(registered) => Ok(registered.get_ref()),
            State::Vacant => Err(vacant()),
        }
    }

    /// The owner, deregistered if it was registered.
    pub(crate) fn into_inner(self) -> io::Result<T> {
        match self.0 {
            State::Direct(owner) => Ok(owner),
            State::Registered(registered) => Ok(registered.into_inner()),
            State::Vacant => Err(vacant()),
        }
    }

    /// The same owner, deregistered: it registers again, with whichever runtime
    /// it next waits in. An owner lost to a panic stays lost.
    pub(crate) fn unregistered(self) -> Self {
        ExclusiveIo(self.into_inner().map_or(State::Vacant, State::Direct))
    }
}

impl<T: OwnsFd> Reactive for ExclusiveIo<T> {
    type Watched = T;

    fn fd(&self) -> io::Result<BorrowedFd<'_>> {
        Ok(self.get_ref()?.as_fd())
    }

    fn is_registered(&self) -> bool {
        matches!(self.0, State::Registered(_))
    }

    fn registration(&mut self) -> io::Result<(&AsyncFd<T>, BorrowedFd<'_>)> {
        if let State::Direct(_) = self.0 {
            require_runtime("waiting on a tokio-imc connection")?;
            inject(Call::Register)?;
            let State::Direct(owner) = std::mem::replace(&mut self.0, State::Vacant) else {
                unreachable!("checked to be Direct above");
            };
            // SAFETY: `T: OwnsFd`: the owner keeps its descriptor open, and the
            // same, while it lives; it lives inside the `AsyncFd` until that is
            // dropped or `into_inner` takes it back, and nothing reaches it
            // mutably meanwhile (see `State`).
            match unsafe { AsyncFd::register(owner) } {
                Ok(registered) => self.0 = State::Registered(registered),
                Err(failed) => {
                    let (owner, err) = failed.into_parts();
                    self.0 = State::Direct(owner);
                    return Err(err);
                }
            }
        }
        match &self.0 {
            State::Registered(registered) => Ok((registered, registered.get_ref().as_fd())),
            _ => Err(vacant()),
        }
    }
}

fn vacant() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "this connection lost its descriptor when registering it with the reactor panicked",
    )
}

/// The number of a descriptor that a [`SharedIo`] owns, as registered with Tokio.
#[derive(Debug)]
pub(crate) struct FdNumber(RawFd);

impl AsRawFd for FdNumber {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Serialises first registrations, so two tasks cannot both add one descriptor
/// to the reactor (the second `epoll_ctl` would fail with `EEXIST`).
static REGISTERING: Mutex<()> = Mutex::new(());

/// An owner used through `&` by any number of tasks, registered on first wait.
#[derive(Debug)]
pub(crate) struct SharedIo<T: OwnsFd> {
    // Declared before `owner`: dropped, so deregistered, before the descriptor
    // closes. `into_inner` keeps that order too.
    registration: OnceLock<AsyncFd<FdNumber>>,
    owner: T,
}

impl<T: OwnsFd> SharedIo<T> {
    /// Wraps `owner`; nothing is registered yet, and no runtime is needed.
    pub(crate) fn new(owner: T) -> Self {
        SharedIo {
            registration: OnceLock::new(),
            owner,
        }
    }

    /// The owner.
    pub(crate) fn get_ref(&self) -> &T {
        &self.owner
    }

    /// The descriptor.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.owner.as_fd()
    }

    /// Deregisters (if registered) and returns the owner.
    pub(crate) fn into_inner(self) -> T {
        let SharedIo {
            registration,
            owner,
        } = self;
        drop(registration);
        owner
    }

    /// The same owner, deregistered: it registers again, with whichever runtime
    /// it next waits in.
    pub(crate) fn unregistered(self) -> Self {
        SharedIo::new(self.into_inner())
    }

    /// The registration, made on first use in the current runtime.
    fn registered(&self) -> io::Result<&AsyncFd<FdNumber>> {
        if let Some(registration) = self.registration.get() {
            return Ok(registration);
        }
        require_runtime("waiting on a tokio-imc socket")?;
        let _guard = REGISTERING.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(registration) = self.registration.get() {
            return Ok(registration);
        }
        inject(Call::Register)?;
        let number = FdNumber(self.owner.as_raw_fd());
        // SAFETY: `number` is the descriptor `self.owner` owns (`T: OwnsFd`: open,
        // and the same, while the owner lives). The registration is stored in
        // `self` next to the owner and is dropped before it (field order, and
        // `into_inner`), so it never outlives the descriptor.
        let registration = unsafe { AsyncFd::register(number) }.map_err(io::Error::from)?;
        let _ = self.registration.set(registration);
        self.registration
            .get()
            .ok_or_else(|| io::Error::other("the reactor registration could not be stored"))
    }
}

impl<T: OwnsFd> Reactive for &SharedIo<T> {
    type Watched = FdNumber;

    fn fd(&self) -> io::Result<BorrowedFd<'_>> {
        Ok(SharedIo::fd(self))
    }

    fn is_registered(&self) -> bool {
        self.registration.get().is_some()
    }

    fn registration(&mut self) -> io::Result<(&AsyncFd<FdNumber>, BorrowedFd<'_>)> {
        Ok((self.registered()?, SharedIo::fd(self)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_no_larger_than_a_tokio_unix_stream() {
        type Connection = ExclusiveIo<crate::sys::endpoint::Endpoint>;
        assert!(std::mem::size_of::<Connection>() <= std::mem::size_of::<tokio::net::UnixStream>());
        assert_eq!(std::mem::size_of::<crate::sys::endpoint::Endpoint>(), 8);
    }
}
