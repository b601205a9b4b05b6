//! [`AddressPolicy`]: the limits a minted address carries.

use std::time::Duration;

/// The limits of one minted address, for
/// [`BoundSocket::mint_address_with`](crate::BoundSocket::mint_address_with).
///
/// A builder: [`AddressPolicy::new`] has no limit (what
/// [`mint_address`](crate::BoundSocket::mint_address) gives), and each method
/// adds one. The server alone enforces them: the holder's side, the wire
/// protocol and any peer (Python's, say) are unchanged.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use std::time::Duration;
/// use tokio_imc::{make_bound_socket, AddressPolicy};
///
/// let (_address, bound) = make_bound_socket()?;
/// // An invitation: one connection, within a minute, carrying no descriptors.
/// let invitation = AddressPolicy::new()
///     .max_connections(1)
///     .expires_after(Duration::from_secs(60))
///     .descriptors(false);
/// let (id, address) = bound.mint_address_with(invitation)?;
/// let (_theirs, ours) = tokio::try_join!(address.connect(), bound.accept())?;
/// assert_eq!(ours.address_id(), Some(id));
/// // Used up: the address revoked itself.
/// assert_eq!(
///     address.connect().await.unwrap_err().kind(),
///     std::io::ErrorKind::ConnectionRefused
/// );
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressPolicy {
    pub(crate) max_connections: Option<u64>,
    pub(crate) max_open: Option<usize>,
    pub(crate) expires_after: Option<Duration>,
    pub(crate) descriptors: bool,
}

impl AddressPolicy {
    /// No limit: the same as [`mint_address`](crate::BoundSocket::mint_address).
    pub fn new() -> AddressPolicy {
        AddressPolicy {
            max_connections: None,
            max_open: None,
            expires_after: None,
            descriptors: true,
        }
    }

    /// The address admits `n` connections in total, then revokes itself:
    /// later connects are refused (`ConnectionRefused`) and requests still
    /// queued see their connections end. `max_connections(1)` is an
    /// invitation. (Malformed requests are dropped as always and do not count.)
    /// `n` must be at least 1.
    ///
    /// Protects against a holder that keeps a capability meant for one use.
    pub fn max_connections(self, n: u64) -> AddressPolicy {
        AddressPolicy {
            max_connections: Some(n),
            ..self
        }
    }

    /// At most `n` connections admitted through this address are open in the
    /// server at once (alive as a `ConnectedSocket`, blocking or not, or as its
    /// halves; one turned into a plain `OwnedFd` no longer counts). Further
    /// requests wait in this address's own queue until one closes, so its
    /// holder feels backpressure (its connects wait once that queue is full)
    /// while every other address is served as before. `n` must be at least 1.
    ///
    /// Protects against a holder that opens connections until the server runs
    /// out of descriptors.
    pub fn max_open(self, n: usize) -> AddressPolicy {
        AddressPolicy {
            max_open: Some(n),
            ..self
        }
    }

    /// The address revokes itself `after` it was minted: later connects are
    /// refused, and requests queued but not yet accepted see their
    /// connections end. The server carries this out in its `accept` calls (as
    /// with every policy): while none is waiting, a request sent after the
    /// deadline is queued, and ended by the next `accept`, which never admits it.
    pub fn expires_after(self, after: Duration) -> AddressPolicy {
        AddressPolicy {
            expires_after: Some(after),
            ..self
        }
    }

    /// Whether connections admitted through this address may carry
    /// descriptors to the server (`true` by default). With `false`, the
    /// kernel refuses them where it can (`SO_PASSRIGHTS`, Linux 6.16 and later:
    /// the holder's `sendmsg` fails with `EPERM`), and a record that still
    /// arrives with some (an older kernel, or one queued before the connection
    /// was accepted) is dropped with its descriptors closed and `recv` fails
    /// with `PermissionDenied`; the connection goes on for records without
    /// descriptors. The server's descriptors are never at risk either way.
    ///
    /// Protects against a holder that would fill the server's descriptor table
    /// or hand it objects it must not touch.
    pub fn descriptors(self, allowed: bool) -> AddressPolicy {
        AddressPolicy {
            descriptors: allowed,
            ..self
        }
    }

    /// Whether it limits anything at all.
    pub(crate) fn is_unlimited(&self) -> bool {
        *self == AddressPolicy::new()
    }
}

impl Default for AddressPolicy {
    /// [`AddressPolicy::new`]: no limit.
    fn default() -> AddressPolicy {
        AddressPolicy::new()
    }
}
