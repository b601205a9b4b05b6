//! Waiting for a connection's peer to hang up, blocking: a `poll(2)` on the
//! socket itself, for the hang-up alone (outside the shared runtime, which the
//! other threads' blocking calls drive meanwhile).

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

/// Waits (for at most `limit`) until the peer of `fd` hangs up; `TimedOut`
/// names `what` and the limit.
pub(super) fn closed_within(
    what: &str,
    fd: BorrowedFd<'_>,
    limit: Option<Duration>,
) -> io::Result<()> {
    // Not inside the shared runtime: a thread waiting here must not hold up
    // the other threads' blocking calls, which drive it.
    super::runtime::may_block_here(what)?;
    match crate::sys::socket::wait_hung_up(fd, limit)? {
        true => Ok(()),
        false => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} timed out after {limit:?}: the peer is still connected"),
        )),
    }
}
