//! The crate under injected system-call faults (issue #11, part 1).
//!
//! A realistic workload (clients connecting through the original and minted
//! addresses, records with 0 to 8 descriptors, a revoke midway, split halves,
//! `recv_into`, a client that starts blocking and turns async) runs under a
//! seeded [`FaultPlan`] for several seeds and fault rates. After every seed:
//!
//! - nothing panicked and every step finished within a bound;
//! - the open descriptors are the same files as before;
//! - every server connection received exactly the records whose sends reported
//!   success, byte for byte and descriptor for descriptor, in order, once (a
//!   fault is injected *instead of* the call, so a failed send sent nothing and
//!   a failed receive took nothing: nothing may be lost or repeated);
//! - no connect through a revoked address succeeded;
//! - `EINTR` and `EAGAIN` never reached the caller;
//! - with the faults paused, the same bound socket, addresses and long-lived
//!   connection work again.
//!
//! Run it with `cargo test --all-features --test chaos -- --nocapture` to see the
//! figure (operations, faults by errno, violations).
#![cfg(feature = "fault-injection")]

mod common;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use common::{ensure, fail, inode, pipe, run};
use tokio_imc::faults::{FaultPlan, FaultReport};
use tokio_imc::{blocking, make_bound_socket, AddressId, BoundSocket, ConnectedSocket};

/// Seeds per fault rate, and the rates (faults per million calls).
const SEEDS: u64 = 10;
const RATES_PPM: [u32; 3] = [20_000, 80_000, 200_000];
/// Clients per seed, and records each sends after its hello.
const CLIENTS: u64 = 16;
const RECORDS: u64 = 12;
/// How often a step is retried after an injected failure before it counts as
/// given up; with the highest rate, giving up is vanishingly rare.
const ATTEMPTS: usize = 40;
/// The bound on any one step: a liveness bound, not a performance assertion.
const STEP: Duration = Duration::from_secs(10);

/// One record as the model sees it: its bytes and the inodes of its descriptors.
type Record = (Vec<u8>, Vec<u64>);

/// What one seed observed.
#[derive(Default)]
struct Observed {
    /// Records whose send reported success, by client.
    sent: BTreeMap<u64, Vec<Record>>,
    /// Clients whose server acknowledged, at end-of-stream, how many records it
    /// received; the others saw their connection end without one (reported
    /// broken: e.g. a revoke dropped their queued request).
    acked: BTreeMap<u64, u64>,
    /// What each server connection received, in order (empty for one whose
    /// client gave up before its hello went out).
    received: Vec<Vec<Record>>,
    /// Errors by kind, as the caller saw them.
    errors: BTreeMap<String, u64>,
    violations: Vec<String>,
    operations: u64,
}

type Shared = Arc<Mutex<Observed>>;

fn note_error(observed: &Shared, what: &str, err: &io::Error) {
    let mut observed = observed.lock().expect("observed");
    if matches!(
        err.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
    ) {
        observed
            .violations
            .push(format!("{what}: {err:?} reached the caller"));
    }
    *observed
        .errors
        .entry(format!("{what}: {:?}", err.kind()))
        .or_default() += 1;
}

fn violation(observed: &Shared, message: String) {
    observed.lock().expect("observed").violations.push(message);
}

/// Retries `step` after failures (noting each), bounded by [`STEP`] per attempt.
async fn retried<T, F, Fut>(observed: &Shared, what: &str, mut step: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = io::Result<T>>,
{
    for _ in 0..ATTEMPTS {
        observed.lock().expect("observed").operations += 1;
        match tokio::time::timeout(STEP, step()).await {
            Ok(Ok(value)) => return Some(value),
            Ok(Err(err)) => {
                note_error(observed, what, &err);
                // Final: the address was revoked (a race this workload allows).
                if err.kind() == io::ErrorKind::ConnectionRefused {
                    return None;
                }
            }
            Err(_) => {
                violation(observed, format!("{what} hung"));
                return None;
            }
        }
    }
    None
}

/// The synchronous twin of [`retried`].
fn retried_blocking<T>(
    observed: &Shared,
    what: &str,
    mut step: impl FnMut() -> io::Result<T>,
) -> Option<T> {
    for _ in 0..ATTEMPTS {
        observed.lock().expect("observed").operations += 1;
        match step() {
            Ok(value) => return Some(value),
            Err(err) => note_error(observed, what, &err),
        }
    }
    None
}

/// The bytes of record `seq` of `client`: its identity, then a length that
/// varies with both (0 to 300 filler bytes).
fn payload(client: u64, seq: u64) -> Vec<u8> {
    let mut data = Vec::new();
    data.extend_from_slice(&client.to_le_bytes());
    data.extend_from_slice(&seq.to_le_bytes());
    let filler = ((client * 31 + seq * 17) % 301) as usize;
    data.extend((0..filler).map(|i| (i as u64 ^ client ^ seq) as u8));
    data
}

/// The descriptors record `seq` of `client` carries: 0 to 8 of the pool.
fn descriptors(pool: &[OwnedFd], client: u64, seq: u64) -> Vec<BorrowedFd<'_>> {
    let count = ((client + seq * 5) % 9) as usize;
    let start = (client + seq) as usize;
    (0..count)
        .map(|i| pool[(start + i) % pool.len()].as_fd())
        .collect()
}

fn record_of(data: &[u8], fds: &[OwnedFd]) -> Record {
    (data.to_vec(), fds.iter().map(inode).collect())
}

/// Sends records `seqs` of `client`, each tried a few times; records the ones
/// that reported success.
async fn send_records(
    observed: &Shared,
    pool: &Arc<Vec<OwnedFd>>,
    client: u64,
    connection: &mut ConnectedSocket,
    seqs: std::ops::Range<u64>,
) {
    for seq in seqs {
        let data = payload(client, seq);
        let fds = descriptors(pool, client, seq);
        let tries = if seq == 0 { ATTEMPTS } else { 3 };
        for _ in 0..tries {
            observed.lock().expect("observed").operations += 1;
            match tokio::time::timeout(STEP, connection.send(&data, &fds)).await {
                Ok(Ok(())) => {
                    let inodes = fds.iter().map(inode).collect();
                    let mut observed = observed.lock().expect("observed");
                    observed
                        .sent
                        .entry(client)
                        .or_default()
                        .push((data.clone(), inodes));
                    break;
                }
                Ok(Err(err)) => note_error(observed, "send", &err),
                Err(_) => {
                    violation(observed, format!("client {client}: send hung"));
                    return;
                }
            }
        }
    }
}

/// Receives until end-of-stream (or too many failures in a row), by `recv` on
/// split halves or `recv_into` on the whole connection.
async fn receive_all(observed: Shared, connection: ConnectedSocket, split: bool) {
    let mut records = Vec::new();
    let mut failures = 0;
    let mut whole = None;
    let mut halves = None;
    if split {
        match connection.into_split() {
            Ok((recv, send)) => halves = Some((recv, send)),
            Err(err) => {
                violation(&observed, format!("into_split failed: {err:?}"));
                return;
            }
        }
    } else {
        whole = Some(connection);
    }
    let mut data = BytesMut::new();
    let mut fds = Vec::new();
    loop {
        observed.lock().expect("observed").operations += 1;
        let got = if let Some((recv, _)) = &halves {
            tokio::time::timeout(STEP, recv.recv())
                .await
                .map(|r| r.map(|m| m.map(|m| record_of(&m.data, &m.fds))))
        } else if let Some(connection) = &mut whole {
            data.clear();
            fds.clear();
            tokio::time::timeout(STEP, connection.recv_into(&mut data, &mut fds))
                .await
                .map(|r| r.map(|n| n.map(|_| record_of(&data, &fds))))
        } else {
            unreachable!("one of the two is set");
        };
        match got {
            Ok(Ok(Some(record))) => {
                failures = 0;
                records.push(record);
            }
            Ok(Ok(None)) => {
                let ack = (records.len() as u64).to_le_bytes();
                for _ in 0..ATTEMPTS {
                    let sent = match (&halves, &mut whole) {
                        (Some((_, send)), _) => {
                            tokio::time::timeout(STEP, send.send(&ack, &[])).await
                        }
                        (None, Some(connection)) => {
                            tokio::time::timeout(STEP, connection.send(&ack, &[])).await
                        }
                        (None, None) => unreachable!("one of the two is set"),
                    };
                    match sent {
                        Ok(Ok(())) => break,
                        Ok(Err(err)) => note_error(&observed, "ack", &err),
                        Err(_) => {
                            violation(&observed, "ack hung".into());
                            break;
                        }
                    }
                }
                break;
            }
            Ok(Err(err)) => {
                note_error(&observed, "recv", &err);
                failures += 1;
                if failures == ATTEMPTS {
                    violation(&observed, format!("recv kept failing: {err:?}"));
                    break;
                }
            }
            Err(_) => {
                violation(&observed, "recv hung".into());
                break;
            }
        }
    }
    observed.lock().expect("observed").received.push(records);
}

/// Accepts until no address is left, spawning a receiver per connection.
async fn serve(observed: Shared, bound: Arc<BoundSocket>) {
    let mut receivers = Vec::new();
    let mut failures = 0;
    loop {
        observed.lock().expect("observed").operations += 1;
        match tokio::time::timeout(STEP * 3, bound.accept()).await {
            Ok(Ok(connection)) => {
                failures = 0;
                let split = receivers.len() % 2 == 0;
                receivers.push(tokio::spawn(receive_all(
                    observed.clone(),
                    connection,
                    split,
                )));
            }
            Ok(Err(err)) if err.kind() == io::ErrorKind::NotConnected => break,
            Ok(Err(err)) => {
                note_error(&observed, "accept", &err);
                failures += 1;
                if failures == ATTEMPTS * 10 {
                    violation(&observed, format!("accept kept failing: {err:?}"));
                    break;
                }
            }
            Err(_) => {
                violation(&observed, "accept hung".into());
                break;
            }
        }
    }
    for receiver in receivers {
        if receiver.await.is_err() {
            violation(&observed, "a receiver panicked".into());
        }
    }
}

/// One client: connects through `address`, sends its hello and records. Client
/// 0 of every seed starts blocking, on a thread of its own with a plan of its
/// own, and turns async halfway.
async fn client(
    observed: Shared,
    pool: Arc<Vec<OwnedFd>>,
    id: u64,
    address: Arc<tokio_imc::SocketAddress>,
    plan: FaultPlan,
    reports: Arc<Mutex<FaultReport>>,
) {
    let connection = if id == 0 {
        let address = match address.try_clone() {
            Ok(address) => address,
            Err(err) => return note_error(&observed, "try_clone", &err),
        };
        let (observed2, pool2) = (observed.clone(), pool.clone());
        let started = tokio::task::spawn_blocking(move || {
            let guard = plan.install();
            let address = blocking::SocketAddress::from_async(address);
            let connection = retried_blocking(&observed2, "blocking connect", || {
                address.connect_timeout(STEP)
            });
            let mut sender = connection;
            if let Some(connection) = &mut sender {
                for seq in 0..RECORDS / 2 {
                    let data = payload(id, seq);
                    let fds = descriptors(&pool2, id, seq);
                    let sent = retried_blocking(&observed2, "blocking send", || {
                        connection.send_timeout(&data, &fds, STEP)
                    });
                    if sent.is_some() {
                        let inodes = fds.iter().map(inode).collect();
                        let mut observed = observed2.lock().expect("observed");
                        observed.sent.entry(id).or_default().push((data, inodes));
                    } else if seq == 0 {
                        return (None, guard.report());
                    }
                }
            }
            (sender, guard.report())
        })
        .await;
        let Ok((sender, report)) = started else {
            return violation(&observed, "the blocking client panicked".into());
        };
        reports.lock().expect("reports").merge(&report);
        sender.map(|connection| (connection.into_async(), RECORDS / 2))
    } else {
        retried(&observed, "connect", || address.connect())
            .await
            .map(|connection| (connection, 0))
    };
    let Some((mut connection, first)) = connection else {
        return;
    };
    send_records(&observed, &pool, id, &mut connection, first..RECORDS).await;
    finish(&observed, id, &mut connection).await;
}

/// Ends a client's sending and waits for the server's acknowledgement.
async fn finish(observed: &Shared, id: u64, connection: &mut ConnectedSocket) {
    if let Err(err) = connection.shutdown(std::net::Shutdown::Write) {
        return violation(observed, format!("client {id}: shutdown failed: {err:?}"));
    }
    for _ in 0..ATTEMPTS {
        match tokio::time::timeout(STEP, connection.recv()).await {
            Ok(Ok(Some(ack))) => {
                let Ok(count) = <[u8; 8]>::try_from(&ack.data[..]) else {
                    return violation(observed, format!("client {id}: a malformed ack"));
                };
                let mut observed = observed.lock().expect("observed");
                observed.acked.insert(id, u64::from_le_bytes(count));
                return;
            }
            Ok(Ok(None)) => return, // ended without an ack: reported broken
            Ok(Err(err)) => note_error(observed, "recv ack", &err),
            Err(_) => return violation(observed, format!("client {id}: the ack hung")),
        }
    }
}

/// The descriptors this process has open, as the files they refer to.
fn open_files() -> BTreeMap<String, usize> {
    let mut files = BTreeMap::new();
    for target in common::open_fds().into_values() {
        *files.entry(target).or_default() += 1;
    }
    files
}

/// Runs the workload once under `plan`; returns what it observed and the plan's
/// report.
async fn one_seed(seed: u64, rate: u32) -> io::Result<(Observed, FaultReport)> {
    let before = open_files();
    let observed: Shared = Arc::default();
    let pool: Arc<Vec<OwnedFd>> = Arc::new((0..8).map(|_| pipe().0).collect());
    // Objects made before the faults start, used during them, and checked after.
    let (address, bound) = make_bound_socket()?;
    let (mut steady_a, mut steady_b) = ConnectedSocket::pair()?;
    let bound = Arc::new(bound);

    let plan = FaultPlan::new(seed).random(rate);
    let guard = plan.clone().install();
    let blocking_reports = Arc::new(Mutex::new(FaultReport::default()));

    let mut addresses: Vec<(Option<AddressId>, Arc<tokio_imc::SocketAddress>)> =
        vec![(None, Arc::new(address))];
    for _ in 0..3 {
        if let Some((id, minted)) =
            retried(&observed, "mint", || async { bound.mint_address() }).await
        {
            addresses.push((Some(id), Arc::new(minted)));
        }
    }
    let server = tokio::spawn(serve(observed.clone(), bound.clone()));

    let mut clients = Vec::new();
    let mut revoked = None;
    for id in 0..CLIENTS {
        if id == CLIENTS / 2 {
            // Revoke an address midway (the original on odd seeds, a minted one
            // on even seeds); no connect through it may succeed afterwards.
            let index = if seed % 2 == 1 {
                0
            } else {
                addresses.len() - 1
            };
            let address_id = addresses[index].0.unwrap_or(bound.address_id());
            if addresses.len() > 1
                && retried(&observed, "revoke", || async { bound.revoke(address_id) })
                    .await
                    .is_some()
            {
                revoked = Some(addresses.remove(index).1);
            }
        }
        let address = addresses[(id as usize) % addresses.len()].1.clone();
        let child_plan = FaultPlan::new(seed.wrapping_mul(1000) + id).random(rate);
        clients.push(tokio::spawn(client(
            observed.clone(),
            pool.clone(),
            id,
            address,
            child_plan,
            blocking_reports.clone(),
        )));
        // The long-lived connection carries a record now and then, faults and all.
        if steady_a.send(b"steady", &[]).await.is_ok() {
            let _ = tokio::time::timeout(STEP, steady_b.recv()).await;
        }
    }
    if let Some(revoked) = &revoked {
        for _ in 0..5 {
            match revoked.connect().await {
                Ok(_) => violation(
                    &observed,
                    "a connect through a revoked address succeeded".into(),
                ),
                Err(err) => note_error(&observed, "connect through the revoked address", &err),
            }
        }
    }
    for client in clients {
        if client.await.is_err() {
            violation(&observed, "a client panicked".into());
        }
    }

    // The faults stop: the same objects work again.
    guard.pause();
    for (index, (_, address)) in addresses.iter().enumerate() {
        let client = 1000 + index as u64;
        let mut connection = tokio::time::timeout(STEP, address.connect())
            .await
            .map_err(|_| fail("connect after the faults hung"))??;
        send_records(&observed, &pool, client, &mut connection, 0..2).await;
        finish(&observed, client, &mut connection).await;
        let acked = observed
            .lock()
            .expect("observed")
            .acked
            .get(&client)
            .copied();
        ensure(
            acked == Some(2),
            format!("address {index} serves again after the faults: acked {acked:?}"),
        )?;
    }
    steady_a.send(b"after", &[pool[0].as_fd()]).await?;
    let after = tokio::time::timeout(STEP, steady_b.recv())
        .await
        .map_err(|_| fail("the long-lived connection hung after the faults"))??
        .ok_or_else(|| fail("the long-lived connection ended"))?;
    // A record sent during the faults may still be queued ahead of this one.
    let mut after = after;
    while &after.data[..] != b"after" {
        after = tokio::time::timeout(STEP, steady_b.recv())
            .await
            .map_err(|_| fail("the long-lived connection hung after the faults"))??
            .ok_or_else(|| fail("the long-lived connection ended"))?;
    }
    ensure(
        after.fds.len() == 1 && inode(&after.fds[0]) == inode(&pool[0]),
        "the long-lived connection carries a descriptor after the faults",
    )?;
    drop(after);

    // Every address closed: the server's accept loop ends, then its receivers.
    drop(addresses);
    drop(revoked);
    tokio::time::timeout(STEP * 6, server)
        .await
        .map_err(|_| fail("the server did not finish"))?
        .map_err(|_| fail("the server panicked"))?;
    let mut report = guard.report();
    drop(guard);
    report.merge(&blocking_reports.lock().expect("reports"));
    drop((steady_a, steady_b, bound, pool));

    let mut observed = Arc::try_unwrap(observed)
        .map_err(|_| fail("observations still shared"))?
        .into_inner()
        .map_err(|_| fail("observations poisoned"))?;
    check_records(&mut observed);
    let after = open_files();
    if before != after {
        observed.violations.push(format!(
            "open descriptors changed: before {before:?}, after {after:?}"
        ));
    }
    Ok((observed, report))
}

/// Every server connection received a prefix of one client's successful sends,
/// no client was received twice, and every acknowledged client was received
/// whole.
fn check_records(observed: &mut Observed) {
    let mut matched = BTreeMap::new();
    let received = std::mem::take(&mut observed.received);
    for records in received {
        let Some((first, _)) = records.first() else {
            continue; // a client that gave up before its hello
        };
        let Some(client) = first
            .get(..8)
            .map(|id| u64::from_le_bytes(id.try_into().expect("8")))
        else {
            observed
                .violations
                .push("a record without a client id".into());
            continue;
        };
        let sent = observed.sent.get(&client).map_or(&[][..], Vec::as_slice);
        if !sent.starts_with(&records) {
            observed.violations.push(format!(
                "client {client}: the {} records received are not the first of the {} sent",
                records.len(),
                sent.len()
            ));
        }
        if matched.insert(client, records.len() as u64).is_some() {
            observed
                .violations
                .push(format!("client {client} was received by two connections"));
        }
    }
    for (client, sent) in &observed.sent {
        let Some(acked) = observed.acked.get(client) else {
            continue;
        };
        let got = matched.get(client).copied().unwrap_or(0);
        if *acked != sent.len() as u64 || got != sent.len() as u64 {
            observed.violations.push(format!(
                "client {client}: {} sent, {got} received, {acked} acknowledged",
                sent.len()
            ));
        }
    }
}

#[test]
fn the_crate_survives_injected_system_call_faults() {
    run(|| async {
        let mut total = FaultReport::default();
        let mut operations = 0;
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut violations = Vec::new();
        let (mut clients, mut acked) = (0, 0);
        for rate in RATES_PPM {
            for seed in 0..SEEDS {
                let (observed, report) = one_seed(seed, rate).await?;
                operations += observed.operations;
                clients += observed.sent.len();
                acked += observed.acked.len();
                for (kind, n) in observed.errors {
                    *errors.entry(kind).or_default() += n;
                }
                violations.extend(
                    observed
                        .violations
                        .into_iter()
                        .map(|v| format!("seed {seed}, {rate} ppm: {v}")),
                );
                total.merge(&report);
            }
        }
        let mut by_errno: BTreeMap<String, u64> = BTreeMap::new();
        for ((_call, errno), n) in &total.injected {
            let name = nix::errno::Errno::from_raw(*errno);
            *by_errno.entry(format!("{name:?}")).or_default() += n;
        }
        let _ = writeln!(
            io::stderr(),
            "chaos: {} seeds, {operations} operations, {} system calls, {} faults injected \
             ({by_errno:?}), errors seen by callers {errors:?}; {acked} of {clients} \
             conversations acknowledged whole; {} violations",
            SEEDS * RATES_PPM.len() as u64,
            total.calls_total(),
            total.injected_total(),
            violations.len()
        );
        ensure(total.injected_total() > 0, "faults were injected")?;
        // Most conversations must complete, or the checks above prove little.
        ensure(
            acked * 4 > clients * 3,
            format!("only {acked} of {clients} conversations completed"),
        )?;
        for errno in [
            "EINTR",
            "EAGAIN",
            "ENOBUFS",
            "ENOMEM",
            "EMFILE",
            "ECONNRESET",
            "EPIPE",
        ] {
            ensure(
                by_errno.contains_key(errno),
                format!("{errno} was injected somewhere: {by_errno:?}"),
            )?;
        }
        ensure(violations.is_empty(), violations.join("\n"))
    });
}
