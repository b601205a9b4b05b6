//! Typed messages (feature `serde`): slots, any size, and what a lying peer
//! gets. The attacker runs in a child process on raw syscalls and writes the
//! format of PROTOCOL.md by hand.
#![cfg(feature = "serde")]

mod common;

use std::collections::BTreeMap;
use std::io::{self, ErrorKind};
use std::os::fd::AsFd;

use common::{bounded, ensure, fail, inode, run};
use serde::{Deserialize, Serialize};
use tokio_imc::typed::{Channel, Fd};
use tokio_imc::{make_bound_socket, ConnectedSocket, SharedMemory, SocketAddress};

#[derive(Serialize, Deserialize)]
struct Job {
    id: u64,
    input: SharedMemory,
    reply_to: SocketAddress,
    log: Fd,
}

#[test]
fn a_job_with_memory_an_address_and_a_descriptor_round_trips_and_is_answered() {
    run(|| async {
        let (a, b) = ConnectedSocket::pair()?;
        let mut client: Channel<Job, ()> = Channel::new(a);
        let mut worker: Channel<(), Job> = Channel::new(b);
        let (reply_address, replies) = make_bound_socket()?;
        let input = SharedMemory::copy_from_slice(&vec![7u8; 3 << 20])?;
        let (log_read, log_write) = common::pipe();
        client
            .send(&Job {
                id: 9,
                input: input.clone(),
                reply_to: reply_address.try_clone()?,
                log: Fd::from(log_write.try_clone()?),
            })
            .await?;
        let job = bounded("recv", worker.recv())
            .await??
            .ok_or_else(|| fail("closed"))?;
        ensure(job.id == 9, "the id")?;
        ensure(
            job.input.len() == 3 << 20 && job.input.iter().all(|&b| b == 7),
            "the input",
        )?;
        ensure(inode(&job.log) == inode(&log_write), "the same pipe")?;
        nix::unistd::write(&job.log, b"log line").map_err(io::Error::from)?;
        let mut line = [0u8; 8];
        nix::unistd::read(&log_read, &mut line).map_err(io::Error::from)?;
        ensure(&line == b"log line", "the log descriptor works")?;
        // The worker answers through the address it was given.
        let (answer, accepted) = tokio::try_join!(job.reply_to.connect(), replies.accept())?;
        let mut answer: Channel<u64, ()> = Channel::new(answer);
        let mut accepted: Channel<(), u64> = Channel::new(accepted);
        answer.send(&(job.input.len() as u64)).await?;
        ensure(accepted.recv().await? == Some(3 << 20), "the answer")
    });
}

#[test]
fn large_messages_travel_as_one_record_in_sealed_memory() {
    run(|| async {
        let (a, mut b) = ConnectedSocket::pair()?;
        let a_fd_for_limit = a.as_fd().try_clone_to_owned()?;
        let mut sender: Channel<Vec<u8>, ()> = Channel::new(a);
        // A record is the tag, then the encoding: a Vec<u8>'s length as a
        // varint (3 bytes at these lengths), then its bytes. Inline up to the
        // largest record the socket takes.
        let limit =
            nix::sys::socket::getsockopt(&a_fd_for_limit, nix::sys::socket::sockopt::SndBuf)
                .map_err(io::Error::from)?
                - 32;
        for len in [0usize, 1, limit - 4, limit - 3, 5 << 20] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            // One at a time: two records near the limit do not fit the
            // socket's buffer together.
            sender.send(&payload).await?;
            // The first copy, looked at raw.
            let mut raw = bounded("recv", b.recv())
                .await??
                .ok_or_else(|| fail("closed"))?;
            let in_memory = raw.data[0] == 1;
            ensure(
                in_memory == (len + 4 > limit),
                format!("{len} bytes: in shared memory {in_memory}"),
            )?;
            if in_memory {
                ensure(
                    raw.data.len() == 9 && raw.fds.len() == 1,
                    "a 9-byte header and one memory object",
                )?;
                let memory = SharedMemory::try_from(raw.fds.remove(0))?;
                let length =
                    u64::from_le_bytes(raw.data[1..9].try_into().map_err(|_| fail("header"))?);
                ensure(
                    memory.len() as u64 >= length,
                    "the object holds the encoding",
                )?;
            }
            // The second, decoded.
            sender.send(&payload).await?;
            let mut typed: Channel<(), Vec<u8>> = Channel::new(b);
            let got = bounded("typed recv", typed.recv()).await??;
            ensure(
                got.as_ref() == Some(&payload),
                format!("{len} bytes round trip"),
            )?;
            b = typed.into_inner();
        }
        Ok(())
    });
}

#[test]
fn the_maximum_message_size_is_kept_by_both_sides() {
    run(|| async {
        let (a, b) = ConnectedSocket::pair()?;
        let mut small_sender: Channel<Vec<u8>, ()> = Channel::new(a).with_max_message_size(1000);
        let err = common::fails_with(
            small_sender.send(&vec![1u8; 2000]).await,
            ErrorKind::InvalidInput,
            "a send above the maximum",
        )?;
        ensure(err.to_string().contains("maximum of 1000"), err.to_string())?;
        let mut sender: Channel<Vec<u8>, ()> = Channel::new(small_sender.into_inner());
        let mut receiver: Channel<(), Vec<u8>> = Channel::new(b).with_max_message_size(100 << 10);
        sender.send(&vec![2u8; 200 << 10]).await?;
        let err = common::fails_with(
            bounded("recv", receiver.recv()).await?,
            ErrorKind::InvalidData,
            "a message above the receiver's maximum",
        )?;
        ensure(err.to_string().contains("maximum"), err.to_string())?;
        sender.send(&vec![3u8; 10]).await?;
        ensure(
            bounded("recv", receiver.recv()).await?? == Some(vec![3u8; 10]),
            "the next message arrives",
        )
    });
}

#[test]
fn a_slot_outside_a_typed_send_is_an_error_not_a_panic() {
    common::run_without_runtime(|| {
        let (read_end, _write_end) = common::pipe();
        let fd = Fd::from(read_end);
        let err = postcard::to_allocvec(&fd).expect_err("no typed send under way");
        assert!(matches!(err, postcard::Error::SerdeSerCustom), "{err:?}");
        let decoded: Result<Fd, _> = postcard::from_bytes(&[0]);
        assert!(
            matches!(decoded, Err(postcard::Error::SerdeDeCustom)),
            "{decoded:?}"
        );
    });
}

#[test]
fn the_halves_and_the_blocking_channel_speak_the_same_format() {
    common::run_without_runtime(|| {
        use std::time::Duration;
        use tokio_imc::blocking;
        let (a, b) = blocking::ConnectedSocket::pair().expect("pair");
        let mut a: blocking::typed::Channel<BTreeMap<String, u32>, String> =
            blocking::typed::Channel::new(a);
        let (rx, tx) = blocking::typed::Channel::<String, BTreeMap<String, u32>>::new(b)
            .into_split()
            .expect("split");
        let err = rx
            .recv_timeout(Duration::from_millis(20))
            .expect_err("nothing sent yet");
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        let map = BTreeMap::from([("one".to_string(), 1), ("two".to_string(), 2)]);
        a.send(&map).expect("send");
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(20)).expect("recv"),
            Some(map)
        );
        tx.send(&"thanks".to_string()).expect("send back");
        assert_eq!(a.recv().expect("recv").as_deref(), Some("thanks"));
        drop((rx, tx));
        assert_eq!(a.recv().expect("end"), None);
    });
}

#[test]
fn a_cancelled_typed_receive_loses_no_message() {
    run(|| async {
        let (a, b) = ConnectedSocket::pair()?;
        let (rx, tx) = Channel::<u32, u32>::new(a).into_split()?;
        let mut other: Channel<u32, u32> = Channel::new(b);
        for _ in 0..3 {
            tokio::select! {
                biased;
                got = rx.recv() => return Err(fail(format!("nothing was sent, got {:?}", got))),
                () = tokio::task::yield_now() => {}
            }
        }
        other.send(&17).await?;
        ensure(
            bounded("recv", rx.recv()).await?? == Some(17),
            "the message after cancels",
        )?;
        tx.send(&18).await?;
        ensure(other.recv().await? == Some(18), "and back")
    });
}

#[test]
fn an_inline_message_above_the_receivers_maximum_is_refused() {
    run(|| async {
        let (a, b) = ConnectedSocket::pair()?;
        let mut sender: Channel<Vec<u8>, ()> = Channel::new(a);
        let mut receiver: Channel<(), Vec<u8>> = Channel::new(b).with_max_message_size(100);
        sender.send(&vec![1u8; 1000]).await?;
        let err = common::fails_with(
            bounded("recv", receiver.recv()).await?,
            ErrorKind::InvalidData,
            "an inline message above the maximum",
        )?;
        ensure(err.to_string().contains("maximum of 100"), err.to_string())?;
        sender.send(&vec![2u8; 10]).await?;
        ensure(
            bounded("recv", receiver.recv()).await?? == Some(vec![2u8; 10]),
            "the next one arrives",
        )
    });
}

/// A `Deserialize` that panics after a slot took its descriptor.
#[derive(Debug)]
struct Bomb;

impl<'de> Deserialize<'de> for Bomb {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Bomb, D::Error> {
        panic!("a user's Deserialize panicked");
    }
}

#[test]
fn a_panic_in_a_users_deserialize_leaves_no_table_and_no_descriptor_behind() {
    run(|| async {
        let (a, b) = ConnectedSocket::pair()?;
        let mut sender: Channel<(Fd, u8), ()> = Channel::new(a);
        let (read_end, write_end) = common::pipe();
        sender.send(&(Fd::from(write_end), 0)).await?;
        drop(read_end);
        let receiving = tokio::spawn(async move {
            let mut receiver: Channel<(), (Fd, Bomb)> = Channel::new(b);
            let _ = receiver.recv().await;
        });
        let joined = bounded("the panicking receive", receiving).await?;
        ensure(joined.is_err_and(|e| e.is_panic()), "the receive panicked")?;
        // The table is gone with the panic: a slot outside a typed receive is
        // an error again, and the received pipe end was closed (checked by
        // `run` against the descriptors open before).
        let decoded: Result<Fd, _> = postcard::from_bytes(&[0]);
        ensure(decoded.is_err(), "no stale table to take a descriptor from")
    });
}
