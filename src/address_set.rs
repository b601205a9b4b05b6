//! Minted addresses: one bound pair per holder, all served through one epoll set.
//!
//! The set is a private epoll instance holding the bound end of every minted
//! address and the original one, registered with Tokio as a single descriptor.
//! `accept` asks it for one ready member at a time (`epoll_wait` with room for one
//! event, level-triggered): the kernel moves a reported member to the back of its
//! ready list, so ready addresses are served in turn, and the cost of one accept
//! does not depend on how many addresses exist.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::peer_warning::peer_warn;
use crate::request::{self, Verdict};
use crate::sys::{self, LazyIo};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

/// Names one address of a [`BoundSocket`](crate::BoundSocket): the original one or
/// a minted one. Unique within the process.
///
/// 32 bits, so that a connection that carries one stays as small as a tokio
/// `UnixStream`; the process can make 2<sup>32</sup> − 1 addresses in its life.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddressId(NonZeroU32);

impl AddressId {
    pub(crate) fn next() -> io::Result<AddressId> {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let value = NEXT
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
            .map_err(|_| io::Error::other("this process has used every address id (2^32 - 1)"))?;
        NonZeroU32::new(value)
            .map(AddressId)
            .ok_or_else(|| io::Error::other("address ids start at 1"))
    }

    /// The id as a number, for logs and maps.
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Debug for AddressId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AddressId({})", self.0)
    }
}

impl fmt::Display for AddressId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An epoll instance that owns its descriptor, registrable with Tokio.
pub struct EpollSet(Epoll);

impl AsFd for EpollSet {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0 .0.as_fd()
    }
}

/// A member's bound end: the original is owned by the `BoundSocket` itself.
enum Member {
    Original,
    Minted(OwnedFd),
}

/// What one accept attempt found.
pub enum Outcome {
    /// A connection, and the address it came through.
    Connection(OwnedFd, AddressId),
    /// No member has a request queued.
    Empty,
}

pub struct AddressSet {
    io: LazyIo<EpollSet>,
    members: Mutex<HashMap<AddressId, Member>>,
}

impl AddressSet {
    /// A set serving the original bound end `original` as `id`.
    pub fn new(original: BorrowedFd<'_>, id: AddressId) -> io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(
            original,
            EpollEvent::new(EpollFlags::EPOLLIN, id.get().into()),
        )?;
        let set = AddressSet {
            io: LazyIo::new(EpollSet(epoll)),
            members: Mutex::new(HashMap::from([(id, Member::Original)])),
        };
        Ok(set)
    }

    fn members(&self) -> MutexGuard<'_, HashMap<AddressId, Member>> {
        // A panic while holding the lock leaves the map consistent (every change is
        // one insert or remove), so a poisoned lock is still usable.
        self.members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The same set, deregistered from its reactor.
    pub fn unregistered(self) -> Self {
        AddressSet {
            io: self.io.unregistered(),
            members: self.members,
        }
    }

    /// Makes a new bound pair, adds its bound end, and returns the address end.
    pub fn mint(&self) -> io::Result<(AddressId, OwnedFd)> {
        let (address, bound) = crate::bound::stream_pair()?;
        let id = AddressId::next()?;
        let mut members = self.members();
        self.io.get_ref().0.add(
            &bound,
            EpollEvent::new(EpollFlags::EPOLLIN, id.get().into()),
        )?;
        members.insert(id, Member::Minted(bound));
        Ok((id, address))
    }

    /// Removes a member; a minted one's bound end is closed, which drops its queued
    /// requests (their clients see their connections end) and refuses its holders'
    /// later connects.
    pub fn remove(&self, id: AddressId, original: BorrowedFd<'_>) -> io::Result<()> {
        let member = self.members().remove(&id).ok_or_else(|| unknown(id))?;
        let epoll = &self.io.get_ref().0;
        match member {
            Member::Original => epoll.delete(original)?,
            Member::Minted(bound) => epoll.delete(&bound)?,
        }
        Ok(())
    }

    /// Whether any address is left.
    pub fn is_empty(&self) -> bool {
        self.members().is_empty()
    }

    /// The set's descriptor, registered with the reactor when `accept` waits.
    pub fn io(&self) -> &LazyIo<EpollSet> {
        &self.io
    }

    /// Takes one request from the next ready member, judging it. Malformed
    /// requests and members at end-of-stream are dealt with here and reported as
    /// `Ok(None)` so the caller can try again.
    pub fn try_accept(&self, original: BorrowedFd<'_>) -> io::Result<Option<Outcome>> {
        let mut events = [EpollEvent::empty()];
        if self.io.get_ref().0.wait(&mut events, EpollTimeout::ZERO)? == 0 {
            return Ok(Some(Outcome::Empty));
        }
        let data = u32::try_from(events[0].data()).unwrap_or(0);
        let Some(id) = NonZeroU32::new(data).map(AddressId) else {
            return Ok(None);
        };
        let received = {
            let members = self.members();
            let fd = match members.get(&id) {
                Some(Member::Original) => original,
                Some(Member::Minted(bound)) => bound.as_fd(),
                None => return Ok(None), // removed since epoll_wait returned it
            };
            match sys::recv_request(fd) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                other => other?,
            }
        };
        match request::judge(received.0, received.1) {
            Verdict::Connect(fd) => Ok(Some(Outcome::Connection(fd, id))),
            Verdict::Reject(reason) => {
                peer_warn!(address = %id, %reason, "dropped a malformed connect request");
                Ok(None)
            }
            Verdict::NoAddresses => {
                tracing::debug!(address = %id, "every holder closed this address; removing it");
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
