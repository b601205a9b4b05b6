//! What a lying peer gets from a typed receive: each bad record is an
//! `InvalidData` error naming the reason, every descriptor it carried is
//! closed, nothing panics, and the next well-formed message arrives. The
//! attacker is a child process that writes PROTOCOL.md's format by hand and
//! sends it with raw `sendmsg`.
#![cfg(feature = "serde")]

mod common;

use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use common::{bounded, ensure, raw_send, run};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::socket::SockType;
use serde::{Deserialize, Serialize};
use tokio_imc::typed::{Channel, Fd};
use tokio_imc::{ConnectedSocket, SharedMemory, SocketAddress};

/// The receiver's message type. Its postcard encoding: the variant's index as
/// a varint, then the fields; a slot is its index as a varint.
#[derive(Serialize, Deserialize, Debug)]
enum Probe {
    Fd(Fd),                      // 0
    Address(SocketAddress),      // 1
    Connection(ConnectedSocket), // 2
    Memory(SharedMemory),        // 3
    Items(Vec<u64>),             // 4
    Pair(Fd, Fd),                // 5
    Plain(u32),                  // 6
}

/// One lie: what it sends, and a word the error must contain.
struct Lie {
    what: &'static str,
    record: Vec<u8>,
    fds: fn() -> Vec<OwnedFd>,
    reason: &'static str,
}

fn memfd(len: i64, seals: SealFlag) -> OwnedFd {
    let fd = memfd_create(c"liar", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .expect("memfd_create");
    nix::unistd::ftruncate(&fd, len).expect("ftruncate");
    nix::unistd::write(&fd, b"0123456789").expect("write");
    if !seals.is_empty() {
        fcntl(&fd, FcntlArg::F_ADD_SEALS(seals)).expect("seal");
    }
    fd
}

/// A memfd holding `bytes`, with `seals`.
fn memfd_with(bytes: &[u8], seals: SealFlag) -> OwnedFd {
    let fd = memfd_create(c"liar", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .expect("memfd_create");
    nix::unistd::write(&fd, bytes).expect("write");
    if !seals.is_empty() {
        fcntl(&fd, FcntlArg::F_ADD_SEALS(seals)).expect("seal");
    }
    fd
}

/// A shared-memory record header claiming `length` bytes.
fn shared_header(length: u64) -> Vec<u8> {
    let mut record = vec![1];
    record.extend_from_slice(&length.to_le_bytes());
    record
}

fn sealed() -> SealFlag {
    SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW
}

fn pipe_end() -> Vec<OwnedFd> {
    vec![common::pipe().0]
}

fn lies() -> Vec<Lie> {
    let mut huge_vec = vec![0, 4];
    huge_vec.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]); // 2^60
    huge_vec.extend_from_slice(&[1, 2, 3]);
    let mut shared_too_short = vec![1];
    shared_too_short.extend_from_slice(&1000u64.to_le_bytes());
    vec![
        Lie {
            what: "a slot index past the descriptor array",
            record: vec![0, 0, 5],
            fds: pipe_end,
            reason: "past the record's 1",
        },
        Lie {
            what: "the same index in two slots",
            record: vec![0, 5, 0, 0],
            fds: pipe_end,
            reason: "claimed by two slots",
        },
        Lie {
            what: "a descriptor no slot claims",
            record: vec![0, 6, 7],
            fds: pipe_end,
            reason: "claimed by no slot",
        },
        Lie {
            what: "a SocketAddress slot holding a pipe",
            record: vec![0, 1, 0],
            fds: pipe_end,
            reason: "SocketAddress slot",
        },
        Lie {
            what: "a ConnectedSocket slot holding a stream socket",
            record: vec![0, 2, 0],
            fds: || vec![common::raw_pair(SockType::Stream).0],
            reason: "ConnectedSocket slot",
        },
        Lie {
            what: "a SharedMemory slot holding an unsealed memfd",
            record: vec![0, 3, 0],
            fds: || vec![memfd(10, SealFlag::empty())],
            reason: "without the seals",
        },
        Lie {
            what: "a memfd sealed against writing but not shrinking",
            record: vec![0, 3, 0],
            fds: || vec![memfd(10, SealFlag::F_SEAL_WRITE)],
            reason: "F_SEAL_SHRINK",
        },
        Lie {
            what: "a sealed sparse memfd larger than the limit",
            record: vec![0, 3, 0],
            fds: || vec![memfd(4 << 30, sealed())],
            reason: "larger than the limit",
        },
        Lie {
            what: "a regular file in a SharedMemory slot",
            record: vec![0, 3, 0],
            fds: || {
                vec![OwnedFd::from(
                    std::fs::File::open("/proc/self/stat").expect("open /proc/self/stat"),
                )]
            },
            reason: "carry seals",
        },
        Lie {
            what: "a Vec of 2^60 elements",
            record: huge_vec,
            fds: Vec::new,
            reason: "malformed",
        },
        Lie {
            what: "truncated bytes",
            record: vec![0, 4, 3, 1],
            fds: Vec::new,
            reason: "malformed",
        },
        Lie {
            what: "trailing bytes",
            record: vec![0, 6, 7, 99, 99],
            fds: Vec::new,
            reason: "trailing",
        },
        Lie {
            what: "an unknown tag",
            record: vec![9, 6, 7],
            fds: Vec::new,
            reason: "unknown tag",
        },
        Lie {
            what: "a large-message record whose memory object is smaller than its header says",
            record: shared_too_short,
            fds: || vec![memfd(10, sealed())],
            reason: "fewer than the 1000",
        },
        Lie {
            what: "a large-message record without its memory object",
            record: {
                let mut r = vec![1];
                r.extend_from_slice(&5u64.to_le_bytes());
                r
            },
            fds: Vec::new,
            reason: "without its memory object",
        },
        Lie {
            what: "a large-message record whose slot is past the descriptors after the object",
            record: shared_header(2),
            // `Probe::Fd(5)`; one slot descriptor after the memory object.
            fds: || vec![memfd_with(&[0, 5], sealed()), common::pipe().0],
            reason: "past the record's 1",
        },
        Lie {
            what: "a large-message record whose memory object is not sealed",
            record: shared_header(2),
            fds: || vec![memfd_with(&[6, 7], SealFlag::empty())],
            reason: "without the seals",
        },
        Lie {
            what: "a slot index above u32::MAX",
            // Probe::Fd(2^33)
            record: vec![0, 0, 0x80, 0x80, 0x80, 0x80, 0x20],
            fds: pipe_end,
            reason: "malformed",
        },
        Lie {
            what: "a large-message header of the wrong length",
            record: vec![1, 5, 0],
            fds: || vec![memfd(10, sealed())],
            reason: "its header is 9",
        },
    ]
}

/// The good message sent after each lie: `Probe::Plain(42)`.
const GOOD: [u8; 3] = [0, 6, 42];

fn attack(socket: BorrowedFd<'_>) -> io::Result<()> {
    for lie in lies() {
        let fds = (lie.fds)();
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        raw_send(socket, &lie.record, &borrowed)?;
        drop(fds);
        raw_send(socket, &GOOD, &[])?;
    }
    Ok(())
}

#[test]
fn every_lie_is_an_invalid_data_error_and_the_next_message_arrives() {
    const TEST: &str = "every_lie_is_an_invalid_data_error_and_the_next_message_arrives";
    if common::child_role().is_some() {
        common::child_main(|| async {
            let control = tokio_imc::handoff::take("attack")?;
            attack(control.as_fd())?;
            // Wait for the parent to finish reading before going away.
            let _ = common::raw_recv(control.as_fd(), 1);
            Ok(())
        });
    }
    run(|| async {
        let (ours, theirs) = common::raw_pair(SockType::SeqPacket);
        let mut command = common::child(TEST, "attacker");
        tokio_imc::handoff::pass(&mut command, &[("attack", theirs.as_fd())])?;
        let attacker = command.spawn()?;
        drop((command, theirs));
        let mut channel: Channel<(), Probe> = Channel::new(ConnectedSocket::try_from(ours)?);
        let before = common::open_fds();
        for lie in lies() {
            let err = common::fails_with(
                bounded(lie.what, channel.recv()).await?,
                ErrorKind::InvalidData,
                lie.what,
            )?;
            ensure(
                err.to_string().contains(lie.reason),
                format!("{}: {err}", lie.what),
            )?;
            ensure(
                common::open_fds() == before,
                format!("{}: every descriptor closed", lie.what),
            )?;
            let good = bounded("the next message", channel.recv()).await??;
            ensure(
                matches!(good, Some(Probe::Plain(42))),
                format!("after {}: {good:?}", lie.what),
            )?;
        }
        let socket = channel.into_inner();
        socket.shutdown(std::net::Shutdown::Both)?;
        drop(socket);
        common::expect_success(attacker);
        Ok(())
    });
}
