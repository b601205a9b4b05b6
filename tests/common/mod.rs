//! Helpers shared by the integration tests.
//!
//! Every test runs through [`run`] (or [`run_multi_thread`]), which serialises the
//! tests of one binary (they share one descriptor table) and fails when the set of
//! open descriptors after the test differs from the set before it. Each test makes
//! and drops its own runtime inside that window, so the runtime's own descriptors
//! (epoll, eventfd) are counted too.
//!
//! Child processes re-run the test binary itself with [`ROLE_VAR`] set, so the child
//! is Rust code from this crate: a test starts with `if let Some(role) = child_role()`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Names the role a re-run test binary plays.
pub const ROLE_VAR: &str = "TOKIO_IMC_TEST_ROLE";

/// The longest any single step may take before a test calls it a hang. A liveness
/// bound, not a performance assertion.
pub const HANG: Duration = Duration::from_secs(20);

static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the lock that serialises the tests of this binary. The first caller also
/// starts and drops one runtime: Tokio's signal driver keeps a process-wide socket
/// pair from the first runtime on, and that must be open before any snapshot.
fn serial() -> MutexGuard<'static, ()> {
    route_logs();
    static WARM_UP: std::sync::Once = std::sync::Once::new();
    let guard = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    WARM_UP.call_once(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build runtime");
        runtime.block_on(async {});
        // The blocking facade's process-wide runtime, likewise kept from its first
        // blocking call.
        let (mut a, mut b) = tokio_imc::blocking::ConnectedSocket::pair().expect("pair");
        a.send(b"warm up", &[]).expect("blocking send");
        b.recv().expect("blocking recv");
    });
    guard
}

/// The open descriptors of this process: number -> what it refers to.
pub fn open_fds() -> BTreeMap<i32, String> {
    let mut fds = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd") {
        let entry = entry.expect("a /proc/self/fd entry");
        let Ok(number) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // The directory handle read_dir holds shows up too, as a /proc path. A
        // number that is gone by the time readlink runs was a transient descriptor
        // of another thread (a runtime or the harness), not one a test left open.
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.display().to_string();
        if target.starts_with("/proc/") {
            continue;
        }
        fds.insert(number, target);
    }
    fds
}

/// Runs `test` on a fresh current-thread runtime and asserts that no descriptor
/// was leaked (or closed) by it.
pub fn run<F, Fut>(test: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = io::Result<()>>,
{
    checked(tokio::runtime::Builder::new_current_thread(), test);
}

/// As [`run`], on a multi-thread runtime with two workers.
pub fn run_multi_thread<F, Fut>(test: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = io::Result<()>>,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2);
    checked(builder, test);
}

fn checked<F, Fut>(mut builder: tokio::runtime::Builder, test: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = io::Result<()>>,
{
    let _guard = serial();
    let before = open_fds();
    let runtime = builder.enable_all().build().expect("build runtime");
    let result = runtime.block_on(test());
    runtime.shutdown_timeout(HANG);
    result.expect("test failed");
    assert_no_leak(&before);
}

/// Runs `test` with no runtime at all, serialised and leak-checked like [`run`].
pub fn run_without_runtime(test: impl FnOnce()) {
    let _guard = serial();
    let before = open_fds();
    test();
    assert_no_leak(&before);
}

fn assert_no_leak(before: &BTreeMap<i32, String>) {
    // A descriptor closed by a kernel-side release (e.g. in-flight fds) is
    // synchronous with close(2), so no waiting is needed here.
    let after = open_fds();
    assert_eq!(before, &after, "the set of open descriptors changed");
}

/// Fails the whole test process if it is still running after `limit`: for tests
/// whose failure mode is a runtime thread blocked in a syscall, where no timer on
/// that runtime could fire. Dropping the guard disarms it.
pub fn watchdog(what: &'static str, limit: Duration) -> impl Drop {
    struct Disarm(std::sync::mpsc::Sender<()>);
    impl Drop for Disarm {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    let (disarm, armed) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = armed.recv_timeout(limit) {
            eprintln!("watchdog: {what} blocked for {limit:?}");
            std::process::exit(101);
        }
    });
    Disarm(disarm)
}

/// The role this process was started in, if it is a child.
pub fn child_role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// A command that re-runs this test binary as `role`, running only `test`.
pub fn child(test: &str, role: &str) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut command = Command::new(exe);
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE_VAR, role)
        .stdin(Stdio::null());
    command
}

/// The exit code of a child whose body succeeded. Not 0: a child whose test
/// filter matched nothing also exits 0, and must not count as a pass.
pub const CHILD_OK: i32 = 42;

/// Runs a child's body on a current-thread runtime and exits: [`CHILD_OK`] on
/// success, 1 with the error printed otherwise. Never returns.
pub fn child_main<F, Fut>(body: F) -> !
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = io::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build runtime");
    match runtime.block_on(body()) {
        Ok(()) => std::process::exit(CHILD_OK),
        Err(err) => {
            eprintln!("child failed: {err}");
            std::process::exit(1)
        }
    }
}

/// Waits for `child` (with a hang bound) and asserts that its body ran and succeeded.
pub fn expect_success(mut child: std::process::Child) {
    let deadline = std::time::Instant::now() + HANG;
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            assert_eq!(status.code(), Some(CHILD_OK), "child exited with {status}");
            return;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("child hung");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An `io::Error` from a message, for test code.
pub fn fail(message: impl Into<String>) -> io::Error {
    io::Error::other(message.into())
}

/// Asserts `condition` inside a test returning `io::Result`.
pub fn ensure(condition: bool, message: impl Into<String>) -> io::Result<()> {
    if condition {
        Ok(())
    } else {
        Err(fail(message))
    }
}

/// `result` must fail with `kind`; returns the error for further checks on its
/// message. `what` names the operation that should have failed.
pub fn fails_with<T>(
    result: io::Result<T>,
    kind: io::ErrorKind,
    what: &str,
) -> io::Result<io::Error> {
    match result {
        Ok(_) => Err(fail(format!("{what} succeeded, expected {kind:?}"))),
        Err(err) if err.kind() == kind => Ok(err),
        Err(err) => Err(fail(format!(
            "{what} failed with {err:?}, expected {kind:?}"
        ))),
    }
}

/// Applies `HANG` to a future inside a test.
pub async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> io::Result<T> {
    tokio::time::timeout(HANG, future)
        .await
        .map_err(|_| fail(format!("{what} hung")))
}

/// Connects through `address` while `bound` accepts (the accept bounded by
/// [`HANG`]): the client's end and the server's.
pub async fn connect_and_accept(
    address: &tokio_imc::SocketAddress,
    bound: &tokio_imc::BoundSocket,
) -> io::Result<(tokio_imc::ConnectedSocket, tokio_imc::ConnectedSocket)> {
    // `try_join!`: a failed connect fails the test at once, not after `HANG`.
    tokio::try_join!(address.connect(), async {
        bounded("accept", bound.accept()).await?
    })
}

/// Reports on the terminal that `test` was skipped, and why. Written to stderr
/// directly: the harness captures `eprintln!` of a passing test, and a skip must
/// not look like a pass.
pub fn skipped(test: &str, why: &str) {
    let _ = writeln!(io::stderr(), "SKIPPED {test}: {why}");
}

/// Polls `future` once, in place, and returns what it gave: for a test to observe
/// that something is waiting (`Pending`) or has nothing to wait for (`Ready`),
/// instead of sleeping and hoping.
///
/// It first yields once, so the runtime polls its reactor and takes in every event
/// the kernel has already reported; and it polls outside Tokio's cooperative
/// budget. `Pending` therefore comes from the future itself: the operation was
/// tried, or is registered with the reactor after trying, and would block.
pub async fn poll_once<F: Future + Unpin>(future: &mut F) -> std::task::Poll<F::Output> {
    tokio::task::yield_now().await;
    tokio::task::unconstrained(std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx))
    }))
    .await
}

/// The inode of the file a descriptor refers to, to check that a received
/// descriptor is the same open file as the one sent.
pub fn inode(fd: impl AsFd) -> u64 {
    nix::sys::stat::fstat(fd.as_fd()).expect("fstat").st_ino
}

/// A pipe whose descriptors are close-on-exec.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe2")
}

/// Whether `fd` is close-on-exec.
pub fn is_cloexec(fd: BorrowedFd<'_>) -> bool {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).expect("F_GETFD");
    nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
}

/// Collects what the crate logs, to assert on its warnings.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

thread_local! {
    /// The logs this thread is capturing into, if any.
    static CAPTURING: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

impl Logs {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Forgets everything logged so far.
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Captures what this thread logs (at DEBUG and above) into these logs until
    /// the guard is dropped.
    ///
    /// One process-wide subscriber, installed before any test runs (see
    /// [`route_logs`]), routes each event to the capturing thread's logs.
    pub fn capture(&self) -> Capture {
        route_logs();
        let previous = CAPTURING.with(|logs| logs.replace(Some(self.clone())));
        Capture { previous }
    }
}

/// Installs, once and before any test body runs, the process-wide subscriber
/// that sends each event to the logs its thread captures into.
///
/// Not a subscriber per capture (`set_default`): tracing caches whether a call
/// site is wanted when the site is first hit, and a site first hit on one thread
/// while another installs a subscriber can stay switched off for good, which lost
/// warnings the tests looked for.
fn route_logs() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(ThreadLogs))
            .expect("no other global subscriber in the tests");
    });
}

/// The layer behind [`route_logs`]: wants every event at DEBUG and above (so no
/// call site is ever cached as unwanted), and writes each as one line,
/// `LEVEL target: message field=value ...`, into the current thread's capture.
struct ThreadLogs;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ThreadLogs {
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if *metadata.level() <= tracing::Level::DEBUG {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        CAPTURING.with(|logs| {
            let Some(logs) = &*logs.borrow() else {
                return;
            };
            let mut line = EventLine::default();
            event.record(&mut line);
            let meta = event.metadata();
            let text = format!(
                "{} {}: {}{}\n",
                meta.level(),
                meta.target(),
                line.message,
                line.fields
            );
            logs.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(text.as_bytes());
        });
    }
}

/// An event's message and its other fields, as text.
#[derive(Default)]
struct EventLine {
    message: String,
    fields: String,
}

impl tracing::field::Visit for EventLine {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

/// Ends a [`Logs::capture`] when dropped.
pub struct Capture {
    previous: Option<Logs>,
}

impl Drop for Capture {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CAPTURING.with(|logs| *logs.borrow_mut() = previous);
    }
}

/// Receives one record with raw blocking syscalls: its bytes and descriptors.
/// For tests that play a peer without using tokio-imc.
pub fn raw_recv(socket: BorrowedFd<'_>, max: usize) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut data = vec![0u8; max];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 253]);
    let mut iov = [io::IoSliceMut::new(&mut data)];
    let msg = nix::sys::socket::recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let len = msg.bytes;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: recvmsg just installed these descriptors for us; nothing else owns them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    data.truncate(len);
    Ok((data, fds))
}

/// Sends one record with a raw `sendmsg` (`MSG_NOSIGNAL`), as a peer that does not
/// use tokio-imc would.
pub fn raw_send(socket: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    raw_send_with(socket, data, fds, nix::sys::socket::MsgFlags::empty())
}

/// As [`raw_send`], failing with `WouldBlock` instead of waiting (`MSG_DONTWAIT`),
/// whatever the descriptor's own flags.
pub fn raw_send_nonblocking(
    socket: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    raw_send_with(socket, data, fds, nix::sys::socket::MsgFlags::MSG_DONTWAIT)
}

fn raw_send_with(
    socket: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
    flags: nix::sys::socket::MsgFlags,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let raw: Vec<std::os::fd::RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let iov = [io::IoSlice::new(data)];
    let cmsgs = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
    let cmsgs: &[nix::sys::socket::ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsgs };
    nix::sys::socket::sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        cmsgs,
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL | flags,
        None,
    )
    .map_err(io::Error::from)
}

/// `socketpair(AF_UNIX, kind)` with close-on-exec, blocking.
pub fn raw_pair(kind: nix::sys::socket::SockType) -> (OwnedFd, OwnedFd) {
    nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        kind,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair")
}
