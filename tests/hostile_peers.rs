//! The server against peers that do what tokio-imc's own client never would.
//!
//! Every attacker is a separate process (this test binary again, in a role) that
//! speaks the protocol with raw syscalls. Each test checks that the server keeps
//! serving a well-behaved client afterwards, that nothing panics, that the
//! server's descriptor set returns to its baseline (`run`), and that the caller
//! sees the documented result.
//!
//! Sizes: the flood has 100,000 requests served (flooders that never wait for an
//! accept send a few hundred more, refused at the end) and the load test holds
//! 10,000 connections, in CI as everywhere (both take seconds here).

mod common;

use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{
    bounded, child, child_main, child_role, connect_and_accept, ensure, expect_success, fail,
    fails_with, raw_pair, raw_recv, raw_send, run, Logs,
};
use nix::sys::socket::SockType;
use tokio_imc::{handoff, make_bound_socket, BoundSocket, ConnectedSocket, SocketAddress};

const FLOOD_REQUESTS: usize = 100_000;
const FLOOD_PROCESSES: usize = 4;
/// The flood's acceptor pauses for a millisecond after this many connections.
const FLOOD_PAUSE_EVERY: usize = 100;
const LOAD_CONNECTIONS: usize = 10_000;
const LOAD_PROCESSES: usize = 4;

/// The address a raw attacker inherited, taken without tokio-imc (entries are
/// `name=number:device:inode`; a raw attacker trusts the number).
fn inherited(name: &str) -> OwnedFd {
    let value = std::env::var(handoff::ENV_VAR).expect("TOKIO_IMC_FDS");
    let number: RawFd = value
        .split(',')
        .find_map(|entry| entry.strip_prefix(&format!("{name}=")))
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .expect("a passed descriptor");
    // SAFETY: the parent passed this descriptor to us under `name`; nothing else in
    // this process owns it.
    unsafe { OwnedFd::from_raw_fd(number) }
}

/// Starts an attacker holding `address` (and, optionally, a control connection).
fn start(
    test: &str,
    role: &str,
    address: BorrowedFd<'_>,
    control: Option<BorrowedFd<'_>>,
) -> io::Result<Child> {
    let mut command = child(test, role);
    let mut fds = vec![(handoff::ADDRESS, address)];
    fds.extend(control.map(|fd| ("control", fd)));
    handoff::pass(&mut command, &fds)?;
    command.spawn()
}

async fn wait(process: Child) -> io::Result<()> {
    tokio::task::spawn_blocking(move || expect_success(process))
        .await
        .map_err(io::Error::other)
}

/// A raw, well-formed connect: returns the kept end.
fn raw_connect(address: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let (kept, sent) = raw_pair(SockType::SeqPacket);
    raw_send(address, b"c", &[sent.as_fd()])?;
    Ok(kept)
}

/// A well-behaved client is still served: connect, echo, through `address`.
async fn still_served(address: &SocketAddress, bound: &BoundSocket) -> io::Result<()> {
    let (mut client, mut server) = connect_and_accept(address, bound).await?;
    client.send(b"still there?", &[]).await?;
    let got = server.recv().await?.ok_or_else(|| fail("closed"))?;
    ensure(&got.data[..] == b"still there?", "served after the attack")
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(0)
        * 4096
}

#[test]
fn malformed_requests_of_every_kind_from_another_process() {
    const TEST: &str = "malformed_requests_of_every_kind_from_another_process";
    if child_role().is_some() {
        let address = inherited(handoff::ADDRESS);
        let (_kept, sent) = raw_pair(SockType::SeqPacket);
        let (_stream_kept, stream) = raw_pair(SockType::Stream);
        let (_dgram_kept, dgram) = raw_pair(SockType::Datagram);
        let (read_end, _write_end) = common::pipe();
        let unconnected = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            SockType::SeqPacket,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp listener");
        let tcp = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("tcp");
        raw_send(address.as_fd(), b"x", &[sent.as_fd()]).expect("wrong byte");
        raw_send(address.as_fd(), b"c", &[]).expect("no fd");
        raw_send(address.as_fd(), b"c", &[sent.as_fd(); 2]).expect("2 fds");
        for fd in [
            read_end.as_fd(),
            stream.as_fd(),
            dgram.as_fd(),
            unconnected.as_fd(),
            tcp.as_fd(),
            address.as_fd(),
        ] {
            raw_send(address.as_fd(), b"c", &[fd]).expect("a wrong kind of descriptor");
        }
        raw_send(address.as_fd(), &[0u8; 40], &[]).expect("a burst of bare bytes");
        // "cc" with one descriptor: one good request (its client closes at once)
        // and one without a descriptor.
        let (cc_kept, cc_sent) = raw_pair(SockType::SeqPacket);
        raw_send(address.as_fd(), b"cc", &[cc_sent.as_fd()]).expect("cc");
        drop((cc_kept, cc_sent));
        raw_send(address.as_fd(), b"c", &[sent.as_fd(); 3]).expect("3 fds");
        raw_send(address.as_fd(), b"c", &[sent.as_fd(); 253]).expect("253 fds");
        let err = raw_send(address.as_fd(), b"c", &[sent.as_fd(); 254])
            .expect_err("the kernel refuses 254");
        assert_eq!(err.raw_os_error(), Some(nix::libc::EINVAL), "{err}");
        let file = std::fs::File::open("/proc/self/exe").expect("a regular file");
        raw_send(address.as_fd(), b"c", &[file.as_fd()]).expect("a file");
        let memfd =
            nix::sys::memfd::memfd_create(c"attack", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .expect("memfd");
        raw_send(address.as_fd(), b"c", &[memfd.as_fd()]).expect("a memfd");
        // Then a proper request, which must be served.
        let kept = raw_connect(address.as_fd()).expect("connect");
        raw_send(kept.as_fd(), b"ping", &[]).expect("send");
        let (reply, _) = raw_recv(kept.as_fd(), 64).expect("reply");
        assert_eq!(reply, b"ping");
        std::process::exit(common::CHILD_OK);
    }
    let logs = Logs::default();
    let _capture = logs.capture();
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let attacker = start(TEST, "attacker", address.as_fd(), None)?;
        // The only requests that can be accepted: the first half of "cc" (whose
        // client is already gone) and the final good one, which says "ping".
        let mut accepted = 0;
        loop {
            let mut connection = bounded("accept", bound.accept()).await??;
            accepted += 1;
            if let Some(ping) = bounded("recv", connection.recv()).await?? {
                connection.send(&ping.data, &[]).await?;
                break;
            }
        }
        ensure(accepted == 2, format!("{accepted} connections accepted"))?;
        wait(attacker).await?;
        let text = logs.text();
        for (reason, times) in [
            ("0x78, not 'c'", 1),
            ("0x00, not 'c'", 40),
            ("no descriptor", 2),
            ("carried 2 descriptors", 1),
            ("carried 3 descriptors", 1),
            ("carried 253 descriptors", 1),
            ("not a socket", 3),
            ("SOCK_STREAM", 3),
            ("SOCK_DGRAM", 1),
            ("not connected", 1),
        ] {
            let seen = text.matches(reason).count();
            ensure(
                seen == times,
                format!("{seen} warnings naming {reason:?}, not {times}"),
            )?;
        }
        // The attacker has exited, so everything it sent is queued: any other
        // request that passed would be accepted now.
        let idle = bound.accept();
        tokio::pin!(idle);
        ensure(
            common::poll_once(&mut idle).await.is_pending(),
            "nothing else was accepted",
        )?;
        still_served(&address, &bound).await
    });
}

#[test]
fn a_holder_shutting_down_the_shared_address_ends_it_for_every_holder() {
    const TEST: &str = "a_holder_shutting_down_the_shared_address_ends_it_for_every_holder";
    if let Some(role) = child_role() {
        let address = inherited(handoff::ADDRESS);
        let how = match role.as_str() {
            "read" => nix::sys::socket::Shutdown::Read,
            "write" => nix::sys::socket::Shutdown::Write,
            _ => nix::sys::socket::Shutdown::Both,
        };
        nix::sys::socket::shutdown(address.as_raw_fd(), how).expect("shutdown");
        std::process::exit(common::CHILD_OK);
    }
    run(|| async {
        // Shutting down the reading side alone changes nothing for anyone: an
        // address is only ever written to.
        let (address, bound) = make_bound_socket()?;
        wait(start(TEST, "read", address.as_fd(), None)?).await?;
        still_served(&address, &bound).await?;

        // Write (or both): requests queued before it are still served, then the
        // server sees the end (NotConnected) and every holder is refused.
        for how in ["write", "both"] {
            let (address, bound) = make_bound_socket()?;
            let mut queued = address.connect().await?;
            wait(start(TEST, how, address.as_fd(), None)?).await?;
            fails_with(
                address.connect().await,
                ErrorKind::ConnectionRefused,
                &format!("{how}: connect after shutdown"),
            )?;
            let mut served = bounded("the queued request", bound.accept()).await??;
            queued.send(b"queued", &[]).await?;
            ensure(served.recv().await?.is_some(), "the queued request works")?;
            fails_with(
                bounded("accept after shutdown", bound.accept()).await?,
                ErrorKind::NotConnected,
                &format!("{how}: accept after shutdown"),
            )?;
            // Nothing spins: every further accept fails at once, the same way.
            fails_with(
                bounded("accept again", bound.accept()).await?,
                ErrorKind::NotConnected,
                &format!("{how}: accept again"),
            )?;
            // A minted address is a way back for well-behaved holders.
            let (_, fresh) = bound.mint_address()?;
            still_served(&fresh, &bound).await?;
        }
        Ok(())
    });
}

#[test]
fn a_peer_killed_mid_conversation_with_descriptors_queued_both_ways() {
    const TEST: &str = "a_peer_killed_mid_conversation_with_descriptors_queued_both_ways";
    if child_role().is_some() {
        let address = inherited(handoff::ADDRESS);
        let kept = raw_connect(address.as_fd()).expect("connect");
        let (read_end, _write_end) = common::pipe();
        for i in 0..5u8 {
            raw_send(
                kept.as_fd(),
                &[i; 32],
                &[read_end.as_fd(), read_end.as_fd()],
            )
            .expect("send");
        }
        raw_send(kept.as_fd(), b"ready to die", &[]).expect("send");
        // Never read what the server sends; wait to be killed.
        std::thread::sleep(common::HANG * 2);
        std::process::exit(1);
    }
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let mut victim = start(TEST, "victim", address.as_fd(), None)?;
        let mut connection = bounded("accept", bound.accept()).await??;
        // Queue messages with descriptors towards the peer, which never reads them.
        let (read_end, _write_end) = common::pipe();
        for _ in 0..5 {
            connection
                .send(
                    b"unread",
                    &[read_end.as_fd(), read_end.as_fd(), read_end.as_fd()],
                )
                .await?;
        }
        // Wait until everything the peer sends is queued, then kill -9 it.
        let mut received = Vec::new();
        loop {
            let message = bounded("recv", connection.recv())
                .await??
                .ok_or_else(|| fail("closed early"))?;
            if &message.data[..] == b"ready to die" {
                break;
            }
            received.push(message);
        }
        victim.kill()?;
        victim.wait()?;
        ensure(
            received.len() == 5 && received.iter().all(|m| m.fds.len() == 2),
            "queued messages arrived whole",
        )?;
        drop(received);
        // The peer died with our messages unread: Linux reports that once, as
        // ECONNRESET, and recv reads past it to the end of the stream.
        let end = bounded("recv after the kill", connection.recv()).await??;
        ensure(end.is_none(), "end of stream, not an error")?;
        fails_with(
            connection.send(b"anyone?", &[]).await,
            ErrorKind::BrokenPipe,
            "send to the dead",
        )?;
        drop(connection);
        // The descriptors queued towards the dead peer were released: `run`
        // checks that this process's descriptor set is back to its baseline.
        still_served(&address, &bound).await
    });
}

#[test]
fn a_server_that_never_accepts_pushes_back_and_too_many_refs_is_the_clients_error() {
    const TEST: &str =
        "a_server_that_never_accepts_pushes_back_and_too_many_refs_is_the_clients_error";
    if child_role().is_some() {
        // An unprivileged client (the in-flight limit does not bind root) with a
        // small descriptor limit. Run as root, it drops to nobody; run as any other
        // user, it is unprivileged already: the test needs no root.
        let nobody = nix::unistd::Uid::from_raw(65534);
        if nix::unistd::geteuid().is_root() {
            let group = nix::unistd::Gid::from_raw(65534);
            nix::unistd::setgroups(&[]).expect("setgroups");
            nix::unistd::setresgid(group, group, group).expect("setresgid");
            nix::unistd::setresuid(nobody, nobody, nobody).expect("setresuid");
        }
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 64, 64)
            .expect("setrlimit");
        child_main(|| async {
            let address = SocketAddress::try_from(inherited(handoff::ADDRESS))?;
            let mut control = ConnectedSocket::try_from(inherited("control"))?;
            // Keep a few connections open to see them end later; drop the rest, so
            // only descriptors in flight grow.
            let mut waiting = Vec::new();
            let mut connects = 0usize;
            let err = loop {
                match tokio::time::timeout(common::HANG, address.connect()).await {
                    Ok(Ok(connection)) => {
                        connects += 1;
                        if waiting.len() < 5 {
                            waiting.push(connection);
                        }
                    }
                    Ok(Err(err)) => break err,
                    Err(_) => return Err(fail("connect blocked instead of failing")),
                }
            };
            ensure(
                err.to_string().contains("ETOOMANYREFS"),
                format!("after {connects} connects: {err}"),
            )?;
            control.send(connects.to_string().as_bytes(), &[]).await?;
            // The server drops its bound socket now: every waiting client learns it.
            control.recv().await?;
            for connection in &mut waiting {
                ensure(
                    bounded("orphan", connection.recv()).await??.is_none(),
                    "the queued connection ended",
                )?;
            }
            Ok(())
        });
    }
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let (mut control, control_peer) = ConnectedSocket::pair()?;
        let rss_before = rss_bytes();
        let client = start(TEST, "client", address.as_fd(), Some(control_peer.as_fd()))?;
        drop(control_peer);
        let report = bounded("the client's report", control.recv())
            .await??
            .ok_or_else(|| fail("client died"))?;
        let connects: usize = String::from_utf8_lossy(&report.data)
            .parse()
            .map_err(io::Error::other)?;
        ensure(
            connects >= 60,
            format!("the limit came after {connects} connects"),
        )?;
        // The server read nothing and holds nothing more in user space.
        let grown = rss_bytes().saturating_sub(rss_before);
        ensure(
            grown < 16 << 20,
            format!("server memory grew by {grown} bytes"),
        )?;
        drop(bound);
        control.send(b"dropped", &[]).await?;
        wait(client).await
    });
}

/// What one flooder did, sent to the parent over its control socket when its
/// requests started being refused.
#[derive(Debug, Default)]
struct FloodReport {
    /// Requests queued: `sendmsg` on the address succeeded.
    sent: u64,
    /// Of those, connections the server accepted and answered (the echo arrived).
    served: u64,
    /// Of those, connections that ended unanswered (the server dropped the queued
    /// request): end of stream, or `ECONNRESET` then end of stream.
    refused: u64,
    /// Times a request found the queue full (`EAGAIN`).
    full: u64,
    /// Time spent inside connect calls: the `sendmsg` attempts and the waits for room.
    in_connect: Duration,
    /// Of that, time spent blocked in `poll`, waiting for room in the queue.
    blocked: Duration,
    /// From the first request to the refusal that ended the flood.
    flooding: Duration,
}

impl FloodReport {
    fn encode(&self) -> String {
        format!(
            "{} {} {} {} {} {} {}",
            self.sent,
            self.served,
            self.refused,
            self.full,
            self.in_connect.as_nanos(),
            self.blocked.as_nanos(),
            self.flooding.as_nanos()
        )
    }

    fn decode(text: &[u8]) -> io::Result<FloodReport> {
        let text = String::from_utf8_lossy(text);
        let numbers: Vec<u64> = text
            .split_whitespace()
            .map(|n| n.parse().map_err(io::Error::other))
            .collect::<io::Result<_>>()?;
        let [sent, served, refused, full, in_connect, blocked, flooding] = numbers[..] else {
            return Err(fail(format!("a malformed report: {text:?}")));
        };
        Ok(FloodReport {
            sent,
            served,
            refused,
            full,
            in_connect: Duration::from_nanos(in_connect),
            blocked: Duration::from_nanos(blocked),
            flooding: Duration::from_nanos(flooding),
        })
    }
}

/// One raw connect request that never waits for the server to accept: a
/// non-blocking `sendmsg` of `c` with `sent`; while the queue is full, `poll` for
/// room and try again. Returns the error that ended it (`EPIPE` once the server
/// refuses).
fn flood_connect(
    address: BorrowedFd<'_>,
    sent: BorrowedFd<'_>,
    report: &mut FloodReport,
) -> nix::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let entered = std::time::Instant::now();
    let raw = [sent.as_raw_fd()];
    let result = loop {
        match sendmsg::<()>(
            address.as_raw_fd(),
            &[io::IoSlice::new(b"c")],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(_) => break Ok(()),
            Err(nix::errno::Errno::EAGAIN) => {
                report.full += 1;
                let waiting = std::time::Instant::now();
                let mut fds = [PollFd::new(address, PollFlags::POLLOUT)];
                let ready = poll(&mut fds, PollTimeout::try_from(common::HANG).expect("HANG"))?;
                report.blocked += waiting.elapsed();
                assert!(ready > 0, "no room in the queue for {:?}", common::HANG);
            }
            Err(err) => break Err(err),
        }
    };
    report.in_connect += entered.elapsed();
    result
}

/// Settles one connection the flooder made: `Some(true)` when the server's echo of
/// `token` arrived, `Some(false)` when it ended unanswered, `None` when neither has
/// happened yet (only if `wait` is false).
fn flood_outcome(kept: BorrowedFd<'_>, token: u32, wait: bool) -> Option<bool> {
    use nix::sys::socket::{recv, MsgFlags};
    if wait {
        let mut fds = [nix::poll::PollFd::new(kept, nix::poll::PollFlags::POLLIN)];
        let timeout = nix::poll::PollTimeout::try_from(common::HANG).expect("HANG");
        let ready = nix::poll::poll(&mut fds, timeout).expect("poll a connection");
        assert!(ready > 0, "connection {token} neither served nor ended");
    }
    let mut reply = [0u8; 16];
    // recvmsg finds the queue empty and then checks for a hang-up, not atomically:
    // an echo and a close landing between the two read as an end of stream. Once
    // the hang-up has been seen, any echo is queued: look once more.
    let mut hung_up = false;
    loop {
        match recv(kept.as_raw_fd(), &mut reply, MsgFlags::MSG_DONTWAIT) {
            Ok(0) if !hung_up => hung_up = true,
            Ok(0) => return Some(false),
            Ok(len) => {
                assert_eq!(&reply[..len], token.to_ne_bytes(), "the echo of its token");
                return Some(true);
            }
            // Our token was still unread when the server dropped the request.
            Err(nix::errno::Errno::ECONNRESET) => {
                let end = recv(kept.as_raw_fd(), &mut reply, MsgFlags::MSG_DONTWAIT);
                assert_eq!(end, Ok(0), "end of stream after the reset");
                return Some(false);
            }
            Err(nix::errno::Errno::EAGAIN) if !wait && !hung_up => return None,
            Err(err) => panic!("connection {token}: {err}"),
        }
    }
}

/// A flooder: sends connect requests as fast as the queue takes them, never
/// waiting for one to be accepted, until the server refuses (`EPIPE`). Each
/// connection carries a token the server echoes; answers are collected on the way
/// (oldest first, without waiting) and at the end.
fn flood(address: BorrowedFd<'_>) -> FloodReport {
    let mut report = FloodReport::default();
    let mut open = std::collections::VecDeque::new();
    let started = std::time::Instant::now();
    for token in 0u32.. {
        let (kept, sent) = raw_pair(SockType::SeqPacket);
        raw_send(kept.as_fd(), &token.to_ne_bytes(), &[]).expect("the token");
        match flood_connect(address, sent.as_fd(), &mut report) {
            Ok(()) => report.sent += 1,
            Err(nix::errno::Errno::EPIPE) => break,
            Err(err) => panic!("request {token}: {err}"),
        }
        open.push_back((kept, token));
        while let Some((kept, token)) = open.front() {
            match flood_outcome(kept.as_fd(), *token, false) {
                Some(served) => {
                    report.served += u64::from(served);
                    report.refused += u64::from(!served);
                    open.pop_front();
                }
                None => break,
            }
        }
    }
    report.flooding = started.elapsed();
    for (kept, token) in open {
        let served = flood_outcome(kept.as_fd(), token, true).expect("settled");
        report.served += u64::from(served);
        report.refused += u64::from(!served);
    }
    report
}

#[test]
fn a_flood_of_100000_requests_from_several_processes_against_a_slow_acceptor() {
    const TEST: &str = "a_flood_of_100000_requests_from_several_processes_against_a_slow_acceptor";
    if child_role().is_some() {
        let address = inherited(handoff::ADDRESS);
        let control = inherited("control");
        let report = flood(address.as_fd());
        raw_send(control.as_fd(), report.encode().as_bytes(), &[]).expect("report");
        std::process::exit(common::CHILD_OK);
    }
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let rss_before = rss_bytes();
        let mut flooders = Vec::new();
        let mut controls = Vec::new();
        for _ in 0..FLOOD_PROCESSES {
            let (control, control_peer) = ConnectedSocket::pair()?;
            flooders.push(start(
                TEST,
                "flooder",
                address.as_fd(),
                Some(control_peer.as_fd()),
            )?);
            controls.push(control);
        }
        // Serve FLOOD_REQUESTS connections, one at a time: accept, read the
        // client's token, echo it; and now and then attend to something else
        // (a slow acceptor: the queue fills up meanwhile).
        for accepted in 0..FLOOD_REQUESTS {
            let mut connection = bounded("accept", bound.accept()).await??;
            let token = bounded("the token", connection.recv())
                .await??
                .ok_or_else(|| fail(format!("connection {accepted} closed unanswered")))?;
            connection.send(&token.data, &[]).await?;
            if accepted % FLOOD_PAUSE_EVERY == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // Then refuse the rest, with the flooders still sending: the requests
        // queued now are dropped, and every later one fails with EPIPE.
        bound.revoke(bound.address_id())?;
        let mut total = FloodReport::default();
        for control in &mut controls {
            let report = bounded("a flooder's report", control.recv())
                .await??
                .ok_or_else(|| fail("a flooder died"))?;
            let report = FloodReport::decode(&report.data)?;
            ensure(
                report.served + report.refused == report.sent,
                format!("a flooder lost connections: {report:?}"),
            )?;
            total.sent += report.sent;
            total.served += report.served;
            total.refused += report.refused;
            total.full += report.full;
            total.in_connect += report.in_connect;
            total.blocked += report.blocked;
            total.flooding += report.flooding;
        }
        for flooder in flooders {
            wait(flooder).await?;
        }
        eprintln!("all flooders: {total:?}");
        // Every request the server accepted was answered, every other one was
        // refused, and none is unaccounted for.
        ensure(
            total.served == FLOOD_REQUESTS as u64,
            format!("{FLOOD_REQUESTS} accepted, but the flooders saw {total:?}"),
        )?;
        // The queue was at its limit for most of the flood: the flooders spent
        // most of their time blocked in connect, having found no room and waiting
        // for some (a ratio of behaviour, not a speed).
        let blocked = total.blocked.as_secs_f64() / total.flooding.as_secs_f64();
        ensure(
            blocked > 0.5,
            format!(
                "the flooders were blocked for only {:.0}% of the flood: {total:?}",
                blocked * 100.0
            ),
        )?;
        let grown = rss_bytes().saturating_sub(rss_before);
        ensure(
            grown < 32 << 20,
            format!("server memory grew by {grown} bytes over the flood"),
        )?;
        fails_with(
            address.connect().await,
            ErrorKind::ConnectionRefused,
            "connect through the revoked address",
        )?;
        let (_, fresh) = bound.mint_address()?;
        still_served(&fresh, &bound).await
    });
}

#[test]
fn ten_thousand_connections_at_once_exchanging_descriptors_on_a_multi_thread_runtime() {
    const TEST: &str =
        "ten_thousand_connections_at_once_exchanging_descriptors_on_a_multi_thread_runtime";
    if child_role().is_some() {
        child_main(|| async {
            let address = SocketAddress::try_from(inherited(handoff::ADDRESS))?;
            let mut control = ConnectedSocket::try_from(inherited("control"))?;
            let (read_end, _write_end) = common::pipe();
            let mut connections = Vec::new();
            for _ in 0..LOAD_CONNECTIONS / LOAD_PROCESSES {
                connections.push(address.connect().await?);
            }
            // Wait until every process has all its connections open.
            control.send(b"connected", &[]).await?;
            bounded("go", control.recv())
                .await??
                .ok_or_else(|| fail("server gone"))?;
            // All open at once; now every one exchanges a message with a descriptor.
            for (i, connection) in connections.iter_mut().enumerate() {
                connection
                    .send(&(i as u32).to_ne_bytes(), &[read_end.as_fd()])
                    .await?;
            }
            for (i, connection) in connections.iter_mut().enumerate() {
                let echo = bounded("echo", connection.recv())
                    .await??
                    .ok_or_else(|| fail("closed"))?;
                ensure(echo.data[..] == (i as u32).to_ne_bytes(), "echo")?;
                ensure(
                    echo.fds.len() == 1 && common::inode(&echo.fds[0]) == common::inode(&read_end),
                    "same pipe",
                )?;
            }
            Ok(())
        });
    }
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        .expect("raise to hard");
    common::run_multi_thread(|| async {
        let (address, bound) = make_bound_socket()?;
        let mut clients = Vec::new();
        let mut controls = Vec::new();
        for _ in 0..LOAD_PROCESSES {
            let (control, control_peer) = ConnectedSocket::pair()?;
            clients.push(start(
                TEST,
                "client",
                address.as_fd(),
                Some(control_peer.as_fd()),
            )?);
            controls.push(control);
        }
        let open = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut handlers = Vec::new();
        for _ in 0..LOAD_CONNECTIONS {
            let mut connection = bounded("accept", bound.accept()).await??;
            let (open, peak) = (Arc::clone(&open), Arc::clone(&peak));
            let now = open.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            handlers.push(tokio::spawn(async move {
                while let Some(message) = connection.recv().await? {
                    let fds: Vec<BorrowedFd<'_>> =
                        message.fds.iter().map(|fd| fd.as_fd()).collect();
                    connection.send(&message.data, &fds).await?;
                }
                open.fetch_sub(1, Ordering::SeqCst);
                io::Result::Ok(())
            }));
        }
        for control in &mut controls {
            bounded("connected", control.recv())
                .await??
                .ok_or_else(|| fail("client died"))?;
        }
        let all_open = open.load(Ordering::SeqCst);
        for control in &mut controls {
            control.send(b"go", &[]).await?;
        }
        for client in clients {
            wait(client).await?;
        }
        for handler in handlers {
            bounded("handler", handler)
                .await?
                .map_err(io::Error::other)??;
        }
        // Every connection was accepted and still open when the clients were told
        // to go: all of them open at once.
        ensure(
            all_open == LOAD_CONNECTIONS,
            format!("{all_open} connections were open at once"),
        )?;
        let peak = peak.load(Ordering::SeqCst);
        ensure(
            peak == LOAD_CONNECTIONS,
            format!("peak of {peak} open connections"),
        )?;
        still_served(&address, &bound).await
    });
}
