//! The blocking facade: same semantics, no async, usable from many threads.

mod common;

use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use common::{
    child, child_role, connect_and_accept, ensure, expect_success, fail, inode, run,
    run_without_runtime,
};
use tokio_imc::blocking;

#[test]
fn connect_accept_and_messages_with_descriptors() {
    run_without_runtime(|| {
        let (address, bound) = blocking::make_bound_socket().expect("make");
        let server = std::thread::spawn(move || -> io::Result<()> {
            let mut connection = bound.accept()?;
            while let Some(message) = connection.recv()? {
                let fds: Vec<_> = message.fds.iter().map(|fd| fd.as_fd()).collect();
                connection.send(&message.data, &fds)?;
            }
            Ok(())
        });
        let mut connection = address.connect().expect("connect");
        let (read_end, _write_end) = common::pipe();
        connection
            .send(b"round trip", &[read_end.as_fd()])
            .expect("send");
        let echo = connection.recv().expect("recv").expect("an echo");
        assert_eq!(&echo.data[..], b"round trip");
        assert_eq!(inode(&echo.fds[0]), inode(&read_end));
        let peer = connection.peer_credentials().expect("credentials");
        assert_eq!(peer.pid, std::process::id() as i32);
        drop(connection);
        server.join().expect("server thread").expect("server");
    });
}

#[test]
fn timeouts_give_timed_out_and_leave_the_object_usable() {
    run_without_runtime(|| {
        let (address, bound) = blocking::make_bound_socket().expect("make");
        let err = bound
            .accept_timeout(Duration::from_millis(50))
            .expect_err("nobody connected");
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().contains("accept timed out"), "{err}");

        let mut client = address.connect().expect("connect");
        let mut server = bound
            .accept_timeout(Duration::from_secs(5))
            .expect("accept after a timeout");
        let err = server
            .recv_timeout(Duration::from_millis(50))
            .expect_err("nothing sent");
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        client.send(b"late", &[]).expect("send");
        let got = server
            .recv_timeout(Duration::from_secs(5))
            .expect("recv after a timeout");
        assert_eq!(&got.expect("a message").data[..], b"late");

        // Fill the queue, then a connect times out and sends nothing.
        let mut queued = Vec::new();
        loop {
            match address.connect_timeout(Duration::from_millis(100)) {
                Ok(connection) => queued.push(connection),
                Err(e) if e.kind() == ErrorKind::TimedOut => break,
                Err(e) => panic!("connect: {e}"),
            }
        }
        for _ in 0..queued.len() {
            bound
                .accept_timeout(Duration::from_secs(5))
                .expect("queued request");
        }
        let err = bound
            .accept_timeout(Duration::from_millis(100))
            .expect_err("a timed-out connect sent nothing");
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        drop(client);
    });
}

#[test]
fn blocking_calls_inside_a_runtime_return_an_error_instead_of_stalling() {
    run(|| async move {
        // Made inside a runtime: registration works anywhere, only blocking is refused.
        let (address, bound) = blocking::make_bound_socket()?;
        let err = bound
            .accept()
            .err()
            .ok_or_else(|| fail("accept blocked inside a runtime"))?;
        ensure(
            err.to_string().contains("drives a Tokio runtime"),
            err.to_string(),
        )?;
        let err = address
            .connect()
            .err()
            .ok_or_else(|| fail("connect inside a runtime"))?;
        ensure(
            err.to_string().contains("use the async API"),
            err.to_string(),
        )?;
        // The way out: convert to the async types.
        let address = address.into_async();
        let bound = bound.into_async();
        let (mut client, mut server) = connect_and_accept(&address, &bound).await?;
        client.send(b"async now", &[]).await?;
        ensure(server.recv().await?.is_some(), "async after conversion")
    });
}

#[test]
fn objects_work_from_many_threads_at_once() {
    run_without_runtime(|| {
        const THREADS: usize = 8;
        const ROUNDS: usize = 50;
        let (address, bound) = blocking::make_bound_socket().expect("make");
        let bound = Arc::new(bound);
        let servers: Vec<_> = (0..2)
            .map(|_| {
                let bound = Arc::clone(&bound);
                std::thread::spawn(move || {
                    let mut handlers = Vec::new();
                    loop {
                        match bound.accept() {
                            Ok(mut connection) => handlers.push(std::thread::spawn(move || {
                                while let Ok(Some(message)) = connection.recv() {
                                    let _ = connection.send(&message.data, &[]);
                                }
                            })),
                            Err(e) if e.kind() == ErrorKind::NotConnected => break,
                            Err(e) => panic!("accept: {e}"),
                        }
                    }
                    for handler in handlers {
                        handler.join().expect("handler");
                    }
                })
            })
            .collect();
        let address = Arc::new(address);
        let clients: Vec<_> = (0..THREADS)
            .map(|t| {
                let address = Arc::clone(&address);
                std::thread::spawn(move || {
                    let mut connection = address.connect().expect("connect");
                    for round in 0..ROUNDS {
                        let text = format!("{t}/{round}");
                        connection.send(text.as_bytes(), &[]).expect("send");
                        let echo = connection
                            .recv_timeout(common::HANG)
                            .expect("echo")
                            .expect("open");
                        assert_eq!(echo.data, text.as_bytes());
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().expect("client thread");
        }
        drop(address);
        for server in servers {
            server.join().expect("server thread");
        }
    });
}

#[test]
fn conversions_to_and_from_descriptors_and_async_types() {
    run_without_runtime(|| {
        let (address, bound) = blocking::make_bound_socket().expect("make");
        let address =
            blocking::SocketAddress::try_from(OwnedFd::from(address)).expect("address from fd");
        let (read_end, _write_end) = common::pipe();
        let err =
            blocking::BoundSocket::try_from(read_end).expect_err("a pipe is not a bound socket");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // A minted address and the ids survive blocking -> async -> blocking.
        let (minted_id, minted) = bound.mint_address().expect("mint");
        let original_id = bound.address_id();
        let queued = minted
            .connect()
            .expect("connect through the minted address");
        let bound = runtime.block_on(async {
            let async_bound = bound.into_async();
            // Accepted (and so registered) in this runtime before going back.
            let server = tokio::time::timeout(common::HANG, async_bound.accept())
                .await
                .expect("the queued request on the minted address survived the conversion")
                .expect("async accept");
            assert_eq!(server.address_id(), Some(minted_id));
            blocking::BoundSocket::from_async(async_bound)
        });
        drop(queued);
        drop(runtime);
        assert_eq!(bound.address_id(), original_id);
        let mut client = address.connect().expect("connect");
        let mut server = bound.accept().expect("accept");
        assert_eq!(server.address_id(), Some(original_id));
        client.send(b"x", &[]).expect("send");
        assert!(server.recv().expect("recv").is_some());
        assert!(format!("{server:?}").starts_with("blocking::ConnectedSocket { fd: "));
        let _minted_client = minted.connect().expect("the minted address still works");
        let server = bound
            .accept_timeout(common::HANG)
            .expect("accept through the minted address");
        assert_eq!(server.address_id(), Some(minted_id));
        // A connection keeps its address id through a conversion too.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let server = runtime.block_on(async { server.into_async() });
        assert_eq!(server.address_id(), Some(minted_id));
        drop(runtime);
    });
}

#[test]
fn a_child_with_no_runtime_uses_the_blocking_api() {
    const TEST: &str = "a_child_with_no_runtime_uses_the_blocking_api";
    if child_role().is_some() {
        let result = (|| -> io::Result<()> {
            let address = blocking::SocketAddress::from_env()?;
            let mut connection = address.connect()?;
            connection.send(b"from a synchronous child", &[])?;
            let reply = connection.recv()?.ok_or_else(|| fail("closed"))?;
            ensure(&reply.data[..] == b"ok", "reply")
        })();
        std::process::exit(if result.is_ok() { common::CHILD_OK } else { 1 });
    }
    run_without_runtime(|| {
        let (address, bound) = blocking::make_bound_socket().expect("make");
        let mut command = child(TEST, "child");
        tokio_imc::handoff::pass(
            &mut command,
            &[(tokio_imc::handoff::ADDRESS, address.as_fd())],
        )
        .expect("pass");
        let process = command.spawn().expect("spawn");
        drop(command);
        let mut connection = bound.accept_timeout(common::HANG).expect("accept");
        let message = connection
            .recv_timeout(common::HANG)
            .expect("recv")
            .expect("open");
        assert_eq!(&message.data[..], b"from a synchronous child");
        connection.send(b"ok", &[]).expect("send");
        expect_success(process);
    });
}

#[test]
fn split_halves_let_threads_send_while_another_receives_and_unsplit() {
    run_without_runtime(|| {
        const THREADS: u32 = 4;
        const EACH: u32 = 200;
        let (a, b) = blocking::ConnectedSocket::pair().expect("pair");
        let (a_recv, a_send) = a.into_split().expect("split a");
        let (b_recv, b_send) = b.into_split().expect("split b");
        // The receiving thread echoes every record back while senders keep going.
        let echo = std::thread::spawn(
            move || -> io::Result<(blocking::RecvHalf, blocking::SendHalf)> {
                while let Some(message) = b_recv.recv_timeout(common::HANG)? {
                    b_send.send(&message.data, &[])?;
                    if &message.data[..] == b"last" {
                        break;
                    }
                }
                Ok((b_recv, b_send))
            },
        );
        let a_send = Arc::new(a_send);
        let senders: Vec<_> = (0..THREADS)
            .map(|t| {
                let a_send = Arc::clone(&a_send);
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        a_send
                            .send(&(t * EACH + i).to_ne_bytes(), &[])
                            .expect("send");
                    }
                })
            })
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..THREADS * EACH {
            let message = a_recv
                .recv_timeout(common::HANG)
                .expect("recv")
                .expect("open");
            let n = u32::from_ne_bytes(message.data[..].try_into().expect("4 bytes"));
            assert!(seen.insert(n), "record {n} twice");
        }
        assert_eq!(seen.len() as u32, THREADS * EACH);
        for sender in senders {
            sender.join().expect("sender thread");
        }
        a_send.send(b"last", &[]).expect("send");
        let (b_recv, b_send) = echo.join().expect("echo thread").expect("echo");
        let a_send = Arc::into_inner(a_send).expect("the senders are done");
        let mut a = a_recv
            .unsplit(a_send)
            .map_err(|_| "own halves")
            .expect("unsplit a");
        let mut b = b_recv
            .unsplit(b_send)
            .map_err(|_| "own halves")
            .expect("unsplit b");
        assert_eq!(&a.recv().expect("recv").expect("open").data[..], b"last");
        b.send(b"whole again", &[]).expect("send");
        assert_eq!(
            &a.recv().expect("recv").expect("open").data[..],
            b"whole again"
        );
    });
}
