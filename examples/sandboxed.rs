//! A confined child that has no filesystem at all still talks to its parent,
//! through the address it inherited. This is what Native Client needed the
//! protocol for.
//!
//! ```text
//! cargo run --example sandboxed
//! ```
//!
//! The parent binds an ordinary path-named Unix socket (the kind of name a sandbox
//! must not reach), makes a bound socket, and starts this program as the child with
//! the address. The child, before it starts any thread, enters new user, mount and
//! network namespaces and `chroot`s into an empty tmpfs: it then has no filesystem
//! names, no abstract socket namespace and no network. It shows that `/` is empty
//! and that connecting to the parent's path socket fails, then connects through its
//! address and exchanges messages.
//!
//! Where the kernel or its settings forbid those namespaces, the example says so
//! and exits 0 without pretending to confine anything.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use tokio_imc::{handoff, make_bound_socket, SocketAddress};

const PATH_VAR: &str = "SANDBOX_DEMO_PATH";

fn main() -> io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(io::stderr)
        .init();
    match std::env::args().nth(1).as_deref() {
        Some("child") => child(),
        _ => parent(),
    }
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn parent() -> io::Result<()> {
    let dir = std::env::temp_dir().join(format!("tokio-imc-sandbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("named.sock");
    let _ = std::fs::remove_file(&path);
    let named = UnixListener::bind(&path)?;
    UnixStream::connect(&path)?;
    println!(
        "[parent] bound a path-named socket at {}; connecting to it works here",
        path.display()
    );

    let result = runtime()?.block_on(async {
        let (address, bound) = make_bound_socket()?;
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command.arg("child").env(PATH_VAR, &path);
        handoff::pass(&mut command, &[(handoff::ADDRESS, address.as_fd())])?;
        let mut child = command.spawn()?;
        drop((command, address));
        println!(
            "[parent] started the child (pid {}) with only its address",
            child.id()
        );

        match bound.accept().await {
            Ok(mut connection) => {
                while let Some(message) = connection.recv().await? {
                    println!(
                        "[parent] from the sandbox: {:?}",
                        String::from_utf8_lossy(&message.data)
                    );
                    connection.send(b"the parent hears you", &[]).await?;
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
    drop(named);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// New user, mount and network namespaces, then `chroot` into an empty tmpfs.
/// Must run before any thread exists (unshare(CLONE_NEWUSER) requires it).
fn confine() -> io::Result<()> {
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET)?;
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    // Keep our mounts from propagating out, then build an empty root.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    let root = "/tmp";
    mount(
        Some("none"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=4k,mode=0555"),
    )?;
    nix::unistd::chroot(root)?;
    nix::unistd::chdir("/")?;
    Ok(())
}

fn child() -> io::Result<()> {
    let path = std::env::var(PATH_VAR).map_err(io::Error::other)?;
    // Take the inherited descriptor's number before anything else (no runtime yet:
    // the address is registered after confinement).
    let address_fd = handoff::take(handoff::ADDRESS)?;

    if let Err(reason) = confine() {
        println!("[child] confinement is not available here ({reason}); nothing was confined, skipping the demo");
        return Ok(());
    }
    let entries = std::fs::read_dir("/")?.count();
    println!("[child] confined: my root directory has {entries} entries, and I have no network");
    match UnixStream::connect(&path) {
        Ok(_) => return Err(io::Error::other("the sandbox reached a path-named socket")),
        Err(e) => println!("[child] connecting to {path} fails: {e}"),
    }

    runtime()?.block_on(async {
        let address = SocketAddress::try_from(address_fd)?;
        let mut connection = address.connect().await?;
        println!("[child] connected to my parent through the inherited address");
        connection
            .send(b"hello from inside the sandbox", &[])
            .await?;
        let reply = connection
            .recv()
            .await?
            .ok_or_else(|| io::Error::other("parent closed"))?;
        println!(
            "[child] parent says: {:?}",
            String::from_utf8_lossy(&reply.data)
        );
        Ok(())
    })
}
