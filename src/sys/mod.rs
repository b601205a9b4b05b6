//! The system layer: every system call the crate makes and every `unsafe` block
//! in it. Nothing here imports from the layers above (only the control-message
//! codec, `crate::ancillary`, which is plain data).
//!
//! Flags are fixed here, once, for every caller: sends pass `MSG_NOSIGNAL` and
//! `MSG_DONTWAIT`, receives `MSG_CMSG_CLOEXEC` and `MSG_DONTWAIT`, and every
//! descriptor made here is close-on-exec (see [`msg`], [`socket::pair`]).
#![allow(unsafe_code)]

pub(crate) mod endpoint;
pub(crate) mod faults;
pub(crate) mod fd;
pub(crate) mod inherit;
pub(crate) mod memory;
pub(crate) mod msg;
pub(crate) mod reactor;
pub(crate) mod socket;
