//! Capability passing across three processes.
//!
//! ```text
//! cargo run --example broker
//! ```
//!
//! The broker starts a service and a client, each with a private control
//! connection to the broker. The service registers by sending the broker its
//! address (a descriptor) in a message. The client asks to be introduced; the broker
//! forwards the address in a message; the client connects to the service directly.
//! The broker never sees that connection, and nobody else can make it: only the
//! processes the address was given to can connect.

use std::io;
use std::os::fd::AsFd;

use tokio_imc::{handoff, make_bound_socket, ConnectedSocket, SocketAddress};

const CONTROL: &str = "control";

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(io::stderr)
        .init();
    match std::env::args().nth(1).as_deref() {
        Some("service") => service().await,
        Some("client") => client().await,
        _ => broker().await,
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed")
}

/// Starts this program as `role`, with one end of a fresh pair as its control
/// connection; returns the child and our end.
fn start(role: &str) -> io::Result<(std::process::Child, ConnectedSocket)> {
    let (ours, theirs) = ConnectedSocket::pair()?;
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command.arg(role);
    handoff::pass(&mut command, &[(CONTROL, theirs.as_fd())])?;
    let child = command.spawn()?;
    Ok((child, ours))
}

async fn broker() -> io::Result<()> {
    let (mut service, mut service_control) = start("service")?;
    let mut registration = service_control.recv().await?.ok_or_else(closed)?;
    let service_address = SocketAddress::try_from(registration.fds.remove(0))?;
    println!(
        "[broker] the service registered {:?} and gave me its address",
        String::from_utf8_lossy(&registration.data)
    );

    let (mut client, mut client_control) = start("client")?;
    let request = client_control.recv().await?.ok_or_else(closed)?;
    println!(
        "[broker] the client asks: {:?}",
        String::from_utf8_lossy(&request.data)
    );
    client_control
        .send(b"here is the echo service", &[service_address.as_fd()])
        .await?;
    drop(service_address);
    println!("[broker] forwarded the address; I am out of the conversation now");

    let client_status = tokio::task::spawn_blocking(move || client.wait())
        .await
        .map_err(io::Error::other)??;
    let report = service_control.recv().await?.ok_or_else(closed)?;
    println!(
        "[broker] the service reports: {:?}",
        String::from_utf8_lossy(&report.data)
    );
    drop(service_control);
    let service_status = tokio::task::spawn_blocking(move || service.wait())
        .await
        .map_err(io::Error::other)??;
    println!("[broker] client exited with {client_status}, service with {service_status}");
    if client_status.success() && service_status.success() {
        Ok(())
    } else {
        Err(io::Error::other("a child failed"))
    }
}

async fn service() -> io::Result<()> {
    let mut control = ConnectedSocket::from_env_named(CONTROL)?;
    let (address, bound) = make_bound_socket()?;
    control.send(b"echo", &[address.as_fd()]).await?;
    drop(address); // the broker holds it now
    let mut connection = bound.accept().await?;
    let peer = connection.peer_credentials()?.pid;
    println!("[service] accepted a connection from pid {peer}, not from the broker");
    let mut served = 0;
    while let Some(message) = connection.recv().await? {
        connection.send(&message.data, &[]).await?;
        served += 1;
    }
    control
        .send(
            format!("served {served} messages to pid {peer}").as_bytes(),
            &[],
        )
        .await?;
    Ok(())
}

async fn client() -> io::Result<()> {
    let mut control = ConnectedSocket::from_env_named(CONTROL)?;
    control
        .send(b"introduce me to the echo service", &[])
        .await?;
    let mut introduction = control.recv().await?.ok_or_else(closed)?;
    let address = SocketAddress::try_from(introduction.fds.remove(0))?;
    println!("[client] got the service's address from the broker; connecting directly");
    let mut connection = address.connect().await?;
    for text in ["hello, service", "capabilities, not names"] {
        connection.send(text.as_bytes(), &[]).await?;
        let echo = connection.recv().await?.ok_or_else(closed)?;
        println!("[client] echo: {:?}", String::from_utf8_lossy(&echo.data));
    }
    Ok(())
}
