//! `revoke` is a promise: once it has returned, no `accept` returns a connection
//! through the revoked address, whether it was already waiting or starts later,
//! on any thread; and every request sent through that address before is either
//! accepted or ends (its client reads end-of-stream), never lost or half-served.
//!
//! Acceptors on a multi-thread runtime race `revoke` thousands of times while
//! requests are queued, starting accept after accept. Each reads, before it
//! starts an accept, whether `revoke` has returned; an accept started after that
//! which returns a connection through the revoked address breaks the promise.
//! (An accept already running when `revoke` is called took its request before
//! the revoke, or drops it: the two exclude each other inside the crate, but
//! no test can observe the instant an accept took its request, so that half is
//! checked from the clients' side: each reads, within `HANG`, either the server's
//! answer or end-of-stream, so no request is left queued in a revoked socket;
//! and the clients answered are exactly the connections the server kept.) No step
//! passes on a timeout: every wait is bounded by `HANG` and a bound reached is a
//! failure.

mod common;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::{bounded, ensure, fail, fails_with, run_multi_thread};
use tokio_imc::{make_bound_socket, AddressId, BoundSocket, ConnectedSocket, SocketAddress};

const ROUNDS: usize = 2000;

/// What one round's acceptors saw.
#[derive(Default)]
struct Seen {
    /// Connections through it returned by an accept started after `revoke` had
    /// returned.
    broken_promises: AtomicUsize,
}

/// Accepts until it gets a connection through `stop`, answering every
/// connection through `revoked` and keeping it open.
async fn acceptor(
    bound: Arc<BoundSocket>,
    revoked: AddressId,
    stop: AddressId,
    revoke_returned: Arc<AtomicBool>,
    seen: Arc<Seen>,
) -> io::Result<Vec<ConnectedSocket>> {
    let mut kept = Vec::new();
    loop {
        // Read before the accept starts: if `revoke` had returned by then, this
        // accept must not return a connection through the revoked address.
        let started_after_revoke = revoke_returned.load(Ordering::SeqCst);
        let mut connection = bounded("accept", bound.accept()).await??;
        if connection.address_id() == Some(revoked) {
            if started_after_revoke {
                seen.broken_promises.fetch_add(1, Ordering::SeqCst);
            }
            connection.send(b"accepted", &[]).await?;
            kept.push(connection);
        } else if connection.address_id() == Some(stop) {
            return Ok(kept);
        } else {
            return Err(fail("a connection through an address nobody used"));
        }
    }
}

/// One round: `queued` requests through `address` (id `revoked`), two acceptors,
/// and a revoke after `delay` yields; connects through `stop` release the
/// acceptors.
async fn round(
    bound: &Arc<BoundSocket>,
    (address, revoked): (SocketAddress, AddressId),
    (stop, stop_id): (&SocketAddress, AddressId),
    queued: usize,
    delay: usize,
) -> io::Result<()> {
    let mut clients = Vec::new();
    for _ in 0..queued {
        clients.push(address.connect().await?);
    }
    let revoke_returned = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let acceptors: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(acceptor(
                Arc::clone(bound),
                revoked,
                stop_id,
                Arc::clone(&revoke_returned),
                Arc::clone(&seen),
            ))
        })
        .collect();
    for _ in 0..delay {
        tokio::task::yield_now().await;
    }
    bound.revoke(revoked)?;
    revoke_returned.store(true, Ordering::SeqCst);
    // The revoked address refuses from now on.
    fails_with(
        address.connect().await,
        io::ErrorKind::ConnectionRefused,
        "connect through a revoked address succeeded",
    )?;
    let _stops = [stop.connect().await?, stop.connect().await?];
    let mut kept = Vec::new();
    for acceptor in acceptors {
        kept.extend(
            bounded("an acceptor", acceptor)
                .await?
                .map_err(io::Error::other)??,
        );
    }
    let broken = seen.broken_promises.load(Ordering::SeqCst);
    ensure(
        broken == 0,
        format!(
            "{broken} connection(s) through address {revoked} returned by an accept started \
             after revoke returned"
        ),
    )?;
    // Every request was accepted (and answered) or ended, each client finding out
    // within HANG: none lost, none left queued. The clients answered, counted on
    // their side, are the connections the acceptors kept, counted on theirs.
    let mut answered = 0;
    for mut client in clients {
        match bounded("a client's answer", client.recv()).await?? {
            Some(message) if &message.data[..] == b"accepted" => answered += 1,
            Some(_) => return Err(fail("a client got something else")),
            None => {}
        }
    }
    ensure(
        answered == kept.len(),
        format!("{answered} clients answered, {} accepted", kept.len()),
    )
}

#[test]
fn accepts_racing_revoke_of_minted_addresses_never_return_a_revoked_connection() {
    run_multi_thread(|| async {
        let (_original, bound) = make_bound_socket()?;
        let bound = Arc::new(bound);
        let (stop_id, stop) = bound.mint_address()?;
        for n in 0..ROUNDS {
            let (id, minted) = bound.mint_address()?;
            round(&bound, (minted, id), (&stop, stop_id), 1 + n % 4, n % 5).await?;
        }
        Ok(())
    });
}

#[test]
fn accepts_racing_revoke_of_the_original_address_never_return_a_revoked_connection() {
    run_multi_thread(|| async {
        for n in 0..ROUNDS / 2 {
            let (original, bound) = make_bound_socket()?;
            let id = bound.address_id();
            let bound = Arc::new(bound);
            let (stop_id, stop) = bound.mint_address()?;
            round(&bound, (original, id), (&stop, stop_id), 1 + n % 4, n % 5).await?;
        }
        Ok(())
    });
}
