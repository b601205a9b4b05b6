//! A peer that closes with our records unread ends the conversation like any
//! other close (issue #17, point 3): its own records are still received, then
//! `None`; never an error. Linux reports the unread records once, as
//! `ECONNRESET`, ahead of the peer's records; every receive path reads past it.

mod common;

use std::io::{self, ErrorKind};

use bytes::BytesMut;
use common::{ensure, fails_with, run, run_without_runtime};
use tokio_imc::ConnectedSocket;

/// `ours` sent three records that `theirs` never reads; `theirs` sent two and
/// closes.
async fn closed_with_ours_unread() -> io::Result<ConnectedSocket> {
    let (mut ours, mut theirs) = ConnectedSocket::pair()?;
    for _ in 0..3 {
        ours.send(b"never read", &[]).await?;
    }
    theirs.send(b"one", &[]).await?;
    theirs.send(b"two", &[]).await?;
    drop(theirs);
    Ok(ours)
}

#[test]
fn the_readme_loop_ends_cleanly_after_reading_everything_the_peer_sent() {
    run(|| async {
        let mut connection = closed_with_ours_unread().await?;
        let mut got = Vec::new();
        while let Some(message) = connection.recv().await? {
            got.push(message.data);
        }
        ensure(got == [&b"one"[..], &b"two"[..]], format!("{got:?}"))?;
        ensure(connection.recv().await?.is_none(), "still the end")?;
        fails_with(
            connection.send(b"anyone?", &[]).await,
            ErrorKind::BrokenPipe,
            "send to the closed peer",
        )?;
        Ok(())
    });
}

#[test]
fn recv_into_and_a_split_half_read_past_the_reset_too() {
    run(|| async {
        let mut connection = closed_with_ours_unread().await?;
        let (mut data, mut fds) = (BytesMut::new(), Vec::new());
        let mut lengths = Vec::new();
        while let Some(len) = connection.recv_into(&mut data, &mut fds).await? {
            lengths.push(len);
        }
        ensure(
            lengths == [3, 3] && &data[..] == b"onetwo",
            format!("{lengths:?}"),
        )?;

        let (receiver, _sender) = closed_with_ours_unread().await?.into_split()?;
        let mut got = 0;
        while receiver.recv().await?.is_some() {
            got += 1;
        }
        ensure(got == 2, format!("the half got {got}"))
    });
}

#[test]
fn the_blocking_facade_reads_past_the_reset_too() {
    run_without_runtime(|| {
        let (mut ours, mut theirs) = tokio_imc::blocking::ConnectedSocket::pair().expect("pair");
        ours.send(b"never read", &[]).expect("send");
        theirs.send(b"one", &[]).expect("send");
        drop(theirs);
        let first = ours.recv().expect("no error").expect("a record");
        assert_eq!(&first.data[..], b"one");
        assert!(ours.recv().expect("no error").is_none());
    });
}
