//! Every async method is cancel safe: wrapped in `select!` against a branch that
//! is always ready, so it is dropped whenever it would wait, thousands of times,
//! while the peer keeps going. No request or message may be lost or duplicated,
//! and no descriptor leaked (checked by `run`).

mod common;

use std::collections::BTreeSet;
use std::io;
use std::os::fd::AsFd;
use std::task::Poll;
use std::time::Duration;

use common::{bounded, ensure, fail, inode, poll_once, run};
use tokio_imc::{make_bound_socket, BoundSocket, ConnectedSocket};

#[test]
fn cancelled_accepts_lose_no_request() {
    run(|| async {
        const CLIENTS: u32 = 2000;
        let (address, bound) = make_bound_socket()?;
        let producer = tokio::spawn(async move {
            let mut clients = Vec::new();
            for id in 0..CLIENTS {
                let mut connection = address.connect().await?;
                connection.send(&id.to_ne_bytes(), &[]).await?;
                clients.push(connection);
                // Pause now and then, so the acceptor waits (and is cancelled).
                if id % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            io::Result::Ok(clients)
        });
        let mut seen = BTreeSet::new();
        let mut cancelled = 0u32;
        while seen.len() < CLIENTS as usize {
            tokio::select! {
                biased;
                connection = bound.accept() => {
                    let message = connection?.recv().await?.ok_or_else(|| fail("closed"))?;
                    let id = u32::from_ne_bytes(message.data[..].try_into().map_err(io::Error::other)?);
                    ensure(seen.insert(id), format!("request {id} accepted twice"))?;
                }
                _ = tokio::task::yield_now() => cancelled += 1,
            }
        }
        bounded("producer", producer)
            .await?
            .map_err(io::Error::other)??;
        ensure(
            cancelled > 1000,
            format!("only {cancelled} accepts were cancelled"),
        )
    });
}

#[test]
fn cancelled_connects_send_whole_requests_or_none() {
    run(|| async {
        const ATTEMPTS: u32 = 3000;
        let (address, bound) = make_bound_socket()?;
        let mut completed = Vec::new();
        let mut cancelled = 0u32;
        let mut accepted = Vec::new();
        for attempt in 0..ATTEMPTS {
            tokio::select! {
                biased;
                connection = address.connect() => completed.push(connection?),
                _ = tokio::task::yield_now() => cancelled += 1,
            }
            // A slow server: it takes one request every few attempts, so the queue
            // stays full and most connects have to wait, and are cancelled.
            if attempt % 4 == 0 {
                if let Some(connection) = queued_request(&bound).await {
                    accepted.push(connection?);
                }
            }
        }
        // Every completed connect's request is queued by now, and so would be any
        // request a cancelled connect had sent.
        while let Some(connection) = queued_request(&bound).await {
            accepted.push(connection?);
        }
        ensure(
            cancelled > 1000,
            format!("only {cancelled} connects were cancelled"),
        )?;
        ensure(
            accepted.len() == completed.len(),
            format!(
                "{} connects completed but {} were accepted",
                completed.len(),
                accepted.len()
            ),
        )?;
        // Each completed connect pairs with exactly one accepted connection, in order.
        for (i, (client, server)) in completed.iter_mut().zip(&mut accepted).enumerate() {
            client.send(&(i as u32).to_ne_bytes(), &[]).await?;
            let got = server.recv().await?.ok_or_else(|| fail("closed"))?;
            ensure(
                got.data[..] == (i as u32).to_ne_bytes(),
                format!("connection {i}"),
            )?;
        }
        Ok(())
    });
}

/// Accepts a request if one is queued, without waiting for one.
async fn queued_request(bound: &BoundSocket) -> Option<io::Result<ConnectedSocket>> {
    let accept = bound.accept();
    tokio::pin!(accept);
    match poll_once(&mut accept).await {
        Poll::Ready(connection) => Some(connection),
        Poll::Pending => None,
    }
}

#[test]
fn cancelled_sends_and_recvs_lose_and_duplicate_nothing() {
    run(|| async {
        const MESSAGES: u32 = 20_000;
        let (mut a, mut b) = ConnectedSocket::pair()?;
        let (read_end, _write_end) = common::pipe();
        let expected_inode = inode(&read_end);
        let (send_cancelled, recv_cancelled) = tokio::join!(
            send_in_order_cancelling(MESSAGES, async |id| {
                let mut message = [0u8; 1000];
                message[..4].copy_from_slice(&id.to_ne_bytes());
                a.send(&message, &[read_end.as_fd()]).await
            }),
            receive_in_order_cancelling(MESSAGES, async || {
                let message = b.recv().await?.ok_or_else(|| fail("closed early"))?;
                ensure(
                    message.fds.len() == 1 && inode(&message.fds[0]) == expected_inode,
                    "its descriptor",
                )?;
                Ok(u32::from_ne_bytes(
                    message.data[..4].try_into().map_err(io::Error::other)?,
                ))
            }),
        );
        enough_cancelled(send_cancelled?, recv_cancelled?)
    });
}

#[test]
fn cancelled_sends_and_recvs_on_split_halves_lose_and_duplicate_nothing() {
    run(|| async {
        const MESSAGES: u32 = 10_000;
        let (a, b) = ConnectedSocket::pair()?;
        let (_a_recv, a_send) = a.into_split()?;
        let (b_recv, _b_send) = b.into_split()?;
        let mut data = bytes::BytesMut::new();
        let mut fds = Vec::new();
        let (send_cancelled, recv_cancelled) = tokio::join!(
            send_in_order_cancelling(MESSAGES, async |id| {
                // Large enough that the socket's buffer fills while the receiver pauses.
                let mut record = [0u8; 2000];
                record[..4].copy_from_slice(&id.to_ne_bytes());
                a_send.send(&record, &[]).await
            }),
            receive_in_order_cancelling(MESSAGES, async || {
                data.clear();
                let len = b_recv.recv_into(&mut data, &mut fds).await?;
                ensure(len == Some(2000), "one whole record")?;
                Ok(u32::from_ne_bytes(
                    data[..4].try_into().map_err(io::Error::other)?,
                ))
            }),
        );
        enough_cancelled(send_cancelled?, recv_cancelled?)
    });
}

/// Sends records `0..count` through `send`, which is cancelled in `select!`
/// whenever it would wait and then called again for the same record. Pauses now
/// and then so the receiver waits (and is cancelled). Returns how many sends were
/// cancelled.
async fn send_in_order_cancelling(
    count: u32,
    mut send: impl AsyncFnMut(u32) -> io::Result<()>,
) -> io::Result<u32> {
    let (mut id, mut cancelled) = (0u32, 0u32);
    while id < count {
        tokio::select! {
            biased;
            sent = send(id) => {
                sent?;
                id += 1;
                if id % 200 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            _ = tokio::task::yield_now() => cancelled += 1,
        }
    }
    Ok(cancelled)
}

/// Both directions were cancelled often enough for the test to mean something.
fn enough_cancelled(sends: u32, recvs: u32) -> io::Result<()> {
    ensure(
        sends > 1000 && recvs > 1000,
        format!("only {sends} sends and {recvs} recvs were cancelled"),
    )
}

/// Receives `count` records through `recv`, which returns each one's id, checking
/// they arrive in order; `recv` is cancelled in `select!` whenever it would wait.
/// Pauses now and then so the sender's queue fills up. Returns how many receives
/// were cancelled.
async fn receive_in_order_cancelling(
    count: u32,
    mut recv: impl AsyncFnMut() -> io::Result<u32>,
) -> io::Result<u32> {
    let (mut next, mut cancelled) = (0u32, 0u32);
    while next < count {
        tokio::select! {
            biased;
            id = recv() => {
                let id = id?;
                ensure(id == next, format!("expected message {next}, got {id}"))?;
                next += 1;
                if next % 500 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            _ = tokio::task::yield_now() => cancelled += 1,
        }
    }
    Ok(cancelled)
}
