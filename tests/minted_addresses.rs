//! Addresses as capabilities: minting one per holder, attribution of each
//! connection, revocation, and isolation between holders.

mod common;

use std::collections::BTreeMap;
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use common::{
    bounded, connect_and_accept, ensure, fail, fails_with, poll_once, raw_pair, raw_send, run,
};
use nix::sys::socket::SockType;
use tokio_imc::{
    blocking, make_bound_socket, AddressId, BoundSocket, ConnectedSocket, SocketAddress,
};

/// Accepts until a connection from `id` arrives; returns how many accepts it took.
async fn accepts_until(bound: &BoundSocket, id: AddressId) -> io::Result<usize> {
    for count in 1..=10_000 {
        let server = bounded("accept", bound.accept()).await??;
        if server.address_id() == Some(id) {
            return Ok(count);
        }
    }
    Err(fail(format!("{id:?} was never served")))
}

#[test]
fn each_connection_names_the_address_it_came_through() {
    run(|| async {
        let (original, bound) = make_bound_socket()?;
        let minted: Vec<(AddressId, SocketAddress)> = (0..3)
            .map(|_| bound.mint_address())
            .collect::<io::Result<_>>()?;
        let ids: Vec<AddressId> = minted.iter().map(|(id, _)| *id).collect();
        ensure(
            !ids.contains(&bound.address_id()),
            "minted ids differ from the original's",
        )?;
        ensure(
            ids[0] != ids[1] && ids[1] != ids[2],
            "minted ids are distinct",
        )?;
        for (id, address) in &minted {
            let (client, server) = connect_and_accept(address, &bound).await?;
            ensure(
                server.address_id() == Some(*id),
                format!("attributed to {id:?}"),
            )?;
            ensure(
                client.address_id().is_none(),
                "a client's own end has no address id",
            )?;
        }
        let (_client, server) = connect_and_accept(&original, &bound).await?;
        ensure(
            server.address_id() == Some(bound.address_id()),
            "the original has an id too",
        )?;
        let (a, _b) = ConnectedSocket::pair()?;
        ensure(a.address_id().is_none(), "pair() has no address id")
    });
}

#[test]
fn an_accept_already_waiting_serves_addresses_minted_after_it_started() {
    run(|| async {
        let (_original, bound) = make_bound_socket()?;
        let waiting = bound.accept();
        tokio::pin!(waiting);
        // Nothing is queued: the accept tries, registers and waits, on the original
        // address alone (no address was minted yet).
        ensure(
            poll_once(&mut waiting).await.is_pending(),
            "the accept is waiting before any address is minted",
        )?;
        let (id, minted) = bound.mint_address()?;
        let _client = minted.connect().await?;
        let server = bounded("the waiting accept", waiting).await??;
        ensure(
            server.address_id() == Some(id),
            "served through the minted address",
        )
    });
}

#[test]
fn revoking_refuses_later_connects_and_ends_queued_ones_only_for_that_address() {
    run(|| async {
        let (original, bound) = make_bound_socket()?;
        let (a_id, a) = bound.mint_address()?;
        let (b_id, b) = bound.mint_address()?;
        let mut queued_on_a = a.connect().await?;
        bound.revoke(a_id)?;
        ensure(
            bounded("queued connection", queued_on_a.recv())
                .await??
                .is_none(),
            "queued request ended",
        )?;
        fails_with(
            a.connect().await,
            ErrorKind::ConnectionRefused,
            "connect through a revoked address",
        )?;
        fails_with(bound.revoke(a_id), ErrorKind::NotFound, "revoked twice")?;

        let (_client, server) = connect_and_accept(&b, &bound).await?;
        ensure(server.address_id() == Some(b_id), "b still served")?;
        let (_client, server) = connect_and_accept(&original, &bound).await?;
        ensure(
            server.address_id() == Some(bound.address_id()),
            "original still served",
        )?;

        // Revoking the original: its holders are refused, minted ones go on.
        let mut queued_on_original = original.connect().await?;
        bound.revoke(bound.address_id())?;
        ensure(
            bounded("queued", queued_on_original.recv())
                .await??
                .is_none(),
            "queued on original ended",
        )?;
        fails_with(
            original.connect().await,
            ErrorKind::ConnectionRefused,
            "connect through the revoked original",
        )?;
        let (_client, server) = connect_and_accept(&b, &bound).await?;
        ensure(
            server.address_id() == Some(b_id),
            "b still served after the original was revoked",
        )?;

        // With every address gone, accept says so.
        bound.revoke(b_id)?;
        fails_with(
            bounded("accept with nothing left", bound.accept()).await?,
            ErrorKind::NotConnected,
            "accepted",
        )
        .map(drop)
    });
}

#[test]
fn revoking_the_original_before_minting_works_in_plain_mode() {
    run(|| async {
        let (original, bound) = make_bound_socket()?;
        let _queued = original.connect().await?;
        bound.revoke(bound.address_id())?;
        fails_with(
            bounded("accept", bound.accept()).await?,
            ErrorKind::NotConnected,
            "revoked request accepted",
        )?;
        let (id, minted) = bound.mint_address()?;
        let (_client, server) = connect_and_accept(&minted, &bound).await?;
        ensure(
            server.address_id() == Some(id),
            "a minted address works after the original was revoked",
        )
    });
}

#[test]
fn a_holder_that_shuts_down_floods_or_sends_garbage_hurts_only_its_own_address() {
    run(|| async {
        let (_original, bound) = make_bound_socket()?;
        let (_bad_id, bad) = bound.mint_address()?;
        let (good_id, good) = bound.mint_address()?;

        // Flood: fill the bad address's queue with well-formed raw requests.
        let mut flood = Vec::new();
        loop {
            let (kept, sent) = raw_pair(SockType::SeqPacket);
            match common::raw_send_nonblocking(bad.as_fd(), b"c", &[sent.as_fd()]) {
                Ok(_) => flood.push(kept),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        // The good holder is not stalled, and is served in turn: addresses take
        // turns, so it takes at most two accepts.
        let _client = bounded("connect beside a flooded address", good.connect()).await??;
        let count = accepts_until(&bound, good_id).await?;
        ensure(
            count <= 2,
            format!("good holder served after {count} accepts"),
        )?;

        // Garbage on the bad address: the good one is still served in turn.
        raw_send(bad.as_fd(), &[0u8; 4096], &[])?;
        let _client = good.connect().await?;
        let count = accepts_until(&bound, good_id).await?;
        ensure(
            count <= 2,
            format!("good holder served after {count} accepts beside garbage"),
        )?;

        // Shutdown of the bad address by its holder: only that address ends.
        nix::sys::socket::shutdown(bad.as_raw_fd(), nix::sys::socket::Shutdown::Both)
            .map_err(io::Error::from)?;
        fails_with(
            bad.connect().await,
            ErrorKind::ConnectionRefused,
            "connect through a shut-down address",
        )?;
        drop(flood);
        for _ in 0..3 {
            let _client = good.connect().await?;
            let count = accepts_until(&bound, good_id).await?;
            ensure(
                count <= 2,
                format!("good holder served after {count} accepts"),
            )?;
        }
        Ok(())
    });
}

#[test]
fn ready_addresses_are_served_in_turn() {
    run(|| async {
        const ADDRESSES: usize = 5;
        const EACH: usize = 4;
        let (_original, bound) = make_bound_socket()?;
        let minted: Vec<(AddressId, SocketAddress)> = (0..ADDRESSES)
            .map(|_| bound.mint_address())
            .collect::<io::Result<_>>()?;
        let mut clients = Vec::new();
        for (_, address) in &minted {
            for _ in 0..EACH {
                clients.push(address.connect().await?);
            }
        }
        // The first ADDRESSES accepts take one request from each address.
        let mut first_round = BTreeMap::new();
        for _ in 0..ADDRESSES {
            let server = bounded("accept", bound.accept()).await??;
            *first_round.entry(server.address_id()).or_insert(0) += 1;
        }
        ensure(
            first_round.len() == ADDRESSES,
            format!("first round served {first_round:?}"),
        )
    });
}

#[test]
fn thousands_of_minted_addresses_and_dropping_the_bound_socket_revokes_all() {
    run(|| async {
        const ADDRESSES: usize = 3000;
        let (_original, bound) = make_bound_socket()?;
        let minted: Vec<(AddressId, SocketAddress)> = (0..ADDRESSES)
            .map(|_| bound.mint_address())
            .collect::<io::Result<_>>()?;
        for index in [0, ADDRESSES / 2, ADDRESSES - 1] {
            let (id, address) = &minted[index];
            let (_client, server) = connect_and_accept(address, &bound).await?;
            ensure(server.address_id() == Some(*id), format!("address {index}"))?;
        }
        let mut queued = minted[7].1.connect().await?;
        drop(bound);
        ensure(
            bounded("queued", queued.recv()).await??.is_none(),
            "queued request ended with the bound socket",
        )?;
        for (_, address) in minted.iter().step_by(500) {
            fails_with(
                address.connect().await,
                ErrorKind::ConnectionRefused,
                "connect after the bound socket dropped",
            )?;
        }
        Ok(())
    });
}

#[test]
fn blocking_facade_mints_attributes_and_revokes() {
    common::run_without_runtime(|| {
        let (_original, bound) = blocking::make_bound_socket().expect("make");
        let (id, minted) = bound.mint_address().expect("mint");
        let client = minted.connect().expect("connect");
        let server = bound.accept_timeout(common::HANG).expect("accept");
        assert_eq!(server.address_id(), Some(id));
        bound.revoke(id).expect("revoke");
        assert_eq!(
            minted.connect().expect_err("revoked").kind(),
            ErrorKind::ConnectionRefused
        );
        drop(client);
    });
}

#[test]
fn concurrent_acceptors_both_seeing_a_closed_address_do_not_fail() {
    // Two workers accept at once while thousands of minted addresses are closed by
    // their holders: both can read the same address's end-of-stream before either
    // removes it. Neither may turn that into an error.
    common::run_multi_thread(|| async {
        const ADDRESSES: usize = 3000;
        let (address, bound) = make_bound_socket()?;
        let bound = std::sync::Arc::new(bound);
        for round in 0..5 {
            let minted: Vec<_> = (0..ADDRESSES)
                .map(|_| bound.mint_address())
                .collect::<io::Result<_>>()?;
            let acceptors: Vec<_> = (0..2)
                .map(|_| {
                    let bound = std::sync::Arc::clone(&bound);
                    tokio::spawn(async move {
                        tokio::time::timeout(Duration::from_millis(300), bound.accept()).await
                    })
                })
                .collect();
            drop(minted);
            for acceptor in acceptors {
                match acceptor.await.map_err(io::Error::other)? {
                    Err(_elapsed) => {}
                    Ok(Ok(_)) => return Err(fail("nothing connected, yet accept returned")),
                    Ok(Err(err)) => {
                        return Err(fail(format!("round {round}: accept failed: {err}")))
                    }
                }
            }
        }
        // The original still serves.
        let (mut client, mut server) = tokio::try_join!(address.connect(), bound.accept())?;
        client.send(b"still here", &[]).await?;
        let message = server.recv().await?.ok_or_else(|| fail("closed"))?;
        ensure(
            &message.data[..] == b"still here",
            "the original address works",
        )
    });
}
