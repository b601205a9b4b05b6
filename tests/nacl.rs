//! `tokio_imc::nacl`: Native Client's typed message layer over a connection:
//! every kind tokio-imc represents round-trips, NaCl's own bytes are understood,
//! limits are refused before sending, and every malformed record is an error
//! with every descriptor that came with it closed.

mod common;

use std::io::{self, ErrorKind, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use common::{ensure, fail, fails_with, inode, raw_pair, raw_send, run};
use nix::sys::socket::SockType;
use tokio_imc::nacl::{Connection, Descriptor, MAX_DATA, MAX_DESCRIPTORS};
use tokio_imc::{make_bound_socket, ConnectedSocket};

/// Observed on the wire from Native Client's own code: one host file opened
/// `O_WRONLY` and the data `typed hello`.
const OBSERVED: [u8; 43] = [
    0x01, 0xde, 0xc0, 0xd3, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x02, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    b't', b'y', b'p', b'e', b'd', b' ', b'h', b'e', b'l', b'l', b'o',
];

fn pair() -> io::Result<(Connection, Connection)> {
    let (a, b) = ConnectedSocket::pair()?;
    Ok((Connection::new(a), Connection::new(b)))
}

/// Whether every copy of `write_end`'s pipe was closed: its read end sees EOF.
fn all_write_ends_closed(read_end: OwnedFd) -> io::Result<bool> {
    nix::fcntl::fcntl(
        &read_end,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(io::Error::from)?;
    let mut byte = [0u8; 1];
    match std::fs::File::from(read_end).read(&mut byte) {
        Ok(0) => Ok(true),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

#[test]
fn every_kind_round_trips_with_its_descriptor() {
    run(|| async {
        let (mut a, mut b) = pair()?;
        let (read_end, write_end) = common::pipe();
        let (address, bound) = make_bound_socket()?;
        let memory = nix::sys::memfd::memfd_create(c"nacl", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(io::Error::from)?;
        let (socket, mut socket_peer) = ConnectedSocket::pair()?;
        let inodes = [
            inode(&write_end),
            inode(&address),
            inode(&memory),
            inode(&socket),
        ];
        let sent = [
            Descriptor::HostFile {
                fd: write_end,
                open_flags: 0o2001,
            },
            Descriptor::Address(address),
            Descriptor::SharedMemory {
                fd: memory,
                size: 65536,
            },
            Descriptor::Socket(socket),
        ];
        a.send(b"four kinds", &sent).await?;
        let message = b.recv().await?.ok_or_else(|| fail("closed"))?;
        ensure(&message.data[..] == b"four kinds", "data")?;
        let [Descriptor::HostFile {
            fd,
            open_flags: 0o2001,
        }, Descriptor::Address(address), Descriptor::SharedMemory {
            fd: memory,
            size: 65536,
        }, Descriptor::Socket(mut socket)] = <[Descriptor; 4]>::try_from(message.descriptors)
            .map_err(|_| fail("four descriptors"))?
        else {
            return Err(fail("the kinds and their fields arrived as sent"));
        };
        ensure(
            [inode(&fd), inode(&address), inode(&memory), inode(&socket)] == inodes,
            "every descriptor is the one sent",
        )?;
        // The address and the socket work.
        let (_client, _server) = tokio::try_join!(address.connect(), bound.accept())?;
        socket.send(b"through the sent socket", &[]).await?;
        let got = socket_peer.recv().await?.ok_or_else(|| fail("closed"))?;
        ensure(&got.data[..] == b"through the sent socket", "socket")?;
        drop((fd, sent, read_end));
        Ok(())
    });
}

#[test]
fn native_clients_own_message_is_understood() {
    run(|| async {
        let (ours, theirs) = raw_pair(SockType::SeqPacket);
        let mut ours = Connection::new(ConnectedSocket::try_from(ours)?);
        let (read_end, write_end) = common::pipe();
        raw_send(theirs.as_fd(), &OBSERVED, &[write_end.as_fd()])?;
        let message = ours.recv().await?.ok_or_else(|| fail("closed"))?;
        ensure(&message.data[..] == b"typed hello", "data")?;
        match &message.descriptors[..] {
            [Descriptor::HostFile { fd, open_flags: 1 }] => {
                ensure(inode(fd) == inode(&write_end), "the host file")?
            }
            other => return Err(fail(format!("descriptors: {other:?}"))),
        }
        // And our encoding of the same message is NaCl's, byte for byte.
        let (mine, raw_peer) = raw_pair(SockType::SeqPacket);
        let mut mine = Connection::new(ConnectedSocket::try_from(mine)?);
        mine.send(b"typed hello", &message.descriptors).await?;
        let (bytes, fds) = common::raw_recv(raw_peer.as_fd(), 4096)?;
        ensure(bytes == OBSERVED, format!("encoded {bytes:02x?}"))?;
        drop(read_end);
        ensure(
            fds.len() == 1 && inode(&fds[0]) == inode(&write_end),
            "the host file travels with it",
        )
    });
}

#[test]
fn nacls_limits_are_refused_before_sending() {
    run(|| async {
        let (mut a, mut b) = pair()?;
        let (_read_end, write_end) = common::pipe();
        let nine: Vec<Descriptor> = (0..=MAX_DESCRIPTORS)
            .map(|_| {
                Ok(Descriptor::HostFile {
                    fd: write_end.try_clone()?,
                    open_flags: 1,
                })
            })
            .collect::<io::Result<_>>()?;
        fails_with(
            a.send(b"x", &nine).await,
            ErrorKind::InvalidInput,
            "nine sent",
        )?;
        fails_with(
            a.send(&vec![0; MAX_DATA + 1], &[]).await,
            ErrorKind::InvalidInput,
            "128 KiB + 1 sent",
        )?;
        // Nothing was sent; the limits themselves pass.
        a.send(&vec![7; MAX_DATA], &nine[..MAX_DESCRIPTORS]).await?;
        let message = b.recv().await?.ok_or_else(|| fail("closed"))?;
        ensure(
            message.data.len() == MAX_DATA && message.descriptors.len() == MAX_DESCRIPTORS,
            "the largest message NaCl takes",
        )
    });
}

/// Records a hostile peer can send, each with `fds` descriptors attached, and
/// words the error must contain (it names what is wrong).
fn malformed() -> Vec<(&'static str, Vec<u8>, usize, &'static str)> {
    let with = |at: usize, value: u8| {
        let mut record = OBSERVED.to_vec();
        record[at] = value;
        record
    };
    vec![
        (
            "no header",
            b"plain datagram".to_vec(),
            1,
            "shorter than its 16-byte header",
        ),
        (
            "a short header",
            OBSERVED[..10].to_vec(),
            1,
            "shorter than its 16-byte header",
        ),
        (
            "a wrong protocol word",
            with(3, 0xd4),
            1,
            "protocol word 0xd4c0de01",
        ),
        (
            "a section longer than the record",
            with(4, 0xf0),
            1,
            "a 240-byte descriptor section",
        ),
        (
            "a bound socket tag",
            with(16, 5),
            1,
            "descriptor type tag 5,",
        ),
        (
            "an unknown tag",
            with(16, 0x80),
            1,
            "descriptor type tag 128,",
        ),
        ("no end tag", with(4, 9), 1, "no end tag"),
        (
            "a zero where the end tag is",
            with(25, 0),
            1,
            "descriptor type tag 0,",
        ),
        (
            "bytes after the end tag",
            with(30, 9),
            1,
            "non-zero bytes after the end tag",
        ),
        (
            "open flags NaCl refuses",
            with(21, 3),
            1,
            "open flags 0o3 are not ones NaCl accepts",
        ),
        (
            "a descriptor missing",
            OBSERVED.to_vec(),
            0,
            "1 descriptor entries but 0 descriptors",
        ),
        (
            "a descriptor too many",
            OBSERVED.to_vec(),
            2,
            "1 descriptor entries but 2 descriptors",
        ),
        (
            "three descriptors too many",
            OBSERVED.to_vec(),
            4,
            "1 descriptor entries but 4 descriptors",
        ),
    ]
}

#[test]
fn every_malformed_record_is_an_error_and_closes_every_descriptor() {
    run(|| async {
        let (ours, theirs) = raw_pair(SockType::SeqPacket);
        let mut ours = Connection::new(ConnectedSocket::try_from(ours)?);
        for (what, record, fds, named) in malformed() {
            let (read_end, write_end) = common::pipe();
            let attached: Vec<BorrowedFd<'_>> = (0..fds).map(|_| write_end.as_fd()).collect();
            raw_send(theirs.as_fd(), &record, &attached)?;
            drop(write_end);
            let err = ours
                .recv()
                .await
                .err()
                .ok_or_else(|| fail(format!("{what}: accepted")))?;
            ensure(
                err.kind() == ErrorKind::InvalidData && err.to_string().contains(named),
                format!("{what}: {err:?} does not say {named:?}"),
            )?;
            ensure(
                all_write_ends_closed(read_end)?,
                format!("{what}: a descriptor kept"),
            )?;
        }
        // An address entry whose descriptor is a pipe is refused too.
        let mut record = OBSERVED.to_vec();
        record[16] = 4; // NACL_DESC_CONN_CAP_FD: flags word only
        record[21..26].copy_from_slice(&[0xff, 0, 0, 0, 0]);
        let (read_end, write_end) = common::pipe();
        raw_send(theirs.as_fd(), &record, &[write_end.as_fd()])?;
        drop(write_end);
        fails_with(
            ours.recv().await,
            ErrorKind::InvalidData,
            "a pipe taken for an address",
        )?;
        ensure(all_write_ends_closed(read_end)?, "the pipe was closed")?;
        // The connection still works.
        let bare_header = [0x01, 0xde, 0xc0, 0xd3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        raw_send(theirs.as_fd(), &bare_header, &[])?;
        let message = ours.recv().await?.ok_or_else(|| fail("closed"))?;
        ensure(
            message.data.is_empty() && message.descriptors.is_empty(),
            "an empty typed message",
        )
    });
}
