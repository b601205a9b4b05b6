//! Handing descriptors to a child across `exec`, and taking the ones our parent
//! handed us.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use std::sync::{Mutex, PoisonError};

use nix::libc;

/// Arranges for `fds` to survive `exec` into the child that `command` spawns, at
/// their current numbers, and for every other descriptor to be close-on-exec there.
/// The descriptors move into the command and are closed with it in this process.
pub(crate) fn keep_across_exec(command: &mut std::process::Command, fds: Vec<OwnedFd>) {
    use std::os::unix::process::CommandExt;

    let numbers: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let hook = move || {
        // Owned here so they stay open until the command is dropped.
        let _owned = &fds;
        // close_range(3, ~0, CLOSE_RANGE_CLOEXEC) (Linux 5.11) marks every other
        // descriptor close-on-exec so nothing else leaks; on older kernels it fails
        // and our own descriptors were close-on-exec already.
        // SAFETY: a raw syscall, async-signal-safe as pre_exec requires; it changes
        // descriptor flags, not memory.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        for &fd in &numbers {
            // SAFETY: a raw syscall, async-signal-safe as pre_exec requires; it
            // changes the flags of `fd`, which is open (owned by `_owned`).
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe syscalls and allocates nothing.
    unsafe { command.pre_exec(hook) };
}

/// Takes ownership of descriptor `number`, which our parent passed us, once it is
/// known to be open, to have been inherited, and to pass `check`; until then it is
/// only borrowed. A descriptor that fails any of these is left exactly as it was:
/// open (if it was), its flags unchanged, owned by nobody.
///
/// A descriptor that survived `exec` has `FD_CLOEXEC` clear; everything this
/// process opened itself (Rust's standard library, Tokio and this crate all open
/// close-on-exec) has it set. So a close-on-exec number is refused, untouched: a
/// stale or forged variable cannot make us take, and later close, a descriptor
/// that something else in this process owns. `check` then proves the rest (in
/// [`crate::handoff`]: that it is the very file the parent named, and of the type
/// the caller needs) on a borrow that cannot outlive the call.
///
/// Each number is handed out once in the life of the process ([`TAKEN`], held
/// across the whole call and written before it returns), and stdio (0, 1, 2) is
/// never taken: so this is sound for any caller, whatever `number` it passes.
/// `check` runs under that lock and must not take descriptors itself.
pub(crate) fn take_inherited(
    number: RawFd,
    check: impl FnOnce(BorrowedFd<'_>) -> io::Result<()>,
) -> io::Result<OwnedFd> {
    let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
    if (0..=2).contains(&number) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "descriptor {number} is stdio (standard input, output or error), never a \
                 passed socket; it is refused"
            ),
        ));
    }
    if taken.contains(&number) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "descriptor {number} was already taken in this process; each is handed out once"
            ),
        ));
    }
    let flags = if number < 0 {
        -1
    } else {
        // SAFETY: F_GETFD on a number reads that descriptor's flags (or fails with
        // EBADF); it touches no memory and changes nothing.
        unsafe { libc::fcntl(number, libc::F_GETFD) }
    };
    if flags == -1 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("inherited descriptor {number} is not open in this process"),
        ));
    }
    if flags & libc::FD_CLOEXEC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "descriptor {number} was not inherited (it is close-on-exec, so this process \
                 opened it): the variable naming it is stale; it was left alone"
            ),
        ));
    }
    {
        // SAFETY: `borrow_raw` needs the descriptor to stay open for the borrow's
        // life. It is open (F_GETFD just succeeded). It is not close-on-exec, so it
        // was inherited across exec rather than opened by this process's Rust code,
        // and a descriptor inherited and named in the hand-off variable belongs to
        // the hand-off until taken: nothing else in the process owns it, so nothing
        // may close it (closing a descriptor one does not own breaks I/O safety).
        // It is not stdio, and it has not been taken before (checked above under
        // `TAKEN`, held until we return), so no `OwnedFd` for it exists that
        // could close it meanwhile.
        // The borrow is lent to `check` only, which must accept it for any
        // lifetime and so cannot keep it, and it ends before ownership is taken
        // below.
        let borrowed = unsafe { BorrowedFd::borrow_raw(number) };
        check(borrowed)?;
    }
    // SAFETY: the descriptor is open and inherited, owned by nothing else in this
    // process (see the borrow above, which has ended), and handed out this once
    // (recorded in `TAKEN` on the next line, under the same lock), so this
    // `OwnedFd` is its only owner.
    let fd = unsafe { OwnedFd::from_raw_fd(number) };
    taken.push(number);
    Ok(fd)
}

/// The numbers [`take_inherited`] handed out so far: each gets one owner, ever.
/// Kept by number, so two names for one number cannot both take it.
static TAKEN: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());
