//! The one runtime behind every blocking object.
//!
//! A current-thread runtime, built on first use and shared by the whole process:
//! no worker threads, and no runtime per connection. Its reactor is driven by
//! whichever thread is inside a blocking call; other threads blocked at the same
//! time are woken by it, so objects can be used from several threads at once.

use std::future::Future;
use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The shared runtime, built on first use.
pub fn shared() -> io::Result<&'static Runtime> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    // Two threads may race here; the loser's runtime is dropped (on a plain
    // thread, where that is allowed).
    let _ = RUNTIME.set(runtime);
    RUNTIME
        .get()
        .ok_or_else(|| io::Error::other("the blocking runtime could not be initialised"))
}

/// Runs `future` to completion on the shared runtime.
///
/// Refuses, with an error rather than Tokio's panic, to block a thread that is
/// inside a Tokio runtime: that would stall the runtime (and a nested `block_on`
/// panics).
pub fn block_on<F: Future>(what: &str, future: F) -> io::Result<F::Output> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(io::Error::other(format!(
            "tokio_imc::blocking: {what} was called from inside a Tokio runtime, where blocking \
             would stall it; use the async API there (see `into_async`)"
        )));
    }
    Ok(shared()?.block_on(future))
}

/// As [`block_on`] for an I/O future, failing with `TimedOut` after `limit`. The
/// futures it runs are cancel safe, so the object stays usable after a timeout.
pub fn block_on_timeout<T>(
    what: &str,
    limit: Duration,
    future: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    // The timer must be made inside the runtime's context, so inside the future.
    block_on(
        what,
        async move { tokio::time::timeout(limit, future).await },
    )?
    .map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} timed out after {limit:?}"),
        )
    })?
}
