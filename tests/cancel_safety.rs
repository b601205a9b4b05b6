//! Every async method is cancel safe: wrapped in `select!` against a branch that
//! is always ready, so it is dropped whenever it would wait, thousands of times,
//! while the peer keeps going. No request or message may be lost or duplicated,
//! and no descriptor leaked (checked by `run`).

mod common;

use std::collections::BTreeSet;
use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use common::{bounded, ensure, fail, inode, run};
use tokio_imc::{make_bound_socket, ConnectedSocket};

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
            if attempt % 4 == 0 && !completed.is_empty() {
                if let Ok(connection) =
                    tokio::time::timeout(Duration::from_millis(50), bound.accept()).await
                {
                    accepted.push(connection?);
                }
            }
        }
        while let Ok(connection) =
            tokio::time::timeout(Duration::from_millis(200), bound.accept()).await
        {
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

#[test]
fn cancelled_sends_and_recvs_lose_and_duplicate_nothing() {
    run(|| async {
        const MESSAGES: u32 = 20_000;
        let (mut a, mut b) = ConnectedSocket::pair()?;
        let (read_end, _write_end) = common::pipe();
        let expected_inode = inode(&read_end);
        let sender = tokio::spawn(async move {
            let mut cancelled = 0u32;
            let mut id = 0u32;
            let payload = [0u8; 1000];
            while id < MESSAGES {
                let mut message = payload;
                message[..4].copy_from_slice(&id.to_ne_bytes());
                let fds = [read_end.as_fd()];
                tokio::select! {
                    biased;
                    sent = a.send(&message, &fds) => {
                        sent?;
                        id += 1;
                        // Pause now and then, so the receiver waits (and is cancelled).
                        if id % 200 == 0 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    _ = tokio::task::yield_now() => cancelled += 1,
                }
            }
            io::Result::Ok(cancelled)
        });
        let mut next = 0u32;
        let mut recv_cancelled = 0u32;
        while next < MESSAGES {
            tokio::select! {
                biased;
                message = b.recv() => {
                    let message = message?.ok_or_else(|| fail("closed early"))?;
                    let id = u32::from_ne_bytes(message.data[..4].try_into().map_err(io::Error::other)?);
                    ensure(id == next, format!("expected message {next}, got {id}"))?;
                    ensure(message.fds.len() == 1 && inode(&message.fds[0]) == expected_inode, "its descriptor")?;
                    next += 1;
                    // Fall behind now and then so the sender's queue fills up.
                    if next % 500 == 0 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                _ = tokio::task::yield_now() => recv_cancelled += 1,
            }
        }
        let send_cancelled = bounded("sender", sender)
            .await?
            .map_err(io::Error::other)??;
        ensure(
            send_cancelled > 1000,
            format!("only {send_cancelled} sends were cancelled"),
        )?;
        ensure(
            recv_cancelled > 1000,
            format!("only {recv_cancelled} recvs were cancelled"),
        )
    });
}

#[test]
fn cancelled_sends_and_recvs_on_split_halves_lose_and_duplicate_nothing() {
    run(|| async {
        const MESSAGES: u32 = 10_000;
        let (a, b) = ConnectedSocket::pair()?;
        let (_a_recv, a_send) = a.into_split()?;
        let (b_recv, _b_send) = b.into_split()?;
        let sender = tokio::spawn(async move {
            let mut cancelled = 0u32;
            let mut id = 0u32;
            while id < MESSAGES {
                // Large enough that the socket's buffer fills while the receiver pauses.
                let mut record = [0u8; 2000];
                record[..4].copy_from_slice(&id.to_ne_bytes());
                tokio::select! {
                    biased;
                    sent = a_send.send(&record, &[]) => {
                        sent?;
                        id += 1;
                        if id % 200 == 0 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    _ = tokio::task::yield_now() => cancelled += 1,
                }
            }
            io::Result::Ok(cancelled)
        });
        let (mut next, mut recv_cancelled) = (0u32, 0u32);
        let mut data = bytes::BytesMut::new();
        let mut fds = Vec::new();
        while next < MESSAGES {
            tokio::select! {
                biased;
                len = b_recv.recv_into(&mut data, &mut fds) => {
                    ensure(len? == Some(2000), "one whole record")?;
                    let id = u32::from_ne_bytes(data[..4].try_into().map_err(io::Error::other)?);
                    ensure(id == next, format!("expected message {next}, got {id}"))?;
                    data.clear();
                    next += 1;
                    if next % 500 == 0 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                _ = tokio::task::yield_now() => recv_cancelled += 1,
            }
        }
        let send_cancelled = bounded("sender", sender)
            .await?
            .map_err(io::Error::other)??;
        ensure(
            send_cancelled > 1000 && recv_cancelled > 1000,
            format!("only {send_cancelled} sends and {recv_cancelled} recvs were cancelled"),
        )
    });
}
