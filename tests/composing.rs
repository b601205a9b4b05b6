//! Stream and poll APIs (issue #17, point 2): `incoming()` driven with
//! `StreamExt`, `RecvHalf` as a `Stream`, and the `poll_*` methods.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::{bounded, ensure, fail, poll_once, run};
use futures_util::{StreamExt, TryStreamExt};
use tokio_imc::{make_bound_socket, ConnectedSocket};

#[test]
fn incoming_with_take_and_for_each_concurrent_serves_every_client() {
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let (_minted_id, minted) = bound.mint_address()?;
        let clients = tokio::spawn(async move {
            let mut replies = 0;
            for index in 0..8u8 {
                let through = if index % 2 == 0 { &address } else { &minted };
                let mut client = through.connect().await?;
                client.send(&[index], &[]).await?;
                let reply = client.recv().await?.ok_or_else(|| fail("no reply"))?;
                replies += usize::from(reply.data[..] == [index + 100]);
            }
            std::io::Result::Ok(replies)
        });
        let served = AtomicUsize::new(0);
        bounded(
            "serve 8",
            bound
                .incoming()
                .take(8)
                .try_for_each_concurrent(4, |mut connection| {
                    let served = &served;
                    async move {
                        let request = connection.recv().await?.ok_or_else(|| fail("closed"))?;
                        connection.send(&[request.data[0] + 100], &[]).await?;
                        served.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                }),
        )
        .await??;
        let replies = bounded("clients", clients)
            .await?
            .map_err(|e| fail(e.to_string()))??;
        ensure(served.load(Ordering::Relaxed) == 8, "eight served")?;
        ensure(replies == 8, format!("{replies} correct replies"))
    });
}

#[test]
fn incoming_ends_when_no_address_is_left() {
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let _client = address.connect().await?;
        drop(address);
        let accepted: Vec<_> = bounded("drain", bound.incoming().collect::<Vec<_>>()).await?;
        ensure(
            accepted.len() == 1 && accepted[0].is_ok(),
            format!("one connection, then the end: {accepted:?}"),
        )
    });
}

#[test]
fn a_recv_half_is_a_stream_that_ends_at_end_of_stream() {
    run(|| async {
        let (mut a, b) = ConnectedSocket::pair()?;
        let (receiver, _sender) = b.into_split()?;
        for word in [&b"one"[..], b"two", b"three"] {
            a.send(word, &[]).await?;
        }
        drop(a);
        let words: Vec<_> = bounded(
            "collect",
            receiver
                .map_ok(|message| message.data)
                .try_collect::<Vec<_>>(),
        )
        .await??;
        ensure(
            words == [&b"one"[..], &b"two"[..], &b"three"[..]],
            format!("{words:?}"),
        )
    });
}

#[test]
fn poll_methods_are_pending_until_ready_and_lose_nothing() {
    run(|| async {
        let (mut a, mut b) = ConnectedSocket::pair()?;
        let mut recv = Box::pin(std::future::poll_fn(|cx| b.poll_recv(cx)));
        ensure(poll_once(&mut recv).await.is_pending(), "nothing queued")?;
        let sent = std::future::poll_fn(|cx| a.poll_send(cx, b"polled", &[])).await;
        sent?;
        let got = bounded("poll_recv", recv).await??;
        ensure(got.is_some_and(|m| &m.data[..] == b"polled"), "the record")?;
        let (receiver, sender) = b.into_split()?;
        let mut half_recv = Box::pin(std::future::poll_fn(|cx| receiver.poll_recv(cx)));
        ensure(
            poll_once(&mut half_recv).await.is_pending(),
            "half: nothing queued",
        )?;
        drop(half_recv);
        a.send(b"to the half", &[]).await?;
        let got = bounded("half recv", receiver.recv()).await??;
        ensure(
            got.is_some_and(|m| &m.data[..] == b"to the half"),
            "a dropped poll took nothing",
        )?;
        std::future::poll_fn(|cx| sender.poll_send(cx, b"from the half", &[])).await?;
        let got = bounded("recv", a.recv()).await??;
        ensure(got.is_some_and(|m| &m.data[..] == b"from the half"), "sent")
    });
}

/// A `poll_accept` pending on the original address alone is woken when the
/// first address is minted, and then serves the minted one.
#[test]
fn poll_accept_waiting_on_the_original_is_woken_by_a_mint() {
    run(|| async {
        let (_address, bound) = make_bound_socket()?;
        let bound = std::sync::Arc::new(bound);
        let accepting = bound.clone();
        let accept =
            tokio::spawn(async move { std::future::poll_fn(|cx| accepting.poll_accept(cx)).await });
        // Let the task poll once: pending on the original alone.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        ensure(!accept.is_finished(), "nothing queued")?;
        let (id, minted) = bound.mint_address()?;
        let _client = minted.connect().await?;
        let server = bounded("accept through the minted address", accept)
            .await?
            .map_err(|e| fail(e.to_string()))??;
        ensure(
            server.address_id() == Some(id),
            "accepted through the minted address",
        )
    });
}
