//! [`Endpoint`]: a connection's socket and the address it was admitted through;
//! and the register of the live ones by address, which lets
//! `BoundSocket::disconnect` end them wherever they are.
//!
//! The register holds descriptor *numbers*, and shuts them down. That is sound
//! only because an endpoint takes its number out (under the register's lock)
//! before its descriptor can close, in `Drop` and in `into_fd`; so while the lock
//! is held, every number in the register is open and is that connection's
//! socket. Both halves of that promise are in this file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::mem::ManuallyDrop;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::sys::reactor::OwnsFd;
use crate::sys::socket;
use crate::AddressId;

/// What an address's policy asks of the connections admitted through it,
/// kept in the register beside them (so a connection itself stays 8 bytes).
pub(crate) trait Admission: Send + Sync + fmt::Debug {
    /// Whether records with descriptors are refused on these connections.
    fn refuses_descriptors(&self) -> bool;
    /// One of these connections was closed (or left the register). Called
    /// without the register's lock held.
    fn closed(&self);
}

/// One address's entry in the register.
#[derive(Debug, Default)]
struct Admitted {
    /// The live endpoints admitted through it.
    open: BTreeSet<RawFd>,
    /// Its policy, while it has one (set by [`attach`]).
    admission: Option<Arc<dyn Admission>>,
    /// While the address itself is served: the entry stays even with no open
    /// endpoint (until [`detach`]).
    pinned: bool,
}

/// The live endpoints admitted through each address: a few words a connection.
static ADMITTED: Mutex<BTreeMap<AddressId, Admitted>> = Mutex::new(BTreeMap::new());

fn admitted() -> MutexGuard<'static, BTreeMap<AddressId, Admitted>> {
    // Every change is one insert or remove: a poisoned map is still consistent.
    ADMITTED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Gives address `id` a policy that the connections admitted through it
/// follow (while the address is served, and after for those still open).
pub(crate) fn attach(id: AddressId, admission: Arc<dyn Admission>) {
    let mut admitted = admitted();
    let entry = admitted.entry(id).or_default();
    entry.admission = Some(admission);
    entry.pinned = true;
}

/// Address `id` is no longer served: its entry goes with its last connection.
pub(crate) fn detach(id: AddressId) {
    let mut admitted = admitted();
    if let Some(entry) = admitted.get_mut(&id) {
        entry.pinned = false;
        if entry.open.is_empty() {
            admitted.remove(&id);
        }
    }
}

/// A connection's socket and the address it was accepted through (`None` for
/// one made by `connect` or `pair`): 8 bytes.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// Private, set once in `new` and moved out only by `into_fd`, which consumes
    /// the endpoint: what `OwnsFd` and the register rely on.
    fd: OwnedFd,
    /// Private too: the register is keyed by it.
    address: Option<AddressId>,
}

impl Endpoint {
    /// An endpoint; one admitted through an address joins the register,
    /// with its address's policy (given here too, so that it holds even if the
    /// address was revoked, and its entry detached, since the admission).
    pub(crate) fn new(
        fd: OwnedFd,
        address: Option<AddressId>,
        admission: Option<Arc<dyn Admission>>,
    ) -> Self {
        if let Some(id) = address {
            let mut admitted = admitted();
            let entry = admitted.entry(id).or_default();
            entry.open.insert(fd.as_raw_fd());
            if admission.is_some() {
                entry.admission = admission;
            }
        }
        Endpoint { fd, address }
    }

    /// The address it was admitted through.
    pub(crate) fn address(&self) -> Option<AddressId> {
        self.address
    }

    /// The descriptor, out of the register: no longer a connection that
    /// `disconnect` can reach.
    pub(crate) fn into_fd(self) -> OwnedFd {
        let this = ManuallyDrop::new(self);
        this.leave_register();
        // SAFETY: `this` is never dropped (ManuallyDrop), so its `fd` is read out
        // exactly once and has one owner, the caller; `address` is `Copy`.
        unsafe { std::ptr::read(&this.fd) }
    }

    /// Whether the address it came through refuses descriptors: asked only
    /// when a record arrives with some.
    pub(crate) fn refuses_descriptors(&self) -> bool {
        let Some(id) = self.address else {
            return false;
        };
        admitted()
            .get(&id)
            .and_then(|entry| entry.admission.as_ref())
            .is_some_and(|admission| admission.refuses_descriptors())
    }

    fn leave_register(&self) {
        let Some(id) = self.address else {
            return;
        };
        let admission = {
            let mut admitted = admitted();
            let Some(entry) = admitted.get_mut(&id) else {
                return;
            };
            entry.open.remove(&self.fd.as_raw_fd());
            let admission = entry.admission.clone();
            if entry.open.is_empty() && !entry.pinned {
                admitted.remove(&id);
            }
            admission
        };
        // Outside the lock: it rings the address set's flag.
        if let Some(admission) = admission {
            admission.closed();
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // Before the descriptor closes (fields drop after this body).
        self.leave_register();
        match self.address {
            Some(id) => {
                tracing::debug!(fd = self.fd.as_raw_fd(), address_id = %id, "connection closed")
            }
            None => tracing::debug!(fd = self.fd.as_raw_fd(), "connection closed"),
        }
    }
}

impl AsFd for Endpoint {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Endpoint {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

// SAFETY: the descriptor is a private field (above), never replaced, and leaves
// only by consuming the endpoint; `as_fd`/`as_raw_fd` always report it.
unsafe impl OwnsFd for Endpoint {}

/// Shuts down both directions of every live endpoint admitted through `id`;
/// returns how many there were.
pub(crate) fn shut_down_admitted(id: AddressId) -> usize {
    let admitted = admitted();
    let Some(numbers) = admitted.get(&id).map(|entry| &entry.open) else {
        return 0;
    };
    for &number in numbers {
        // SAFETY: a number is in the register only while an `Endpoint` owns it,
        // and an endpoint leaves the register under this lock (held here) before
        // its descriptor closes: so it is open, and is that connection's socket,
        // for as long as this borrow lives.
        let fd = unsafe { BorrowedFd::borrow_raw(number) };
        // A peer that already closed its end changes nothing: ours still ends.
        let _ = socket::shutdown(fd, Shutdown::Both);
    }
    numbers.len()
}
