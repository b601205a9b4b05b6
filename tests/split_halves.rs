//! A connection split into halves: many tasks send at once while another
//! receives, records stay whole, and the halves go back together.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use common::{bounded, ensure, fail, run, run_multi_thread, run_without_runtime};
use tokio_imc::{make_bound_socket, ConnectedSocket};

#[test]
fn many_tasks_send_through_a_shared_half_while_another_receives() {
    run_multi_thread(|| async {
        const SENDERS: u32 = 8;
        const EACH: u32 = 500;
        let (a, b) = ConnectedSocket::pair()?;
        let (a_recv, a_send) = a.into_split()?;
        let (b_recv, b_send) = b.into_split()?;
        let a_send = Arc::new(a_send);
        let mut senders = Vec::new();
        for sender in 0..SENDERS {
            let a_send = a_send.clone();
            senders.push(tokio::spawn(async move {
                for seq in 0..EACH {
                    // 3 KiB records: interleaving would show as a mixed record.
                    let mut record = vec![sender as u8; 3072];
                    record[..4].copy_from_slice(&seq.to_ne_bytes());
                    a_send.send(&record, &[]).await?;
                }
                io::Result::Ok(())
            }));
        }
        // Meanwhile the other direction carries traffic too.
        let replies = tokio::spawn(async move {
            for seq in 0..EACH {
                b_send.send(&seq.to_ne_bytes(), &[]).await?;
            }
            io::Result::Ok(b_send)
        });
        let mut next: BTreeMap<u8, u32> = BTreeMap::new();
        for _ in 0..SENDERS * EACH {
            let message = bounded("recv", b_recv.recv())
                .await??
                .ok_or_else(|| fail("closed early"))?;
            ensure(message.data.len() == 3072, "a whole record")?;
            let sender = message.data[4];
            ensure(
                message.data[4..].iter().all(|&byte| byte == sender),
                "one sender's bytes only",
            )?;
            let seq = u32::from_ne_bytes(message.data[..4].try_into().map_err(io::Error::other)?);
            let expected = next.entry(sender).or_insert(0);
            ensure(
                seq == *expected,
                format!("sender {sender}: {seq} after {expected}"),
            )?;
            *expected += 1;
        }
        for seq in 0..EACH {
            let message = bounded("reply", a_recv.recv())
                .await??
                .ok_or_else(|| fail("closed early"))?;
            ensure(message.data[..] == seq.to_ne_bytes(), "replies in order")?;
        }
        for sender in senders {
            sender.await.map_err(io::Error::other)??;
        }
        drop(replies.await.map_err(io::Error::other)??);
        ensure(next.values().all(|&n| n == EACH), "every record arrived")
    });
}

#[test]
fn unsplit_returns_the_same_connection_and_refuses_halves_of_another() {
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let (client, server) = tokio::try_join!(address.connect(), bound.accept())?;
        let (server_fd, server_id) = (server.as_raw_fd(), server.address_id());
        let (recv, send) = server.into_split()?;
        let (other_pair, _peer) = ConnectedSocket::pair()?;
        let (other_recv, other_send) = other_pair.into_split()?;

        let Err((recv, other_send)) = recv.unsplit(other_send) else {
            return Err(fail("halves of two connections were joined"));
        };
        ensure(recv.as_raw_fd() == server_fd, "the half came back")?;
        drop((other_recv, other_send));

        let mut server = recv
            .unsplit(send)
            .map_err(|_| fail("refused its own halves"))?;
        ensure(server.as_raw_fd() == server_fd, "the same descriptor")?;
        ensure(
            server.address_id() == server_id && server_id.is_some(),
            "the same address id",
        )?;
        let mut client = client;
        client.send(b"after unsplit", &[]).await?;
        let message = server.recv().await?.ok_or_else(|| fail("closed"))?;
        ensure(&message.data[..] == b"after unsplit", "it still works")
    });
}

#[test]
fn splitting_needs_no_runtime_and_waiting_on_a_half_outside_one_is_an_error() {
    run_without_runtime(|| {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let (a, mut b) = ConnectedSocket::pair().expect("pair");
        let (receiver, sender) = a.into_split().expect("no runtime needed to split");
        let mut cx = Context::from_waker(Waker::noop());
        // Work that completes at once needs none either.
        let mut send = std::pin::pin!(sender.send(b"queued", &[]));
        assert!(matches!(send.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        let mut recv = std::pin::pin!(b.recv());
        match recv.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(Some(message))) => assert_eq!(&message.data[..], b"queued"),
            other => panic!(
                "a queued record: {:?}",
                other.map(|r| r.map(|m| m.map(drop)))
            ),
        }
        // Waiting does: polled by something that is not Tokio, it is an error.
        let mut wait = std::pin::pin!(receiver.recv());
        match wait.as_mut().poll(&mut cx) {
            Poll::Ready(Err(err)) => {
                assert!(err.to_string().contains("needs a Tokio runtime"), "{err}")
            }
            other => panic!(
                "waiting outside a runtime: {:?}",
                other.map(|r| r.map(|m| m.map(drop)))
            ),
        }
    });
}
