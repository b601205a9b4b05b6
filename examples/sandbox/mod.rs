//! The sandbox of `examples/sandboxed.rs`, shared with `examples/typed.rs`: five
//! layers that each hold on their own (see sandboxed.rs for what each does).
//! Call [`confine`] before any thread exists.

use std::io;

/// The examples' `main`: logs to stderr (`RUST_LOG`), then runs `inside` when
/// started with the argument `role` (the confined child), `outside` otherwise.
pub fn main(
    role: &str,
    inside: fn() -> io::Result<()>,
    outside: fn() -> io::Result<()>,
) -> io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(io::stderr)
        .init();
    if std::env::args().nth(1).as_deref() == Some(role) {
        inside()
    } else {
        outside()
    }
}

/// A current-thread runtime, made after confinement (no thread may exist
/// before `unshare(CLONE_NEWUSER)`).
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Confines this process for good: namespaces and an empty root, no
/// privileges, Landlock granting nothing, a seccomp allowlist. Returns how many
/// entries the (empty) root had, listed while it still could be.
pub fn confine() -> io::Result<usize> {
    let last_cap: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")?
        .trim()
        .parse()
        .map_err(io::Error::other)?;
    namespaces_and_empty_root()?;
    // (Listed now: from the next layer on, not even the empty root can be read.)
    let entries = std::fs::read_dir("/")?.count();
    no_privileges(last_cap)?;
    landlock_nothing()?;
    seccomp_allowlist()?;
    Ok(entries)
}

/// One confinement step that must succeed: the child fails, naming it, if the
/// kernel refuses.
fn step<T, E: std::fmt::Display>(what: &str, result: Result<T, E>) -> io::Result<T> {
    result.map_err(|e| io::Error::other(format!("confinement step `{what}` failed: {e}")))
}

/// Layers 1 and 2: namespaces, then an empty root with the old one detached.
/// Must run before any thread exists (unshare(CLONE_NEWUSER) requires it).
pub fn namespaces_and_empty_root() -> io::Result<()> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    step(
        "unshare(user, mount, network)",
        unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET),
    )?;
    step(
        "setgroups deny",
        std::fs::write("/proc/self/setgroups", "deny"),
    )?;
    step(
        "uid_map",
        std::fs::write("/proc/self/uid_map", format!("0 {uid} 1")),
    )?;
    step(
        "gid_map",
        std::fs::write("/proc/self/gid_map", format!("0 {gid} 1")),
    )?;
    // Keep our mounts from propagating out, then build an empty root.
    step(
        "make / private",
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ),
    )?;
    let root = "/tmp";
    step(
        "mount an empty tmpfs",
        mount(
            Some("none"),
            root,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=4k,mode=0555"),
        ),
    )?;
    // pivot_root(".", "."): the old root ends up stacked on the new one, and
    // detaching it leaves no way back to the host's tree.
    step("chdir into the new root", nix::unistd::chdir(root))?;
    step("pivot_root", nix::unistd::pivot_root(".", "."))?;
    step("detach the old root", umount2(".", MntFlags::MNT_DETACH))?;
    step("chdir /", nix::unistd::chdir("/"))?;
    Ok(())
}

/// Layer 3: no new privileges, and no capabilities in any set.
pub fn no_privileges(last_cap: u32) -> io::Result<()> {
    use caps::CapSet;
    step("PR_SET_NO_NEW_PRIVS", nix::sys::prctl::set_no_new_privs())?;
    // The bounding set can only be dropped with CAP_SETPCAP, so first.
    let known = caps::all().iter().map(|c| c.index()).max().unwrap_or(0);
    if u32::from(known) < last_cap {
        return Err(io::Error::other(format!(
            "the kernel has capabilities up to {last_cap}, the caps crate knows only up to {known}"
        )));
    }
    for set in [
        CapSet::Bounding,
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        step(
            &format!("clear {set:?} capabilities"),
            caps::clear(None, set),
        )?;
        let left = step("read capabilities", caps::read(None, set))?;
        if !left.is_empty() {
            return Err(io::Error::other(format!("{set:?} still holds {left:?}")));
        }
    }
    Ok(())
}

/// Layer 4: Landlock handles every right it knows (ABI 6 and later: the
/// filesystem, TCP, abstract sockets and signals) and grants none.
pub fn landlock_nothing() -> io::Result<()> {
    use landlock::{
        Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetStatus,
        Scope, ABI,
    };
    let abi = ABI::V6;
    let status = step(
        "Landlock",
        Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(abi))
            .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
            .and_then(|r| r.scope(Scope::from_all(abi)))
            .and_then(|r| r.create())
            .and_then(|r| r.restrict_self()),
    )?;
    if status.ruleset != RulesetStatus::FullyEnforced {
        return Err(io::Error::other(format!(
            "Landlock is only {:?}",
            status.ruleset
        )));
    }
    Ok(())
}

/// Layer 5: a seccomp allowlist of what the child does from here on (its
/// runtime, tokio-imc's calls, reading and writing the descriptors it is
/// given), and `socket` only for `AF_UNIX`. Anything else fails with `EPERM`.
pub fn seccomp_allowlist() -> io::Result<()> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    };
    let allowed = [
        // Memory, threads' bookkeeping, signals, time, exit.
        nix::libc::SYS_brk,
        nix::libc::SYS_mmap,
        nix::libc::SYS_munmap,
        nix::libc::SYS_mremap,
        nix::libc::SYS_mprotect,
        nix::libc::SYS_madvise,
        nix::libc::SYS_futex,
        nix::libc::SYS_sched_yield,
        nix::libc::SYS_rt_sigaction,
        nix::libc::SYS_rt_sigprocmask,
        nix::libc::SYS_rt_sigreturn,
        nix::libc::SYS_sigaltstack,
        nix::libc::SYS_clock_gettime,
        nix::libc::SYS_clock_nanosleep,
        nix::libc::SYS_getrandom,
        nix::libc::SYS_gettid,
        nix::libc::SYS_getpid,
        nix::libc::SYS_prctl,
        nix::libc::SYS_sched_getaffinity,
        nix::libc::SYS_exit,
        nix::libc::SYS_exit_group,
        nix::libc::SYS_restart_syscall,
        // The runtime's reactor.
        nix::libc::SYS_epoll_create1,
        nix::libc::SYS_epoll_ctl,
        nix::libc::SYS_epoll_wait,
        nix::libc::SYS_epoll_pwait,
        nix::libc::SYS_eventfd2,
        // Descriptors: tokio-imc's protocol, and reading and writing what arrives.
        nix::libc::SYS_socketpair,
        nix::libc::SYS_pipe2,
        nix::libc::SYS_sendmsg,
        // send(2) of a record without descriptors is sendto(2).
        nix::libc::SYS_sendto,
        nix::libc::SYS_recvmsg,
        nix::libc::SYS_getsockopt,
        nix::libc::SYS_setsockopt,
        nix::libc::SYS_getsockname,
        nix::libc::SYS_getpeername,
        nix::libc::SYS_shutdown,
        nix::libc::SYS_fcntl,
        nix::libc::SYS_ioctl,
        nix::libc::SYS_poll,
        nix::libc::SYS_ppoll,
        nix::libc::SYS_close,
        nix::libc::SYS_read,
        nix::libc::SYS_write,
        nix::libc::SYS_writev,
        nix::libc::SYS_lseek,
        nix::libc::SYS_fstat,
        // Which filesystem a received memory object lives on (huge pages are refused).
        nix::libc::SYS_fstatfs,
        nix::libc::SYS_statx,
        nix::libc::SYS_newfstatat,
        // What the escape attempts call: the filter is not what stops them
        // (the layers below are), so that each shows its own reason.
        nix::libc::SYS_openat,
        nix::libc::SYS_mkdir,
        nix::libc::SYS_mkdirat,
        nix::libc::SYS_chroot,
        nix::libc::SYS_chdir,
        nix::libc::SYS_getdents64,
        nix::libc::SYS_connect,
    ];
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> =
        allowed.iter().map(|&call| (call, Vec::new())).collect();
    let unix_only = step(
        "seccomp condition",
        SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            nix::libc::AF_UNIX as u64,
        ),
    )?;
    rules.insert(
        nix::libc::SYS_socket,
        vec![step("seccomp rule", SeccompRule::new(vec![unix_only]))?],
    );
    let arch = step("seccomp architecture", std::env::consts::ARCH.try_into())?;
    let filter = step(
        "seccomp filter",
        SeccompFilter::new(
            rules,
            SeccompAction::Errno(nix::libc::EPERM as u32),
            SeccompAction::Allow,
            arch,
        ),
    )?;
    let program: seccompiler::BpfProgram = step("seccomp program", filter.try_into())?;
    step("seccomp", seccompiler::apply_filter(&program))
}
