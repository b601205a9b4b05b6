//! A peer may clear `O_NONBLOCK` on a descriptor it shares with us. Every
//! `sendmsg`/`recvmsg` passes `MSG_DONTWAIT`, so no runtime thread can be made to
//! block: these tests would hang (and fail on their deadline) otherwise.

mod common;

use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{bounded, ensure, fail, raw_pair, raw_send, run};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::SockType;
use tokio_imc::{make_bound_socket, BoundSocket};

fn clear_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?);
    fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
    Ok(())
}

/// An echo server on its own current-thread runtime, on its own thread: if any
/// call blocked, that whole thread would stop serving.
fn echo_server(bound: OwnedFd) -> std::thread::JoinHandle<io::Result<()>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let bound = BoundSocket::try_from(bound)?;
            loop {
                let mut connection = match bound.accept().await {
                    Ok(connection) => connection,
                    Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(()),
                    Err(e) => return Err(e),
                };
                tokio::spawn(async move {
                    while let Ok(Some(message)) = connection.recv().await {
                        if connection.send(&message.data, &[]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        })
    })
}

#[test]
fn a_peer_stealing_our_messages_through_a_blocking_duplicate_cannot_stall_the_server() {
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let server = echo_server(OwnedFd::from(bound));

        // The hostile client: sends one end of its pair, but keeps a duplicate of
        // it, makes it blocking, and reads the server's messages off it in a thread.
        let (theirs, sent) = raw_pair(SockType::SeqPacket);
        let stolen_end = sent.try_clone()?;
        clear_nonblocking(stolen_end.as_fd())?;
        raw_send(address.as_fd(), b"c", &[sent.as_fd()])?;
        drop(sent);
        let stop = Arc::new(AtomicBool::new(false));
        let thief = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let mut stolen = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    match common::raw_recv(stolen_end.as_fd(), 64) {
                        Ok((data, _)) if !data.is_empty() => stolen += 1,
                        _ => break,
                    }
                }
                stolen
            }
        });

        // A well-behaved client of the same server, interleaved with the hostile
        // client's writes: every round trip must be served.
        let mut good = address.connect().await?;
        for i in 0..300u32 {
            raw_send(theirs.as_fd(), b"steal me", &[])?;
            let text = i.to_string();
            good.send(text.as_bytes(), &[]).await?;
            let echo = bounded(
                &format!("round trip {i} while a thief races the server"),
                good.recv(),
            )
            .await??
            .ok_or_else(|| fail("server closed"))?;
            ensure(echo.data == text.as_bytes(), "echo")?;
        }

        stop.store(true, Ordering::Relaxed);
        drop(theirs); // wakes the thief with end-of-stream
        let stolen = thief.join().map_err(|_| fail("thief panicked"))?;
        ensure(
            stolen > 0,
            "the thief won some races, so the server did see readiness without data",
        )?;
        drop(good);
        drop(address);
        let server_result = tokio::task::spawn_blocking(move || server.join())
            .await
            .map_err(io::Error::other)?
            .map_err(|_| fail("server panicked"))?;
        server_result
    });
}

#[test]
fn a_holder_making_the_shared_address_blocking_cannot_block_connect() {
    let _watchdog = common::watchdog("connect through a blocking address", common::HANG);
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        // One connect succeeds, so this handle's readiness says "writable".
        let first = address.connect().await?;

        // Another holder of the same open file description fills the queue with
        // raw requests, then clears O_NONBLOCK.
        let holder = address.as_fd().try_clone_to_owned()?;
        let mut raw_clients = Vec::new();
        loop {
            let (kept, sent) = raw_pair(SockType::SeqPacket);
            match common::raw_send_nonblocking(holder.as_fd(), b"c", &[sent.as_fd()]) {
                Ok(_) => raw_clients.push(kept),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        clear_nonblocking(holder.as_fd())?;

        // Our handle still believes it is writable, so connect calls sendmsg at
        // once: without MSG_DONTWAIT that call would sleep with the runtime thread.
        // (The watchdog ends the process if it does.) Polled in place: it tries,
        // finds no room, and waits.
        let waiting = address.connect();
        tokio::pin!(waiting);
        ensure(
            common::poll_once(&mut waiting).await.is_pending(),
            "connect on a full queue waited",
        )?;

        // Drain the queue; a connect then goes through.
        drop(first);
        for _ in 0..=raw_clients.len() {
            bounded("accept", bound.accept()).await??;
        }
        let (client, server) = tokio::join!(
            bounded("connect", address.connect()),
            bounded("accept", bound.accept())
        );
        client??.send(b"through", &[]).await?;
        ensure(server??.recv().await?.is_some(), "served")
    });
}

#[cfg(feature = "tokio-seqpacket")]
#[test]
fn an_accepted_connection_is_not_handed_to_tokio_seqpacket_where_a_thief_could_block_it() {
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        // The thief sends one end of its pair through the address, keeps a
        // duplicate of it and makes it blocking.
        let (_theirs, sent) = raw_pair(SockType::SeqPacket);
        let stolen_end = sent.try_clone()?;
        clear_nonblocking(stolen_end.as_fd())?;
        common::raw_send(address.as_fd(), b"c", &[sent.as_fd()])?;
        drop(sent);
        let accepted = bounded("accept", bound.accept()).await??;
        ensure(accepted.address_id().is_some(), "an accepted connection")?;
        let err = common::fails_with(
            accepted.into_seqpacket(),
            ErrorKind::Unsupported,
            "into_seqpacket of an accepted connection",
        )?;
        ensure(err.to_string().contains("O_NONBLOCK"), err.to_string())?;
        // A connection this process made itself converts, and works.
        let (mine, mut other) = tokio_imc::ConnectedSocket::pair()?;
        let converted = mine.into_seqpacket()?;
        ensure(
            is_nonblocking(converted.as_fd())?,
            "tokio-seqpacket gets its socket with O_NONBLOCK set",
        )?;
        converted.send(b"through tokio-seqpacket").await?;
        let got = other.recv().await?.ok_or_else(|| fail("closed"))?;
        ensure(
            &got.data[..] == b"through tokio-seqpacket",
            "the converted socket works",
        )?;
        drop(stolen_end);
        // One that was non-blocking already stays so (setting the flag must not
        // toggle it).
        let (made_nonblocking, _other) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC | nix::sys::socket::SockFlag::SOCK_NONBLOCK,
        )
        .map_err(io::Error::from)?;
        let converted = tokio_imc::ConnectedSocket::try_from(made_nonblocking)?.into_seqpacket()?;
        ensure(
            is_nonblocking(converted.as_fd())?,
            "a socket that had O_NONBLOCK keeps it",
        )?;
        Ok(())
    });
}

#[cfg(feature = "tokio-seqpacket")]
fn is_nonblocking(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?);
    Ok(flags.contains(OFlag::O_NONBLOCK))
}
