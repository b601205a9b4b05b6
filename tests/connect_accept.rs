//! connect/accept: the happy paths, concurrency, and conversions.

mod common;

use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use common::{bounded, connect_and_accept, ensure, fail, fails_with, inode, run, run_multi_thread};
use tokio_imc::{make_bound_socket, BoundSocket, ConnectedSocket, SocketAddress};

#[test]
fn connect_accept_and_exchange_bytes_and_fds() {
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let (mut client, mut server) = connect_and_accept(&address, &bound).await?;
        let (read_end, write_end) = common::pipe();
        client.send(b"take this pipe", &[write_end.as_fd()]).await?;
        let message = server.recv().await?.ok_or_else(|| fail("closed early"))?;
        ensure(&message.data[..] == b"take this pipe", "data")?;
        ensure(message.fds.len() == 1, "one fd")?;
        ensure(
            inode(&message.fds[0]) == inode(&write_end),
            "same open file",
        )?;
        // The received descriptor works: write through it, read from our end.
        nix::unistd::write(&message.fds[0], b"via fd").map_err(io::Error::from)?;
        let mut buf = [0u8; 6];
        nix::unistd::read(&read_end, &mut buf).map_err(io::Error::from)?;
        ensure(&buf == b"via fd", "pipe carried the bytes")?;
        server.send(b"reply", &[]).await?;
        let reply = client.recv().await?.ok_or_else(|| fail("closed early"))?;
        ensure(&reply.data[..] == b"reply" && reply.fds.is_empty(), "reply")?;
        drop(client);
        ensure(
            server.recv().await?.is_none(),
            "end of stream after the client closed",
        )
    });
}

#[test]
fn messages_keep_their_boundaries_and_order() {
    run(|| async {
        let (mut a, mut b) = ConnectedSocket::pair()?;
        for len in [1usize, 2, 100, 4096, 65536, 1] {
            a.send(&vec![len as u8; len], &[]).await?;
        }
        for len in [1usize, 2, 100, 4096, 65536, 1] {
            let message = b.recv().await?.ok_or_else(|| fail("closed"))?;
            ensure(
                message.data.len() == len,
                format!("record of {len} bytes arrived whole"),
            )?;
            ensure(message.data.iter().all(|&x| x == len as u8), "content")?;
        }
        Ok(())
    });
}

#[test]
fn many_tasks_connect_through_one_address_to_several_acceptors() {
    run_multi_thread(|| async {
        const CLIENTS: usize = 200;
        let (address, bound) = make_bound_socket()?;
        let bound = Arc::new(bound);
        let address = Arc::new(address);
        let mut acceptors = Vec::new();
        for _ in 0..4 {
            let bound = Arc::clone(&bound);
            acceptors.push(tokio::spawn(async move {
                let mut served = 0usize;
                loop {
                    let mut connection = match bound.accept().await {
                        Ok(c) => c,
                        Err(e) if e.kind() == ErrorKind::NotConnected => {
                            return Ok::<_, io::Error>(served)
                        }
                        Err(e) => return Err(e),
                    };
                    let message = connection
                        .recv()
                        .await?
                        .ok_or_else(|| fail("client closed"))?;
                    connection.send(&message.data, &[]).await?;
                    served += 1;
                }
            }));
        }
        let mut clients = Vec::new();
        for i in 0..CLIENTS {
            let address = Arc::clone(&address);
            clients.push(tokio::spawn(async move {
                let mut connection = address.connect().await?;
                let text = format!("client {i}");
                connection.send(text.as_bytes(), &[]).await?;
                let echo = connection
                    .recv()
                    .await?
                    .ok_or_else(|| fail("server closed"))?;
                ensure(echo.data == text.as_bytes(), "echo matches")
            }));
        }
        for client in clients {
            bounded("client", client)
                .await?
                .map_err(io::Error::other)??;
        }
        // Dropping the only address ends every acceptor with NotConnected.
        drop(address);
        let mut served = 0;
        for acceptor in acceptors {
            served += bounded("acceptor", acceptor)
                .await?
                .map_err(io::Error::other)??;
        }
        ensure(served == CLIENTS, format!("served {served} of {CLIENTS}"))
    });
}

#[test]
fn an_address_sent_in_a_message_connects_to_the_same_server() {
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let (mut broker_side, mut client_side) = ConnectedSocket::pair()?;
        broker_side.send(b"address", &[address.as_fd()]).await?;
        drop(address);
        let mut message = client_side.recv().await?.ok_or_else(|| fail("closed"))?;
        let received = SocketAddress::try_from(message.fds.remove(0))?;
        let (mut client, mut server) = connect_and_accept(&received, &bound).await?;
        client.send(b"hi", &[]).await?;
        ensure(
            &server.recv().await?.ok_or_else(|| fail("closed"))?.data[..] == b"hi",
            "data",
        )
    });
}

#[test]
fn try_clone_gives_an_independent_handle_to_the_same_server() {
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let copy = address.try_clone()?;
        drop(address);
        let (client, _server) = connect_and_accept(&copy, &bound).await?;
        drop(client);
        drop(copy);
        fails_with(
            bound.accept().await,
            ErrorKind::NotConnected,
            "accept with no address",
        )?;
        Ok(())
    });
}

#[test]
fn conversions_round_trip_through_owned_fd() {
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let address = SocketAddress::try_from(OwnedFd::from(address))?;
        let bound = BoundSocket::try_from(OwnedFd::from(bound))?;
        let (client, mut server) = connect_and_accept(&address, &bound).await?;
        let mut client = ConnectedSocket::try_from(OwnedFd::from(client))?;
        client.send(b"x", &[]).await?;
        ensure(server.recv().await?.is_some(), "message after round trip")?;
        ensure(
            format!("{address:?}").starts_with("SocketAddress { fd: "),
            "Debug shows the fd",
        )?;
        ensure(
            format!("{bound:?}").starts_with("BoundSocket { fd: "),
            "Debug shows the fd",
        )?;
        ensure(
            format!("{client:?}").starts_with("ConnectedSocket { fd: "),
            "Debug shows the fd",
        )
    });
}

#[test]
fn conversions_refuse_the_wrong_kind_of_descriptor() {
    run(|| async {
        let (read_end, _write_end) = common::pipe();
        let err = fails_with(
            SocketAddress::try_from(read_end),
            ErrorKind::InvalidInput,
            "a pipe as an address",
        )?;
        ensure(err.to_string().contains("not a socket"), format!("{err}"))?;

        let (seq_a, _seq_b) = common::raw_pair(nix::sys::socket::SockType::SeqPacket);
        let err = BoundSocket::try_from(seq_a)
            .err()
            .ok_or_else(|| fail("seqpacket became a bound socket"))?;
        ensure(err.to_string().contains("SOCK_SEQPACKET"), format!("{err}"))?;

        let (stream_a, _stream_b) = std::os::unix::net::UnixStream::pair()?;
        let err = ConnectedSocket::try_from(OwnedFd::from(stream_a))
            .err()
            .ok_or_else(|| fail("a stream became a connection"))?;
        ensure(err.to_string().contains("SOCK_STREAM"), format!("{err}"))?;

        let unconnected = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(io::Error::from)?;
        let err = ConnectedSocket::try_from(unconnected)
            .err()
            .ok_or_else(|| fail("unconnected accepted"))?;
        ensure(err.to_string().contains("not connected"), format!("{err}"))?;

        let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
        let tcp_client = std::net::TcpStream::connect(tcp.local_addr()?)?;
        let err = SocketAddress::try_from(OwnedFd::from(tcp_client))
            .err()
            .ok_or_else(|| fail("tcp became an address"))?;
        ensure(
            err.to_string().contains("SOCK_STREAM") || err.to_string().contains("AF_UNIX"),
            format!("{err}"),
        )
    });
}

#[test]
fn a_native_client_style_seqpacket_address_is_accepted() {
    run(|| async {
        // Native Client made its addresses from SOCK_SEQPACKET pairs.
        let (ours, theirs) = common::raw_pair(nix::sys::socket::SockType::SeqPacket);
        let address = SocketAddress::try_from(ours)?;
        let connect = tokio::spawn(async move { address.connect().await });
        // Play the server with raw blocking calls: one byte and one descriptor.
        let (byte, mut fds) =
            tokio::task::spawn_blocking(move || common::raw_recv(theirs.as_fd(), 1))
                .await
                .map_err(io::Error::other)??;
        ensure(byte == b"c", "the byte c")?;
        ensure(fds.len() == 1, "one descriptor")?;
        let server_end = fds.remove(0);
        let mut server = ConnectedSocket::try_from(server_end)?;
        let mut client = connect.await.map_err(io::Error::other)??;
        client.send(b"over seqpacket", &[]).await?;
        ensure(
            &server.recv().await?.ok_or_else(|| fail("closed"))?.data[..] == b"over seqpacket",
            "data",
        )
    });
}

#[test]
fn outside_a_runtime_objects_are_made_and_waiting_is_an_error_not_a_panic() {
    common::run_without_runtime(|| {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        // Making and converting needs no runtime.
        let (address, bound) = make_bound_socket().expect("no runtime needed to make one");
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let adopted =
            SocketAddress::try_from(OwnedFd::from(a)).expect("no runtime needed to adopt one");
        drop(adopted);
        // Work that completes at once needs none either: the request is queued.
        let mut connect = std::pin::pin!(address.connect());
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(Ok(client)) = connect.as_mut().poll(&mut cx) else {
            panic!("connect with room in the queue completes at once");
        };
        drop(client);
        // Waiting does: polled by something that is not Tokio, it is an error.
        let mut accept = std::pin::pin!(bound.accept());
        assert!(
            matches!(accept.as_mut().poll(&mut cx), Poll::Ready(Ok(_))),
            "the queued request"
        );
        let mut accept = std::pin::pin!(bound.accept());
        match accept.as_mut().poll(&mut cx) {
            Poll::Ready(Err(err)) => {
                assert!(err.to_string().contains("needs a Tokio runtime"), "{err}")
            }
            other => panic!(
                "waiting outside a runtime: {:?}",
                other.map(|r| r.map(drop))
            ),
        }
    });
}

#[test]
fn all_types_are_send_sync_and_debug() {
    fn check<T: Send + Sync + std::fmt::Debug>() {}
    check::<SocketAddress>();
    check::<BoundSocket>();
    check::<ConnectedSocket>();
    check::<tokio_imc::RecvHalf>();
    check::<tokio_imc::SendHalf>();
    check::<tokio_imc::Message>();
    check::<tokio_imc::Credentials>();
}

#[test]
fn in_a_runtime_without_io_waiting_panics_as_tokio_does_and_the_connection_then_reports_its_loss() {
    common::run_without_runtime(|| {
        let (mut a, _b) = ConnectedSocket::pair().expect("pair");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(a.recv()).map(drop)
        }));
        assert!(waited.is_err(), "Tokio panics when IO is disabled");
        // The descriptor went with the panic (closed, not leaked: checked by the
        // harness); the connection says so instead of touching a stale number.
        let err = runtime
            .block_on(a.recv())
            .expect_err("the descriptor is gone");
        assert_eq!(err.kind(), ErrorKind::NotConnected, "{err}");
        assert!(format!("{a:?}").contains("lost"), "{a:?}");
        assert_eq!(a.address_id(), None);
        // Its blocking twin reports the loss too: an error, not a panic.
        let a = tokio_imc::blocking::ConnectedSocket::from_async(a);
        assert!(format!("{a:?}").contains("lost"), "{a:?}");
        let err = a.peer_credentials().expect_err("no descriptor");
        assert_eq!(err.kind(), ErrorKind::NotConnected, "{err}");
        let err = a
            .shutdown(std::net::Shutdown::Both)
            .expect_err("no descriptor");
        assert_eq!(err.kind(), ErrorKind::NotConnected, "{err}");
        let a = a.into_async();
        let err = a.into_split().expect_err("nothing to split");
        assert_eq!(err.kind(), ErrorKind::NotConnected, "{err}");
    });
}

/// `AsRawFd` names the same descriptor as `AsFd` on every public type (a
/// caller passing the number to a syscall must reach the right socket).
#[test]
fn raw_descriptor_numbers_name_the_sockets_themselves() {
    use std::os::fd::AsRawFd;
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let (client, server) = connect_and_accept(&address, &bound).await?;
        for (what, raw, fd) in [
            ("BoundSocket", bound.as_raw_fd(), bound.as_fd()),
            ("SocketAddress", address.as_raw_fd(), address.as_fd()),
            ("client ConnectedSocket", client.as_raw_fd(), client.as_fd()),
            ("server ConnectedSocket", server.as_raw_fd(), server.as_fd()),
        ] {
            ensure(
                raw == fd.as_raw_fd() && raw > 2,
                format!("{what}: as_raw_fd {raw}, as_fd {}", fd.as_raw_fd()),
            )?;
        }
        Ok(())
    });
}
