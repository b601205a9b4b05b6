//! A confined child that has no filesystem, no network and no privileges still
//! talks to its parent, through the address it inherited. This is what Native
//! Client needed the protocol for.
//!
//! ```text
//! cargo run --example sandboxed
//! ```
//!
//! The parent listens where a sandbox must not reach: a path-named Unix socket,
//! an abstract-namespace Unix socket and TCP on 127.0.0.1. It makes a bound
//! socket and starts this program as the child with the address. Before it starts
//! any thread, the child confines itself, in layers that each hold on their own:
//!
//! 1. new user, mount and network namespaces (no abstract names, no network);
//! 2. `pivot_root` into an empty tmpfs and the old root detached (`MNT_DETACH`):
//!    no host path exists any more, not even through `..` or a second `chroot`;
//! 3. `PR_SET_NO_NEW_PRIVS`, and every capability dropped, the bounding set too;
//! 4. a Landlock ruleset that handles every filesystem and network right and
//!    grants none, and scopes abstract sockets and signals to the sandbox;
//! 5. a seccomp filter that allows only the system calls the child needs (and
//!    `socket` only for `AF_UNIX`); anything else fails with `EPERM`.
//!
//! Then it tries to get out: the classic chroot escape, opening a host path,
//! connecting to the parent's path-named socket, to its abstract name, and over
//! TCP. Each attempt must fail, and says why. It still connects through its
//! inherited address and exchanges descriptors with the parent both ways.
//!
//! Where the kernel forbids a step, the child says which and fails: it never
//! pretends to confine.

use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};

use nix::errno::Errno;
use tokio_imc::{handoff, make_bound_socket, SocketAddress};

mod sandbox;

const PATH_VAR: &str = "SANDBOX_DEMO_PATH";
const ABSTRACT_VAR: &str = "SANDBOX_DEMO_ABSTRACT";
const TCP_VAR: &str = "SANDBOX_DEMO_TCP";

fn main() -> io::Result<()> {
    sandbox::main("child", child, parent)
}

fn parent() -> io::Result<()> {
    let dir = std::env::temp_dir().join(format!("tokio-imc-sandbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("named.sock");
    let _ = std::fs::remove_file(&path);
    let named = UnixListener::bind(&path)?;
    let abstract_name = format!("tokio-imc-sandbox-{}", std::process::id());
    let abstract_listener =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(abstract_name.as_bytes())?)?;
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
    let tcp_address = tcp.local_addr()?;
    println!(
        "[parent] listening at {}, at the abstract name {abstract_name}, and on {tcp_address}",
        path.display()
    );

    let result = sandbox::runtime()?.block_on(async {
        let (address, bound) = make_bound_socket()?;
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command
            .arg("child")
            .env(PATH_VAR, &path)
            .env(ABSTRACT_VAR, &abstract_name)
            .env(TCP_VAR, tcp_address.to_string());
        handoff::pass(&mut command, &[(handoff::ADDRESS, address.as_fd())])?;
        let mut child = command.spawn()?;
        drop((command, address));
        println!(
            "[parent] started the child (pid {}) with only its address",
            child.id()
        );

        match bound.accept().await {
            Ok(mut connection) => {
                while let Some(mut message) = connection.recv().await? {
                    println!(
                        "[parent] from the sandbox: {:?}",
                        String::from_utf8_lossy(&message.data)
                    );
                    // A descriptor from the sandbox: read what the child wrote.
                    if let Some(fd) = message.fds.pop() {
                        let mut text = String::new();
                        std::fs::File::from(fd).read_to_string(&mut text)?;
                        println!("[parent] read from the child's descriptor: {text:?}");
                    }
                    // And one into it: a memory file with a note.
                    let mut note = memory_file("parent note")?;
                    note.write_all(b"written by the parent")?;
                    note.rewind()?;
                    connection
                        .send(b"the parent hears you", &[note.as_fd()])
                        .await?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                println!("[parent] the child dropped its address without connecting");
            }
            Err(e) => return Err(e),
        }
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .map_err(io::Error::other)??;
        println!("[parent] the child exited with {status}");
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("child failed: {status}")))
        }
    });
    drop((named, abstract_listener, tcp));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn memory_file(name: &str) -> io::Result<std::fs::File> {
    let fd: OwnedFd = nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    Ok(std::fs::File::from(fd))
}

/// The errno an attempt failed with, by name, or what it got.
fn outcome<T>(result: io::Result<T>) -> String {
    match result {
        Ok(_) => "SUCCEEDED".to_string(),
        Err(e) => match e.raw_os_error() {
            Some(raw) => format!("{:?}", Errno::from_raw(raw)),
            None => format!("failed: {e}"),
        },
    }
}

/// Tries every way out. Returns whether each failed with the errno of the layer
/// that should stop it.
fn try_to_escape() -> bool {
    let path = std::env::var(PATH_VAR).unwrap_or_default();
    let abstract_name = std::env::var(ABSTRACT_VAR).unwrap_or_default();
    let tcp = std::env::var(TCP_VAR).unwrap_or_default();
    // The classic chroot escape: a deeper root, then `..` past it.
    let escape = (|| -> io::Result<()> {
        // Into a new directory if one can be made, else into the root itself.
        let deeper = if std::fs::create_dir("x").is_ok() {
            "x"
        } else {
            "."
        };
        nix::unistd::chroot(deeper)?;
        for _ in 0..64 {
            nix::unistd::chdir("..")?;
        }
        nix::unistd::chroot(".")?;
        Ok(())
    })();
    let attempts = [
        (
            "the chroot escape",
            outcome(escape),
            "EPERM",
            "no CAP_SYS_CHROOT",
        ),
        (
            "mkdir x",
            outcome(std::fs::create_dir("x")),
            "EACCES",
            "Landlock, and a read-only root",
        ),
        (
            "open /etc/passwd",
            outcome(std::fs::File::open("/etc/passwd")),
            "ENOENT",
            "the host's root is detached",
        ),
        (
            "connect to the parent's path-named socket",
            outcome(UnixStream::connect(&path)),
            "ENOENT",
            "the host's root is detached",
        ),
        (
            "connect to the parent's abstract name",
            outcome(
                SocketAddr::from_abstract_name(abstract_name.as_bytes())
                    .and_then(|addr| UnixStream::connect_addr(&addr)),
            ),
            "ECONNREFUSED",
            "a network namespace of its own",
        ),
        (
            "connect over TCP",
            outcome(std::net::TcpStream::connect(tcp.as_str())),
            "EPERM",
            "seccomp allows socket only for AF_UNIX",
        ),
    ];
    let mut as_expected = true;
    for (what, outcome, expected, layer) in attempts {
        if outcome == expected {
            println!("[child] {what}: {outcome} ({layer})");
        } else {
            println!("[child] {what}: {outcome}, UNEXPECTED: {layer} should give {expected}");
            as_expected = false;
        }
    }
    as_expected
}

fn child() -> io::Result<()> {
    // Take the inherited descriptor's number before anything else (no runtime yet:
    // the address is registered after confinement).
    let address_fd = handoff::take(handoff::ADDRESS)?;
    let entries = sandbox::confine()?;
    println!(
        "[child] confined: my root directory has {entries} entries, no capabilities, \
         Landlock fully enforced, seccomp allowlist on"
    );
    println!("[child] listing / now: {}", outcome(std::fs::read_dir("/")));
    if !try_to_escape() {
        return Err(io::Error::other(
            "an escape attempt did not fail as it should",
        ));
    }

    sandbox::runtime()?.block_on(async {
        let address = SocketAddress::try_from(address_fd)?;
        let mut connection = address.connect().await?;
        println!("[child] connected to my parent through the inherited address");
        // A descriptor out of the sandbox: one end of a pipe with a note in it.
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        std::fs::File::from(write_end).write_all(b"written inside the sandbox")?;
        connection
            .send(b"hello from inside the sandbox", &[read_end.as_fd()])
            .await?;
        drop(read_end);
        let mut reply = connection
            .recv()
            .await?
            .ok_or_else(|| io::Error::other("parent closed"))?;
        let note = reply
            .fds
            .pop()
            .ok_or_else(|| io::Error::other("the parent sent no descriptor"))?;
        let mut text = String::new();
        std::fs::File::from(note).read_to_string(&mut text)?;
        println!(
            "[child] parent says: {:?}, and its descriptor holds {text:?}",
            String::from_utf8_lossy(&reply.data)
        );
        Ok(())
    })
}
