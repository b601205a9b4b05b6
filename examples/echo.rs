//! The main demo: a server and a client in two processes, connected without any
//! name in the filesystem.
//!
//! ```text
//! cargo run --example echo
//! RUST_LOG=debug cargo run --example echo   # also show the crate's own events
//! ```
//!
//! The server makes a bound socket, starts this same program again as the client,
//! and hands it the address (a descriptor) through `tokio_imc::handoff`. The client
//! connects, sends a message, then sends a memfd that the server writes into.

use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd};

use tokio_imc::{handoff, make_bound_socket, SocketAddress};

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(io::stderr)
        .init();
    match std::env::args().nth(1).as_deref() {
        Some("client") => client().await,
        _ => server().await,
    }
}

async fn server() -> io::Result<()> {
    let (address, bound) = make_bound_socket()?;
    println!(
        "[server] made a bound socket: fd {}; its address is fd {}",
        bound.as_raw_fd(),
        address.as_raw_fd()
    );
    println!(
        "[server] nothing was created in the filesystem: only holders of the address can connect"
    );

    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.arg("client");
    handoff::pass(&mut command, &[(handoff::ADDRESS, address.as_fd())])?;
    let mut child = command.spawn()?;
    drop(command);
    drop(address); // the child holds the only address now
    println!(
        "[server] started the client (pid {}) and handed it the address",
        child.id()
    );

    let mut connection = bound.accept().await?;
    let peer = connection.peer_credentials()?;
    println!(
        "[server] accepted a connection from pid {} (uid {})",
        peer.pid, peer.uid
    );

    while let Some(message) = connection.recv().await? {
        let text = String::from_utf8_lossy(&message.data).into_owned();
        println!(
            "[server] received {:?} with {} descriptor(s)",
            text,
            message.fds.len()
        );
        if let Some(fd) = message.fds.into_iter().next() {
            let mut file = std::fs::File::from(fd);
            writeln!(
                file,
                "written by the server (pid {}) through the descriptor you sent",
                std::process::id()
            )?;
            println!("[server] wrote into the client's memfd");
            connection.send(b"done: look in your file", &[]).await?;
        } else {
            connection.send(&message.data, &[]).await?;
            println!("[server] echoed it back");
        }
    }
    println!("[server] the client closed its connection");

    let err = bound.accept().await.expect_err("no address is left");
    println!("[server] accept now fails at once: {err}");
    let status = child.wait()?;
    println!("[server] client exited with {status}");
    if !status.success() {
        return Err(io::Error::other(format!("client failed: {status}")));
    }
    Ok(())
}

async fn client() -> io::Result<()> {
    let address = SocketAddress::from_env()?;
    println!(
        "[client] took the address from the environment: fd {}",
        address.as_raw_fd()
    );
    let mut connection = address.connect().await?;
    println!("[client] connected");

    connection.send(b"hello, server", &[]).await?;
    let echo = connection
        .recv()
        .await?
        .ok_or_else(|| io::Error::other("server closed"))?;
    println!("[client] echo: {:?}", String::from_utf8_lossy(&echo.data));

    let memfd =
        nix::sys::memfd::memfd_create(c"echo-demo", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    connection
        .send(b"please write into this memfd", &[memfd.as_fd()])
        .await?;
    println!("[client] sent a memfd");
    let reply = connection
        .recv()
        .await?
        .ok_or_else(|| io::Error::other("server closed"))?;
    println!(
        "[client] server says: {:?}",
        String::from_utf8_lossy(&reply.data)
    );

    let mut file = std::fs::File::from(memfd);
    file.rewind()?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    println!("[client] the memfd now holds: {:?}", text.trim_end());
    Ok(())
}
