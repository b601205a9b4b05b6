//! Handing sockets to a child process, in the spirit of systemd's `LISTEN_FDS`.
//!
//! The parent calls [`pass`] on a [`std::process::Command`] (for
//! `tokio::process::Command`, use its `as_std_mut()`): each descriptor is
//! duplicated, kept open across `exec` in the child, and named in the child's
//! environment as `TOKIO_IMC_FDS=name=number:device:inode,...`, where `device` and
//! `inode` are the descriptor's `st_dev` and `st_ino` (from `fstat`). Every other
//! descriptor of the parent is close-on-exec in the child
//! (`close_range(CLOSE_RANGE_CLOEXEC)`), so nothing else leaks into it.
//!
//! The child calls [`take`] (or [`SocketAddress::from_env`](crate::SocketAddress::from_env),
//! [`SocketAddress::from_env_named`](crate::SocketAddress::from_env_named),
//! [`ConnectedSocket::from_env_named`](crate::ConnectedSocket::from_env_named)), which
//! finds the entry and checks, on the descriptor only borrowed, that its number
//!
//! - is open;
//! - is not close-on-exec, so it really was inherited (everything a Rust process
//!   opens itself is close-on-exec);
//! - refers to the file the entry names: the same device and inode;
//! - and, for `from_env` and `from_env_named`, is a connected `AF_UNIX` socket of
//!   the type they need.
//!
//! Only then does it take ownership and make the descriptor close-on-exec. A
//! descriptor that fails a check is left as it was, open, for whoever owns it. One
//! that is only of the wrong type was really passed under that name, so its entry
//! stays untaken: `take(name)` can still take it as a plain descriptor (to close
//! it, or use it as what it is); until taken it stays inheritable, as every
//! inherited descriptor is.
//!
//! Each entry is handed out at most once per process: a second `take` of a name
//! (or of another name for the same number) fails with `NotFound`. Until it is
//! taken, a passed descriptor belongs to this module: nothing else in the process
//! may close it.
//!
//! # The environment is never changed
//!
//! `take` only reads the environment. Changing it while another thread reads it
//! (C code calls `getenv` for DNS resolution, time zones, locales) is a data race,
//! which is why `std::env::set_var` is `unsafe` in edition 2024; so which entries
//! were taken is recorded in this process instead, and the variable keeps its value.
//!
//! A grandchild spawned without [`pass`] (which replaces the variable) inherits it,
//! naming descriptors it does not have. That is safe: a taken descriptor is
//! close-on-exec, so the grandchild does not inherit it, and whatever the grandchild
//! has at that number is not open (`NotFound`), close-on-exec because it opened it
//! itself (`InvalidData`), or another file, with another device or inode
//! (`InvalidData`). In each case nothing is taken and the descriptor is left alone.
//! To spare a grandchild the stale variable, `command.env_remove(ENV_VAR)`. A
//! descriptor this process never took is still inheritable, and a grandchild that
//! inherits it may take it: it is the same file.
//!
//! # Refused entries
//!
//! Descriptors 0, 1 and 2 are refused (`InvalidData`) whatever the entry says: they
//! are stdio (standard input, output and error), which `pass` never names, and
//! dropping one taken as a passed socket would close stdio. An entry without the
//! device and inode (`name=number`) is refused too: it cannot be checked against
//! the descriptor.
//!
//! The device is named as well as the inode because an inode number is unique only
//! within one file system: sockets and pipes live in the kernel's pseudo file
//! systems, files in others, and their inode numbers can coincide. The pair
//! identifies one file.
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

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::libc;

use crate::sys;

/// The environment variable that names passed descriptors:
/// `name=number:device:inode` entries separated by commas.
pub const ENV_VAR: &str = "TOKIO_IMC_FDS";

/// The name [`SocketAddress::from_env`](crate::SocketAddress::from_env) looks for.
pub const ADDRESS: &str = "address";

/// Which file a descriptor refers to: `st_dev` and `st_ino`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    device: libc::dev_t,
    inode: libc::ino_t,
}

impl FileId {
    fn of(fd: BorrowedFd<'_>) -> io::Result<FileId> {
        let (device, inode) = sys::fd::file_identity(fd)?;
        Ok(FileId { device, inode })
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.device, self.inode)
    }
}

/// One parsed entry of the variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry<'a> {
    name: &'a str,
    number: RawFd,
    file: FileId,
}

/// Passes `fds` to the child that `command` will spawn, each under its name.
///
/// Names are non-empty and made of ASCII letters, digits, `_`, `-` and `.`. The
/// duplicates live in `command` until it is dropped; spawn it once.
///
/// # Errors
///
/// `InvalidInput` for a bad or repeated name, or when `command` already has
/// descriptors passed; an OS error when a descriptor cannot be duplicated or
/// inspected.
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
        let file = FileId::of(copy.as_fd())?;
        entries.push(format!("{name}={}:{file}", copy.as_raw_fd()));
        owned.push(copy);
    }
    command.env(ENV_VAR, entries.join(","));
    sys::inherit::keep_across_exec(command, owned);
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

/// Takes the descriptor the parent passed under `name`: checks that it is open,
/// inherited and the very file the parent named, then takes ownership and makes
/// it close-on-exec. See the [module docs](self) for the checks.
///
/// The environment is only read, never changed, so this may be called from any
/// thread at any time. Each entry is handed out once per process.
///
/// # Errors
///
/// - `NotFound` when the variable or the name is missing, when the entry was
///   already taken, or when its number is not an open descriptor.
/// - `InvalidData` when the variable is malformed (not Unicode, an entry that is
///   not `name=number:device:inode`, or names descriptor 0, 1 or 2, which are
///   stdio), or names a descriptor that was not inherited (close-on-exec: one this
///   process opened itself) or that is another file than the entry names (another
///   device or inode: a stale variable). The descriptor is then left alone.
pub fn take(name: &str) -> io::Result<OwnedFd> {
    take_checked(name, |_| Ok(()))
}

/// As [`take`], but takes the descriptor only if `check` accepts it, on a borrow.
/// When `check` fails, its error is returned (its kind kept, the entry named), and
/// the descriptor is left open and untouched, its entry untaken.
///
/// `check` runs under the hand-off lock: it must not take descriptors itself.
pub(crate) fn take_checked(
    name: &str,
    check: impl FnOnce(BorrowedFd<'_>) -> io::Result<()>,
) -> io::Result<OwnedFd> {
    let value = match std::env::var(ENV_VAR) {
        Ok(value) => value,
        Err(std::env::VarError::NotPresent) => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no descriptors were passed to this process ({ENV_VAR} is not set)"),
            ))
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{ENV_VAR} is not valid Unicode"),
            ))
        }
    };
    let entries = parse(&value)?;
    let Some(&entry) = entries.iter().find(|entry| entry.name == name) else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no descriptor named {name:?} was passed to this process ({ENV_VAR}={value})"),
        ));
    };
    let number = entry.number;
    let fd = sys::inherit::take_inherited(number, |fd| {
        let found = FileId::of(fd)?;
        if found != entry.file {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the entry names device:inode {}, but descriptor {number} is {found}: \
                     another file, so the variable is stale; the descriptor was left alone",
                    entry.file
                ),
            ));
        }
        check(fd).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!(
                    "{err}; descriptor {number} was left open and not taken (handoff::take \
                     can still take it)"
                ),
            )
        })
    })
    .map_err(|err| io::Error::new(err.kind(), format!("{ENV_VAR} entry {name:?}: {err}")))?;
    sys::fd::set_cloexec(fd.as_fd())?;
    Ok(fd)
}

fn parse(value: &str) -> io::Result<Vec<Entry<'_>>> {
    value
        .split(',')
        .filter(|entry| !entry.is_empty())
        .map(parse_entry)
        .collect()
}

fn parse_entry(entry: &str) -> io::Result<Entry<'_>> {
    let malformed = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{ENV_VAR} entry {entry:?} is not name=number:device:inode"),
        )
    };
    let (name, rest) = entry.split_once('=').ok_or_else(malformed)?;
    let mut fields = rest.splitn(3, ':');
    let number: RawFd = fields
        .next()
        .and_then(|number| number.parse().ok())
        .filter(|number| *number >= 0)
        .ok_or_else(malformed)?;
    if number <= 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{ENV_VAR} entry {entry:?} names descriptor {number}: descriptors 0, 1 and 2 \
                 are refused because they are stdio (standard input, output and error), \
                 never passed sockets"
            ),
        ));
    }
    let (Some(device), Some(inode)) = (fields.next(), fields.next()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{ENV_VAR} entry {entry:?} does not name the descriptor's device and inode \
                 (name=number:device:inode), so it cannot be checked; it is refused"
            ),
        ));
    };
    let file = FileId {
        device: device.parse().map_err(|_| malformed())?,
        inode: inode.parse().map_err(|_| malformed())?,
    };
    Ok(Entry { name, number, file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_refuses_garbage() {
        let file = |device, inode| FileId { device, inode };
        assert_eq!(
            parse("address=7:30:4001,log=12:8:2049").unwrap(),
            vec![
                Entry {
                    name: "address",
                    number: 7,
                    file: file(30, 4001)
                },
                Entry {
                    name: "log",
                    number: 12,
                    file: file(8, 2049)
                },
            ]
        );
        assert!(parse("").unwrap().is_empty());
        for bad in [
            "address",
            "address=x",
            "address=-1",
            "address=-1:1:2",
            "=9x",
            "address=7:x:1",
            "address=7:1:x",
            "address=7:1:2:3",
            "address=7:1:",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{bad}");
            assert!(
                err.to_string().contains("name=number:device:inode"),
                "{err}"
            );
        }
    }

    #[test]
    fn stdio_numbers_are_refused_as_stdio() {
        for bad in [
            "address=0",
            "address=1",
            "address=2:0:5",
            "x=3:1:1,address=1",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{bad}");
            assert!(err.to_string().contains("stdio"), "{err}");
            assert!(!err.to_string().contains("is not name="), "{err}");
        }
    }

    #[test]
    fn entries_without_device_and_inode_are_refused() {
        for bad in ["address=7", "address=7:30"] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{bad}");
            assert!(err.to_string().contains("device and inode"), "{err}");
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
