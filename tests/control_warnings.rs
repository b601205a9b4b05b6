//! Control data that arrives outside `SCM_RIGHTS` is ignored with a warning,
//! and an ordinary record logs nothing (found by cargo-mutants: the condition
//! for the warning could be inverted unnoticed).

mod common;

use std::os::fd::AsFd;

use common::{ensure, fail, run, Logs};
use nix::sys::socket::{setsockopt, sockopt};
use tokio_imc::ConnectedSocket;

#[test]
fn credentials_a_peer_made_the_kernel_attach_are_ignored_with_a_warning() {
    let logs = Logs::default();
    let _capture = logs.capture();
    run(|| async {
        let (mut a, mut b) = ConnectedSocket::pair()?;
        a.send(b"plain", &[]).await?;
        let plain = b.recv().await?.ok_or_else(|| fail("closed"))?;
        ensure(&plain.data[..] == b"plain", "the plain record")?;
        ensure(
            !logs.text().contains("outside SCM_RIGHTS"),
            format!("nothing logged for a plain record: {}", logs.text()),
        )?;
        // What a peer holding a duplicate of our end could do: SO_PASSCRED, so
        // the kernel attaches SCM_CREDENTIALS to every record we receive.
        setsockopt(&b.as_fd(), sockopt::PassCred, &true).map_err(std::io::Error::from)?;
        a.send(b"with credentials", &[]).await?;
        let got = b.recv().await?.ok_or_else(|| fail("closed"))?;
        ensure(
            &got.data[..] == b"with credentials" && got.fds.is_empty(),
            "the record arrives as sent",
        )?;
        let text = logs.text();
        ensure(
            text.contains("outside SCM_RIGHTS") && text.contains("other_records=1"),
            text,
        )
    });
}

/// What a peer holding a duplicate of our end could do: `SO_PASSPIDFD`, so the
/// kernel installs a pidfd in our table with every record (Linux 6.5 and later).
/// That descriptor arrives outside `SCM_RIGHTS`: it is closed at once, counted
/// and warned about, and never reaches the message.
#[test]
fn a_pidfd_a_peer_made_the_kernel_attach_is_closed_with_a_warning() {
    let logs = Logs::default();
    let _capture = logs.capture();
    run(|| async {
        let (mut a, mut b) = ConnectedSocket::pair()?;
        let on: nix::libc::c_int = 1;
        // SAFETY: a plain setsockopt on an open socket with a valid int option.
        let set = unsafe {
            nix::libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&b.as_fd()),
                nix::libc::SOL_SOCKET,
                nix::libc::SO_PASSPIDFD,
                (&on as *const nix::libc::c_int).cast(),
                std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t,
            )
        };
        ensure(
            set == 0,
            format!("SO_PASSPIDFD: {}", std::io::Error::last_os_error()),
        )?;
        let before = common::open_fds();
        a.send(b"with a pidfd", &[]).await?;
        let got = b.recv().await?.ok_or_else(|| fail("closed"))?;
        ensure(
            &got.data[..] == b"with a pidfd" && got.fds.is_empty(),
            "the record arrives as sent, without the pidfd",
        )?;
        ensure(common::open_fds() == before, "the pidfd was closed")?;
        let text = logs.text();
        ensure(
            text.contains("outside SCM_RIGHTS") && text.contains("stray_fds=1"),
            text,
        )
    });
}
