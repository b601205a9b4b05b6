//! The echo demo with the blocking facade: no `async` anywhere.
//!
//! ```text
//! cargo run --example blocking
//! ```

use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd};

use tokio_imc::{blocking, handoff};

fn main() -> io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(io::stderr)
        .init();
    match std::env::args().nth(1).as_deref() {
        Some("client") => client(),
        _ => server(),
    }
}

fn server() -> io::Result<()> {
    let (address, bound) = blocking::make_bound_socket()?;
    println!(
        "[server] bound socket fd {}, address fd {}",
        bound.as_raw_fd(),
        address.as_raw_fd()
    );
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.arg("client");
    handoff::pass(&mut command, &[(handoff::ADDRESS, address.as_fd())])?;
    let mut child = command.spawn()?;
    drop((command, address));
    println!("[server] started the client (pid {})", child.id());

    let mut connection = bound.accept()?;
    println!(
        "[server] accepted pid {}",
        connection.peer_credentials()?.pid
    );
    while let Some(message) = connection.recv()? {
        println!(
            "[server] received {:?} with {} descriptor(s)",
            String::from_utf8_lossy(&message.data),
            message.fds.len()
        );
        match message.fds.into_iter().next() {
            Some(fd) => {
                writeln!(std::fs::File::from(fd), "written by the blocking server")?;
                connection.send(b"done", &[])?;
            }
            None => connection.send(&message.data, &[])?,
        }
    }
    let status = child.wait()?;
    println!("[server] the client closed; it exited with {status}");
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("client failed: {status}")))
    }
}

fn client() -> io::Result<()> {
    let address = blocking::SocketAddress::from_env()?;
    let mut connection = address.connect()?;
    println!("[client] connected");
    connection.send(b"hello, blocking server", &[])?;
    let echo = connection
        .recv()?
        .ok_or_else(|| io::Error::other("server closed"))?;
    println!("[client] echo: {:?}", String::from_utf8_lossy(&echo.data));

    let memfd =
        nix::sys::memfd::memfd_create(c"blocking-demo", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    connection.send(b"write into this", &[memfd.as_fd()])?;
    connection
        .recv()?
        .ok_or_else(|| io::Error::other("server closed"))?;
    let mut file = std::fs::File::from(memfd);
    file.rewind()?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    println!("[client] the memfd now holds: {:?}", text.trim_end());
    Ok(())
}
