//! [`Gate`]: one minted address's [`AddressPolicy`] at work, counting what it
//! admitted and what is still open.
//!
//! The address set asks the gate before taking each request (and changes its
//! counts under the set's lock); the connections admitted through the address
//! tell it, through the endpoint register, when they close.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::sys::endpoint::Admission;
use crate::sys::reactor::Doorbell;
use crate::AddressPolicy;

/// What the address set must do after a gate admitted a connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AfterAdmit {
    /// Nothing: the address goes on as before.
    Serve,
    /// Stop reading its requests until one of its connections closes.
    Pause,
    /// Revoke it: it admitted all it may.
    UsedUp,
}

/// The state of one address's policy.
#[derive(Debug)]
pub(crate) struct Gate {
    policy: AddressPolicy,
    deadline: Option<Instant>,
    /// Connections admitted in total.
    admitted: AtomicU64,
    /// Connections admitted and not closed yet.
    open: AtomicUsize,
    /// Rings the accept set when a full address has room again.
    room: Doorbell,
}

impl Gate {
    /// A gate for `policy`, from now; `room` is rung when a full address has
    /// room again.
    pub(crate) fn new(policy: AddressPolicy, room: Doorbell) -> Arc<Gate> {
        Arc::new(Gate {
            policy,
            deadline: policy
                .expires_after
                .and_then(|after| Instant::now().checked_add(after)),
            admitted: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            room,
        })
    }

    /// When the address expires, if it does (one too far in the future to
    /// name never does).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the address may admit nothing more, for good: expired, or
    /// every connection it may admit admitted.
    pub(crate) fn is_spent(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|deadline| now >= deadline)
            || self
                .policy
                .max_connections
                .is_some_and(|max| self.admitted.load(Ordering::Acquire) >= max)
    }

    /// Whether as many of its connections are open as it may have.
    pub(crate) fn is_full(&self) -> bool {
        self.policy
            .max_open
            .is_some_and(|max| self.open.load(Ordering::Acquire) >= max)
    }

    /// Whether a request must be judged before it counts (under the set's
    /// lock), so that a malformed one uses up nothing.
    pub(crate) fn counts_connections(&self) -> bool {
        self.policy.max_connections.is_some() || self.policy.max_open.is_some()
    }

    /// Counts one connection admitted (the caller holds the set's lock).
    pub(crate) fn admit(&self) -> AfterAdmit {
        let admitted = self.admitted.fetch_add(1, Ordering::AcqRel) + 1;
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        if self
            .policy
            .max_connections
            .is_some_and(|max| admitted >= max)
        {
            AfterAdmit::UsedUp
        } else if self.policy.max_open.is_some_and(|max| open >= max) {
            AfterAdmit::Pause
        } else {
            AfterAdmit::Serve
        }
    }
}

impl Admission for Gate {
    fn refuses_descriptors(&self) -> bool {
        !self.policy.descriptors
    }

    fn closed(&self) {
        let before = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                open.checked_sub(1)
            });
        // From full to not: the paused address may be read again.
        if let (Ok(before), Some(max)) = (before, self.policy.max_open) {
            if before == max {
                self.room.ring();
            }
        }
    }
}
