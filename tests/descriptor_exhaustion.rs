//! When this process is out of descriptors (`EMFILE`) the kernel cannot install a
//! received descriptor and reports `MSG_CTRUNC`. `accept` returns that as an error
//! (it does not spin), the request's client sees its connection end, and both
//! `accept` and `recv` work again once descriptors are free.
//!
//! The server runs in a child process with a lowered `RLIMIT_NOFILE`, so the limit
//! cannot disturb other tests.

mod common;

use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, OwnedFd};

use common::{bounded, child, child_main, child_role, ensure, expect_success, fail};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio_imc::{make_bound_socket, ConnectedSocket};

/// Lowers the soft limit to just above the highest open descriptor and fills every
/// free number below it. Returns the fillers and the old soft limit.
fn exhaust_descriptors() -> io::Result<(Vec<OwnedFd>, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    let highest = common::open_fds().keys().copied().max().unwrap_or(2) as u64;
    setrlimit(Resource::RLIMIT_NOFILE, highest + 1, hard).map_err(io::Error::from)?;
    let mut fillers = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(file) => fillers.push(OwnedFd::from(file)),
            Err(e) if e.raw_os_error() == Some(nix::libc::EMFILE) => return Ok((fillers, soft)),
            Err(e) => return Err(e),
        }
    }
}

fn restore(fillers: Vec<OwnedFd>, soft: u64) -> io::Result<()> {
    drop(fillers);
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(io::Error::from)
}

#[test]
fn out_of_descriptors_accept_and_recv_report_it_and_recover() {
    const TEST: &str = "out_of_descriptors_accept_and_recv_report_it_and_recover";
    if child_role().is_some() {
        child_main(|| async {
            let (address, bound) = make_bound_socket()?;
            let mut queued = address.connect().await?;
            let (mut a, mut b) = ConnectedSocket::pair()?;
            let (read_end, _write_end) = common::pipe();

            let (fillers, soft) = exhaust_descriptors()?;
            let err = bounded("accept while out of descriptors", bound.accept())
                .await?
                .err()
                .ok_or_else(|| fail("accept succeeded with no free descriptor"))?;
            ensure(err.kind() == ErrorKind::Other, format!("{err:?}"))?;
            ensure(err.to_string().contains("EMFILE"), err.to_string())?;

            a.send(b"with a descriptor", &[read_end.as_fd()]).await?;
            let err = bounded("recv while out of descriptors", b.recv())
                .await?
                .err()
                .ok_or_else(|| fail("recv succeeded with no free descriptor"))?;
            ensure(err.to_string().contains("MSG_CTRUNC"), err.to_string())?;

            // connect itself needs two new descriptors.
            let err = address
                .connect()
                .await
                .err()
                .ok_or_else(|| fail("connect succeeded"))?;
            ensure(
                err.raw_os_error() == Some(nix::libc::EMFILE),
                format!("{err:?}"),
            )?;
            restore(fillers, soft)?;

            // The dropped request's client sees its connection end.
            ensure(
                bounded("recv on the dropped request", queued.recv())
                    .await??
                    .is_none(),
                "connection ended",
            )?;

            // Both paths recover.
            let (client, server) = tokio::join!(
                address.connect(),
                bounded("accept after recovery", bound.accept())
            );
            let (mut client, mut server) = (client?, server??);
            client.send(b"hello again", &[read_end.as_fd()]).await?;
            let got = server.recv().await?.ok_or_else(|| fail("closed"))?;
            ensure(got.fds.len() == 1, "descriptor received after recovery")?;
            a.send(b"again", &[read_end.as_fd()]).await?;
            let got = b.recv().await?.ok_or_else(|| fail("closed"))?;
            ensure(
                &got.data[..] == b"again" && got.fds.len() == 1,
                "recv recovered",
            )
        });
    }
    let process = child(TEST, "server").spawn().expect("spawn child");
    expect_success(process);
}
