//! A message: one record of bytes plus the descriptors that travelled with it.

use std::os::fd::OwnedFd;

use bytes::Bytes;

/// One received record: its bytes and the descriptors that came with it.
///
/// Each descriptor is owned: dropping the message closes those that were not taken
/// out. They are close-on-exec. Their *file status* flags (`O_NONBLOCK`, `O_APPEND`)
/// are whatever the sender set, and are shared with any duplicate the sender kept:
/// set the flags you need before using a received descriptor, and do not rely on
/// them staying set if the sender is not trusted.
///
/// The fields are public to read and take from; the type is `#[non_exhaustive]`,
/// so fields can be added without breaking callers (destructure with `..`).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Message {
    /// The record's bytes (may be empty when descriptors were sent).
    pub data: Bytes,
    /// The descriptors, in the order the sender listed them.
    pub fds: Vec<OwnedFd>,
}
