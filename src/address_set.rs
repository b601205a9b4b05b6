//! Minted addresses: one bound pair per holder, all served through one epoll set.
//!
//! The set holds the bound end of every minted address and of the original one,
//! and is registered with Tokio as a single descriptor. `accept` asks it for one
//! ready member at a time ([`EpollSet::next_ready`]), so ready addresses are
//! served in turn, and the cost of one accept does not depend on how many
//! addresses exist.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::sys::socket::SockType;

use crate::request::{self, Taken};
use crate::sys::reactor::{EpollSet, SharedIo};
use crate::sys::socket;
use crate::AddressId;

/// A member's bound end: the original is owned by the `BoundSocket` itself.
#[derive(Debug)]
enum Member {
    Original,
    Minted(OwnedFd),
}

/// Every address of one bound socket once it has minted any.
#[derive(Debug)]
pub(crate) struct AddressSet {
    io: SharedIo<EpollSet>,
    members: Mutex<HashMap<AddressId, Member>>,
    /// Every id this set minted, revoked ones too: which ids `disconnect` may
    /// reach.
    minted: Mutex<BTreeSet<AddressId>>,
}

impl AddressSet {
    /// A set serving the original bound end `original` as `id`.
    pub(crate) fn new(original: BorrowedFd<'_>, id: AddressId) -> io::Result<Self> {
        let epoll = EpollSet::new()?;
        epoll.add(original, id.get().into())?;
        Ok(AddressSet {
            io: SharedIo::new(epoll),
            members: Mutex::new(HashMap::from([(id, Member::Original)])),
            minted: Mutex::new(BTreeSet::new()),
        })
    }

    fn members(&self) -> MutexGuard<'_, HashMap<AddressId, Member>> {
        // A panic while holding the lock leaves the map consistent (every change is
        // one insert or remove), so a poisoned lock is still usable.
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The same set, deregistered from its reactor.
    pub(crate) fn unregistered(self) -> Self {
        AddressSet {
            io: self.io.unregistered(),
            members: self.members,
            minted: self.minted,
        }
    }

    /// Makes a new bound pair, adds its bound end, and returns the address end.
    pub(crate) fn mint(&self) -> io::Result<(AddressId, OwnedFd)> {
        let (address, bound) = socket::pair(SockType::Stream)?;
        let id = AddressId::next()?;
        let mut members = self.members();
        self.io.get_ref().add(bound.as_fd(), id.get().into())?;
        if members.is_empty() {
            self.io.get_ref().clear_empty();
        }
        members.insert(id, Member::Minted(bound));
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

    /// Removes a member; a minted one's bound end is closed, which drops its queued
    /// requests (their clients see their connections end) and refuses its holders'
    /// later connects.
    ///
    /// A minted member is shut down first: its end-of-stream makes the set
    /// readable, which wakes every waiting `accept`, so one waiting when the
    /// last address goes learns that none is left (`NotConnected`) instead of
    /// waiting for ever. (The caller shuts the original down itself, first.)
    /// Then out of the epoll set, then out of the map: a failure leaves the
    /// member served, as before (reading end-of-stream, it is removed then),
    /// never watched but unknown (which would make every `accept` spin on its
    /// readiness).
    pub(crate) fn remove(&self, id: AddressId, original: BorrowedFd<'_>) -> io::Result<()> {
        let mut members = self.members();
        let fd = match members.get(&id).ok_or_else(|| unknown(id))? {
            Member::Original => original,
            Member::Minted(bound) => {
                socket::shutdown(bound.as_fd(), std::net::Shutdown::Both)?;
                bound.as_fd()
            }
        };
        self.io.get_ref().delete(fd)?;
        members.remove(&id);
        if members.is_empty() {
            self.io.get_ref().signal_empty();
        }
        Ok(())
    }

    /// The set's descriptor, registered with the reactor when `accept` waits.
    pub(crate) fn io(&self) -> &SharedIo<EpollSet> {
        &self.io
    }

    /// Takes one request from the next ready member: its connection and the
    /// address it came through, or `None` when a request was dropped or a member
    /// reached end-of-stream (and was removed), so the caller tries again.
    /// `WouldBlock` when no member has a request queued, `NotConnected` when no
    /// member is left.
    pub(crate) fn try_accept(
        &self,
        original: BorrowedFd<'_>,
    ) -> io::Result<Option<(OwnedFd, AddressId)>> {
        let Some(token) = self.io.get_ref().next_ready()? else {
            return Err(if self.members().is_empty() {
                request::no_addresses()
            } else {
                io::ErrorKind::WouldBlock.into()
            });
        };
        if token == EpollSet::EMPTY {
            return if self.members().is_empty() {
                Err(request::no_addresses())
            } else {
                // Minted into since it was marked: no longer empty.
                self.io.get_ref().clear_empty();
                Ok(None)
            };
        }
        let Some(id) = AddressId::from_token(token) else {
            return Ok(None);
        };
        let taken = {
            let members = self.members();
            let fd = match members.get(&id) {
                Some(Member::Original) => original,
                Some(Member::Minted(bound)) => bound.as_fd(),
                None => return Ok(None), // removed since epoll_wait returned it
            };
            // Only the receive under the lock: judging (validation calls,
            // closing what a hostile request carried, the warning) is not.
            match request::receive(fd) {
                // Another task took it first.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                raw => raw?,
            }
        };
        match request::judge_raw(taken, id) {
            Taken::Connection(fd) => Ok(Some((fd, id))),
            Taken::Dropped => Ok(None),
            Taken::NoAddresses => {
                tracing::debug!(address_id = %id, "every holder closed this address; removing it");
                // Two accepting tasks can both read this end-of-stream before
                // either removes the member: the second finds it gone already.
                match self.remove(id, original) {
                    Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
                    other => other.map(|()| None),
                }
            }
        }
    }
}

fn unknown(id: AddressId) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("address {id} is not served by this bound socket (revoked, closed by every holder, or never minted here)"),
    )
}
