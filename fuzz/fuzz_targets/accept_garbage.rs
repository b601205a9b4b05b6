//! The accept path against arbitrary bytes and descriptors written to an address by
//! a raw peer, followed by one well-formed connect: `accept` must return exactly
//! that connection, never an error, and leave no descriptor behind.
#![no_main]

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nix::sys::socket::{
    sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn pair(kind: SockType) -> (OwnedFd, OwnedFd) {
    socketpair(AddressFamily::Unix, kind, None, SockFlag::SOCK_CLOEXEC).expect("socketpair")
}

/// A descriptor of the kind `selector` names.
fn descriptor(selector: u8, keep: &mut Vec<OwnedFd>) -> OwnedFd {
    match selector % 5 {
        0 => pair(SockType::SeqPacket).1,
        1 => pair(SockType::Stream).1,
        2 => pair(SockType::Datagram).1,
        3 => nix::unistd::pipe().expect("pipe").0,
        _ => {
            let (kept, sent) = pair(SockType::SeqPacket);
            keep.push(kept);
            sent
        }
    }
}

fuzz_target!(|input: &[u8]| {
    runtime().block_on(async {
        let (address, bound) = tokio_imc::make_bound_socket().expect("bound");
        let mut keep = Vec::new();
        // Each chunk: [length byte, fd count byte, fd kind bytes..., data...]
        let mut rest = input;
        while rest.len() >= 2 {
            let (len, count) = (rest[0] as usize % 16, rest[1] as usize % 4);
            rest = &rest[2..];
            let kinds: Vec<u8> = rest.iter().take(count).copied().collect();
            rest = &rest[kinds.len()..];
            let data = &rest[..len.min(rest.len())];
            rest = &rest[data.len()..];
            let fds: Vec<OwnedFd> = kinds.iter().map(|&k| descriptor(k, &mut keep)).collect();
            let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
            let rights = [ControlMessage::ScmRights(&raw)];
            let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
            let _ = sendmsg::<()>(
                address.as_raw_fd(),
                &[IoSlice::new(data)],
                cmsgs,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            );
        }
        let mut client = address.connect().await.expect("a well-formed connect");
        client.send(b"good", &[]).await.expect("send");
        // A garbage chunk of 'c' plus one connected seqpacket end is a valid request
        // and may be accepted first; with their peers closed, those read as ended.
        drop(keep);
        loop {
            let mut server = bound.accept().await.expect("accept never fails on garbage");
            match server.recv().await {
                Ok(Some(message)) if &message.data[..] == b"good" => break,
                Ok(None) | Err(_) => continue,
                Ok(Some(other)) => panic!("a connection carried unexpected data: {other:?}"),
            }
        }
    });
});
