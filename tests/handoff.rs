//! Handing descriptors to child processes, and every way taking them can fail.
//! Each case runs a real child: this test binary again, in a named role.

mod common;

use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{child, child_main, child_role, ensure, expect_success, fail, fails_with, run};
use tokio_imc::{blocking, handoff, make_bound_socket, ConnectedSocket, SocketAddress};

const TEST: &str = "handoff_cases";

/// `F_GETFD` on a raw number, as a child checks a descriptor it does not own:
/// `None` when it is not open, else whether it is close-on-exec.
fn cloexec_of(number: RawFd) -> Option<bool> {
    // SAFETY: F_GETFD reads the flags of a descriptor number (or fails with EBADF);
    // it touches no memory and neither takes nor closes anything.
    let flags = unsafe { nix::libc::fcntl(number, nix::libc::F_GETFD) };
    (flags != -1).then_some(flags & nix::libc::FD_CLOEXEC != 0)
}

/// Asserts that the descriptor at `number` is open and still inheritable: left
/// exactly as the parent passed it.
fn untouched(number: RawFd) -> io::Result<()> {
    ensure(
        cloexec_of(number) == Some(false),
        format!(
            "descriptor {number} was touched: F_GETFD says {:?}",
            cloexec_of(number)
        ),
    )
}

/// `device:inode` of a descriptor, as an entry names it.
fn file_id(fd: BorrowedFd<'_>) -> io::Result<String> {
    let stat = nix::sys::stat::fstat(fd).map_err(io::Error::from)?;
    Ok(format!("{}:{}", stat.st_dev, stat.st_ino))
}

/// The value `pass` gave the variable on `command`.
fn passed(command: &Command) -> io::Result<String> {
    command
        .get_envs()
        .find(|(key, _)| *key == handoff::ENV_VAR)
        .and_then(|(_, value)| value?.to_str())
        .map(str::to_owned)
        .ok_or_else(|| fail("pass set no variable"))
}

/// The number an entry of `value` gives `name`.
fn number_in(value: &str, name: &str) -> io::Result<RawFd> {
    value
        .split(',')
        .find_map(|entry| entry.strip_prefix(&format!("{name}=")))
        .and_then(|rest| rest.split(':').next())
        .and_then(|number| number.parse().ok())
        .ok_or_else(|| fail(format!("no entry {name} in {value}")))
}

/// A number the parent told the child in `variable`.
fn number_from_env(variable: &str) -> io::Result<RawFd> {
    std::env::var(variable)
        .map_err(io::Error::other)?
        .parse()
        .map_err(io::Error::other)
}

/// One way of taking a passed descriptor, for a child to try several.
type Attempt = fn() -> io::Result<()>;

/// The child side of every case, chosen by role.
async fn child_case(role: &str) -> io::Result<()> {
    match role {
        "missing" => {
            fails_with(
                SocketAddress::from_env(),
                ErrorKind::NotFound,
                "from_env with no variable",
            )?;
            Ok(())
        }
        "malformed" => {
            fails_with(
                SocketAddress::from_env(),
                ErrorKind::InvalidData,
                "from_env with a malformed variable",
            )?;
            Ok(())
        }
        "not-open" => {
            let err = fails_with(
                SocketAddress::from_env(),
                ErrorKind::NotFound,
                "from_env naming a closed number",
            )?;
            ensure(err.to_string().contains("not open"), format!("{err:?}"))
        }
        "not-inherited" => {
            // The variable names a descriptor this process opened itself (close-on-
            // exec, like everything Rust opens), device and inode right: it is
            // refused and left open.
            let file = std::fs::File::open("/dev/null")?;
            let number = file.as_raw_fd();
            std::env::set_var(
                handoff::ENV_VAR,
                format!("address={number}:{}", file_id(file.as_fd())?),
            );
            let err = fails_with(
                SocketAddress::from_env(),
                ErrorKind::InvalidData,
                "from_env naming a descriptor not inherited",
            )?;
            ensure(
                err.to_string().contains("not inherited"),
                format!("{err:?}"),
            )?;
            ensure(
                cloexec_of(number) == Some(true),
                "the descriptor was left alone",
            )?;
            drop(file);
            Ok(())
        }
        "wrong-name" => {
            let err = fails_with(
                SocketAddress::from_env(),
                ErrorKind::NotFound,
                "from_env with only another name passed",
            )?;
            ensure(err.to_string().contains("\"address\""), format!("{err:?}"))?;
            // The descriptor under the other name is still there to take.
            ConnectedSocket::from_env_named("other").map(drop)
        }
        "several" => {
            let value = std::env::var(handoff::ENV_VAR).map_err(io::Error::other)?;
            let address = SocketAddress::from_env()?;
            let mut control = ConnectedSocket::from_env_named("control")?;
            ensure(
                std::env::var(handoff::ENV_VAR).ok().as_deref() == Some(value.as_str()),
                "the variable is unchanged",
            )?;
            ensure(
                common::is_cloexec(address.as_fd()) && common::is_cloexec(control.as_fd()),
                "close-on-exec",
            )?;
            let mut connection = address.connect().await?;
            connection.send(b"via address", &[]).await?;
            control.send(b"via control", &[]).await?;
            // A grandchild inherits the variable but neither descriptor.
            let listing = Command::new("sh")
                .args(["-c", "echo \"var=[$TOKIO_IMC_FDS]\"; ls -l /proc/$$/fd"])
                .output()?;
            let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
            ensure(
                listing.contains(&format!("var=[{value}]")),
                format!("grandchild saw another variable: {listing}"),
            )?;
            for fd in [address.as_raw_fd(), control.as_raw_fd()] {
                let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))?;
                ensure(
                    !listing.contains(&target.display().to_string()),
                    format!("grandchild holds {fd}: {listing}"),
                )?;
            }
            // A grandchild that tries to take them is refused.
            let grandchild = child(TEST, "grandchild").spawn()?;
            tokio::task::spawn_blocking(move || expect_success(grandchild))
                .await
                .map_err(io::Error::other)
        }
        "grandchild" => {
            let value = std::env::var(handoff::ENV_VAR).map_err(io::Error::other)?;
            for name in [handoff::ADDRESS, "control"] {
                let number = number_in(&value, name)?;
                let before = cloexec_of(number);
                let err = handoff::take(name)
                    .err()
                    .ok_or_else(|| fail(format!("the grandchild took {name}")))?;
                ensure(
                    matches!(err.kind(), ErrorKind::NotFound | ErrorKind::InvalidData),
                    format!("{err:?}"),
                )?;
                ensure(
                    cloexec_of(number) == before,
                    format!("the grandchild's descriptor {number} was touched"),
                )?;
            }
            Ok(())
        }
        "inherits-nothing-else" => {
            let inheritable = number_from_env("INHERITABLE_FD")?;
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
                .env(handoff::ENV_VAR, "address=900:1:1")
                .spawn()?,
        );
        expect_success(child(TEST, "not-inherited").spawn()?);

        let (a, _b) = ConnectedSocket::pair()?;
        let mut command = child(TEST, "wrong-name");
        handoff::pass(&mut command, &[("other", a.as_fd())])?;
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
        fails_with(
            handoff::pass(&mut command, &[("a b", address.as_fd())]),
            ErrorKind::InvalidInput,
            "pass with a bad name",
        )?;
        fails_with(
            handoff::pass(
                &mut command,
                &[("x", address.as_fd()), ("x", address.as_fd())],
            ),
            ErrorKind::InvalidInput,
            "pass with a repeated name",
        )?;
        handoff::pass(&mut command, &[("x", address.as_fd())])?;
        fails_with(
            handoff::pass(&mut command, &[("y", address.as_fd())]),
            ErrorKind::InvalidInput,
            "a second pass on one command",
        )?;
        Ok(())
    });
}

/// Waits, briefly, until `done`; false if it never was.
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + common::HANG;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Takes the address on one thread while three others read the variable in a
/// loop: every read sees the value the parent set, before, during and after.
fn take_while_others_read() -> io::Result<SocketAddress> {
    const READS: usize = 2000;
    let original = std::env::var(handoff::ENV_VAR).map_err(io::Error::other)?;
    let stop = AtomicBool::new(false);
    let reads = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let now = std::env::var(handoff::ENV_VAR);
                        if now.as_deref() != Ok(original.as_str()) {
                            return Err(format!("{now:?}"));
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        let all_done = || readers.iter().all(|reader| reader.is_finished());
        let started = wait_until(|| reads.load(Ordering::Relaxed) >= READS || all_done());
        let taken = scope
            .spawn(SocketAddress::from_env)
            .join()
            .unwrap_or_else(|_| Err(fail("the taking thread panicked")));
        let mark = reads.load(Ordering::Relaxed);
        let went_on = wait_until(|| reads.load(Ordering::Relaxed) >= mark + READS || all_done());
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            reader
                .join()
                .map_err(|_| fail("a reader panicked"))?
                .map_err(|seen| fail(format!("a reader saw the variable change: {seen}")))?;
        }
        ensure(started && went_on, "the readers ran around the take")?;
        taken
    })
}

#[test]
fn take_on_one_thread_while_others_read_the_environment() {
    const TEST: &str = "take_on_one_thread_while_others_read_the_environment";
    if child_role().is_some() {
        child_main(|| async {
            let before = std::env::var(handoff::ENV_VAR).map_err(io::Error::other)?;
            let address = take_while_others_read()?;
            ensure(
                std::env::var(handoff::ENV_VAR).ok().as_deref() == Some(before.as_str()),
                "the variable is unchanged after take",
            )?;
            let mut connection = address.connect().await?;
            connection.send(b"taken on another thread", &[]).await
        });
    }
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let mut command = child(TEST, "child");
        handoff::pass(&mut command, &[(handoff::ADDRESS, address.as_fd())])?;
        let process = command.spawn()?;
        // With every other holder gone, a child that fails before connecting ends
        // the accept at once (`NotConnected`) instead of letting it hang.
        drop((command, address));
        let mut connection = common::bounded("accept", bound.accept()).await??;
        let message = common::bounded("the child's message", connection.recv())
            .await??
            .ok_or_else(|| fail("closed"))?;
        ensure(
            &message.data[..] == b"taken on another thread",
            "the address works",
        )?;
        expect_success(process);
        Ok(())
    });
}

#[test]
fn a_name_is_handed_out_once() {
    const TEST: &str = "a_name_is_handed_out_once";
    if child_role().is_some() {
        child_main(|| async {
            let first = SocketAddress::from_env()?;
            let number = first.as_raw_fd();
            let again: [(&str, Attempt); 3] = [
                ("take", || handoff::take(handoff::ADDRESS).map(drop)),
                ("from_env", || SocketAddress::from_env().map(drop)),
                // Another name for the same number.
                ("alias", || handoff::take("alias").map(drop)),
            ];
            for (what, take) in again {
                let err = fails_with(
                    take(),
                    ErrorKind::NotFound,
                    &format!("{what}: a second take"),
                )?;
                ensure(
                    err.to_string().contains("already taken"),
                    format!("{what}: {err:?}"),
                )?;
            }
            ensure(
                cloexec_of(number) == Some(true),
                "the first take still owns the descriptor",
            )?;
            // Two threads racing for one name: one wins.
            let (a, b) = std::thread::scope(|scope| {
                let a = scope.spawn(|| handoff::take("spare"));
                let b = scope.spawn(|| handoff::take("spare"));
                (a.join(), b.join())
            });
            let (a, b) = (
                a.map_err(|_| fail("panicked"))?,
                b.map_err(|_| fail("panicked"))?,
            );
            ensure(
                a.is_ok() != b.is_ok(),
                format!("one take of two wins: {a:?} {b:?}"),
            )?;
            let mut connection = first.connect().await?;
            connection.send(b"still mine", &[]).await
        });
    }
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let (spare, _spare_peer) = ConnectedSocket::pair()?;
        let mut command = child(TEST, "child");
        handoff::pass(
            &mut command,
            &[
                (handoff::ADDRESS, address.as_fd()),
                ("spare", spare.as_fd()),
            ],
        )?;
        let value = passed(&command)?;
        let number = number_in(&value, handoff::ADDRESS)?;
        command.env(
            handoff::ENV_VAR,
            format!("{value},alias={number}:{}", file_id(address.as_fd())?),
        );
        let process = command.spawn()?;
        // With every other holder gone, a child that fails before connecting ends
        // the accept at once (`NotConnected`) instead of letting it hang.
        drop((command, address));
        let mut connection = common::bounded("accept", bound.accept()).await??;
        let message = common::bounded("the child's message", connection.recv())
            .await??
            .ok_or_else(|| fail("closed"))?;
        ensure(&message.data[..] == b"still mine", "the first take works")?;
        expect_success(process);
        Ok(())
    });
}

#[test]
fn a_stale_entry_naming_another_file_is_refused_and_left_open() {
    const TEST: &str = "a_stale_entry_naming_another_file_is_refused_and_left_open";
    if let Some(role) = child_role() {
        child_main(|| async move {
            let number = number_from_env("STALE_FD")?;
            let expected = match role.as_str() {
                "stale" => "inode",
                "no-inode" => "device and inode",
                other => return Err(fail(format!("unknown role {other}"))),
            };
            for attempt in 0..2 {
                let err = fails_with(
                    SocketAddress::from_env(),
                    ErrorKind::InvalidData,
                    &format!("attempt {attempt}: from_env naming another file"),
                )?;
                ensure(
                    err.to_string().contains(expected),
                    format!("attempt {attempt}: {err:?}"),
                )?;
                untouched(number)?;
                fails_with(
                    handoff::take(handoff::ADDRESS),
                    ErrorKind::InvalidData,
                    "take naming another file",
                )?;
                untouched(number)?;
            }
            Ok(())
        });
    }
    run(|| async {
        let (address, _bound) = make_bound_socket()?;
        // Another socket, of a type an address may have, really inherited at a
        // number the variable names for `address`.
        let (decoy, _decoy_bound) = make_bound_socket()?;
        for (role, file) in [
            ("stale", Some(file_id(address.as_fd())?)),
            ("no-inode", None),
        ] {
            let mut command = child(TEST, role);
            handoff::pass(&mut command, &[("decoy", decoy.as_fd())])?;
            let number = number_in(&passed(&command)?, "decoy")?;
            let entry = match file {
                Some(file) => format!("address={number}:{file}"),
                None => format!("address={number}"),
            };
            command
                .env(handoff::ENV_VAR, entry)
                .env("STALE_FD", number.to_string());
            expect_success(command.spawn()?);
        }
        Ok(())
    });
}

#[test]
fn a_descriptor_of_the_wrong_type_is_refused_and_left_open() {
    const TEST: &str = "a_descriptor_of_the_wrong_type_is_refused_and_left_open";
    if child_role().is_some() {
        child_main(|| async {
            let number = number_in(
                &std::env::var(handoff::ENV_VAR).map_err(io::Error::other)?,
                handoff::ADDRESS,
            )?;
            let refusals: [(&str, Attempt); 3] = [
                ("SocketAddress", || SocketAddress::from_env().map(drop)),
                ("ConnectedSocket", || {
                    ConnectedSocket::from_env_named(handoff::ADDRESS).map(drop)
                }),
                ("blocking::SocketAddress", || {
                    blocking::SocketAddress::from_env().map(drop)
                }),
            ];
            for (what, take) in refusals {
                let err = fails_with(
                    take(),
                    ErrorKind::InvalidInput,
                    &format!("taking a pipe as a {what}"),
                )?;
                ensure(
                    err.to_string().contains("not a socket")
                        && err.to_string().contains("left open"),
                    format!("{what}: {err:?}"),
                )?;
                untouched(number)?;
            }
            // The entry was not taken: the pipe is still there, for whoever wants
            // it as what it is.
            let pipe = handoff::take(handoff::ADDRESS)?;
            ensure(
                pipe.as_raw_fd() == number && common::is_cloexec(pipe.as_fd()),
                "taken as a plain descriptor",
            )?;
            drop(pipe);
            ensure(cloexec_of(number).is_none(), "closed by its owner")
        });
    }
    run(|| async {
        let (read_end, _write_end) = common::pipe();
        let mut command = child(TEST, "child");
        handoff::pass(&mut command, &[(handoff::ADDRESS, read_end.as_fd())])?;
        expect_success(command.spawn()?);
        Ok(())
    });
}

#[test]
fn stdio_numbers_are_refused_as_stdio() {
    const TEST: &str = "stdio_numbers_are_refused_as_stdio";
    if child_role().is_some() {
        child_main(|| async {
            let err = fails_with(
                SocketAddress::from_env(),
                ErrorKind::InvalidData,
                "from_env naming a stdio number",
            )?;
            ensure(err.to_string().contains("stdio"), format!("{err:?}"))?;
            ensure(cloexec_of(1).is_some(), "stdout is still open")
        });
    }
    run(|| async {
        for entry in ["address=1", "address=0:1:1", "address=2:1:1"] {
            expect_success(child(TEST, "child").env(handoff::ENV_VAR, entry).spawn()?);
        }
        Ok(())
    });
}
