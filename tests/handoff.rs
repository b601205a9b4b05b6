//! Handing descriptors to child processes, and every way taking them can fail.
//! Each case runs a real child: this test binary again, in a named role.

mod common;

use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, AsRawFd};
use std::process::Command;

use common::{child, child_main, child_role, ensure, expect_success, fail, run};
use tokio_imc::{handoff, make_bound_socket, ConnectedSocket, SocketAddress};

const TEST: &str = "handoff_cases";

/// The child side of every case, chosen by role.
async fn child_case(role: &str) -> io::Result<()> {
    match role {
        "missing" => {
            let err = SocketAddress::from_env()
                .err()
                .ok_or_else(|| fail("no variable, yet an address"))?;
            ensure(err.kind() == ErrorKind::NotFound, format!("{err:?}"))
        }
        "malformed" => {
            let err = SocketAddress::from_env()
                .err()
                .ok_or_else(|| fail("malformed, yet an address"))?;
            ensure(err.kind() == ErrorKind::InvalidData, format!("{err:?}"))
        }
        "not-open" => {
            let err = SocketAddress::from_env()
                .err()
                .ok_or_else(|| fail("closed number, yet an address"))?;
            ensure(
                err.kind() == ErrorKind::NotFound && err.to_string().contains("not open"),
                format!("{err:?}"),
            )
        }
        "stale" => {
            // The variable names a descriptor this process opened itself (close-on-
            // exec, like everything Rust opens): it is refused and left open.
            let file = std::fs::File::open("/dev/null")?;
            let number = file.as_raw_fd();
            std::env::set_var(handoff::ENV_VAR, format!("address={number}"));
            let err = SocketAddress::from_env()
                .err()
                .ok_or_else(|| fail("a stale number was taken"))?;
            ensure(
                err.kind() == ErrorKind::InvalidData && err.to_string().contains("not inherited"),
                format!("{err:?}"),
            )?;
            ensure(
                common::open_fds().contains_key(&number),
                "the descriptor was left alone",
            )?;
            drop(file);
            Ok(())
        }
        "wrong-name" => {
            let err = SocketAddress::from_env()
                .err()
                .ok_or_else(|| fail("wrong name, yet an address"))?;
            ensure(
                err.kind() == ErrorKind::NotFound && err.to_string().contains("\"address\""),
                format!("{err:?}"),
            )?;
            // The descriptor under the other name is still there to take.
            ConnectedSocket::from_env_named("other").map(drop)
        }
        "wrong-type" => {
            let number: i32 = std::env::var(handoff::ENV_VAR)
                .map_err(io::Error::other)?
                .trim_start_matches("address=")
                .parse()
                .map_err(io::Error::other)?;
            let err = SocketAddress::from_env()
                .err()
                .ok_or_else(|| fail("a pipe became an address"))?;
            ensure(err.kind() == ErrorKind::InvalidInput, format!("{err:?}"))?;
            ensure(err.to_string().contains("not a socket"), err.to_string())?;
            // The refused descriptor was closed, not leaked.
            ensure(
                !common::open_fds().contains_key(&number),
                "the refused descriptor is closed",
            )
        }
        "several" => {
            let address = SocketAddress::from_env()?;
            ensure(
                std::env::var(handoff::ENV_VAR).is_ok(),
                "the other entry is still named",
            )?;
            let mut control = ConnectedSocket::from_env_named("control")?;
            ensure(
                std::env::var_os(handoff::ENV_VAR).is_none(),
                "variable removed once empty",
            )?;
            ensure(
                common::is_cloexec(address.as_fd()) && common::is_cloexec(control.as_fd()),
                "close-on-exec",
            )?;
            let mut connection = address.connect().await?;
            connection.send(b"via address", &[]).await?;
            control.send(b"via control", &[]).await?;
            // A second take of the same name finds nothing.
            let err = SocketAddress::from_env()
                .err()
                .ok_or_else(|| fail("taken twice"))?;
            ensure(err.kind() == ErrorKind::NotFound, format!("{err:?}"))?;
            // A grandchild inherits neither the descriptors nor the variable.
            let listing = Command::new("sh")
                .args(["-c", "echo \"var=[$TOKIO_IMC_FDS]\"; ls -l /proc/$$/fd"])
                .output()?;
            let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
            ensure(
                listing.contains("var=[]"),
                format!("grandchild saw the variable: {listing}"),
            )?;
            for fd in [address.as_raw_fd(), control.as_raw_fd()] {
                let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))?;
                ensure(
                    !listing.contains(&target.display().to_string()),
                    format!("grandchild holds {fd}: {listing}"),
                )?;
            }
            Ok(())
        }
        "inherits-nothing-else" => {
            let inheritable: i32 = std::env::var("INHERITABLE_FD")
                .map_err(io::Error::other)?
                .parse()
                .map_err(io::Error::other)?;
            ensure(
                !common::open_fds().contains_key(&inheritable),
                "the parent's inheritable pipe did not leak in",
            )?;
            SocketAddress::from_env().map(drop)
        }
        other => Err(fail(format!("unknown role {other}"))),
    }
}

#[test]
fn handoff_cases() {
    if let Some(role) = child_role() {
        child_main(|| async move { child_case(&role).await });
    }
    run(|| async {
        let (address, _bound) = make_bound_socket()?;
        expect_success(
            child(TEST, "missing")
                .env_remove(handoff::ENV_VAR)
                .spawn()?,
        );
        expect_success(
            child(TEST, "malformed")
                .env(handoff::ENV_VAR, "address=seven")
                .spawn()?,
        );
        expect_success(
            child(TEST, "not-open")
                .env(handoff::ENV_VAR, "address=900")
                .spawn()?,
        );

        let (a, _b) = ConnectedSocket::pair()?;
        let mut command = child(TEST, "wrong-name");
        handoff::pass(&mut command, &[("other", a.as_fd())])?;
        expect_success(command.spawn()?);

        let (read_end, _write_end) = common::pipe();
        let mut command = child(TEST, "wrong-type");
        handoff::pass(&mut command, &[(handoff::ADDRESS, read_end.as_fd())])?;
        expect_success(command.spawn()?);

        let (mut control, control_peer) = ConnectedSocket::pair()?;
        let mut command = child(TEST, "several");
        handoff::pass(
            &mut command,
            &[
                (handoff::ADDRESS, address.as_fd()),
                ("control", control_peer.as_fd()),
            ],
        )?;
        let process = command.spawn()?;
        drop(command);
        drop(control_peer);
        let from_child = common::bounded("control message", control.recv())
            .await??
            .ok_or_else(|| fail("closed"))?;
        ensure(
            &from_child.data[..] == b"via control",
            "control connection works",
        )?;
        expect_success(process);

        // A descriptor the parent forgot to make close-on-exec stays out of the child.
        let (leaky, _leaky_peer) = nix::unistd::pipe().map_err(io::Error::from)?;
        let mut command = child(TEST, "inherits-nothing-else");
        command.env("INHERITABLE_FD", leaky.as_raw_fd().to_string());
        handoff::pass(&mut command, &[(handoff::ADDRESS, address.as_fd())])?;
        expect_success(command.spawn()?);

        // A command that removes the variable has passed nothing yet.
        let mut command = child(TEST, "unused");
        command.env_remove(handoff::ENV_VAR);
        handoff::pass(&mut command, &[("x", address.as_fd())])?;

        // Misuse is refused in the parent.
        let mut command = child(TEST, "unused");
        let err = handoff::pass(&mut command, &[("a b", address.as_fd())])
            .err()
            .ok_or_else(|| fail("bad name"))?;
        ensure(err.kind() == ErrorKind::InvalidInput, format!("{err:?}"))?;
        let err = handoff::pass(
            &mut command,
            &[("x", address.as_fd()), ("x", address.as_fd())],
        )
        .err()
        .ok_or_else(|| fail("repeated name"))?;
        ensure(err.kind() == ErrorKind::InvalidInput, format!("{err:?}"))?;
        handoff::pass(&mut command, &[("x", address.as_fd())])?;
        let err = handoff::pass(&mut command, &[("y", address.as_fd())])
            .err()
            .ok_or_else(|| fail("passed twice"))?;
        ensure(err.kind() == ErrorKind::InvalidInput, format!("{err:?}"))
    });
}
