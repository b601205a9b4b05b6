//! What clients see as a server is slow, goes away, or loses every address.

mod common;

use std::io::{self, ErrorKind};
use std::task::Poll;

use common::{
    bounded, child, child_main, child_role, ensure, expect_success, fail, fails_with, poll_once,
    run,
};
use tokio_imc::{make_bound_socket, ConnectedSocket, SocketAddress};

/// Connects until a connect has to wait (its `sendmsg` found no room): the
/// server's queue is then full. Returns the connections made; the waiting connect
/// is dropped, which sends nothing.
async fn fill_queue(address: &SocketAddress) -> io::Result<Vec<ConnectedSocket>> {
    let mut queued = Vec::new();
    loop {
        let connect = address.connect();
        tokio::pin!(connect);
        match poll_once(&mut connect).await {
            Poll::Ready(connection) => queued.push(connection?),
            Poll::Pending => return Ok(queued),
        }
        if queued.len() > 100_000 {
            return Err(fail("the queue never filled"));
        }
    }
}

/// A connect to a dropped server and a send to a closed peer: both errors, neither
/// a SIGPIPE.
async fn refused_and_broken_pipe() -> io::Result<()> {
    let (address, bound) = make_bound_socket()?;
    drop(bound);
    let err = fails_with(
        address.connect().await,
        ErrorKind::ConnectionRefused,
        "connect succeeded",
    )?;
    ensure(
        err.to_string().contains("leads to no server"),
        err.to_string(),
    )?;
    let (mut a, b) = ConnectedSocket::pair()?;
    drop(b);
    fails_with(
        a.send(b"x", &[]).await,
        ErrorKind::BrokenPipe,
        "send succeeded",
    )
    .map(drop)
}

#[test]
fn connect_to_a_closed_server_is_refused_without_sigpipe() {
    const TEST: &str = "connect_to_a_closed_server_is_refused_without_sigpipe";
    if child_role().is_some() {
        // Restore SIGPIPE's default action (Rust ignores it): a send that raised it
        // would kill this child, and the parent would see it.
        // SAFETY: no other thread of this child installs signal handlers.
        unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        }
        .expect("reset SIGPIPE");
        child_main(refused_and_broken_pipe);
    }
    // Spawned inside `run`, like every descriptor change, so it cannot disturb
    // another test's before/after comparison.
    run(|| async {
        let status = tokio::task::spawn_blocking(|| child(TEST, "child").status())
            .await
            .map_err(io::Error::other)??;
        ensure(
            status.code() == Some(common::CHILD_OK),
            format!("child: {status} (killed by SIGPIPE would show signal 13)"),
        )
    });
    run(refused_and_broken_pipe);
}

#[test]
fn queued_clients_see_their_connection_end_when_the_server_drops() {
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let mut queued = Vec::new();
        for _ in 0..10 {
            queued.push(address.connect().await?);
        }
        drop(bound);
        for connection in &mut queued {
            // recv: end of stream (the server end died in the queue).
            let got = bounded("recv on an orphaned connection", connection.recv()).await??;
            ensure(got.is_none(), "recv reports end of stream")?;
            // send: broken pipe, no SIGPIPE.
            fails_with(
                connection.send(b"anyone?", &[]).await,
                ErrorKind::BrokenPipe,
                "send succeeded",
            )?;
        }
        Ok(())
    });
}

#[test]
fn accept_with_no_address_left_fails_at_once_and_keeps_failing() {
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        // A request queued before the last address closed is still served.
        let mut client = address.connect().await?;
        drop(address);
        let mut server = bounded("accept of the queued request", bound.accept()).await??;
        client.send(b"still here", &[]).await?;
        ensure(server.recv().await?.is_some(), "queued connection works")?;
        for _ in 0..3 {
            let err = fails_with(
                bounded("accept with no address", bound.accept()).await?,
                ErrorKind::NotConnected,
                "accept succeeded",
            )?;
            ensure(
                err.to_string().contains("every SocketAddress"),
                err.to_string(),
            )?;
        }
        Ok(())
    });
}

#[test]
fn connect_waits_while_the_queue_is_full_and_a_cancelled_connect_sends_nothing() {
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let mut queued = fill_queue(&address).await?;
        ensure(
            queued.len() > 5,
            format!("only {} requests fit", queued.len()),
        )?;

        // Cancel many waiting connects: each is dropped while waiting.
        for _ in 0..50 {
            tokio::select! {
                biased;
                result = address.connect() => return Err(fail(format!("connect completed on a full queue: {result:?}"))),
                _ = tokio::task::yield_now() => {}
            }
        }

        // A waiting connect completes once the server makes room. It is pending
        // on the full queue, and still is after the reactor has taken in every
        // event, until accepts make room.
        let waiting = address.connect();
        tokio::pin!(waiting);
        for _ in 0..3 {
            ensure(
                poll_once(&mut waiting).await.is_pending(),
                "connect waits for room in the full queue",
            )?;
        }
        let mut accepted = Vec::new();
        for _ in 0..queued.len() {
            accepted.push(bounded("accept", bound.accept()).await??);
        }
        let mut late = bounded("the waiting connect", waiting).await??;
        accepted.push(bounded("accept of the waiting connect", bound.accept()).await??);

        // Exactly one connection per completed connect, in order: the cancelled
        // ones sent nothing.
        let clients: Vec<&mut ConnectedSocket> = queued
            .iter_mut()
            .chain(std::iter::once(&mut late))
            .collect();
        for (i, (client, server)) in clients.into_iter().zip(&mut accepted).enumerate() {
            client.send(format!("{i}").as_bytes(), &[]).await?;
            let got = server.recv().await?.ok_or_else(|| fail("closed"))?;
            ensure(
                got.data == format!("{i}").as_bytes(),
                format!("connection {i} pairs with its client"),
            )?;
        }
        // Every request is queued by the time its connect returns, so anything a
        // cancelled connect had sent would be there now.
        let extra = bound.accept();
        tokio::pin!(extra);
        ensure(
            poll_once(&mut extra).await.is_pending(),
            "no request left behind by a cancelled connect",
        )
    });
}

#[test]
fn a_child_inherits_the_address_connects_and_exchanges_descriptors() {
    const TEST: &str = "a_child_inherits_the_address_connects_and_exchanges_descriptors";
    if child_role().is_some() {
        child_main(|| async {
            let before = std::env::var_os(tokio_imc::handoff::ENV_VAR);
            let address = SocketAddress::from_env()?;
            ensure(
                before.is_some() && std::env::var_os(tokio_imc::handoff::ENV_VAR) == before,
                "the variable is read, not changed",
            )?;
            let mut connection = address.connect().await?;
            let memfd =
                nix::sys::memfd::memfd_create(c"child", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                    .map_err(io::Error::from)?;
            nix::unistd::write(&memfd, b"written by the child").map_err(io::Error::from)?;
            use std::os::fd::AsFd;
            connection.send(b"memfd", &[memfd.as_fd()]).await?;
            let reply = connection
                .recv()
                .await?
                .ok_or_else(|| fail("server closed"))?;
            ensure(&reply.data[..] == b"thanks", "reply")
        });
    }
    run(|| async {
        use std::io::{Read, Seek};
        use std::os::fd::AsFd;
        let (address, bound) = make_bound_socket()?;
        let mut command = child(TEST, "child");
        tokio_imc::handoff::pass(
            &mut command,
            &[(tokio_imc::handoff::ADDRESS, address.as_fd())],
        )?;
        let process = command.spawn()?;
        drop(command);
        let pid = process.id() as i32;
        let mut connection = bounded("accept from the child", bound.accept()).await??;
        ensure(
            connection.peer_credentials()?.pid == pid,
            "peer_credentials names the child",
        )?;
        let mut message = bounded("the child's message", connection.recv())
            .await??
            .ok_or_else(|| fail("closed"))?;
        ensure(
            &message.data[..] == b"memfd" && message.fds.len() == 1,
            "one memfd",
        )?;
        let mut file = std::fs::File::from(message.fds.remove(0));
        file.rewind()?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        ensure(text == "written by the child", text.clone())?;
        connection.send(b"thanks", &[]).await?;
        tokio::task::spawn_blocking(move || expect_success(process))
            .await
            .map_err(io::Error::other)
    });
}
