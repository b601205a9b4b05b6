//! Property tests: random sequences of messages, with random sizes and descriptor
//! counts, arrive intact and in order, and every descriptor arrives as the same
//! open file (same inode) as the one sent.

mod common;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use common::{ensure, fail, inode, run};
use proptest::prelude::*;
use tokio_imc::{make_bound_socket, ConnectedSocket};

/// One message to send: its length and which pool descriptors ride with it.
#[derive(Debug, Clone)]
struct Planned {
    len: usize,
    fds: Vec<usize>,
}

const POOL: usize = 16;

fn planned() -> impl Strategy<Value = Planned> {
    let len = prop_oneof![
        4 => 0usize..=128,
        3 => 129usize..=8192,
        2 => 8193usize..=65536,
        1 => 65537usize..=200_000,
    ];
    let fds = prop_oneof![
        4 => proptest::collection::vec(0..POOL, 0..=2),
        2 => proptest::collection::vec(0..POOL, 3..=8),
        1 => proptest::collection::vec(0..POOL, 200..=253),
    ];
    (len, fds)
        .prop_map(|(len, fds)| Planned { len, fds })
        .prop_filter("a message needs a byte or a descriptor", |p| {
            p.len > 0 || !p.fds.is_empty()
        })
}

fn payload(index: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ index) as u8)
        .collect()
}

/// Sends `plan` from `a` while receiving on `b`, and checks every message.
async fn exchange(
    a: &mut ConnectedSocket,
    b: &mut ConnectedSocket,
    plan: &[Planned],
) -> io::Result<()> {
    let pool: Vec<OwnedFd> = (0..POOL).map(|_| common::pipe().0).collect();
    let inodes: Vec<u64> = pool.iter().map(inode).collect();
    let send = async {
        for (index, message) in plan.iter().enumerate() {
            let fds: Vec<BorrowedFd<'_>> = message.fds.iter().map(|&i| pool[i].as_fd()).collect();
            a.send(&payload(index, message.len), &fds).await?;
        }
        io::Result::Ok(())
    };
    let recv = async {
        for (index, message) in plan.iter().enumerate() {
            let got = b
                .recv()
                .await?
                .ok_or_else(|| fail(format!("closed before message {index}")))?;
            ensure(
                got.data[..] == payload(index, message.len)[..],
                format!("message {index}: bytes"),
            )?;
            ensure(
                got.fds.len() == message.fds.len(),
                format!("message {index}: descriptor count"),
            )?;
            for (fd, &i) in got.fds.iter().zip(&message.fds) {
                ensure(
                    inode(fd) == inodes[i],
                    format!("message {index}: descriptor is the same open file"),
                )?;
            }
        }
        io::Result::Ok(())
    };
    let (sent, received) = tokio::join!(send, recv);
    sent?;
    received
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn messages_through_a_pair_arrive_intact_and_in_order(plan in proptest::collection::vec(planned(), 1..40)) {
        run(|| async {
            let (mut a, mut b) = ConnectedSocket::pair()?;
            exchange(&mut a, &mut b, &plan).await?;
            exchange(&mut b, &mut a, &plan).await
        });
    }

    #[test]
    fn messages_through_connect_and_accept_arrive_intact_and_in_order(plan in proptest::collection::vec(planned(), 1..40)) {
        run(|| async {
            let (address, bound) = make_bound_socket()?;
            let (mut client, mut server) = tokio::try_join!(address.connect(), bound.accept())?;
            exchange(&mut client, &mut server, &plan).await?;
            exchange(&mut server, &mut client, &plan).await
        });
    }
}
