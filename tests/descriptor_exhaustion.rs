//! When this process is out of descriptors (`EMFILE`) the kernel cannot install
//! every descriptor of a received record and reports `MSG_CTRUNC`. `accept` drops
//! such a connect request with a warning, like a malformed one, and keeps waiting
//! (it neither fails nor spins); the request's client sees its connection end.
//! `recv` reports such a record as an error. Both work again once descriptors are
//! free.
//!
//! Any holder of an address can cause this at will, by sending requests with 253
//! descriptors to a server that has fewer free: the README's server loop, attacked
//! as written, keeps serving.
//!
//! Servers run in child processes with a lowered `RLIMIT_NOFILE` (the limit is
//! process-wide), so the limit cannot disturb other tests. Each child runs its body
//! through `common::run`, so it leaks no descriptor either.

mod common;

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::task::Poll;

use common::{
    bounded, child, child_role, ensure, expect_success, fail, poll_once, raw_send, run,
    run_without_runtime, Logs, CHILD_OK,
};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio::task::JoinHandle;
use tokio_imc::{handoff, make_bound_socket, BoundSocket, ConnectedSocket, SocketAddress};

/// How many requests with 253 descriptors the attacker sends.
const ATTACKS: usize = 5;
/// How many descriptors the attacked server has free, at least (fewer than 253).
const FREE: u64 = 64;

/// Runs a child's body as a test (no descriptor may leak) and exits with
/// [`CHILD_OK`]; a failure panics, and the parent's `expect_success` reports it.
fn run_child<F, Fut>(body: F) -> !
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = io::Result<()>>,
{
    run(body);
    std::process::exit(CHILD_OK)
}

/// Lowers the soft limit to just above the highest open descriptor and fills every
/// free number below it. Returns the fillers and the old soft limit.
fn exhaust_descriptors() -> io::Result<(Vec<OwnedFd>, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    let highest = common::open_fds().keys().copied().max().unwrap_or(2) as u64;
    setrlimit(Resource::RLIMIT_NOFILE, highest + 1, hard).map_err(io::Error::from)?;
    let mut fillers = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(file) => fillers.push(OwnedFd::from(file)),
            Err(e) if e.raw_os_error() == Some(nix::libc::EMFILE) => return Ok((fillers, soft)),
            Err(e) => return Err(e),
        }
    }
}

fn restore(fillers: Vec<OwnedFd>, soft: u64) -> io::Result<()> {
    drop(fillers);
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(io::Error::from)
}

/// The warnings in `text` for connect requests dropped because of `MSG_CTRUNC`.
fn dropped_for_ctrunc(text: &str) -> usize {
    text.lines()
        .filter(|line| {
            line.contains("dropped a malformed connect request") && line.contains("MSG_CTRUNC")
        })
        .count()
}

#[test]
fn out_of_descriptors_accept_drops_the_request_recv_reports_it_and_both_recover() {
    const TEST: &str =
        "out_of_descriptors_accept_drops_the_request_recv_reports_it_and_both_recover";
    if child_role().is_some() {
        let logs = Logs::default();
        let _capture = logs.capture();
        run_child(|| async {
            let (address, bound) = make_bound_socket()?;
            let mut queued = address.connect().await?;
            let (mut a, mut b) = ConnectedSocket::pair()?;
            let (read_end, _write_end) = common::pipe();

            let (fillers, soft) = exhaust_descriptors()?;
            // The queued request's descriptor cannot be installed: accept drops the
            // request with a warning and waits for the next one; it does not fail.
            let accept = bound.accept();
            tokio::pin!(accept);
            if let Poll::Ready(result) = poll_once(&mut accept).await {
                return Err(fail(format!(
                    "accept out of descriptors returned {:?} instead of dropping the request \
                     and waiting",
                    result.map(|_| "a connection")
                )));
            }
            let text = logs.text();
            ensure(
                dropped_for_ctrunc(&text) == 1,
                format!("one warning for the request dropped for MSG_CTRUNC in:\n{text}"),
            )?;

            a.send(b"with a descriptor", &[read_end.as_fd()]).await?;
            let err = bounded("recv while out of descriptors", b.recv())
                .await?
                .err()
                .ok_or_else(|| fail("recv succeeded with no free descriptor"))?;
            ensure(err.to_string().contains("MSG_CTRUNC"), err.to_string())?;

            // connect itself needs two new descriptors.
            let err = address
                .connect()
                .await
                .err()
                .ok_or_else(|| fail("connect succeeded"))?;
            ensure(
                err.raw_os_error() == Some(nix::libc::EMFILE),
                format!("{err:?}"),
            )?;
            restore(fillers, soft)?;

            // The dropped request's client sees its connection end.
            ensure(
                bounded("recv on the dropped request", queued.recv())
                    .await??
                    .is_none(),
                "connection ended",
            )?;

            // Both paths recover: the accept that dropped the request is still
            // waiting, and takes the next one.
            let (client, server) = tokio::join!(
                address.connect(),
                bounded("accept after recovery", &mut accept)
            );
            let (mut client, mut server) = (client?, server??);
            client.send(b"hello again", &[read_end.as_fd()]).await?;
            let got = server.recv().await?.ok_or_else(|| fail("closed"))?;
            ensure(
                &got.data[..] == b"hello again" && got.fds.len() == 1,
                "the connection accepted after recovery works",
            )?;
            a.send(b"again", &[read_end.as_fd()]).await?;
            let got = b.recv().await?.ok_or_else(|| fail("closed"))?;
            ensure(
                &got.data[..] == b"again" && got.fds.len() == 1,
                "recv recovered",
            )?;
            let text = logs.text();
            ensure(
                dropped_for_ctrunc(&text) == 1,
                format!("no other request was dropped:\n{text}"),
            )
        });
    }
    // Serialised with the other tests: spawning opens /dev/null for a moment, which
    // another test's descriptor snapshot must not see.
    run_without_runtime(|| {
        let process = child(TEST, "server").spawn().expect("spawn child");
        expect_success(process);
    });
}

/// Marks the lines of [`readme_server_loop`] that must be the README's.
const README_LOOP_BEGIN: &str = "// README.md's quick start loop, verbatim: begin";
const README_LOOP_END: &str = "// README.md's quick start loop, verbatim: end";

/// The quick start's server task. The loop must stay identical to the one in
/// README.md (`the_attacked_server_loop_is_the_readmes_verbatim` checks it).
fn readme_server_loop(bound: BoundSocket) -> JoinHandle<()> {
    tokio::spawn(async move {
        // README.md's quick start loop, verbatim: begin
        loop {
            match bound.accept().await {
                Ok(mut connection) => {
                    tokio::spawn(async move {
                        while let Ok(Some(message)) = connection.recv().await {
                            // message.data: Bytes, message.fds: Vec<OwnedFd>
                            let _ = connection.send(&message.data, &[]).await;
                        }
                    });
                }
                // Final: no address is left, nothing can arrive any more.
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => break,
                // Anything else is transient (from the OS): back off, keep serving.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
        // README.md's quick start loop, verbatim: end
    })
}

/// The loop the README and the docs showed before: it stops at the first error
/// `accept` returns, as servers written from them do.
fn while_let_ok_server_loop(bound: BoundSocket) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(mut connection) = bound.accept().await {
            tokio::spawn(async move {
                while let Ok(Some(message)) = connection.recv().await {
                    let _ = connection.send(&message.data, &[]).await;
                }
            });
        }
    })
}

/// The attacked server, in a child: serves with `serve`, leaves itself fewer than
/// 253 free descriptors, and hands the address to the parent (the attacker) over
/// the control connection. The loop must end only when the parent, the only
/// holder, closes the address; then every attack must have been dropped with a
/// warning naming `MSG_CTRUNC` (not reported as an error from `accept`).
fn attacked_server(serve: fn(BoundSocket) -> JoinHandle<()>) -> ! {
    let logs = Logs::default();
    let _capture = logs.capture();
    // Taken before `run`, and kept open after it: it was open before the test.
    let mut control = ConnectedSocket::from_env_named("control").expect("the control connection");
    run_child(|| async {
        let (address, bound) = make_bound_socket()?;
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
        let open = common::open_fds();
        let highest = open.keys().copied().max().unwrap_or(2) as u64;
        let limit = highest + 1 + FREE;
        setrlimit(Resource::RLIMIT_NOFILE, limit, hard).map_err(io::Error::from)?;
        let free = limit - open.len() as u64;
        ensure(
            free < 253,
            format!("{free} free descriptors, not fewer than 253"),
        )?;

        let server = serve(bound);
        control.send(b"the address", &[address.as_fd()]).await?;
        drop(address);
        bounded("the server loop, after its only address closed", server)
            .await?
            .map_err(io::Error::other)?;
        setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(io::Error::from)?;

        let text = logs.text();
        let dropped = dropped_for_ctrunc(&text);
        ensure(
            dropped == ATTACKS,
            format!("{dropped} requests dropped for MSG_CTRUNC, not {ATTACKS}:\n{text}"),
        )
    })
}

/// The attacker, in the parent: starts the server child `test` in `role`, sends
/// it [`ATTACKS`] requests with 253 descriptors each (the kernel cannot install
/// them all: `MSG_CTRUNC`), then connects as a legitimate client, which the
/// server loop must still serve.
fn attack(test: &str, role: &str) {
    run(|| async {
        let (mut control, control_peer) = ConnectedSocket::pair()?;
        let mut command = child(test, role);
        handoff::pass(&mut command, &[("control", control_peer.as_fd())])?;
        let server = command.spawn()?;
        drop((command, control_peer));
        let mut hello = bounded("the server's address", control.recv())
            .await??
            .ok_or_else(|| fail("the server closed its control connection"))?;
        let address = hello
            .fds
            .pop()
            .ok_or_else(|| fail("the server sent no address"))?;
        let address = SocketAddress::try_from(address)?;
        drop((hello, control));

        // The same pipe end, 253 times: more descriptors than the server has free.
        let (read_end, write_end) = common::pipe();
        for i in 1..=ATTACKS {
            raw_send(address.as_fd(), b"c", &[read_end.as_fd(); 253]).map_err(|e| {
                fail(format!(
                    "attack {i}: {e}: the server loop ended, dropping its bound socket"
                ))
            })?;
        }
        drop((read_end, write_end));

        let mut client = bounded("connect after the attack", address.connect())
            .await?
            .map_err(|e| {
                fail(format!(
                    "connect after the attack: {e}: the server loop ended"
                ))
            })?;
        client.send(b"still serving?", &[]).await?;
        let ended = "the server loop ended: the connection closed unanswered";
        let echo = bounded("the echo", client.recv())
            .await?
            .map_err(|e| fail(format!("{ended} ({e})")))?
            .ok_or_else(|| fail(ended))?;
        ensure(&echo.data[..] == b"still serving?", "the echo")?;
        // Closing the only address ends the loop (NotConnected).
        drop((client, address));
        tokio::task::spawn_blocking(move || expect_success(server))
            .await
            .map_err(io::Error::other)
    });
}

#[test]
fn the_readme_server_loop_keeps_serving_a_holder_that_sends_253_descriptors() {
    const TEST: &str = "the_readme_server_loop_keeps_serving_a_holder_that_sends_253_descriptors";
    if child_role().is_some() {
        attacked_server(readme_server_loop);
    }
    attack(TEST, "server");
}

#[test]
fn a_while_let_ok_accept_loop_keeps_serving_a_holder_that_sends_253_descriptors() {
    const TEST: &str =
        "a_while_let_ok_accept_loop_keeps_serving_a_holder_that_sends_253_descriptors";
    if child_role().is_some() {
        attacked_server(while_let_ok_server_loop);
    }
    attack(TEST, "server");
}

#[test]
fn the_attacked_server_loop_is_the_readmes_verbatim() {
    run_without_runtime(|| {
        let ours: Vec<&str> = include_str!("descriptor_exhaustion.rs")
            .lines()
            .map(str::trim)
            .skip_while(|line| *line != README_LOOP_BEGIN)
            .skip(1)
            .take_while(|line| *line != README_LOOP_END)
            .collect();
        assert!(
            ours.len() > 10,
            "the marked loop is missing: {} lines",
            ours.len()
        );
        let readme: Vec<&str> = include_str!("../README.md")
            .lines()
            .map(str::trim)
            .collect();
        assert!(
            readme.windows(ours.len()).any(|lines| lines == ours),
            "the loop in readme_server_loop is not README.md's quick start loop; \
             keep them identical:\n{}",
            ours.join("\n")
        );
    });
}
