//! One fault at a time, at a chosen call: the regression tests for what the
//! chaos test (`tests/chaos.rs`) and the fault plan's review found, and the
//! promises each error path keeps (nothing leaked, nothing poisoned).
#![cfg(feature = "fault-injection")]

mod common;

use std::io::{self, ErrorKind};
use std::os::fd::AsFd;
use std::time::Duration;

use common::{bounded, connect_and_accept, ensure, fail, fails_with, inode, pipe, run, Logs};
use nix::libc;
use tokio_imc::faults::{Call, FaultPlan};
use tokio_imc::{make_bound_socket, ConnectedSocket};

/// Found by the chaos test: `EINTR` from `send`, `sendmsg`, `recvmsg`,
/// `epoll_wait` and `poll` reached the caller. Each is now made again.
#[test]
fn interrupted_calls_are_made_again() {
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let (_id, minted) = bound.mint_address()?;
        let guard = FaultPlan::new(0)
            .fail_nth(Call::Send, 1, libc::EINTR)
            .fail_nth(Call::SendMsg, 1, libc::EINTR)
            .fail_nth(Call::SendMsg, 2, libc::EINTR)
            .fail_nth(Call::RecvMsg, 1, libc::EINTR)
            .fail_nth(Call::RecvMsg, 2, libc::EINTR)
            .fail_nth(Call::EpollWait, 1, libc::EINTR)
            .install();
        // connect: one sendmsg (interrupted once); accept: epoll_wait and a
        // recvmsg (each interrupted once).
        let (mut client, mut server) = connect_and_accept(&minted, &bound).await?;
        client.send(b"plain", &[]).await?;
        let (read_end, _write_end) = pipe();
        client
            .send(b"with a descriptor", &[read_end.as_fd()])
            .await?;
        let first = server.recv().await?.ok_or_else(|| fail("ended"))?;
        let second = server.recv().await?.ok_or_else(|| fail("ended"))?;
        ensure(&first.data[..] == b"plain", "the first record")?;
        ensure(
            &second.data[..] == b"with a descriptor" && inode(&second.fds[0]) == inode(&read_end),
            "the second record and its descriptor",
        )?;
        let report = guard.report();
        ensure(
            report.injected_total() == 6,
            format!("every planned EINTR was injected: {report:?}"),
        )?;
        drop(address);
        Ok(())
    });
}

/// `poll` (telling end-of-stream from an empty record) interrupted: retried too.
#[test]
fn an_interrupted_end_of_stream_check_is_made_again() {
    run(|| async {
        let (a, mut b) = ConnectedSocket::pair()?;
        drop(a);
        let guard = FaultPlan::new(0)
            .fail_nth(Call::Poll, 1, libc::EINTR)
            .install();
        ensure(b.recv().await?.is_none(), "end-of-stream")?;
        ensure(guard.report().injected_total() == 1, "poll was interrupted")
    });
}

/// Found by reading the fault plan's results: a failed check of a request's
/// descriptor (our `getsockopt` failing, not the peer) was logged as "a
/// malformed connect request". It is still dropped (nothing unchecked becomes a
/// connection) and its client sees its connection end, but the warning now
/// says what happened; and the next request is served.
#[test]
fn a_request_that_could_not_be_checked_is_dropped_and_says_why() {
    let logs = Logs::default();
    let _capture = logs.capture();
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let mut dropped = address.connect().await?;
        let guard = FaultPlan::new(0)
            .fail_nth(Call::SockOpt, 1, libc::ENOBUFS)
            .install();
        let (_client, _server) = connect_and_accept(&address, &bound).await?;
        ensure(
            guard.report().injected_total() == 1,
            "the check failed once",
        )?;
        ensure(
            bounded("recv on the dropped request", dropped.recv())
                .await??
                .is_none(),
            "the dropped client sees its connection end",
        )?;
        let text = logs.text();
        ensure(
            text.contains("dropped a connect request it could not check")
                && text.contains("ENOBUFS")
                && !text.contains("malformed"),
            text,
        )
    });
}

/// Found by the chaos test (two clients' acknowledgements hung): `revoke` of the
/// original address
/// stopped dropping its queued requests at the first failed receive, and once
/// the original is out of the address set nothing reads it again: those clients
/// waited for as long as the server lived.
#[test]
fn revoking_the_original_drops_every_queued_request_despite_a_failed_receive() {
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let (_id, _minted) = bound.mint_address()?;
        let mut queued = Vec::new();
        for _ in 0..3 {
            queued.push(address.connect().await?);
        }
        let guard = FaultPlan::new(0)
            .fail_nth(Call::RecvMsg, 2, libc::ENOMEM)
            .install();
        bound.revoke(bound.address_id())?;
        ensure(guard.report().injected_total() == 1, "one receive failed")?;
        for (index, client) in queued.iter_mut().enumerate() {
            ensure(
                bounded("recv on a queued request", client.recv())
                    .await??
                    .is_none(),
                format!("queued client {index} sees its connection end"),
            )?;
        }
        Ok(())
    });
}

/// A spurious `EAGAIN` on the first, unregistered try: the operation registers
/// and completes.
#[test]
fn a_first_try_that_would_block_registers_and_completes() {
    run(|| async {
        let (mut a, mut b) = ConnectedSocket::pair()?;
        let guard = FaultPlan::new(0)
            .fail_nth(Call::FirstTry, 1, libc::EAGAIN)
            .fail_nth(Call::FirstTry, 2, libc::EAGAIN)
            .install();
        a.send(b"x", &[]).await?;
        let got = bounded("recv", b.recv()).await??;
        ensure(got.is_some_and(|m| &m.data[..] == b"x"), "received")?;
        ensure(guard.report().injected_total() == 2, "both tries faulted")
    });
}

/// Registering with the reactor fails (`ENOMEM`): the operation reports it,
/// and the same connection registers and works on the next call.
#[test]
fn a_failed_registration_leaves_the_connection_usable() {
    run(|| async {
        let (mut a, mut b) = ConnectedSocket::pair()?;
        let _guard = FaultPlan::new(0)
            .fail_nth(Call::Register, 1, libc::ENOMEM)
            .install();
        let err = fails_with(
            bounded("recv", b.recv()).await?,
            ErrorKind::OutOfMemory,
            "recv whose registration failed",
        )?;
        ensure(err.raw_os_error() == Some(libc::ENOMEM), format!("{err:?}"))?;
        let waiting = tokio::spawn(async move { b.recv().await.map(|m| m.map(|m| m.data)) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        a.send(b"after", &[]).await?;
        let got = bounded("recv after", waiting)
            .await?
            .map_err(io::Error::other)??;
        ensure(
            got.as_deref() == Some(&b"after"[..]),
            "the connection works",
        )
    });
}

/// `socketpair` out of descriptors in `connect`, `epoll_ctl` out of memory in
/// `mint_address`, `F_DUPFD_CLOEXEC` in `try_clone`: each fails cleanly (the
/// harness checks that no descriptor is left behind) and the next call works.
#[test]
fn failed_setups_leave_nothing_behind_and_the_next_call_works() {
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let _guard = FaultPlan::new(0)
            .fail_nth(Call::SocketPair, 1, libc::EMFILE)
            .fail_nth(Call::EpollCreate, 1, libc::ENFILE)
            .fail_nth(Call::EpollAdd, 2, libc::ENOMEM)
            .fail_nth(Call::Duplicate, 1, libc::EMFILE)
            .install();
        let err = address
            .connect()
            .await
            .err()
            .ok_or_else(|| fail("connect"))?;
        ensure(err.raw_os_error() == Some(libc::EMFILE), format!("{err:?}"))?;
        let err = bound.mint_address().err().ok_or_else(|| fail("mint 1"))?;
        ensure(err.raw_os_error() == Some(libc::ENFILE), format!("{err:?}"))?;
        // The set's creation adds the original (EpollAdd 1), then the member
        // (EpollAdd 2) fails.
        let err = bound.mint_address().err().ok_or_else(|| fail("mint 2"))?;
        ensure(err.raw_os_error() == Some(libc::ENOMEM), format!("{err:?}"))?;
        let err = address.try_clone().err().ok_or_else(|| fail("try_clone"))?;
        ensure(err.raw_os_error() == Some(libc::EMFILE), format!("{err:?}"))?;
        let (_id, minted) = bound.mint_address()?;
        let (_a, _b) = connect_and_accept(&address, &bound).await?;
        let (_c, _d) = connect_and_accept(&minted, &bound).await?;
        let _copy = address.try_clone()?;
        Ok(())
    });
}

/// Found by cargo-mutants (the "another task took it" guard could swallow any
/// error): a failed receive on a minted address reaches `accept`'s caller as
/// the transient error it is, and the request is served by the next call.
#[test]
fn a_failed_receive_in_accept_is_reported_and_the_request_still_served() {
    run(|| async {
        let (_address, bound) = make_bound_socket()?;
        let (id, minted) = bound.mint_address()?;
        let _client = minted.connect().await?;
        let guard = FaultPlan::new(0)
            .fail_nth(Call::RecvMsg, 1, libc::ENOMEM)
            .install();
        fails_with(
            bounded("accept", bound.accept()).await?,
            ErrorKind::OutOfMemory,
            "accept whose receive failed",
        )?;
        ensure(guard.report().injected_total() == 1, "one receive failed")?;
        let server = bounded("accept again", bound.accept()).await??;
        ensure(server.address_id() == Some(id), "the same request, served")
    });
}

/// Found by cargo-mutants: `revoke` of the original gives up dropping queued
/// requests after 16 failed receives in a row (with a warning), rather than
/// spinning for ever; a request it left queued is still never admitted: the
/// next `accept` drops it unjudged and reports that no address is left.
#[test]
fn revoking_the_original_gives_up_on_a_failing_drain_and_still_admits_nothing() {
    let logs = Logs::default();
    let _capture = logs.capture();
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let mut queued = address.connect().await?;
        let mut plan = FaultPlan::new(0);
        for n in 1..=16 {
            plan = plan.fail_nth(Call::RecvMsg, n, libc::ENOMEM);
        }
        let guard = plan.install();
        bound.revoke(bound.address_id())?;
        ensure(
            guard.report().injected_total() == 16,
            format!("16 receives failed: {:?}", guard.report()),
        )?;
        drop(guard);
        let text = logs.text();
        ensure(text.contains("could not all be dropped"), text)?;
        fails_with(
            bounded("accept after revoke", bound.accept()).await?,
            ErrorKind::NotConnected,
            "accept on a revoked original",
        )?;
        ensure(
            bounded("recv on the queued request", queued.recv())
                .await??
                .is_none(),
            "the queued client sees its connection end",
        )
    });
}

/// Found by cargo-mutants: an empty queue is the ordinary end of the drain, not
/// a failure to be warned about.
#[test]
fn revoking_the_original_with_nothing_queued_warns_of_nothing() {
    let logs = Logs::default();
    let _capture = logs.capture();
    run(|| async {
        let (_address, bound) = make_bound_socket()?;
        bound.revoke(bound.address_id())?;
        let text = logs.text();
        ensure(
            text.contains("revoked the original address") && !text.contains("could not"),
            text,
        )
    });
}

/// Found by cargo-mutants: when another acceptor takes a minted address's
/// request between `epoll_wait` and `recvmsg` (here, `EAGAIN` from that
/// `recvmsg`, as the race gives), `accept` tries the set again rather than
/// waiting for a readiness edge that may never come: the next request is
/// served at once.
#[test]
fn a_request_taken_by_another_acceptor_first_does_not_stall_accept() {
    run(|| async {
        let (_address, bound) = make_bound_socket()?;
        let (id, minted) = bound.mint_address()?;
        // An accept that waits first, so the set is registered with the
        // reactor (and readiness is edge-triggered from then on).
        let (first, _first_client) = tokio::join!(bounded("first accept", bound.accept()), async {
            tokio::task::yield_now().await;
            minted.connect().await
        });
        first??;
        let _client = minted.connect().await?;
        // Twice: the second time inside the readiness guard, where a
        // `WouldBlock` would clear the readiness the request still holds.
        let guard = FaultPlan::new(0)
            .fail_nth(Call::RecvMsg, 1, libc::EAGAIN)
            .fail_nth(Call::RecvMsg, 2, libc::EAGAIN)
            .install();
        let server = bounded("accept", bound.accept()).await??;
        ensure(
            guard.report().injected_total() == 2,
            "the race was played twice",
        )?;
        ensure(server.address_id() == Some(id), "the request, served")
    });
}

/// Found by cargo-mutants: only `ECONNRESET` is read past (as the ordinary end
/// of a conversation); any other failed receive reaches the caller, and the
/// record is still there for the next call.
#[test]
fn a_failed_receive_is_reported_not_retried_and_the_record_kept() {
    run(|| async {
        let (mut a, mut b) = ConnectedSocket::pair()?;
        a.send(b"kept", &[]).await?;
        let guard = FaultPlan::new(0)
            .fail_nth(Call::RecvMsg, 1, libc::ENOMEM)
            .install();
        fails_with(
            bounded("recv", b.recv()).await?,
            ErrorKind::OutOfMemory,
            "a receive that failed",
        )?;
        ensure(guard.report().injected_total() == 1, "one receive failed")?;
        let got = bounded("recv again", b.recv())
            .await??
            .ok_or_else(|| fail("closed"))?;
        ensure(&got.data[..] == b"kept", "the record, received next")
    });
}

/// Found by review: a peer that sends an empty record and then closes with
/// records of ours unread, between our `recvmsg` and the check for more
/// records, leaves `ECONNRESET` pending for that check. It is read past like
/// the reset before it (here injected at that check's peek, the race's
/// outcome): the record behind the empty one arrives, then end-of-stream.
#[test]
fn a_reset_during_the_end_of_stream_check_is_read_past() {
    run(|| async {
        let (ours, theirs) = common::raw_pair(nix::sys::socket::SockType::SeqPacket);
        common::raw_send(theirs.as_fd(), b"", &[])?;
        common::raw_send(theirs.as_fd(), b"after the empty one", &[])?;
        drop(theirs);
        let mut ours = ConnectedSocket::try_from(ours)?;
        let guard = FaultPlan::new(0)
            .fail_nth(Call::RecvMsg, 2, libc::ECONNRESET)
            .install();
        let got = bounded("recv", ours.recv())
            .await??
            .ok_or_else(|| fail("ended early"))?;
        ensure(
            guard.report().injected_total() == 1,
            "the peek met the reset",
        )?;
        ensure(&got.data[..] == b"after the empty one", "the record behind")?;
        ensure(
            bounded("recv", ours.recv()).await??.is_none(),
            "then end-of-stream",
        )
    });
}

/// Found by cargo-mutants: a transient `accept` error is an item of
/// `incoming()`, and the stream goes on; only "no address left" ends it.
#[test]
fn a_transient_accept_error_is_an_item_of_incoming_and_the_stream_goes_on() {
    use futures_util::StreamExt;
    run(|| async {
        let (_address, bound) = make_bound_socket()?;
        let (id, minted) = bound.mint_address()?;
        let _client = minted.connect().await?;
        let mut incoming = bound.incoming();
        let guard = FaultPlan::new(0)
            .fail_nth(Call::RecvMsg, 1, libc::ENOMEM)
            .install();
        let first = bounded("first item", incoming.next()).await?;
        ensure(
            matches!(&first, Some(Err(e)) if e.kind() == ErrorKind::OutOfMemory),
            format!("the failed receive as an item: {first:?}"),
        )?;
        drop(guard);
        let second = bounded("second item", incoming.next()).await?;
        ensure(
            matches!(&second, Some(Ok(c)) if c.address_id() == Some(id)),
            format!("then the connection: {second:?}"),
        )
    });
}

/// Found by review: when a full (`max_open`) address got room again but
/// putting it back into the accept set failed, it stayed paused, and with no
/// connection of its left to close nothing ever retried: its queued requests
/// waited for ever. Now that accept reports the failure and the next one
/// resumes the address.
#[test]
fn a_failed_resume_of_a_full_address_is_reported_and_the_next_accept_resumes_it() {
    run(|| async {
        let (_address, bound) = make_bound_socket()?;
        let (id, minted) = bound.mint_address_with(tokio_imc::AddressPolicy::new().max_open(1))?;
        let _first_client = minted.connect().await?;
        let first = bounded("accept the first", bound.accept()).await??;
        let _second_client = minted.connect().await?;
        let guard = FaultPlan::new(0)
            .fail_nth(Call::EpollAdd, 1, libc::ENOMEM)
            .install();
        drop(first);
        fails_with(
            bounded("accept whose resume failed", bound.accept()).await?,
            ErrorKind::OutOfMemory,
            "accept whose resume failed",
        )?;
        ensure(guard.report().injected_total() == 1, "one resume failed")?;
        let second = bounded("accept the queued request", bound.accept()).await??;
        ensure(
            second.address_id() == Some(id),
            "the queued request, served",
        )
    });
}

/// The blocking facade's sends and receives wait with `poll(2)` on their own
/// descriptor: they never register with a reactor (so they drive no runtime
/// and hold up no other thread), a timed-out wait takes nothing, and a wait
/// ends when the peer on another thread sends or makes room.
#[test]
fn blocking_sends_and_receives_wait_in_poll_and_never_register() {
    common::run_without_runtime(|| {
        let (mut left, mut right) = tokio_imc::blocking::ConnectedSocket::pair().expect("pair");
        let guard = FaultPlan::new(0).install();

        let err = right
            .recv_timeout(Duration::from_millis(20))
            .expect_err("nothing sent");
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            left.send(b"late", &[]).expect("send");
            left
        });
        let got = right.recv().expect("recv").expect("a message");
        assert_eq!(&got.data[..], b"late", "the one message, nothing lost");
        let mut left = sender.join().expect("sender");

        // Fill `left`'s queue, then a blocking send waits until the reader
        // on another thread makes room.
        let record = [7u8; 4096];
        let mut queued = 0usize;
        while left.send_timeout(&record, &[], Duration::ZERO).is_ok() {
            queued += 1;
        }
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            for _ in 0..=queued {
                let got = right.recv().expect("recv").expect("a record");
                assert_eq!(&got.data[..], &record[..]);
            }
        });
        left.send(&record, &[])
            .expect("a send that waited for room");
        reader.join().expect("reader");

        let report = guard.report();
        let calls = |call| report.calls.get(&call).copied().unwrap_or(0);
        assert!(calls(Call::Poll) >= 3, "waited in poll(2): {report:?}");
        assert_eq!(calls(Call::Register), 0, "never registered: {report:?}");
    });
}
