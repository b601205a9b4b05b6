//! Messages at and past their limits: descriptors, record size, empty records,
//! truncation.

mod common;

use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, BorrowedFd};

use bytes::BytesMut;
use common::{ensure, fail, fails_with, inode, raw_pair, raw_send, run, Logs};
use nix::sys::socket::{getsockopt, setsockopt, sockopt, SockType};
use tokio_imc::{ConnectedSocket, MAX_FDS_PER_MESSAGE, MAX_RECV_SIZE};

/// Nothing is queued on `socket`: a send that failed sent nothing. (A record is
/// queued by the time `send` returns, so a partial send would be received now.)
async fn nothing_arrives(socket: &mut ConnectedSocket) -> io::Result<()> {
    let recv = socket.recv();
    tokio::pin!(recv);
    match common::poll_once(&mut recv).await {
        std::task::Poll::Pending => Ok(()),
        std::task::Poll::Ready(got) => Err(fail(format!("something arrived: {got:?}"))),
    }
}

#[test]
fn up_to_253_descriptors_travel_and_254_are_refused_before_sending() {
    run(|| async {
        let (mut a, mut b) = ConnectedSocket::pair()?;
        let (read_end, _write_end) = common::pipe();
        let fds: Vec<BorrowedFd<'_>> = vec![read_end.as_fd(); MAX_FDS_PER_MESSAGE];
        a.send(b"many", &fds).await?;
        let got = b.recv().await?.ok_or_else(|| fail("closed"))?;
        ensure(
            got.fds.len() == 253,
            format!("{} descriptors", got.fds.len()),
        )?;
        ensure(
            got.fds.iter().all(|fd| inode(fd) == inode(&read_end)),
            "each is the same pipe",
        )?;
        drop(got);

        let over: Vec<BorrowedFd<'_>> = vec![read_end.as_fd(); MAX_FDS_PER_MESSAGE + 1];
        let err = fails_with(
            a.send(b"too many", &over).await,
            ErrorKind::InvalidInput,
            "254 sent",
        )?;
        ensure(err.to_string().contains("253"), err.to_string())?;
        nothing_arrives(&mut b).await
    });
}

#[test]
fn the_largest_record_travels_and_one_byte_more_is_refused_naming_the_limit() {
    run(|| async {
        let (mut a, mut b) = ConnectedSocket::pair()?;
        let limit = getsockopt(&a.as_fd(), sockopt::SndBuf).map_err(io::Error::from)? - 32;
        let big: Vec<u8> = (0..limit).map(|i| (i % 251) as u8).collect();
        a.send(&big, &[]).await?;
        let got = b.recv().await?.ok_or_else(|| fail("closed"))?;
        ensure(
            got.data[..] == big[..],
            format!("record of {limit} bytes arrived whole"),
        )?;

        let over = vec![7u8; limit + 1];
        let err = fails_with(
            a.send(&over, &[]).await,
            ErrorKind::InvalidInput,
            "oversized record sent",
        )?;
        ensure(
            err.to_string().contains(&format!("{limit} bytes")),
            err.to_string(),
        )?;
        nothing_arrives(&mut b).await?;
        a.send(b"next", &[]).await?;
        ensure(
            &b.recv().await?.ok_or_else(|| fail("closed"))?.data[..] == b"next",
            "still usable",
        )
    });
}

#[test]
fn an_empty_message_is_refused_but_descriptors_alone_travel() {
    run(|| async {
        let (mut a, mut b) = ConnectedSocket::pair()?;
        fails_with(
            a.send(b"", &[]).await,
            ErrorKind::InvalidInput,
            "empty message sent",
        )?;
        let (read_end, _write_end) = common::pipe();
        a.send(b"", &[read_end.as_fd()]).await?;
        let got = b
            .recv()
            .await?
            .ok_or_else(|| fail("a message with only a descriptor read as end of stream"))?;
        ensure(
            got.data.is_empty() && got.fds.len() == 1,
            "zero bytes, one descriptor",
        )?;
        ensure(inode(&got.fds[0]) == inode(&read_end), "the same pipe")
    });
}

#[test]
fn an_empty_record_from_a_connected_peer_is_skipped_and_shutdown_is_end_of_stream() {
    let logs = Logs::default();
    let _capture = logs.capture();
    run(|| async {
        let (ours, theirs) = raw_pair(SockType::SeqPacket);
        let mut ours = ConnectedSocket::try_from(ours)?;
        raw_send(theirs.as_fd(), b"", &[])?;
        raw_send(theirs.as_fd(), b"after the empty one", &[])?;
        let got = ours
            .recv()
            .await?
            .ok_or_else(|| fail("an empty record ended the stream"))?;
        ensure(&got.data[..] == b"after the empty one", "next record")?;
        ensure(logs.text().contains("skipped an empty record"), logs.text())?;
        nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&theirs),
            nix::sys::socket::Shutdown::Write,
        )
        .map_err(io::Error::from)?;
        ensure(
            ours.recv().await?.is_none(),
            "shutdown reads as end of stream",
        )
    });
}

#[test]
fn a_record_longer_than_recv_takes_is_an_error_and_its_descriptors_are_closed() {
    const TEST: &str = "a_record_longer_than_recv_takes_is_an_error_and_its_descriptors_are_closed";
    run(|| async {
        let (ours, theirs) = raw_pair(SockType::SeqPacket);
        let mut ours = ConnectedSocket::try_from(ours)?;
        // Only a privileged peer can send more than MAX_RECV_SIZE (the tests run as
        // root in CI): raise its buffer past the sysctl limit, which SO_SNDBUFFORCE
        // (CAP_NET_ADMIN) alone may do.
        match setsockopt(&theirs, sockopt::SndBufForce, &(4 * MAX_RECV_SIZE)) {
            Ok(()) => {}
            Err(nix::errno::Errno::EPERM) => {
                common::skipped(
                    TEST,
                    "needs root (CAP_NET_ADMIN, for SO_SNDBUFFORCE) to send a record over \
                     MAX_RECV_SIZE",
                );
                return Ok(());
            }
            Err(err) => return Err(err.into()),
        }
        let (read_end, write_end) = common::pipe();
        let huge = vec![1u8; MAX_RECV_SIZE + 4096];
        raw_send(
            theirs.as_fd(),
            &huge,
            &[write_end.as_fd(), write_end.as_fd()],
        )?;
        drop(write_end);
        raw_send(theirs.as_fd(), b"small", &[])?;
        let err = fails_with(
            ours.recv().await,
            ErrorKind::InvalidData,
            "truncated record accepted",
        )?;
        ensure(err.to_string().contains("2 descriptor"), err.to_string())?;
        // Both copies of the write end were closed: the pipe reads end-of-file.
        let mut byte = [0u8; 1];
        ensure(
            nix::unistd::read(&read_end, &mut byte) == Ok(0),
            "write ends all closed",
        )?;
        let got = ours.recv().await?.ok_or_else(|| fail("closed"))?;
        ensure(&got.data[..] == b"small", "the socket stays usable")
    });
}

#[test]
fn recv_into_reuses_the_callers_buffers() {
    run(|| async {
        let (mut a, mut b) = ConnectedSocket::pair()?;
        let (read_end, _write_end) = common::pipe();
        let mut data = BytesMut::with_capacity(64);
        let mut fds = Vec::new();
        for i in 0..10u8 {
            a.send(&[i; 48], &[read_end.as_fd()]).await?;
            data.clear();
            let len = b
                .recv_into(&mut data, &mut fds)
                .await?
                .ok_or_else(|| fail("closed"))?;
            ensure(len == 48 && data[..] == [i; 48], "record")?;
        }
        ensure(fds.len() == 10, "descriptors appended")?;
        ensure(data.capacity() >= 48, "buffer kept")?;
        // A record larger than the buffer's room is appended whole.
        let long = vec![9u8; 100_000];
        a.send(&long, &[]).await?;
        data.clear();
        let len = b
            .recv_into(&mut data, &mut fds)
            .await?
            .ok_or_else(|| fail("closed"))?;
        ensure(
            len == 100_000 && data[..] == long[..],
            "long record appended whole",
        )
    });
}

#[test]
fn messages_kept_or_dropped_in_any_mix_of_sizes_keep_their_bytes() {
    run(|| async {
        // Sizes that switch `recv` between its small-record path (scratch, then an
        // exact copy) and its large one (an allocation of the expected size,
        // spilling into scratch when the record is larger than expected).
        const SIZES: [usize; 10] = [1, 63, 64, 1000, 4095, 4096, 4097, 10_000, 100_000, 3];
        let content = |index: usize, len: usize| -> Vec<u8> {
            (0..len)
                .map(|i| (i ^ index.wrapping_mul(131)) as u8)
                .collect()
        };
        let (mut a, mut b) = ConnectedSocket::pair()?;
        let mut kept = Vec::new();
        for index in 0..3000 {
            let len = SIZES[(index * 7) % SIZES.len()];
            let sending = content(index, len);
            let (sent, got) = tokio::join!(a.send(&sending, &[]), b.recv());
            sent?;
            let got = got?.ok_or_else(|| fail("closed"))?;
            ensure(
                got.data[..] == sending[..],
                format!("message {index} ({len} bytes)"),
            )?;
            if index % 3 == 0 {
                kept.push((index, got.data));
            }
        }
        for (index, data) in kept {
            ensure(
                data[..] == content(index, data.len())[..],
                format!("kept message {index} changed after later receives"),
            )?;
        }
        Ok(())
    });
}

#[test]
fn a_record_longer_than_max_recv_size_is_an_error_on_every_receive_path() {
    run(|| async {
        let (ours, theirs) = raw_pair(SockType::SeqPacket);
        let ours = ConnectedSocket::try_from(ours)?;
        match setsockopt(&theirs, sockopt::SndBufForce, &(4 * MAX_RECV_SIZE)) {
            Ok(()) => {}
            Err(nix::errno::Errno::EPERM) => {
                common::skipped(
                    "a_record_longer_than_max_recv_size_is_an_error_on_every_receive_path",
                    "needs root (CAP_NET_ADMIN, for SO_SNDBUFFORCE) to send a record over \
                     MAX_RECV_SIZE",
                );
                return Ok(());
            }
            Err(err) => return Err(err.into()),
        }
        let huge = vec![7u8; MAX_RECV_SIZE + 1];
        let exact = vec![8u8; MAX_RECV_SIZE];
        // recv_into with room for the huge record (the direct path), with a
        // little room, and with none; then the split half and the blocking facade.
        let (recv, send) = ours.into_split()?;
        for capacity in [2 * MAX_RECV_SIZE, MAX_RECV_SIZE + 1, MAX_RECV_SIZE, 100, 0] {
            raw_send(theirs.as_fd(), &huge, &[])?;
            raw_send(theirs.as_fd(), &exact, &[])?;
            let mut data = BytesMut::with_capacity(capacity);
            data.extend_from_slice(b"kept");
            let mut fds = Vec::new();
            let err = recv
                .recv_into(&mut data, &mut fds)
                .await
                .err()
                .ok_or_else(|| {
                    fail(format!(
                        "capacity {capacity}: a record over MAX_RECV_SIZE was taken"
                    ))
                })?;
            ensure(err.kind() == ErrorKind::InvalidData, format!("{err:?}"))?;
            ensure(&data[..] == b"kept", "the buffer is left as it was")?;
            // A record of exactly MAX_RECV_SIZE is taken, on the same buffer.
            let len = recv.recv_into(&mut data, &mut fds).await?;
            ensure(
                len == Some(MAX_RECV_SIZE),
                format!("capacity {capacity}: {len:?}"),
            )?;
            ensure(
                data[4..] == exact[..],
                "the exact-size record arrives whole",
            )?;
        }
        let connection = recv.unsplit(send).map_err(|_| fail("unsplit"))?;
        let mut connection = tokio_imc::blocking::ConnectedSocket::from_async(connection);
        raw_send(theirs.as_fd(), &huge, &[])?;
        fails_with(
            tokio::task::spawn_blocking(move || connection.recv())
                .await
                .map_err(io::Error::other)?,
            ErrorKind::InvalidData,
            "blocking recv took a record over MAX_RECV_SIZE",
        )
        .map(drop)
    });
}

#[test]
fn empty_records_followed_by_a_hang_up_do_not_hide_the_records_queued_behind_them() {
    run(|| async {
        // Every mix of empty records, records with bytes or descriptors, and a
        // hang-up (close or shutdown) at the end: everything sent arrives, then
        // end-of-stream.
        let (read_end, _write_end) = common::pipe();
        for (empties_first, records, close) in [
            (1, 1, true),
            (1, 1, false),
            (3, 2, true),
            (2, 0, true),
            (1, 3, false),
        ] {
            let (ours, theirs) = raw_pair(SockType::SeqPacket);
            let mut ours = ConnectedSocket::try_from(ours)?;
            for _ in 0..empties_first {
                raw_send(theirs.as_fd(), b"", &[])?;
            }
            for n in 0..records {
                raw_send(theirs.as_fd(), &[n as u8; 3], &[])?;
                raw_send(theirs.as_fd(), b"", &[])?;
                raw_send(theirs.as_fd(), b"", &[read_end.as_fd()])?;
            }
            if close {
                drop(theirs);
            } else {
                nix::sys::socket::shutdown(
                    std::os::fd::AsRawFd::as_raw_fd(&theirs),
                    nix::sys::socket::Shutdown::Write,
                )
                .map_err(io::Error::from)?;
            }
            for n in 0..records {
                let bytes = ours.recv().await?.ok_or_else(|| {
                    fail(format!(
                        "end-of-stream before record {n} ({empties_first} empty first)"
                    ))
                })?;
                ensure(bytes.data[..] == [n as u8; 3], "the record's bytes")?;
                let fds = ours
                    .recv()
                    .await?
                    .ok_or_else(|| fail(format!("end-of-stream before descriptor record {n}")))?;
                ensure(
                    fds.data.is_empty()
                        && fds.fds.len() == 1
                        && inode(&fds.fds[0]) == inode(&read_end),
                    "the descriptor record",
                )?;
            }
            ensure(ours.recv().await?.is_none(), "then end-of-stream")?;
            ensure(ours.recv().await?.is_none(), "and end-of-stream again")?;
        }
        Ok(())
    });
}

/// `SO_PASSPIDFD` (Linux 6.5), named here as the libc crate may not have it.
const SO_PASSPIDFD: nix::libc::c_int = 76;

#[test]
fn a_pidfd_the_kernel_could_not_make_is_never_taken_for_a_descriptor() {
    const TEST: &str = "a_pidfd_the_kernel_could_not_make_is_never_taken_for_a_descriptor";
    if common::child_role().is_some() {
        // In a child: the descriptor limit is lowered for the whole process.
        common::child_main(|| async {
            let (ours, theirs) = raw_pair(SockType::SeqPacket);
            // A peer holding a duplicate of our end asks for a pidfd with every record.
            let duplicate = ours.try_clone()?;
            let one: nix::libc::c_int = 1;
            // SAFETY: a valid socket, and a pointer to an int of the stated size.
            let set = unsafe {
                nix::libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&duplicate),
                    nix::libc::SOL_SOCKET,
                    SO_PASSPIDFD,
                    std::ptr::from_ref(&one).cast(),
                    std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
                )
            };
            if set != 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(nix::libc::ENOPROTOOPT) {
                    common::skipped(TEST, "the kernel has no SO_PASSPIDFD (Linux 6.5)");
                    return Ok(());
                }
                return Err(err);
            }
            drop(duplicate);
            let mut ours = ConnectedSocket::try_from(ours)?;
            // With a free descriptor, the pidfd arrives and is closed with a warning.
            raw_send(theirs.as_fd(), b"pidfd made", &[])?;
            let got = ours.recv().await?.ok_or_else(|| fail("closed"))?;
            ensure(
                &got.data[..] == b"pidfd made" && got.fds.is_empty(),
                "first record",
            )?;
            // Now with no free descriptor: the kernel writes -EMFILE where the pidfd
            // would be.
            use nix::sys::resource::{getrlimit, setrlimit, Resource};
            let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
            let lowest_free = nix::unistd::dup(&theirs).map_err(io::Error::from)?;
            let limit = std::os::fd::AsRawFd::as_raw_fd(&lowest_free) as u64;
            drop(lowest_free);
            raw_send(theirs.as_fd(), b"no room for a pidfd", &[])?;
            setrlimit(Resource::RLIMIT_NOFILE, limit, hard).map_err(io::Error::from)?;
            let got = ours.recv().await;
            setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(io::Error::from)?;
            let got = got?.ok_or_else(|| fail("closed"))?;
            ensure(
                &got.data[..] == b"no room for a pidfd" && got.fds.is_empty(),
                "the record arrives, without a descriptor",
            )?;
            // The connection goes on.
            raw_send(theirs.as_fd(), b"still usable", &[])?;
            let got = ours.recv().await?.ok_or_else(|| fail("closed"))?;
            ensure(&got.data[..] == b"still usable", "third record")
        });
    }
    common::run_without_runtime(|| {
        common::expect_success(common::child(TEST, "receiver").spawn().expect("spawn"))
    });
}

#[test]
fn timestamps_a_peer_turned_on_are_ignored_without_a_warning() {
    let logs = Logs::default();
    let _capture = logs.capture();
    run(|| async {
        let (ours, theirs) = raw_pair(SockType::SeqPacket);
        // As a peer holding a duplicate of our end can do at any time.
        setsockopt(&ours, sockopt::ReceiveTimestamp, &true).map_err(io::Error::from)?;
        let mut ours = ConnectedSocket::try_from(ours)?;
        let (read_end, _write_end) = common::pipe();
        raw_send(theirs.as_fd(), b"stamped", &[read_end.as_fd()])?;
        raw_send(theirs.as_fd(), b"", &[])?;
        raw_send(theirs.as_fd(), b"after", &[])?;
        drop(theirs);
        let got = ours.recv().await?.ok_or_else(|| fail("closed"))?;
        ensure(
            &got.data[..] == b"stamped"
                && got.fds.len() == 1
                && inode(&got.fds[0]) == inode(&read_end),
            "the record and its descriptor",
        )?;
        // The empty record before a hang-up is still told from end-of-stream.
        let got = ours.recv().await?.ok_or_else(|| fail("closed early"))?;
        ensure(&got.data[..] == b"after", "the record after the empty one")?;
        ensure(ours.recv().await?.is_none(), "then end-of-stream")?;
        let text = logs.text();
        ensure(
            !text.contains("ignored control data"),
            format!("a timestamp was warned about:\n{text}"),
        )
    });
}
