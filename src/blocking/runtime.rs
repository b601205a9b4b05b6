//! The one runtime behind every blocking object, and the check that decides
//! whether the calling thread may block on it.
//!
//! A current-thread runtime, built on first use and shared by the whole process:
//! no worker threads, and no runtime per connection. Its reactor is driven by
//! whichever thread is inside a blocking call; other threads blocked at the same
//! time are woken by it, so objects can be used from several threads at once.
//!
//! The data path (sending and receiving on connections and their halves) does
//! not use it: [`run_polled`] waits with `poll(2)` on the connection's own
//! descriptor, so a thread blocked in `recv` holds up no other thread, and a
//! message between two threads costs what it costs with blocking system calls.
//! Accepting, connecting and `released` wait on the runtime, whose reactor
//! watches several descriptors for them at once.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The shared runtime, built on first use.
pub fn shared() -> io::Result<&'static Runtime> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    // One builder at a time, so no runtime is ever built and then dropped: a
    // losing racer would drop its runtime on the calling thread, and Tokio panics
    // when that thread drives a runtime (the call is refused later, not here).
    static BUILDING: Mutex<()> = Mutex::new(());
    let _building = BUILDING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// Runs `future` to completion on the shared runtime.
///
/// Refuses, with an error rather than Tokio's panic, to block a thread that
/// drives a Tokio runtime (a worker, or a thread inside `block_on`): that would
/// stall the runtime. Threads where Tokio allows blocking (its blocking pool, a
/// worker inside `block_in_place`) may block.
pub fn block_on<F: Future>(what: &str, future: F) -> io::Result<F::Output> {
    Ok(may_block_here(what)?.block_on(future))
}

/// The shared runtime, if this thread may block (see [`block_on`]); else the
/// error `block_on` gives. For blocking calls that wait without the runtime.
pub fn may_block_here(what: &str) -> io::Result<&'static Runtime> {
    let runtime = shared()?;
    if !may_block(runtime) {
        return Err(io::Error::other(format!(
            "tokio_imc::blocking: {what} was called on a thread that drives a Tokio runtime \
             (an async task, or inside `block_on`), where blocking would stall it; use the async \
             API there (see `into_async`), or call it from `tokio::task::spawn_blocking`"
        )));
    }
    Ok(runtime)
}

/// Whether this thread may block on `runtime`.
///
/// A thread with no Tokio context is a plain thread: yes. A thread with one may
/// drive a runtime (refuse) or be one of the places Tokio lets block: a thread of
/// its blocking pool, or a worker inside `block_in_place`. Tokio's public API
/// cannot tell these apart, but `Runtime::block_on` can: it refuses, by panicking
/// before it touches the runtime or the future, exactly where blocking is not
/// allowed. So we ask it with an empty future and catch the refusal. Nothing is
/// left behind by a refusal (the check runs before Tokio enters anything; the guard
/// that set the current handle is dropped by the unwinding), and the panic message
/// is kept off stderr by [`QUIET`]. Without unwinding (`panic = "abort"`) the
/// question cannot be asked safely, and any Tokio context is refused.
fn may_block(runtime: &Runtime) -> bool {
    if tokio::runtime::Handle::try_current().is_err() {
        return true;
    }
    tokio_allows_blocking(runtime)
}

#[cfg(panic = "unwind")]
fn tokio_allows_blocking(runtime: &Runtime) -> bool {
    install_quiet_hook();
    QUIET.with(|quiet| quiet.set(true));
    let probe = std::panic::AssertUnwindSafe(|| runtime.block_on(async {}));
    let allowed = std::panic::catch_unwind(probe).is_ok();
    QUIET.with(|quiet| quiet.set(false));
    allowed
}

#[cfg(not(panic = "unwind"))]
fn tokio_allows_blocking(_runtime: &Runtime) -> bool {
    false
}

thread_local! {
    /// Set only around the probe in [`tokio_allows_blocking`], whose one possible
    /// panic is Tokio's refusal: the panic hook stays silent for it.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Wraps the process's panic hook, once, so that it stays silent for the probe's
/// expected refusal and behaves as before for every other panic.
#[cfg(panic = "unwind")]
fn install_quiet_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // `try_with`: a panic while this thread's locals are being destroyed
            // is reported as usual.
            if !QUIET.try_with(Cell::get).unwrap_or(false) {
                previous(info);
            }
        }));
    });
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

/// Runs a send or a receive to completion on this thread, without the shared
/// runtime: its waits are `poll(2)` calls on its own descriptor (see
/// `sys::reactor::polled`), ending with `TimedOut` after `limit` if one is
/// given, and nothing taken. Refused where [`block_on`] is.
pub fn run_polled<T>(
    what: &str,
    limit: Option<Duration>,
    future: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    may_block_here(what)?;
    let deadline = limit.map(|limit| Instant::now() + limit);
    let (done, timed_out) = crate::sys::reactor::polled(deadline, || run_here(future));
    match (done, limit) {
        (Err(err), Some(limit)) if timed_out && err.kind() == io::ErrorKind::TimedOut => {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what} timed out after {limit:?}"),
            ))
        }
        (done, _) => done,
    }
}

/// Polls `future` on this thread until it is ready. Inside `polled` the
/// crate's operations never return `Pending` (they wait in `poll(2)`
/// instead), so this is one poll; anything else that does pend wakes this
/// thread, which is parked meanwhile.
fn run_here<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(done) => return done,
            Poll::Pending => std::thread::park(),
        }
    }
}
