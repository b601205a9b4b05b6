//! Deterministic system-call fault injection, for tests of this crate only.
//!
//! With the cargo feature `fault-injection` on, every system call the crate
//! makes first asks this module whether to fail, and a test can install a
//! [`FaultPlan`] on its thread: a seeded schedule that makes chosen calls fail
//! with an errno the kernel can really return for them, *instead of* making the
//! call (so the failure has no side effect, as the kernel's have none). With the
//! feature off, [`inject`] is an empty inline function and costs nothing.
//!
//! A plan is per thread: a current-thread runtime runs the whole crate on the
//! thread that drives it, so the plan covers every call a test's tasks make, and
//! tests running in parallel do not see each other's faults.
//!
//! **Never enable the feature outside tests.**

use std::io;

/// A kind of system call the crate makes, as fault injection sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Call {
    /// `socketpair(2)`.
    SocketPair,
    /// `send(2)` of a record without descriptors.
    Send,
    /// `sendmsg(2)` of a record with descriptors.
    SendMsg,
    /// `recvmsg(2)`.
    RecvMsg,
    /// `epoll_create1(2)` for a bound socket's address set.
    EpollCreate,
    /// `epoll_ctl(EPOLL_CTL_ADD)` into the address set.
    EpollAdd,
    /// `epoll_wait(2)` on the address set, with a zero timeout.
    EpollWait,
    /// Registering a descriptor with Tokio's reactor (`epoll_ctl` inside Tokio).
    Register,
    /// The first, unregistered attempt of an operation: the one place a spurious
    /// `EAGAIN` is honest, because what follows (registering) reports the
    /// descriptor's real readiness.
    FirstTry,
    /// `fcntl(F_DUPFD_CLOEXEC)`.
    Duplicate,
    /// `fstat(2)`.
    Fstat,
    /// `getsockopt(2)`, `setsockopt(2)` and `getpeername(2)` (validation, peer
    /// credentials, buffer sizes).
    SockOpt,
    /// `poll(2)` (telling end-of-stream from an empty record; waiting for a
    /// peer to hang up).
    Poll,
    /// `setsockopt(SO_PASSRIGHTS)` on a connection whose address refuses
    /// descriptors (`ENOPROTOOPT` before Linux 6.16: the receive-side check
    /// then works alone).
    PassRights,
    /// `timerfd_create(2)`/`timerfd_settime(2)` for addresses that expire.
    Timer,
}

#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
impl Call {
    /// Every kind.
    pub const ALL: [Call; 15] = [
        Call::SocketPair,
        Call::Send,
        Call::SendMsg,
        Call::RecvMsg,
        Call::EpollCreate,
        Call::EpollAdd,
        Call::EpollWait,
        Call::Register,
        Call::FirstTry,
        Call::Duplicate,
        Call::Fstat,
        Call::SockOpt,
        Call::Poll,
        Call::PassRights,
        Call::Timer,
    ];

    /// The errnos the kernel can return for this call on a valid descriptor:
    /// what a random plan picks from. (`EBADF` is never one: it would mean a bug
    /// in the crate, not a fault.)
    pub fn errnos(self) -> &'static [i32] {
        use nix::libc::*;
        match self {
            Call::SocketPair => &[EMFILE, ENFILE, ENOMEM],
            Call::Send => &[EINTR, ENOBUFS, ENOMEM, EPIPE, ECONNRESET],
            Call::SendMsg => &[EINTR, ENOBUFS, ENOMEM, EPIPE, ECONNRESET, ETOOMANYREFS],
            Call::RecvMsg => &[EINTR, ENOMEM, ECONNRESET],
            Call::EpollCreate => &[EMFILE, ENFILE, ENOMEM],
            Call::EpollAdd => &[ENOMEM, ENOSPC],
            Call::EpollWait => &[EINTR],
            Call::Register => &[ENOMEM, ENOSPC],
            Call::FirstTry => &[EAGAIN],
            Call::Duplicate => &[EMFILE],
            Call::Fstat => &[ENOMEM],
            Call::SockOpt => &[ENOBUFS, ENOMEM],
            Call::Poll => &[EINTR, ENOMEM],
            Call::PassRights => &[ENOPROTOOPT, ENOMEM],
            Call::Timer => &[EMFILE, ENFILE, ENOMEM],
        }
    }
}

#[cfg(feature = "fault-injection")]
pub use active::*;

/// Fails `call` with an injected errno when this thread's plan says so.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn inject(_call: Call) -> io::Result<()> {
    Ok(())
}

/// Runs `call` until it fails with something other than `EINTR`: an interrupted
/// call did nothing and is simply made again. `attempt` must ask [`inject`]
/// itself, so injected interruptions are retried like real ones.
pub(crate) fn retry_interrupted<R>(mut attempt: impl FnMut() -> io::Result<R>) -> io::Result<R> {
    loop {
        match attempt() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            done => return done,
        }
    }
}

#[cfg(feature = "fault-injection")]
mod active {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::io;

    use super::Call;

    /// A seeded schedule of faults for one thread (see [`FaultPlan::install`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use tokio_imc::faults::{Call, FaultPlan};
    ///
    /// // The first socketpair this thread makes fails with EMFILE.
    /// let plan = FaultPlan::new(0).fail_nth(Call::SocketPair, 1, nix::libc::EMFILE);
    /// let guard = plan.install();
    /// let err = tokio_imc::make_bound_socket().unwrap_err();
    /// assert_eq!(err.raw_os_error(), Some(nix::libc::EMFILE));
    /// assert!(tokio_imc::make_bound_socket().is_ok());
    /// assert_eq!(guard.report().injected_total(), 1);
    /// ```
    #[derive(Clone, Debug)]
    pub struct FaultPlan {
        seed: u64,
        /// Chance of a random fault per call, in millionths.
        rate_ppm: u32,
        calls: Vec<Call>,
        nth: Vec<(Call, u64, i32)>,
    }

    impl FaultPlan {
        /// A plan that injects nothing yet; `seed` drives its random faults.
        pub fn new(seed: u64) -> Self {
            FaultPlan {
                seed,
                rate_ppm: 0,
                calls: Call::ALL.to_vec(),
                nth: Vec::new(),
            }
        }

        /// Fails each call with chance `ppm` in a million, with an errno picked
        /// (from the seed) among [`Call::errnos`].
        pub fn random(mut self, ppm: u32) -> Self {
            self.rate_ppm = ppm.min(1_000_000);
            self
        }

        /// Limits random faults to these kinds of call.
        pub fn only(mut self, calls: &[Call]) -> Self {
            self.calls = calls.to_vec();
            self
        }

        /// Fails the `n`-th call (from 1) of kind `call` with `errno`.
        pub fn fail_nth(mut self, call: Call, n: u64, errno: i32) -> Self {
            self.nth.push((call, n, errno));
            self
        }

        /// Makes this the plan of the current thread until the guard is dropped.
        pub fn install(self) -> FaultGuard {
            let state = Active {
                rng: self.seed ^ 0x9e37_79b9_7f4a_7c15,
                plan: self,
                report: FaultReport::default(),
            };
            PLAN.with(|plan| *plan.borrow_mut() = Some(state));
            FaultGuard {
                _not_send: std::marker::PhantomData,
            }
        }
    }

    /// What a plan did so far.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct FaultReport {
        /// Calls made, by kind (faults included).
        pub calls: BTreeMap<Call, u64>,
        /// Faults injected, by kind and errno.
        pub injected: BTreeMap<(Call, i32), u64>,
    }

    impl FaultReport {
        /// Every call made.
        pub fn calls_total(&self) -> u64 {
            self.calls.values().sum()
        }

        /// Every fault injected.
        pub fn injected_total(&self) -> u64 {
            self.injected.values().sum()
        }

        /// Adds `other`'s counts to this report.
        pub fn merge(&mut self, other: &FaultReport) {
            for (call, n) in &other.calls {
                *self.calls.entry(*call).or_default() += n;
            }
            for (key, n) in &other.injected {
                *self.injected.entry(*key).or_default() += n;
            }
        }
    }

    /// The installed plan of this thread; dropping it removes the plan.
    #[derive(Debug)]
    pub struct FaultGuard {
        _not_send: std::marker::PhantomData<*const ()>,
    }

    impl FaultGuard {
        /// What the plan did so far.
        pub fn report(&self) -> FaultReport {
            PLAN.with(|plan| {
                plan.borrow()
                    .as_ref()
                    .map(|state| state.report.clone())
                    .unwrap_or_default()
            })
        }

        /// Stops injecting faults (keeps counting calls).
        pub fn pause(&self) {
            PLAN.with(|plan| {
                if let Some(state) = plan.borrow_mut().as_mut() {
                    state.plan.rate_ppm = 0;
                    state.plan.nth.clear();
                }
            });
        }
    }

    impl Drop for FaultGuard {
        fn drop(&mut self) {
            let _ = PLAN.try_with(|plan| plan.borrow_mut().take());
        }
    }

    struct Active {
        plan: FaultPlan,
        rng: u64,
        report: FaultReport,
    }

    impl Active {
        fn decide(&mut self, call: Call) -> Option<i32> {
            let count = self.report.calls.entry(call).or_default();
            *count += 1;
            let count = *count;
            let nth = self
                .plan
                .nth
                .iter()
                .find(|(kind, n, _)| *kind == call && *n == count)
                .map(|(_, _, errno)| *errno);
            let errno = nth.or_else(|| {
                if self.plan.rate_ppm == 0 || !self.plan.calls.contains(&call) {
                    return None;
                }
                let roll = self.next();
                if (roll % 1_000_000) as u32 >= self.plan.rate_ppm {
                    return None;
                }
                let errnos = call.errnos();
                Some(errnos[((roll >> 32) as usize) % errnos.len()])
            })?;
            *self.report.injected.entry((call, errno)).or_default() += 1;
            Some(errno)
        }

        /// splitmix64.
        fn next(&mut self) -> u64 {
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    thread_local! {
        static PLAN: RefCell<Option<Active>> = const { RefCell::new(None) };
    }

    /// Fails `call` with an injected errno when this thread's plan says so.
    pub(crate) fn inject(call: Call) -> io::Result<()> {
        let errno = PLAN
            .try_with(|plan| plan.borrow_mut().as_mut().and_then(|s| s.decide(call)))
            .ok()
            .flatten();
        match errno {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }
}
