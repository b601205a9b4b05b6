//! [`AddressId`]: the name a bound socket gives each of its addresses.

use std::fmt;
use std::io;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};

/// Names one address of a [`BoundSocket`](crate::BoundSocket): the original one or
/// a minted one. Unique within the process.
///
/// 32 bits, so that a connection that carries one stays as small as a tokio
/// `UnixStream`; the process can make 2<sup>32</sup> − 1 addresses in its life.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddressId(NonZeroU32);

impl AddressId {
    /// A fresh id, never handed out before in this process.
    pub(crate) fn next() -> io::Result<AddressId> {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let value = NEXT
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
            .map_err(|_| io::Error::other("this process has used every address id (2^32 - 1)"))?;
        NonZeroU32::new(value)
            .map(AddressId)
            .ok_or_else(|| io::Error::other("address ids start at 1"))
    }

    /// The id of a token that [`get`](Self::get) gave, if it can be one.
    pub(crate) fn from_token(token: u64) -> Option<AddressId> {
        u32::try_from(token)
            .ok()
            .and_then(NonZeroU32::new)
            .map(AddressId)
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
