//! Malformed connect requests are dropped, their descriptors closed, a warning
//! logged, and `accept` goes on to the next well-formed request.
//!
//! The bad requests are written with raw `sendmsg` calls on a duplicate of the
//! address, as a hostile holder would.

mod common;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use common::{bounded, ensure, fail, raw_pair, raw_send, run, Logs};
use nix::sys::socket::SockType;
use tokio_imc::{make_bound_socket, BoundSocket, SocketAddress};

/// Sends one bad request, then connects properly, and checks that `accept`
/// returns the proper connection and that the warning names `reason`.
async fn rejected_then_served(
    address: &SocketAddress,
    bound: &BoundSocket,
    logs: &Logs,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    reason: &str,
) -> io::Result<()> {
    logs.clear();
    raw_send(address.as_fd(), bytes, fds)?;
    let (client, server) = tokio::join!(address.connect(), bounded("accept", bound.accept()));
    let (mut client, mut server) = (client?, server??);
    client.send(b"good", &[]).await?;
    let got = server.recv().await?.ok_or_else(|| fail("closed"))?;
    ensure(
        &got.data[..] == b"good",
        format!("after {reason}: accept returned the good client"),
    )?;
    let text = logs.text();
    ensure(
        text.contains("dropped a malformed connect request") && text.contains(reason),
        format!("warning naming {reason:?} in:\n{text}"),
    )
}

/// Whether the peer of `kept` has closed: its end was dropped by the server.
fn peer_closed(kept: &OwnedFd) -> io::Result<bool> {
    let mut fds = [nix::poll::PollFd::new(
        kept.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(2000u16)).map_err(io::Error::from)?;
    let mut byte = [0u8; 1];
    let n = nix::sys::socket::recv(
        std::os::fd::AsRawFd::as_raw_fd(kept),
        &mut byte,
        nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    );
    Ok(n == Ok(0))
}

#[test]
fn every_kind_of_malformed_request_is_dropped_and_the_server_keeps_serving() {
    let logs = Logs::default();
    let _capture = logs.capture();
    run(|| async {
        let (address, bound) = make_bound_socket()?;

        let (kept, sent) = raw_pair(SockType::SeqPacket);
        rejected_then_served(
            &address,
            &bound,
            &logs,
            b"x",
            &[sent.as_fd()],
            "0x78, not 'c'",
        )
        .await?;
        drop(sent);
        ensure(
            peer_closed(&kept)?,
            "the wrong-byte request's descriptor was closed",
        )?;

        rejected_then_served(&address, &bound, &logs, b"c", &[], "no descriptor").await?;

        let (kept_a, sent_a) = raw_pair(SockType::SeqPacket);
        let (kept_b, sent_b) = raw_pair(SockType::SeqPacket);
        rejected_then_served(
            &address,
            &bound,
            &logs,
            b"c",
            &[sent_a.as_fd(), sent_b.as_fd()],
            "2 descriptors",
        )
        .await?;
        drop((sent_a, sent_b));
        ensure(
            peer_closed(&kept_a)? && peer_closed(&kept_b)?,
            "both descriptors were closed",
        )?;

        let (read_end, write_end) = common::pipe();
        rejected_then_served(
            &address,
            &bound,
            &logs,
            b"c",
            &[read_end.as_fd()],
            "not a socket",
        )
        .await?;
        drop((read_end, write_end));

        let (_stream_kept, stream_sent) = raw_pair(SockType::Stream);
        rejected_then_served(
            &address,
            &bound,
            &logs,
            b"c",
            &[stream_sent.as_fd()],
            "SOCK_STREAM",
        )
        .await?;

        let (_dgram_kept, dgram_sent) = raw_pair(SockType::Datagram);
        rejected_then_served(
            &address,
            &bound,
            &logs,
            b"c",
            &[dgram_sent.as_fd()],
            "SOCK_DGRAM",
        )
        .await?;

        let unconnected = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            SockType::SeqPacket,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(io::Error::from)?;
        rejected_then_served(
            &address,
            &bound,
            &logs,
            b"c",
            &[unconnected.as_fd()],
            "not connected",
        )
        .await?;

        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let tcp = std::net::TcpStream::connect(listener.local_addr()?)?;
        rejected_then_served(&address, &bound, &logs, b"c", &[tcp.as_fd()], "SOCK_STREAM").await?;

        rejected_then_served(
            &address,
            &bound,
            &logs,
            b"c",
            &[address.as_fd()],
            "SOCK_STREAM",
        )
        .await?;

        // "cc" with one descriptor: the first byte and the descriptor make a good
        // request; the second byte is a request without a descriptor, dropped.
        let (kept_cc, sent_cc) = raw_pair(SockType::SeqPacket);
        raw_send(address.as_fd(), b"cc", &[sent_cc.as_fd()])?;
        drop(sent_cc);
        let mut first = bounded("accept of the cc request", bound.accept()).await??;
        common::raw_send(kept_cc.as_fd(), b"from cc", &[])?;
        ensure(
            &first.recv().await?.ok_or_else(|| fail("closed"))?.data[..] == b"from cc",
            "cc connection works",
        )?;
        logs.clear();
        let (client, server) = tokio::join!(address.connect(), bounded("accept", bound.accept()));
        client?.send(b"after cc", &[]).await?;
        ensure(server??.recv().await?.is_some(), "served after cc")?;
        ensure(
            logs.text().contains("no descriptor"),
            "the trailing c was dropped as a request without a descriptor",
        )?;

        // Bursts of data without descriptors between good requests.
        for _ in 0..3 {
            raw_send(address.as_fd(), &[b'c'; 64], &[])?;
            raw_send(address.as_fd(), &[0u8; 64], &[])?;
            let (client, server) =
                tokio::join!(address.connect(), bounded("accept", bound.accept()));
            client?.send(b"after burst", &[]).await?;
            ensure(server??.recv().await?.is_some(), "served after a burst")?;
        }

        // Every bad request was sent before this point, so a phantom connection
        // would be accepted now.
        let idle = bound.accept();
        tokio::pin!(idle);
        ensure(
            common::poll_once(&mut idle).await.is_pending(),
            "no phantom connection from the bad requests",
        )
    });
}
