//! Handing sockets to a child process, in the spirit of systemd's `LISTEN_FDS`.
//!
//! The parent calls [`pass`] on a [`std::process::Command`] (for
//! `tokio::process::Command`, use its `as_std_mut()`): each descriptor is
//! duplicated, kept open across `exec` in the child, and named in the child's
//! environment as `TOKIO_IMC_FDS=name=number,name=number`. Every other descriptor of
//! the parent is close-on-exec in the child (`close_range(CLOSE_RANGE_CLOEXEC)`), so
//! nothing else leaks into it.
//!
//! The child calls [`take`] (or [`SocketAddress::from_env`](crate::SocketAddress::from_env),
//! [`SocketAddress::from_env_named`](crate::SocketAddress::from_env_named),
//! [`ConnectedSocket::from_env_named`](crate::ConnectedSocket::from_env_named)), which
//! finds the number, checks it is open, takes ownership, makes it close-on-exec and
//! removes its entry from the environment (the variable itself once empty), so
//! grandchildren inherit neither the descriptor nor a stale name.
//!
//! Descriptors keep their numbers: no `dup2` onto fixed slots happens in the child,
//! so no descriptor the runtime or the standard library holds there can be replaced.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use std::os::fd::AsFd;
//! use tokio_imc::{handoff, make_bound_socket};
//!
//! let (address, bound) = make_bound_socket()?;
//! let mut command = std::process::Command::new("/usr/bin/my-sandboxed-helper");
//! handoff::pass(&mut command, &[(handoff::ADDRESS, address.as_fd())])?;
//! let mut child = command.spawn()?;
//! drop(command); // closes this process's duplicates
//! let connection = bound.accept().await?;
//! # let _ = (connection, child.wait()); Ok(()) }
//! ```
//!
//! and in the helper: `let address = tokio_imc::SocketAddress::from_env()?;`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Mutex;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

use crate::sys;

/// The environment variable that names passed descriptors:
/// `name=number` entries separated by commas.
pub const ENV_VAR: &str = "TOKIO_IMC_FDS";

/// The name [`SocketAddress::from_env`](crate::SocketAddress::from_env) looks for.
pub const ADDRESS: &str = "address";

/// Serialises reading and rewriting the variable, so each number is taken once.
static ENV_LOCK: Mutex<()> = Mutex::new(());

/// Passes `fds` to the child that `command` will spawn, each under its name.
///
/// Names are non-empty and made of ASCII letters, digits, `_`, `-` and `.`. The
/// duplicates live in `command` until it is dropped; spawn it once.
///
/// # Errors
///
/// `InvalidInput` for a bad or repeated name, or when `command` already has
/// descriptors passed; an OS error when a descriptor cannot be duplicated.
pub fn pass(command: &mut std::process::Command, fds: &[(&str, BorrowedFd<'_>)]) -> io::Result<()> {
    // `get_envs` also lists variables the command removes (with no value).
    if command
        .get_envs()
        .any(|(key, value)| key == ENV_VAR && value.is_some())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors were already passed to this command: pass them all in one call",
        ));
    }
    let mut owned = Vec::with_capacity(fds.len());
    let mut entries = Vec::with_capacity(fds.len());
    for (index, (name, fd)) in fds.iter().enumerate() {
        check_name(name)?;
        if fds[..index].iter().any(|(earlier, _)| earlier == name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("descriptor name {name:?} is passed twice"),
            ));
        }
        let copy = fd.try_clone_to_owned()?;
        entries.push(format!("{name}={}", std::os::fd::AsRawFd::as_raw_fd(&copy)));
        owned.push(copy);
    }
    command.env(ENV_VAR, entries.join(","));
    sys::keep_across_exec(command, owned);
    Ok(())
}

fn check_name(name: &str) -> io::Result<()> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "descriptor name {name:?} must be non-empty ASCII letters, digits, '_', '-' or '.'"
            ),
        ))
    }
}

/// Takes the descriptor the parent passed under `name`: checks it is open, takes
/// ownership, makes it close-on-exec, and removes its entry from the environment.
///
/// Call it early, before other threads read the environment: changing the
/// environment while another thread reads it is a data race in C libraries.
///
/// # Errors
///
/// `NotFound` when the variable or the name is missing (or was already taken) or
/// the number is not an open descriptor; `InvalidData` when the variable is
/// malformed, or names a descriptor that was not inherited (one this process
/// opened itself, which is then left alone).
pub fn take(name: &str) -> io::Result<OwnedFd> {
    let _guard = ENV_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let value = std::env::var(ENV_VAR).map_err(|_| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no descriptors were passed to this process ({ENV_VAR} is not set)"),
        )
    })?;
    let entries = parse(&value)?;
    let Some(&(_, number)) = entries.iter().find(|(entry, _)| *entry == name) else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no descriptor named {name:?} was passed to this process ({ENV_VAR}={value})"),
        ));
    };
    let rest: Vec<String> = entries
        .iter()
        .filter(|(entry, _)| *entry != name)
        .map(|(entry, fd)| format!("{entry}={fd}"))
        .collect();
    if rest.is_empty() {
        std::env::remove_var(ENV_VAR);
    } else {
        std::env::set_var(ENV_VAR, rest.join(","));
    }
    let fd = sys::adopt_inherited(number)?;
    fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(io::Error::from)?;
    Ok(fd)
}

fn parse(value: &str) -> io::Result<Vec<(&str, RawFd)>> {
    value
        .split(',')
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let malformed = || {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{ENV_VAR} entry {entry:?} is not name=number"),
                )
            };
            let (name, number) = entry.split_once('=').ok_or_else(malformed)?;
            let number: RawFd = number.parse().map_err(|_| malformed())?;
            if number < 3 {
                return Err(malformed());
            }
            Ok((name, number))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_refuses_garbage() {
        assert_eq!(
            parse("address=7,log=12").unwrap(),
            vec![("address", 7), ("log", 12)]
        );
        assert!(parse("").unwrap().is_empty());
        for bad in ["address", "address=x", "address=-1", "address=1", "=9x"] {
            assert_eq!(
                parse(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidData,
                "{bad}"
            );
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("address").is_ok());
        assert!(check_name("svc.v1-a_b").is_ok());
        for bad in ["", "a=b", "a,b", "a b", "é"] {
            assert_eq!(
                check_name(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
    }
}
