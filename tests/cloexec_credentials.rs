//! Every descriptor the crate creates or receives is close-on-exec, and
//! `peer_credentials` names the process that made the connection.

mod common;

use std::io;
use std::os::fd::AsFd;

use common::{ensure, fail, is_cloexec, run};
use tokio_imc::{make_bound_socket, ConnectedSocket};

#[test]
fn every_descriptor_made_or_received_is_close_on_exec() {
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let copy = address.try_clone()?;
        let (mut client, mut server) = tokio::try_join!(address.connect(), bound.accept())?;
        let (a, b) = ConnectedSocket::pair()?;
        // A descriptor that is *not* close-on-exec in the sender arrives as one
        // that is (MSG_CMSG_CLOEXEC).
        let (read_end, write_end) = nix::unistd::pipe().map_err(io::Error::from)?;
        ensure(
            !is_cloexec(read_end.as_fd()),
            "the test's pipe starts inheritable",
        )?;
        client.send(b"fd", &[read_end.as_fd()]).await?;
        let message = server.recv().await?.ok_or_else(|| fail("closed"))?;
        let received = &message.fds[0];
        for (what, fd) in [
            ("address", address.as_fd()),
            ("try_clone", copy.as_fd()),
            ("bound", bound.as_fd()),
            ("client", client.as_fd()),
            ("accepted", server.as_fd()),
            ("pair a", a.as_fd()),
            ("pair b", b.as_fd()),
            ("received", received.as_fd()),
        ] {
            ensure(is_cloexec(fd), format!("{what} is close-on-exec"))?;
        }
        // And a program we exec holds none of them: compare what its descriptors
        // refer to (socket:[inode], pipe:[inode]) with ours.
        let ours: Vec<String> = [
            address.as_fd(),
            copy.as_fd(),
            bound.as_fd(),
            client.as_fd(),
            server.as_fd(),
            received.as_fd(),
        ]
        .iter()
        .map(|fd| {
            std::fs::read_link(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(fd)
            ))
        })
        .map(|target| target.map(|t| t.display().to_string()))
        .collect::<io::Result<_>>()?;
        // The test's own pipe is inheritable on purpose: close it first.
        drop((read_end, write_end));
        let listing = std::process::Command::new("sh")
            .args(["-c", "ls -l /proc/$$/fd"])
            .output()?;
        let listing = String::from_utf8_lossy(&listing.stdout);
        ensure(
            listing.contains("/dev/") || listing.contains("pipe:"),
            format!("a real listing: {listing}"),
        )?;
        for target in &ours {
            ensure(
                !listing.contains(target.as_str()),
                format!("the exec'd program holds {target}:\n{listing}"),
            )?;
        }
        Ok(())
    });
}

#[test]
fn a_descriptor_adopted_through_try_from_is_made_close_on_exec() {
    run(|| async {
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair()?;
        let ours = std::os::fd::OwnedFd::from(ours);
        nix::fcntl::fcntl(
            &ours,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .map_err(io::Error::from)?;
        ensure(!is_cloexec(ours.as_fd()), "starts inheritable")?;
        let address = tokio_imc::SocketAddress::try_from(ours)?;
        ensure(
            is_cloexec(address.as_fd()),
            "adopted address is close-on-exec",
        )
    });
}

#[test]
fn peer_credentials_of_a_pair_name_this_process() {
    run(|| async {
        let (a, _b) = ConnectedSocket::pair()?;
        let credentials = a.peer_credentials()?;
        ensure(
            credentials.pid == std::process::id() as i32,
            format!("{credentials:?}"),
        )?;
        ensure(credentials.uid == nix::unistd::geteuid().as_raw(), "uid")?;
        ensure(credentials.gid == nix::unistd::getegid().as_raw(), "gid")
    });
}

#[test]
fn peer_credentials_name_who_created_the_pair_not_who_sent_the_request() {
    const TEST: &str = "peer_credentials_name_who_created_the_pair_not_who_sent_the_request";
    if common::child_role().is_some() {
        // The child makes a seqpacket pair and hands one end to the parent, which
        // sends it through the address as its own connect request.
        common::child_main(|| async {
            let mut control = ConnectedSocket::from_env_named("control")?;
            let (kept, sent) = common::raw_pair(nix::sys::socket::SockType::SeqPacket);
            control.send(b"an end for you", &[sent.as_fd()]).await?;
            drop(sent);
            common::bounded("done", control.recv()).await??;
            drop(kept);
            Ok(())
        });
    }
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let (mut control, control_peer) = ConnectedSocket::pair()?;
        let mut command = common::child(TEST, "creator");
        tokio_imc::handoff::pass(&mut command, &[("control", control_peer.as_fd())])?;
        let creator = command.spawn()?;
        drop((command, control_peer));
        let mut message = common::bounded("the end", control.recv())
            .await??
            .ok_or_else(|| fail("closed"))?;
        let end = message.fds.remove(0);
        // This process sends the request...
        common::raw_send(address.as_fd(), b"c", &[end.as_fd()])?;
        drop(end);
        let connection = common::bounded("accept", bound.accept()).await??;
        // ...but the credentials name the process that created the pair.
        let credentials = connection.peer_credentials()?;
        ensure(
            credentials.pid == creator.id() as i32,
            format!("{credentials:?}, creator {}", creator.id()),
        )?;
        ensure(
            credentials.pid != std::process::id() as i32,
            "not the sender",
        )?;
        control.send(b"done", &[]).await?;
        tokio::task::spawn_blocking(move || common::expect_success(creator))
            .await
            .map_err(io::Error::other)
    });
}

/// Descriptor number 0 is a descriptor like any other: in a process whose stdin
/// is closed the kernel installs a received descriptor there, and it must reach
/// the message (found by cargo-mutants: `raw < 0` as `raw <= 0` went unnoticed).
#[test]
fn a_descriptor_received_as_number_zero_is_kept() {
    const TEST: &str = "a_descriptor_received_as_number_zero_is_kept";
    if common::child_role().is_some() {
        common::child_main(|| async {
            use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
            let (mut a, mut b) = ConnectedSocket::pair()?;
            let (_read_end, write_end) = common::pipe();
            // SAFETY: this child process owns its stdin and nothing in it reads
            // stdin; closing it frees number 0 for the next descriptor.
            drop(unsafe { OwnedFd::from_raw_fd(0) });
            a.send(b"into slot zero", &[write_end.as_fd()]).await?;
            let message = b.recv().await?.ok_or_else(|| fail("closed"))?;
            ensure(message.fds.len() == 1, "one descriptor arrived")?;
            ensure(
                message.fds[0].as_raw_fd() == 0,
                format!("it was installed as 0, got {}", message.fds[0].as_raw_fd()),
            )?;
            ensure(
                common::inode(&message.fds[0]) == common::inode(&write_end),
                "the same pipe",
            )
        });
    }
    common::run_without_runtime(|| {
        common::expect_success(common::child(TEST, "receiver").spawn().expect("spawn"));
    });
}
