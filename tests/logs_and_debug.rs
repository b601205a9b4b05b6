//! Logs a user can read (issue #17, point 4): one field name per meaning
//! (`address_id` for an `AddressId`, `fd` for a descriptor), events for a closed
//! connection and a refused connect, and `Debug` that shows the address id.

mod common;

use std::io::ErrorKind;

use common::{connect_and_accept, ensure, fails_with, run, Logs};
use tokio_imc::make_bound_socket;

#[test]
fn events_name_address_ids_and_descriptors_alike() {
    let logs = Logs::default();
    let _capture = logs.capture();
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let (id, minted) = bound.mint_address()?;
        let (client, server) = connect_and_accept(&minted, &bound).await?;
        let server_fd = std::os::fd::AsRawFd::as_raw_fd(&server);
        drop((client, server));
        bound.revoke(id)?;
        fails_with(
            minted.connect().await,
            ErrorKind::ConnectionRefused,
            "connect",
        )?;
        drop(address);
        let text = logs.text();
        let line = |what: &str| {
            text.lines()
                .find(|line| line.contains(what))
                .unwrap_or_default()
                .to_string()
        };
        let accepted = line("accepted");
        ensure(
            accepted.contains(&format!("address_id={id}"))
                && accepted.contains(&format!("fd={server_fd}")),
            format!("accepted: {accepted:?}"),
        )?;
        let sent = line("connect request sent");
        ensure(
            sent.contains("address_fd=") && sent.contains(" fd="),
            format!("sent: {sent:?}"),
        )?;
        let closed = text
            .lines()
            .find(|line| line.contains("connection closed") && line.contains("address_id="))
            .unwrap_or_default();
        ensure(
            closed.contains(&format!("fd={server_fd}"))
                && closed.contains(&format!("address_id={id}")),
            format!("closed: {closed:?}\n{text}"),
        )?;
        let refused = line("connect failed");
        ensure(refused.contains("refused"), format!("refused: {refused:?}"))?;
        ensure(
            !text.contains(" address=") && !text.contains(" connection="),
            format!("no old field names: {text}"),
        )
    });
}

#[test]
fn debug_shows_the_address_id() {
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let id = bound.address_id();
        let (_client, server) = connect_and_accept(&address, &bound).await?;
        let want = format!("address_id: Some({id:?})");
        ensure(format!("{server:?}").contains(&want), format!("{server:?}"))?;
        ensure(
            format!("{bound:?}").contains(&format!("address_id: {id:?}")),
            format!("{bound:?}"),
        )?;
        let (receiver, sender) = server.into_split()?;
        ensure(
            format!("{receiver:?}").contains(&want),
            format!("{receiver:?}"),
        )?;
        ensure(format!("{sender:?}").contains(&want), format!("{sender:?}"))?;
        let server = receiver
            .unsplit(sender)
            .map_err(|_| common::fail("unsplit"))?;
        let blocking = tokio_imc::blocking::ConnectedSocket::from_async(server);
        ensure(
            format!("{blocking:?}").contains(&want),
            format!("{blocking:?}"),
        )
    });
}
