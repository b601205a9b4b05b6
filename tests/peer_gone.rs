//! Knowing when the other side is gone: `BoundSocket::released` (every holder
//! of an address closed it) and `closed` on connections and halves (the peer
//! hung up), with the other side in processes that are killed.

mod common;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, ErrorKind};
use std::os::fd::AsFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{bounded, ensure, fail, run};
use tokio_imc::{handoff, make_bound_socket, AddressId, ConnectedSocket, SocketAddress};

/// Kills `child` with `SIGKILL` and reaps it.
fn kill(child: &mut std::process::Child) -> io::Result<()> {
    child.kill()?;
    child.wait().map(drop)
}

#[test]
fn released_reports_exactly_the_address_of_a_killed_holder() {
    const TEST: &str = "released_reports_exactly_the_address_of_a_killed_holder";
    if common::child_role().is_some() {
        common::child_main(|| async {
            let address = SocketAddress::try_from(handoff::take(handoff::ADDRESS)?)?;
            // Connect, say hello, hang up; again, until killed.
            loop {
                let mut connection = address.connect().await?;
                // The server may have dropped it already (`BrokenPipe`).
                let _ = connection.send(b"hello", &[]).await;
                drop(connection);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
    run(|| async {
        let (_original, bound) = make_bound_socket()?;
        let bound = Arc::new(bound);
        let mut holders = Vec::new();
        for _ in 0..3 {
            let (id, address) = bound.mint_address()?;
            let mut command = common::child(TEST, "holder");
            handoff::pass(&mut command, &[(handoff::ADDRESS, address.as_fd())])?;
            holders.push((id, command.spawn()?));
            // The child is now the only holder.
        }
        let seen: Arc<Mutex<BTreeMap<AddressId, usize>>> = Arc::default();
        let server = {
            let (bound, seen) = (bound.clone(), seen.clone());
            tokio::spawn(async move {
                while let Ok(connection) = bound.accept().await {
                    if let Some(id) = connection.address_id() {
                        *seen.lock().unwrap().entry(id).or_default() += 1;
                    }
                }
            })
        };
        let count = |id| seen.lock().unwrap().get(&id).copied().unwrap_or(0);
        let wait_for = |id, n| async move {
            bounded("connections", async {
                while count(id) < n {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
            .await
        };
        for (id, _) in &holders {
            wait_for(*id, 3).await?;
        }
        // Nobody has left yet.
        let early = tokio::time::timeout(Duration::from_millis(100), bound.released()).await;
        ensure(early.is_err(), format!("nothing released yet: {early:?}"))?;

        let (victim, mut child) = holders.remove(1);
        kill(&mut child)?;
        let released = bounded("released", bound.released()).await??;
        ensure(
            released == victim,
            format!("released {released}, killed {victim}"),
        )?;
        // The other two keep connecting.
        for (id, _) in &holders {
            let now = count(*id);
            wait_for(*id, now + 3).await?;
        }
        let more = tokio::time::timeout(Duration::from_millis(100), bound.released()).await;
        ensure(more.is_err(), format!("only the killed one: {more:?}"))?;
        // A revoked address is gone by our action: never released.
        let (revoked, mut revoked_child) = holders.remove(0);
        bound.revoke(revoked)?;
        let (last, mut last_child) = holders.remove(0);
        kill(&mut last_child)?;
        let released = bounded("released", bound.released()).await??;
        ensure(
            released == last,
            format!("released {released}, killed {last}"),
        )?;
        let _ = kill(&mut revoked_child);
        server.abort();
        Ok(())
    });
}

#[test]
fn released_needs_no_accept_and_reports_a_holder_that_left_with_requests_after_they_are_read() {
    run(|| async {
        let (_original, bound) = make_bound_socket()?;
        let (quiet, address) = bound.mint_address()?;
        drop(address);
        ensure(
            bounded("released", bound.released()).await?? == quiet,
            "no accept ran",
        )?;

        let (busy, address) = bound.mint_address()?;
        let client = address.connect().await?;
        drop(address);
        // Hung up, but a request is queued: not released until it is read.
        let early = tokio::time::timeout(Duration::from_millis(100), bound.released()).await;
        ensure(
            early.is_err(),
            format!("a request is still queued: {early:?}"),
        )?;
        let accepted = bounded("accept", bound.accept()).await??;
        ensure(accepted.address_id() == Some(busy), "the queued request")?;
        ensure(
            bounded("released", bound.released()).await?? == busy,
            "then released",
        )?;
        drop((client, accepted));

        // Every address gone, every release reported: final, as for accept.
        bound.revoke(bound.address_id())?;
        common::fails_with(
            bounded("released", bound.released()).await?,
            ErrorKind::NotConnected,
            "no address is left",
        )?;
        Ok(())
    });
}

#[test]
fn closed_resolves_when_the_peer_is_killed_and_takes_none_of_its_thousand_records() {
    const TEST: &str =
        "closed_resolves_when_the_peer_is_killed_and_takes_none_of_its_thousand_records";
    const RECORDS: u32 = 1000;
    if common::child_role().is_some() {
        common::child_main(|| async {
            let fd = handoff::take("connection")?;
            // Room for all of them unread (SO_SNDBUFFORCE where we may).
            let room = 4usize << 20;
            use nix::sys::socket::{setsockopt, sockopt};
            if setsockopt(&fd, sockopt::SndBufForce, &room).is_err() {
                setsockopt(&fd, sockopt::SndBuf, &room).map_err(io::Error::from)?;
            }
            let mut connection = ConnectedSocket::try_from(fd)?;
            for i in 0..RECORDS {
                connection.send(&i.to_le_bytes(), &[]).await?;
            }
            println!("SENT {RECORDS}");
            std::future::pending::<()>().await;
            Ok(())
        });
    }
    run(|| async {
        let (ours, theirs) = ConnectedSocket::pair()?;
        let mut command = common::child(TEST, "writer");
        command.stdout(Stdio::piped());
        handoff::pass(&mut command, &[("connection", theirs.as_fd())])?;
        let mut child = command.spawn()?;
        drop((command, theirs));
        let stdout = child.stdout.take().ok_or_else(|| fail("no stdout"))?;
        let sent = bounded(
            "the writer",
            tokio::task::spawn_blocking(move || {
                BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                    .any(|line| line == format!("SENT {RECORDS}"))
            }),
        )
        .await?
        .map_err(io::Error::other)?;
        ensure(sent, "the writer queued every record")?;
        let (rx, tx) = ours.into_split()?;
        let waiting = tokio::time::timeout(Duration::from_millis(100), rx.closed()).await;
        ensure(waiting.is_err(), "the peer is alive")?;
        kill(&mut child)?;
        bounded("closed", rx.closed()).await??;
        bounded("closed on the send half", tx.closed()).await??;
        // Nothing was taken: all of them, in order, then the end.
        for i in 0..RECORDS {
            let record = rx
                .recv()
                .await?
                .ok_or_else(|| fail(format!("ended at {i}")))?;
            ensure(record.data[..] == i.to_le_bytes(), format!("record {i}"))?;
        }
        ensure(rx.recv().await?.is_none(), "then end-of-stream")?;
        // And on a whole connection too, at once now.
        let mut whole = rx.unsplit(tx).map_err(|_| fail("unsplit"))?;
        bounded("closed", whole.closed()).await??;
        ensure(whole.recv().await?.is_none(), "still the end")?;
        Ok(())
    });
}

#[test]
fn a_select_of_recv_and_closed_cancelled_ten_thousand_times_loses_no_message() {
    const MESSAGES: u32 = 10_000;
    run(|| async {
        let (ours, mut theirs) = ConnectedSocket::pair()?;
        let (rx, _tx) = ours.into_split()?;
        let sender = tokio::spawn(async move {
            for i in 0..MESSAGES {
                theirs.send(&i.to_le_bytes(), &[]).await?;
                // Now and then nothing is queued, so `recv` waits (and the
                // `yield_now` branch cancels it); in between records queue up.
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                } else if i % 3 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            Ok::<(), io::Error>(())
        });
        let (mut next, mut closed_cancelled, mut recv_cancelled, mut rounds) =
            (0u32, 0u32, 0u32, 0u32);
        bounded("the select loop", async {
            while next < MESSAGES {
                rounds += 1;
                tokio::select! {
                    biased;
                    closed = rx.closed() => return Err(fail(format!("closed early: {closed:?}"))),
                    record = rx.recv() => {
                        closed_cancelled += 1;
                        let record = record?.ok_or_else(|| fail("ended early"))?;
                        ensure(record.data[..] == next.to_le_bytes(), format!("record {next}"))?;
                        next += 1;
                    }
                    () = tokio::task::yield_now() => {
                        closed_cancelled += 1;
                        recv_cancelled += 1;
                    }
                }
            }
            Ok(())
        })
        .await??;
        sender.await.map_err(io::Error::other)??;
        // Every round but none cancelled `closed` (it never won), and every
        // message took a round of its own.
        ensure(
            closed_cancelled == rounds && rounds >= MESSAGES + recv_cancelled,
            format!("closed cancelled {closed_cancelled} times in {rounds} rounds"),
        )?;
        ensure(
            recv_cancelled > 0,
            format!("recv cancelled {recv_cancelled} times in {rounds} rounds"),
        )?;
        // Now the peer is gone: closed resolves, and recv ends.
        bounded("closed", rx.closed()).await??;
        ensure(rx.recv().await?.is_none(), "end-of-stream")?;
        Ok(())
    });
}

#[test]
fn blocking_closed_and_released_wait_with_timeouts() {
    common::run_without_runtime(|| {
        use tokio_imc::blocking;
        let (a, mut b) = blocking::ConnectedSocket::pair().expect("pair");
        b.send(b"unread", &[]).expect("send");
        let err = a
            .closed_timeout(Duration::from_millis(30))
            .expect_err("alive");
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        b.shutdown(std::net::Shutdown::Write).expect("shutdown");
        a.closed_timeout(Duration::from_secs(20)).expect("hung up");
        let mut a = a;
        assert_eq!(
            &a.recv().expect("recv").expect("the record").data[..],
            b"unread"
        );

        let (_address, bound) = blocking::make_bound_socket().expect("bound");
        let (id, minted) = bound.mint_address().expect("mint");
        let err = bound
            .released_timeout(Duration::from_millis(30))
            .expect_err("held");
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        drop(minted);
        assert_eq!(
            bound
                .released_timeout(Duration::from_secs(20))
                .expect("released"),
            id
        );
    });
}

#[test]
fn blocking_closed_on_a_runtime_thread_is_refused_not_a_stall() {
    run(|| async {
        let (a, _b) = tokio_imc::blocking::ConnectedSocket::pair()?;
        // On the thread that drives this runtime: an error at once, as every
        // blocking call gives there, never a wait that stalls the runtime.
        let err = a.closed().expect_err("refused on a runtime thread");
        ensure(
            err.to_string().contains("drives a Tokio runtime"),
            format!("{err}"),
        )
    });
}
