//! The data path against a model: every byte and every descriptor that `recv`,
//! `recv_into`, the split halves and the blocking facade hand out is compared
//! with a plain record of what was sent, over arbitrary record sizes (1 byte to
//! the largest record a socket takes), descriptor counts (0 to 253), buffer
//! shapes (capacity, length, cleared or appended) and several connections
//! interleaved on one thread or spread over a multi-thread runtime.

mod common;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use bytes::BytesMut;
use common::{bounded, ensure, fail, inode, run, run_multi_thread};
use nix::sys::socket::{getsockopt, sockopt};
use proptest::prelude::*;
use tokio_imc::{blocking, ConnectedSocket, MAX_FDS_PER_MESSAGE};

/// The largest record the default socket buffer takes (`SO_SNDBUF` - 32); the
/// real limit is read from the socket and sizes are clamped to it.
const LARGEST_RECORD: usize = 212_960;

/// How one connection's records are received.
#[derive(Debug, Clone, Copy)]
enum Way {
    /// `ConnectedSocket::recv`.
    Recv,
    /// `ConnectedSocket::recv_into` into one buffer kept across records.
    RecvInto,
    /// `RecvHalf::recv`.
    HalfRecv,
    /// `RecvHalf::recv_into`.
    HalfRecvInto,
    /// `blocking::ConnectedSocket::recv`, inside `spawn_blocking`.
    BlockingRecv,
    /// `blocking::ConnectedSocket::recv_into`, inside `spawn_blocking`.
    BlockingRecvInto,
}

/// One record: its length and how many descriptors ride with it; `clear`
/// empties the receive buffer before it is received (the ways with a buffer).
#[derive(Debug, Clone)]
struct Record {
    len: usize,
    fds: usize,
    clear: bool,
}

/// One connection's plan.
#[derive(Debug, Clone)]
struct Connection {
    way: Way,
    /// The receive buffer's initial capacity and length (the ways with a buffer).
    capacity: usize,
    initial_len: usize,
    records: Vec<Record>,
}

fn way() -> impl Strategy<Value = Way> {
    prop_oneof![
        Just(Way::Recv),
        Just(Way::RecvInto),
        Just(Way::HalfRecv),
        Just(Way::HalfRecvInto),
        Just(Way::BlockingRecv),
        Just(Way::BlockingRecvInto),
    ]
}

fn record_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => 1usize..=64,
        2 => 1900usize..=2200,
        2 => 1usize..=LARGEST_RECORD,
        3 => 40_000usize..=LARGEST_RECORD,
        1 => (LARGEST_RECORD - 16)..=LARGEST_RECORD,
    ]
}

fn fd_count() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => Just(0usize),
        3 => 1usize..=8,
        1 => 9usize..=MAX_FDS_PER_MESSAGE,
        1 => Just(MAX_FDS_PER_MESSAGE),
    ]
}

fn record() -> impl Strategy<Value = Record> {
    (record_len(), fd_count(), proptest::bool::weighted(0.1)).prop_map(|(len, fds, clear)| Record {
        len,
        fds,
        clear,
    })
}

fn capacity() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        1usize..=4096,
        4097usize..=LARGEST_RECORD,
        // Around MAX_RECV_SIZE: the buffer alone can hold any record.
        (tokio_imc::MAX_RECV_SIZE - 8)..=(tokio_imc::MAX_RECV_SIZE + 8),
        (tokio_imc::MAX_RECV_SIZE + 9)..=(2 * tokio_imc::MAX_RECV_SIZE),
    ]
}

fn connection() -> impl Strategy<Value = Connection> {
    (
        way(),
        capacity(),
        0usize..=4096,
        proptest::collection::vec(record(), 1..=10),
    )
        .prop_map(|(way, capacity, len, records)| Connection {
            way,
            capacity,
            initial_len: len.min(capacity),
            records,
        })
}

fn connections() -> impl Strategy<Value = Vec<Connection>> {
    proptest::collection::vec(connection(), 1..=3)
}

/// The bytes of record `index` on connection `connection`: different for every
/// record, so a stale or misplaced byte cannot match by chance.
fn payload(connection: usize, index: usize, len: usize) -> Vec<u8> {
    let seed =
        (connection as u32).wrapping_mul(0x9e37_79b9) ^ (index as u32).wrapping_mul(0x85eb_ca6b);
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// What the receiver is handed, by whichever way.
enum Receiver {
    Whole(ConnectedSocket),
    /// The receiving half, and the sending half kept open beside it.
    Half {
        recv: tokio_imc::RecvHalf,
        _send: tokio_imc::SendHalf,
    },
}

/// The model of a receive buffer: its bytes, and the descriptors' inodes.
struct Model {
    data: Vec<u8>,
    inodes: Vec<u64>,
}

/// Receives `plan`'s records on `receiver` by its way and compares each with the
/// model. Runs on a runtime task, or in `spawn_blocking` for the blocking ways.
fn check_blocking(
    index: usize,
    plan: &Connection,
    receiver: &mut blocking::ConnectedSocket,
    pool_inodes: &[u64],
) -> io::Result<()> {
    let mut buffer = initial_buffer(plan);
    let mut model = Model {
        data: buffer.to_vec(),
        inodes: Vec::new(),
    };
    let mut fds = Vec::new();
    for (n, record) in plan.records.iter().enumerate() {
        let expected = payload(index, n, record.len);
        match plan.way {
            Way::BlockingRecv => {
                let message = receiver
                    .recv()?
                    .ok_or_else(|| fail("end-of-stream before the last record"))?;
                compare_message(&message.data, &message.fds, &expected, record, pool_inodes)?;
            }
            _ => {
                prepare(&mut buffer, &mut fds, &mut model, record);
                let got = receiver.recv_into(&mut buffer, &mut fds)?;
                compare_buffer(
                    got,
                    &buffer,
                    &fds,
                    &mut model,
                    &expected,
                    record,
                    pool_inodes,
                )?;
            }
        }
    }
    Ok(())
}

async fn check_async(
    index: usize,
    plan: &Connection,
    receiver: &mut Receiver,
    pool_inodes: &[u64],
) -> io::Result<()> {
    let mut buffer = initial_buffer(plan);
    let mut model = Model {
        data: buffer.to_vec(),
        inodes: Vec::new(),
    };
    let mut fds = Vec::new();
    for (n, record) in plan.records.iter().enumerate() {
        let expected = payload(index, n, record.len);
        let by_message = matches!(plan.way, Way::Recv | Way::HalfRecv);
        if by_message {
            let message = match receiver {
                Receiver::Whole(socket) => socket.recv().await?,
                Receiver::Half { recv, .. } => recv.recv().await?,
            }
            .ok_or_else(|| fail("end-of-stream before the last record"))?;
            compare_message(&message.data, &message.fds, &expected, record, pool_inodes)?;
        } else {
            prepare(&mut buffer, &mut fds, &mut model, record);
            let got = match receiver {
                Receiver::Whole(socket) => socket.recv_into(&mut buffer, &mut fds).await?,
                Receiver::Half { recv, .. } => recv.recv_into(&mut buffer, &mut fds).await?,
            };
            compare_buffer(
                got,
                &buffer,
                &fds,
                &mut model,
                &expected,
                record,
                pool_inodes,
            )?;
        }
    }
    Ok(())
}

fn initial_buffer(plan: &Connection) -> BytesMut {
    let mut buffer = BytesMut::with_capacity(plan.capacity);
    buffer.extend((0..plan.initial_len).map(|i| (i % 251) as u8));
    buffer
}

/// Clears the buffer (and the model) when the record says so.
fn prepare(buffer: &mut BytesMut, fds: &mut Vec<OwnedFd>, model: &mut Model, record: &Record) {
    if record.clear {
        buffer.clear();
        fds.clear();
        model.data.clear();
        model.inodes.clear();
    }
}

/// The descriptors of a record with `count` of them: pool entries in turn.
fn pool_indices(count: usize, pool_len: usize) -> impl Iterator<Item = usize> {
    (0..count).map(move |i| (i * 7) % pool_len)
}

fn compare_message(
    data: &[u8],
    fds: &[OwnedFd],
    expected: &[u8],
    record: &Record,
    pool_inodes: &[u64],
) -> io::Result<()> {
    ensure(
        data == expected,
        format!(
            "a record of {} bytes arrived changed (got {} bytes)",
            record.len,
            data.len()
        ),
    )?;
    let expected_inodes: Vec<u64> = pool_indices(record.fds, pool_inodes.len())
        .map(|i| pool_inodes[i])
        .collect();
    let got: Vec<u64> = fds.iter().map(inode).collect();
    ensure(
        got == expected_inodes,
        format!("the descriptors of a {}-byte record differ", record.len),
    )
}

fn compare_buffer(
    got: Option<usize>,
    buffer: &BytesMut,
    fds: &[OwnedFd],
    model: &mut Model,
    expected: &[u8],
    record: &Record,
    pool_inodes: &[u64],
) -> io::Result<()> {
    ensure(
        got == Some(record.len),
        format!(
            "recv_into returned {got:?} for a record of {} bytes",
            record.len
        ),
    )?;
    model.data.extend_from_slice(expected);
    model
        .inodes
        .extend(pool_indices(record.fds, pool_inodes.len()).map(|i| pool_inodes[i]));
    if buffer[..] != model.data[..] {
        let first = buffer
            .iter()
            .zip(&model.data)
            .position(|(a, b)| a != b)
            .unwrap_or(buffer.len().min(model.data.len()));
        return Err(fail(format!(
            "the buffer differs from the model at byte {first} (buffer {} bytes, model {}) after a {}-byte record",
            buffer.len(),
            model.data.len(),
            record.len
        )));
    }
    let inodes: Vec<u64> = fds.iter().map(inode).collect();
    ensure(
        inodes == model.inodes,
        "the descriptors differ from the model",
    )
}

/// Sends every connection's records while the receivers check them, all at
/// once on the current runtime.
async fn exercise(plans: Vec<Connection>) -> io::Result<()> {
    let pool: Arc<Vec<OwnedFd>> = Arc::new((0..16).map(|_| common::pipe().0).collect());
    let pool_inodes: Arc<Vec<u64>> = Arc::new(pool.iter().map(inode).collect());
    let mut tasks = Vec::new();
    for (index, plan) in plans.into_iter().enumerate() {
        let (mut sender, receiving) = ConnectedSocket::pair()?;
        let largest = getsockopt(&sender, sockopt::SndBuf).map_err(io::Error::from)? - 32;
        let plan = Connection {
            records: plan
                .records
                .into_iter()
                .map(|record| Record {
                    len: record.len.min(largest),
                    ..record
                })
                .collect(),
            ..plan
        };
        let records = plan.records.clone();
        let send_pool = Arc::clone(&pool);
        tasks.push(tokio::spawn(async move {
            for (n, record) in records.iter().enumerate() {
                let fds: Vec<BorrowedFd<'_>> = pool_indices(record.fds, send_pool.len())
                    .map(|i| send_pool[i].as_fd())
                    .collect();
                sender.send(&payload(index, n, record.len), &fds).await?;
            }
            io::Result::Ok(())
        }));
        let inodes = Arc::clone(&pool_inodes);
        match plan.way {
            Way::BlockingRecv | Way::BlockingRecvInto => {
                let mut receiver = blocking::ConnectedSocket::from_async(receiving);
                tasks.push(tokio::task::spawn_blocking(move || {
                    check_blocking(index, &plan, &mut receiver, &inodes)
                        .map_err(|err| fail(format!("connection {index} ({:?}): {err}", plan.way)))
                }));
            }
            Way::HalfRecv | Way::HalfRecvInto => {
                let (recv, send) = receiving.into_split()?;
                let mut receiver = Receiver::Half { recv, _send: send };
                tasks.push(tokio::spawn(async move {
                    check_async(index, &plan, &mut receiver, &inodes)
                        .await
                        .map_err(|err| fail(format!("connection {index} ({:?}): {err}", plan.way)))
                }));
            }
            Way::Recv | Way::RecvInto => {
                let mut receiver = Receiver::Whole(receiving);
                tasks.push(tokio::spawn(async move {
                    check_async(index, &plan, &mut receiver, &inodes)
                        .await
                        .map_err(|err| fail(format!("connection {index} ({:?}): {err}", plan.way)))
                }));
            }
        }
    }
    for task in tasks {
        bounded("a sender or receiver", task)
            .await?
            .map_err(io::Error::other)??;
    }
    Ok(())
}

fn check(result: std::thread::Result<()>) -> Result<(), TestCaseError> {
    result.map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        TestCaseError::fail(message)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_way_of_receiving_matches_the_model_interleaved_on_one_thread(plans in connections()) {
        check(std::panic::catch_unwind(|| run(|| exercise(plans))))?;
    }

    #[test]
    fn every_way_of_receiving_matches_the_model_on_a_multi_thread_runtime(plans in connections()) {
        check(std::panic::catch_unwind(|| run_multi_thread(|| exercise(plans))))?;
    }
}
