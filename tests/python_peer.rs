//! Interoperability with a peer that knows nothing of this crate: Python's
//! standard library (`socket.send_fds` / `socket.recv_fds`), speaking PROTOCOL.md.

mod common;

use std::io::{self, Read, Seek};
use std::os::fd::AsFd;
use std::process::Command;

use common::{bounded, ensure, fail, inode, run};
use tokio_imc::{handoff, make_bound_socket, AddressId, BoundSocket, SocketAddress};

#[test]
fn a_python_peer_connects_to_us_and_accepts_our_connection() {
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let id = bound.address_id();
        converse_with_python(&address, &bound, id).await
    });
}

#[test]
fn a_python_peer_connects_through_a_minted_address_like_any_other() {
    run(|| async {
        let (_original, bound) = make_bound_socket()?;
        let (id, minted) = bound.mint_address()?;
        converse_with_python(&minted, &bound, id).await
    });
}

/// The connect requests Python sends in its last phase (`FLOOD` in the script).
const FLOOD: usize = 400;

/// Waits until process `pid` is blocked in system call `number`, with `fd` as
/// its first argument if given, as `/proc/PID/syscall` shows: an observable
/// state, not a guess at timing.
async fn blocked_in(pid: u32, number: nix::libc::c_long, fd: Option<i32>) -> io::Result<()> {
    let path = format!("/proc/{pid}/syscall");
    let deadline = std::time::Instant::now() + common::HANG;
    let first_argument = fd.map(|fd| format!("{fd:#x}"));
    loop {
        let state = std::fs::read_to_string(&path)?;
        let mut fields = state.split_whitespace();
        if fields.next() == Some(&number.to_string())
            && first_argument
                .as_deref()
                .is_none_or(|fd| fields.next() == Some(fd))
        {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(fail(format!(
                "python never blocked in syscall {number} on {fd:?} (last: {})",
                state.trim()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Hands `address` to the Python peer and runs the whole dialogue; the Python
/// side's connection must be attributed to `id`.
async fn converse_with_python(
    address: &SocketAddress,
    bound: &BoundSocket,
    id: AddressId,
) -> io::Result<()> {
    {
        let mut command = Command::new("python3");
        command.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/python_peer.py"
        ));
        handoff::pass(&mut command, &[(handoff::ADDRESS, address.as_fd())])?;
        let python = command.spawn()?;
        drop(command);

        // Python as a client of ours.
        let mut connection = bounded("accept from python", bound.accept()).await??;
        ensure(
            connection.address_id() == Some(id),
            "attributed to the address python was given",
        )?;
        let (read_end, write_end) = common::pipe();
        connection
            .send(b"hello python", &[write_end.as_fd()])
            .await?;
        drop(write_end);
        let mut written = String::new();
        std::fs::File::from(read_end).read_to_string(&mut written)?;
        ensure(written == "python wrote this", written.clone())?;

        let mut message = bounded("python's memfd", connection.recv())
            .await??
            .ok_or_else(|| fail("closed"))?;
        ensure(
            &message.data[..] == b"from python" && message.fds.len() == 1,
            "memfd message",
        )?;
        let mut memfd = std::fs::File::from(message.fds.remove(0));
        memfd.rewind()?;
        let mut text = String::new();
        memfd.read_to_string(&mut text)?;
        ensure(text == "python memfd", text.clone())?;

        // Python as a server: its address arrives in a message.
        let mut message = bounded("python's address", connection.recv())
            .await??
            .ok_or_else(|| fail("closed"))?;
        ensure(
            &message.data[..] == b"my address" && message.fds.len() == 1,
            "address message",
        )?;
        let python_address = SocketAddress::try_from(message.fds.remove(0))?;
        let mut to_python = python_address.connect().await?;
        // Send only once Python waits in a blocking recvmsg on the end we sent: on
        // a non-blocking end that recvmsg would have failed with EAGAIN.
        // (Not the recvmsg of its accept, which it may still be in.)
        let waiting = bounded("the descriptor python waits on", connection.recv())
            .await??
            .ok_or_else(|| fail("closed"))?;
        let fd = std::str::from_utf8(&waiting.data)
            .ok()
            .and_then(|text| text.strip_prefix("waiting on "))
            .and_then(|number| number.parse::<i32>().ok())
            .ok_or_else(|| fail(format!("python said {:?}", waiting.data)))?;
        blocked_in(python.id(), nix::libc::SYS_recvmsg, Some(fd)).await?;
        let (token, _token_peer) = common::pipe();
        to_python.send(b"rust client", &[token.as_fd()]).await?;
        let reply = bounded("python's reply", to_python.recv())
            .await??
            .ok_or_else(|| fail("closed"))?;
        ensure(&reply.data[..] == b"python server reply", "reply")?;
        ensure(
            reply.fds.len() == 1 && inode(&reply.fds[0]) == inode(&token),
            "our descriptor came back",
        )?;

        // Python floods our address; accept only once its sendmsg waits on the
        // full queue (on a non-blocking address it would have failed instead).
        blocked_in(python.id(), nix::libc::SYS_sendmsg, None).await?;
        let mut flooded = Vec::new();
        for _ in 0..FLOOD {
            let mut connection = bounded("accept of the flood", bound.accept()).await??;
            connection.send(b"accepted", &[]).await?;
            flooded.push(connection);
        }

        let status = tokio::task::spawn_blocking(move || {
            let mut python = python;
            python.wait()
        })
        .await
        .map_err(io::Error::other)??;
        ensure(status.success(), format!("python exited with {status}"))
    }
}
