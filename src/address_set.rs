//! Minted addresses: one bound pair per holder, all served through one epoll set.
//!
//! The set holds the bound end of every minted address and of the original one,
//! and is registered with Tokio as a single descriptor. `accept` asks it for one
//! ready member at a time ([`EpollSet::next_ready`]), so ready addresses are
//! served in turn, and the cost of one accept does not depend on how many
//! addresses exist.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use nix::sys::socket::SockType;

use crate::admission::{AfterAdmit, Gate};
use crate::request::{self, Taken};
use crate::sys::endpoint::{self, Admission};
use crate::sys::reactor::{EpollSet, SharedIo};
use crate::sys::{msg, socket};
use crate::{AddressId, AddressPolicy};

/// A member's bound end: the original is owned by the `BoundSocket` itself.
#[derive(Debug)]
enum Bound {
    Original,
    Minted(OwnedFd),
}

/// One address the set serves.
#[derive(Debug)]
struct Member {
    bound: Bound,
    /// Its policy, if it has one.
    gate: Option<Arc<Gate>>,
    /// In the accept set: not while paused at its `max_open`.
    accepting: bool,
    /// In the hang-up watcher: once `released` is used, until a hang-up is
    /// seen with requests still queued (then `accept` reports it, once they
    /// are read).
    watched: bool,
    /// Its holders hung up while requests were queued (seen by the watcher):
    /// each accept from it checks whether that was the last.
    hung_up: bool,
}

impl Member {
    fn fd<'a>(&'a self, original: BorrowedFd<'a>) -> BorrowedFd<'a> {
        match &self.bound {
            Bound::Original => original,
            Bound::Minted(bound) => bound.as_fd(),
        }
    }
}

/// Everything the set's lock covers.
#[derive(Debug)]
struct Members {
    map: HashMap<AddressId, Member>,
    /// Members out of the accept set because as many of their connections are
    /// open as their policy allows.
    paused: BTreeSet<AddressId>,
    /// When members expire, earliest first.
    deadlines: BTreeSet<(Instant, AddressId)>,
    /// Members every holder closed, for `released` to report, oldest first.
    released: VecDeque<AddressId>,
}

impl Drop for Members {
    /// The set is gone: its addresses' entries in the endpoint register go
    /// with their last connections (which still follow their policy).
    fn drop(&mut self) {
        for (id, member) in &self.map {
            if member.gate.is_some() {
                endpoint::detach(*id);
            }
        }
    }
}

/// Every address of one bound socket once it has minted any.
#[derive(Debug)]
pub(crate) struct AddressSet {
    /// The accept set: every member not paused, its flag (raised while no
    /// member is left, and rung when a paused member has room), and the timer
    /// of the earliest deadline.
    io: SharedIo<EpollSet>,
    /// The hang-up watcher, made by the first `released`: members watched for
    /// their holders hanging up; its flag is raised while there is something to
    /// report (or no member is left).
    hang_ups: OnceLock<SharedIo<EpollSet>>,
    members: Mutex<Members>,
    /// Every id this set minted, revoked ones too: which ids `disconnect` may
    /// reach.
    minted: Mutex<BTreeSet<AddressId>>,
}

impl AddressSet {
    /// A set serving the original bound end `original` as `id`.
    pub(crate) fn new(original: BorrowedFd<'_>, id: AddressId) -> io::Result<Self> {
        let epoll = EpollSet::with_flag()?;
        epoll.add(original, id.get().into())?;
        let original = Member {
            bound: Bound::Original,
            gate: None,
            accepting: true,
            watched: false,
            hung_up: false,
        };
        Ok(AddressSet {
            io: SharedIo::new(epoll),
            hang_ups: OnceLock::new(),
            members: Mutex::new(Members {
                map: HashMap::from([(id, original)]),
                paused: BTreeSet::new(),
                deadlines: BTreeSet::new(),
                released: VecDeque::new(),
            }),
            minted: Mutex::new(BTreeSet::new()),
        })
    }

    fn members(&self) -> MutexGuard<'_, Members> {
        // A panic while holding the lock leaves the members consistent (each
        // change to the kernel's sets is made before the map records it), so a
        // poisoned lock is still usable.
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn accept_set(&self) -> &EpollSet {
        self.io.get_ref()
    }

    /// The same set, deregistered from its reactor.
    pub(crate) fn unregistered(self) -> Self {
        let hang_ups = OnceLock::new();
        if let Some(watcher) = self.hang_ups.into_inner() {
            let _ = hang_ups.set(watcher.unregistered());
        }
        AddressSet {
            io: self.io.unregistered(),
            hang_ups,
            members: self.members,
            minted: self.minted,
        }
    }

    /// Makes a new bound pair under `policy`, adds its bound end, and returns
    /// the address end.
    pub(crate) fn mint(&self, policy: AddressPolicy) -> io::Result<(AddressId, OwnedFd)> {
        check(&policy)?;
        let (address, bound) = socket::pair(SockType::Stream)?;
        let id = AddressId::next()?;
        let gate = match policy.is_unlimited() {
            true => None,
            false => {
                let room = self
                    .accept_set()
                    .doorbell()
                    .ok_or_else(|| io::Error::other("the accept set has no flag"))?;
                Some(Gate::new(policy, room))
            }
        };
        let mut members = self.members();
        let deadline = gate.as_ref().and_then(|gate| gate.deadline());
        if let Some(deadline) = deadline {
            members.deadlines.insert((deadline, id));
            if let Err(err) = self.arm_timer(&members) {
                members.deadlines.remove(&(deadline, id));
                return Err(err);
            }
        }
        let added = self.accept_set().add(bound.as_fd(), id.get().into());
        let watched = added.and_then(|()| match self.hang_ups.get() {
            None => Ok(false),
            Some(watcher) => match watcher
                .get_ref()
                .add_hang_up(bound.as_fd(), id.get().into())
            {
                Ok(()) => Ok(true),
                Err(err) => {
                    let _ = self.accept_set().delete(bound.as_fd());
                    Err(err)
                }
            },
        });
        let watched = match watched {
            Ok(watched) => watched,
            Err(err) => {
                // An early timer finds nothing to expire; harmless.
                if let Some(deadline) = deadline {
                    members.deadlines.remove(&(deadline, id));
                }
                return Err(err);
            }
        };
        if members.map.is_empty() {
            self.accept_set().lower_flag();
        }
        if let Some(gate) = &gate {
            endpoint::attach(id, gate.clone());
        }
        members.map.insert(
            id,
            Member {
                bound: Bound::Minted(bound),
                gate,
                accepting: true,
                watched,
                hung_up: false,
            },
        );
        self.sync_release_flag(&members);
        self.minted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
        Ok((id, address))
    }

    /// Whether this set minted `id` (revoked since or not).
    pub(crate) fn ever_minted(&self, id: AddressId) -> bool {
        self.minted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&id)
    }

    /// Shuts the original bound end down and removes it (its revoke), under
    /// the lock: see [`remove_locked`](Self::remove_locked).
    pub(crate) fn shut_down_and_remove(
        &self,
        id: AddressId,
        original: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let mut members = self.members();
        socket::shutdown(original, std::net::Shutdown::Both)?;
        self.remove_locked(&mut members, id, original)
    }

    /// Removes a member (a revoke); see [`remove_locked`](Self::remove_locked).
    pub(crate) fn remove(&self, id: AddressId, original: BorrowedFd<'_>) -> io::Result<()> {
        self.remove_locked(&mut self.members(), id, original)
    }

    /// Removes a member; a minted one's bound end is closed, which drops its
    /// queued requests (their clients see their connections end) and refuses
    /// its holders' later connects.
    ///
    /// A minted member is shut down first: its end-of-stream makes the set
    /// readable, which wakes every waiting `accept`, and when the last member
    /// goes the flag is raised, so one waiting then learns that none is left
    /// (`NotConnected`) instead of waiting for ever. (The caller shuts the
    /// original down itself, first.) Then out of the kernel's sets, then out
    /// of the map: a failure leaves the member served, as before (reading
    /// end-of-stream, it is removed then), never watched but unknown (which
    /// would make every `accept` spin on its readiness).
    fn remove_locked(
        &self,
        members: &mut Members,
        id: AddressId,
        original: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let member = members.map.get(&id).ok_or_else(|| unknown(id))?;
        let fd = member.fd(original);
        if let Bound::Minted(_) = member.bound {
            socket::shutdown(fd, std::net::Shutdown::Both)?;
        }
        let unwatched = match (member.watched, self.hang_ups.get()) {
            (true, Some(watcher)) => watcher.get_ref().delete(fd),
            _ => Ok(()),
        };
        let unaccepted = match unwatched.is_ok() && member.accepting {
            true => self.accept_set().delete(fd),
            false => Ok(()),
        };
        unwatched?;
        if let Err(err) = unaccepted {
            // Still served, no longer watched.
            if let Some(member) = members.map.get_mut(&id) {
                member.watched = false;
            }
            return Err(err);
        }
        let Some(member) = members.map.remove(&id) else {
            return Err(unknown(id));
        };
        members.paused.remove(&id);
        if let Some(gate) = &member.gate {
            if let Some(deadline) = gate.deadline() {
                members.deadlines.remove(&(deadline, id));
            }
            endpoint::detach(id);
        }
        if members.map.is_empty() {
            self.accept_set().raise_flag();
        }
        self.sync_release_flag(members);
        Ok(())
    }

    /// Removes a member every holder closed, to be reported by `released`.
    fn release_locked(
        &self,
        members: &mut Members,
        id: AddressId,
        original: BorrowedFd<'_>,
    ) -> io::Result<()> {
        tracing::debug!(address_id = %id, "every holder closed this address; removing it");
        self.remove_locked(members, id, original)?;
        members.released.push_back(id);
        self.sync_release_flag(members);
        Ok(())
    }

    /// A member's end-of-stream, read by an accept: released, unless another
    /// task that read it too removed it first (`NotFound`). `None`: try again.
    fn release_at_end(
        &self,
        members: &mut Members,
        id: AddressId,
        original: BorrowedFd<'_>,
    ) -> io::Result<Option<Admitted>> {
        match self.release_locked(members, id, original) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            other => other.map(|()| None),
        }
    }

    /// The hang-up watcher's flag is raised exactly while `released` has
    /// something to report or no member is left.
    fn sync_release_flag(&self, members: &Members) {
        if let Some(watcher) = self.hang_ups.get() {
            if members.released.is_empty() && !members.map.is_empty() {
                watcher.get_ref().lower_flag();
            } else {
                watcher.get_ref().raise_flag();
            }
        }
    }

    /// Sets the timer for the earliest deadline (or disarms it).
    fn arm_timer(&self, members: &Members) -> io::Result<()> {
        let next = members
            .deadlines
            .first()
            .map(|&(deadline, _)| deadline.saturating_duration_since(Instant::now()));
        self.accept_set().set_timer(next)
    }

    /// The set's descriptor, registered with the reactor when `accept` waits.
    pub(crate) fn io(&self) -> &SharedIo<EpollSet> {
        &self.io
    }

    /// Takes one request from the next ready member: its connection and the
    /// address it came through, or `None` when a request was dropped or a member
    /// changed state (reached end-of-stream, expired, was used up, paused or
    /// resumed), so the caller tries again. `WouldBlock` when no member has a
    /// request queued, `NotConnected` when no member is left.
    pub(crate) fn try_accept(&self, original: BorrowedFd<'_>) -> io::Result<Option<Admitted>> {
        let Some(token) = self.accept_set().next_ready()? else {
            return Err(if self.members().map.is_empty() {
                request::no_addresses()
            } else {
                io::ErrorKind::WouldBlock.into()
            });
        };
        match token {
            EpollSet::FLAG => return self.on_flag(original).map(|()| None),
            EpollSet::TIMER => return self.on_timer(original).map(|()| None),
            _ => {}
        }
        let Some(id) = AddressId::from_token(token) else {
            return Ok(None);
        };
        let mut members = self.members();
        let Some(member) = members.map.get(&id) else {
            return Ok(None); // removed since epoll_wait returned it
        };
        let gate = member.gate.clone();
        if let Some(gate) = &gate {
            if gate.is_spent(Instant::now()) {
                tracing::debug!(address_id = %id, "address expired or used up; revoking it");
                self.remove_locked(&mut members, id, original)?;
                return Ok(None);
            }
            if gate.is_full() {
                self.pause(&mut members, id, original)?;
                return Ok(None);
            }
        }
        let fd = member.fd(original);
        // Only the receive under the lock for an address without a policy:
        // judging (validation calls, closing what a hostile request carried,
        // the warning) is not.
        let raw = match request::receive(fd) {
            // Another task took it first.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            raw => raw?,
        };
        // Its holders are gone: if that was its last request, it is released
        // now, whether or not another accept comes to read the end.
        if member.hung_up && raw.is_request() && msg::at_end_of_stream(fd).unwrap_or(false) {
            // On failure the next accept reads its end-of-stream instead.
            if let Err(err) = self.release_locked(&mut members, id, original) {
                tracing::warn!(address_id = %id, error = %err, "could not release an address yet");
            }
        }
        let Some(gate) = gate else {
            drop(members);
            return match request::judge_raw(raw, id) {
                Taken::Connection(fd) => Ok(Some((fd, id, None))),
                Taken::Dropped => Ok(None),
                // Two accepting tasks can both read this end-of-stream before
                // either removes the member: the second finds it gone already.
                Taken::NoAddresses => self.release_at_end(&mut self.members(), id, original),
            };
        };
        // Judged under the lock when the policy counts connections, so that
        // only a request that becomes one counts, and no other task takes one
        // past the limit meanwhile.
        let judged = match gate.counts_connections() {
            true => request::judge_raw(raw, id),
            false => {
                drop(members);
                let judged = request::judge_raw(raw, id);
                members = self.members();
                judged
            }
        };
        match judged {
            Taken::Connection(connection) => {
                match gate.admit() {
                    AfterAdmit::Serve => {}
                    // On failure the next attempt finds it full and tries
                    // again; the connection, already counted, is returned.
                    AfterAdmit::Pause => {
                        if let Err(err) = self.pause(&mut members, id, original) {
                            tracing::warn!(address_id = %id, error = %err, "could not pause a full address yet");
                        }
                    }
                    AfterAdmit::UsedUp => {
                        tracing::debug!(address_id = %id, "address used up; revoking it");
                        // On failure the next attempt finds it spent and tries again.
                        let removed = self.remove_locked(&mut members, id, original);
                        // (`NotFound`: released with this very request.)
                        if let Err(err) = removed.or_else(|e| match e.kind() {
                            io::ErrorKind::NotFound => Ok(()),
                            _ => Err(e),
                        }) {
                            tracing::warn!(address_id = %id, error = %err, "could not revoke a used-up address yet");
                        }
                    }
                }
                drop(members);
                if gate.refuses_descriptors() {
                    refuse_descriptors(connection.as_fd(), id);
                }
                let admission: Arc<dyn Admission> = gate;
                Ok(Some((connection, id, Some(admission))))
            }
            Taken::Dropped => Ok(None),
            Taken::NoAddresses => self.release_at_end(&mut members, id, original),
        }
    }

    /// Takes a full member out of the accept set until it has room.
    fn pause(
        &self,
        members: &mut Members,
        id: AddressId,
        original: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let Some(member) = members.map.get_mut(&id) else {
            return Ok(());
        };
        if member.accepting {
            self.accept_set().delete(member.fd(original))?;
            member.accepting = false;
            members.paused.insert(id);
            tracing::debug!(address_id = %id, "address at its max_open; its requests wait");
        }
        Ok(())
    }

    /// The flag: no member is left (`NotConnected`, and it stays raised), or
    /// a paused member may have room again. A resume that fails is the
    /// accept's error, and the flag is raised again for the next one.
    fn on_flag(&self, original: BorrowedFd<'_>) -> io::Result<()> {
        let mut members = self.members();
        if members.map.is_empty() {
            return Err(request::no_addresses());
        }
        self.accept_set().lower_flag();
        let mut failed = None;
        let paused: Vec<AddressId> = members.paused.iter().copied().collect();
        for id in paused {
            let Some(member) = members.map.get_mut(&id) else {
                continue;
            };
            if member.gate.as_ref().is_some_and(|gate| gate.is_full()) {
                continue;
            }
            match self.accept_set().add(member.fd(original), id.get().into()) {
                Ok(()) => {
                    member.accepting = true;
                    members.paused.remove(&id);
                }
                // Still paused, and perhaps with no connection left to ring
                // again: the flag goes back up so the next accept retries.
                Err(err) => {
                    tracing::warn!(address_id = %id, error = %err, "could not resume a paused address yet");
                    failed = Some(err);
                }
            }
        }
        match failed {
            None => Ok(()),
            Some(err) => {
                self.accept_set().raise_flag();
                Err(err)
            }
        }
    }

    /// The timer: revokes every member whose deadline has passed, then sets it
    /// for the next.
    fn on_timer(&self, original: BorrowedFd<'_>) -> io::Result<()> {
        let mut members = self.members();
        let now = Instant::now();
        while let Some(&(deadline, id)) = members.deadlines.first() {
            if deadline > now {
                break;
            }
            members.deadlines.pop_first();
            if members.map.contains_key(&id) {
                tracing::debug!(address_id = %id, "address expired; revoking it");
                if let Err(err) = self.remove_locked(&mut members, id, original) {
                    // Kept spent: the next request from it is not admitted.
                    tracing::warn!(address_id = %id, error = %err, "could not revoke an expired address yet");
                }
            }
        }
        // Also what makes the timer unreadable again: a failure is reported
        // (a transient `accept` error) rather than spun on.
        self.arm_timer(&members)
    }

    /// The hang-up watcher, made (watching every member) on first use.
    pub(crate) fn hang_ups(&self, original: BorrowedFd<'_>) -> io::Result<&SharedIo<EpollSet>> {
        if let Some(watcher) = self.hang_ups.get() {
            return Ok(watcher);
        }
        let mut members = self.members();
        if let Some(watcher) = self.hang_ups.get() {
            return Ok(watcher);
        }
        let watcher = EpollSet::with_flag()?;
        for (id, member) in &members.map {
            watcher.add_hang_up(member.fd(original), id.get().into())?;
        }
        for member in members.map.values_mut() {
            member.watched = true;
        }
        let _ = self.hang_ups.set(SharedIo::new(watcher));
        self.sync_release_flag(&members);
        self.hang_ups
            .get()
            .ok_or_else(|| io::Error::other("the hang-up watcher could not be initialised"))
    }

    /// One step of `released`: the next address every holder closed, or `None`
    /// when a member changed state (so the caller tries again). `WouldBlock`
    /// when there is nothing to report yet, `NotConnected` when no member is
    /// left and nothing is to be reported.
    pub(crate) fn try_release(&self, original: BorrowedFd<'_>) -> io::Result<Option<AddressId>> {
        let watcher = self.hang_ups(original)?.get_ref();
        let mut members = self.members();
        if let Some(id) = members.released.pop_front() {
            self.sync_release_flag(&members);
            return Ok(Some(id));
        }
        let Some(token) = watcher.next_ready()? else {
            return Err(match members.map.is_empty() {
                true => nothing_to_release(),
                false => io::ErrorKind::WouldBlock.into(),
            });
        };
        if token == EpollSet::FLAG {
            if members.map.is_empty() {
                return Err(nothing_to_release());
            }
            watcher.lower_flag();
            return Ok(None);
        }
        let Some(id) = AddressId::from_token(token) else {
            return Ok(None);
        };
        let Some(member) = members.map.get(&id) else {
            return Ok(None);
        };
        let fd = member.fd(original);
        if msg::at_end_of_stream(fd)? {
            self.release_locked(&mut members, id, original)?;
            return Ok(None);
        }
        // Hung up with requests still queued: `accept` reads them, and
        // reports the address when it reaches end-of-stream.
        watcher.delete(fd)?;
        if let Some(member) = members.map.get_mut(&id) {
            member.watched = false;
            member.hung_up = true;
        }
        Ok(None)
    }
}

/// An admitted connection's descriptor, the address it came through, and
/// that address's policy (for the endpoint register).
pub(crate) type Admitted = (OwnedFd, AddressId, Option<Arc<dyn Admission>>);

/// Refuses a policy that could admit nothing.
fn check(policy: &AddressPolicy) -> io::Result<()> {
    if policy.max_connections == Some(0) || policy.max_open == Some(0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an address policy of max_connections(0) or max_open(0) would admit nothing",
        ));
    }
    Ok(())
}

/// Asks the kernel to refuse descriptors on an admitted connection; where it
/// cannot, the receive-side check (which is always on) works alone.
fn refuse_descriptors(connection: BorrowedFd<'_>, id: AddressId) {
    match socket::refuse_descriptors(connection) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(nix::libc::ENOPROTOOPT) => {
            tracing::debug!(address_id = %id, "no SO_PASSRIGHTS here: descriptors are refused on receipt")
        }
        Err(err) => {
            tracing::warn!(address_id = %id, error = %err, "could not set SO_PASSRIGHTS: descriptors are refused on receipt")
        }
    }
}

fn nothing_to_release() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "released: this bound socket serves no address any more, and every release was reported",
    )
}

fn unknown(id: AddressId) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("address {id} is not served by this bound socket (revoked, closed by every holder, or never minted here)"),
    )
}
