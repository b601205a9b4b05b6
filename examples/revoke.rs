//! Addresses as capabilities: each holder gets its own, the server knows who
//! connected, and can cut one holder off while the others carry on.
//!
//! ```text
//! cargo run --example revoke
//! ```

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;

use tokio_imc::{handoff, make_bound_socket, SocketAddress};

const ROUNDS: usize = 4;

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(io::stderr)
        .init();
    match std::env::args().nth(1) {
        Some(name) => holder(&name).await,
        None => server().await,
    }
}

async fn server() -> io::Result<()> {
    let (original, bound) = make_bound_socket()?;
    drop(original); // every holder gets an address of its own instead
    let mut names = HashMap::new();
    let mut children = Vec::new();
    for name in ["alice", "bob"] {
        let (id, address) = bound.mint_address()?;
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command.arg(name);
        handoff::pass(&mut command, &[(handoff::ADDRESS, address.as_fd())])?;
        children.push(command.spawn()?);
        names.insert(id, name);
        println!("[server] minted address {id} for {name}");
    }

    let mut visits: HashMap<&str, usize> = HashMap::new();
    loop {
        let mut connection = match bound.accept().await {
            Ok(connection) => connection,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => break, // every address is gone
            Err(e) => {
                // Transient (from the OS): back off, then keep serving.
                eprintln!("[server] accept failed, retrying: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let id = connection
            .address_id()
            .ok_or_else(|| io::Error::other("an accepted connection has an id"))?;
        let name = names[&id];
        let count = visits.entry(name).or_default();
        *count += 1;
        let Some(message) = connection.recv().await? else {
            continue;
        };
        println!(
            "[server] via address {id} ({name}, visit {count}): {:?}",
            String::from_utf8_lossy(&message.data)
        );
        if name == "bob" && *count == 2 {
            bound.revoke(id)?;
            println!("[server] revoked bob's address; alice's is untouched");
        }
        connection.send(b"welcome", &[]).await?;
    }
    for mut child in children {
        let status = child.wait()?;
        if !status.success() {
            return Err(io::Error::other(format!("a holder failed: {status}")));
        }
    }
    println!(
        "[server] alice visited {} times, bob {} times",
        visits["alice"], visits["bob"]
    );
    Ok(())
}

async fn holder(name: &str) -> io::Result<()> {
    let address = SocketAddress::from_env()?;
    for round in 1..=ROUNDS {
        let mut connection = match address.connect().await {
            Ok(connection) => connection,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                println!("[{name}] cut off before visit {round}: {e}");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        connection
            .send(format!("hello from {name}").as_bytes(), &[])
            .await?;
        connection
            .recv()
            .await?
            .ok_or_else(|| io::Error::other("server closed"))?;
    }
    println!("[{name}] made all {ROUNDS} visits");
    Ok(())
}
