//! The typed record format (PROTOCOL.md, "Typed messages"): one tag byte, then
//! either the postcard encoding itself or the length of an encoding that
//! travels in a sealed memory object.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::slots::{self, SlotFd};
use crate::{Message, SharedMemory, MAX_FDS_PER_MESSAGE};

/// The encoding follows the tag in the record.
const INLINE: u8 = 0;
/// The record is the tag and a little-endian `u64` length; the record's first
/// descriptor is a sealed memory object whose first `length` bytes are the
/// encoding, and the slots index the descriptors after it.
const IN_SHARED_MEMORY: u8 = 1;
const SHARED_HEADER_LEN: usize = 1 + 8;

/// The default limit on one typed message's encoding: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;

/// The largest record (tag and encoding) a channel sends inline when the
/// socket's own limit cannot be read: 64 KiB.
pub(crate) const FALLBACK_RECORD_LIMIT: usize = 64 << 10;

/// The largest record `socket` takes (`SO_SNDBUF` minus 32 bytes, about
/// 208 KiB by default): longer encodings travel in shared memory. Measured
/// (`cargo bench --bench typed -- threshold`): one record is cheaper than a
/// sealed memory object at every size that fits (2.5x at 128 KiB), so the
/// threshold is the record limit itself.
pub(crate) fn record_limit(socket: BorrowedFd<'_>) -> usize {
    crate::sys::socket::send_buffer_size(socket)
        .map(|sndbuf| sndbuf.saturating_sub(32))
        .unwrap_or(FALLBACK_RECORD_LIMIT)
}

/// One record ready to send.
#[derive(Debug)]
pub(crate) struct Encoded {
    pub record: Vec<u8>,
    pub fds: Vec<SlotFd>,
}

/// Serializes `value` into one record (its slots' descriptors beside it):
/// inline if it is at most `record_limit` bytes, else in shared memory.
pub(crate) fn encode<S: Serialize + ?Sized>(
    value: &S,
    max: usize,
    record_limit: usize,
) -> io::Result<Encoded> {
    let (record, mut fds) = slots::serializing(
        || postcard::serialize_with_flavor(value, Limited::new(max)),
        |error| match error {
            postcard::Error::SerializeBufferFull => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the message's encoding is longer than this channel's maximum of {max} bytes"
                ),
            ),
            other => io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("could not serialize the message: {other}"),
            ),
        },
    )?;
    let encoding = &record[1..];
    if record.len() <= record_limit {
        check_fd_count(fds.len(), MAX_FDS_PER_MESSAGE)?;
        return Ok(Encoded { record, fds });
    }
    check_fd_count(fds.len(), MAX_FDS_PER_MESSAGE - 1)?;
    let memory = SharedMemory::sealed_copy_fd(encoding)?;
    fds.insert(0, SlotFd::Owned(memory));
    let mut header = Vec::with_capacity(SHARED_HEADER_LEN);
    header.push(IN_SHARED_MEMORY);
    header.extend_from_slice(&(encoding.len() as u64).to_le_bytes());
    Ok(Encoded {
        record: header,
        fds,
    })
}

fn check_fd_count(count: usize, max: usize) -> io::Result<()> {
    if count > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a typed message with {count} descriptor slots; at most {max} fit one record"),
        ));
    }
    Ok(())
}

/// Deserializes one received record. Every error is `InvalidData` naming the
/// reason, and closes every descriptor the record carried.
pub(crate) fn decode<R: DeserializeOwned>(message: Message, max: usize) -> io::Result<R> {
    let Message { data, mut fds, .. } = message;
    match data.first() {
        Some(&INLINE) if data.len() - 1 > max => Err(invalid(format!(
            "a message of {} bytes, above this channel's maximum of {max}",
            data.len() - 1
        ))),
        Some(&INLINE) => decode_from(&data[1..], fds),
        Some(&IN_SHARED_MEMORY) => {
            let Ok(header) = <[u8; 8]>::try_from(&data[1..]) else {
                return Err(invalid(format!(
                    "a shared-memory record of {} bytes; its header is {SHARED_HEADER_LEN}",
                    data.len()
                )));
            };
            let length = u64::from_le_bytes(header);
            if length > max as u64 {
                return Err(invalid(format!(
                    "a message of {length} bytes, above this channel's maximum of {max}"
                )));
            }
            if fds.is_empty() {
                return Err(invalid(
                    "a shared-memory record without its memory object".into(),
                ));
            }
            let memory = SharedMemory::from_fd_to_read(fds.remove(0), max as u64, length as usize)
                .map_err(|error| invalid(format!("the message's memory object: {error}")))?;
            let Some(encoding) = memory.get(..length as usize) else {
                return Err(invalid(format!(
                    "the message's memory object holds {} bytes, fewer than the {length} its \
                     header says",
                    memory.len()
                )));
            };
            decode_from(encoding, fds)
        }
        Some(tag) => Err(invalid(format!(
            "a typed record with the unknown tag {tag}"
        ))),
        None => Err(invalid("an empty typed record".into())),
    }
}

fn decode_from<R: DeserializeOwned>(encoding: &[u8], fds: Vec<OwnedFd>) -> io::Result<R> {
    let (value, rest) = slots::deserializing(fds, || {
        postcard::take_from_bytes::<R>(encoding).map(|(value, rest)| (value, rest.len()))
    })?;
    if rest > 0 {
        return Err(invalid(format!(
            "{rest} trailing byte(s) after the message's encoding"
        )));
    }
    Ok(value)
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// A `Vec` flavor that starts with the inline tag and refuses to grow past
/// the channel's maximum (so a huge value fails early, not after allocating).
struct Limited {
    buf: Vec<u8>,
    max: usize,
    /// The length at which the next byte needs [`grow`](Self::grow): the
    /// buffer's capacity, or the longest record allowed if that comes first.
    /// Every byte is pushed by `try_push` (once per byte of a `Vec<u8>`, which
    /// serde sends element by element), so its fast path compares only this.
    end: usize,
}

impl Limited {
    fn new(max: usize) -> Limited {
        let mut buf = Vec::with_capacity(128);
        buf.push(INLINE);
        let end = buf.capacity().min(max.saturating_add(1));
        Limited { buf, max, end }
    }

    /// Room for `more` bytes (at least doubling), or `SerializeBufferFull` if
    /// the encoding would pass the maximum.
    #[cold]
    fn grow(&mut self, more: usize) -> postcard::Result<()> {
        let longest = self.max.saturating_add(1);
        let needed = self.buf.len().saturating_add(more);
        if needed > longest {
            return Err(postcard::Error::SerializeBufferFull);
        }
        let wanted = needed
            .max(self.buf.capacity().saturating_mul(2))
            .min(longest);
        self.buf.reserve_exact(wanted - self.buf.len());
        self.end = self.buf.capacity().min(longest);
        Ok(())
    }
}

impl postcard::ser_flavors::Flavor for Limited {
    type Output = Vec<u8>;

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if self.end - self.buf.len() < data.len() {
            self.grow(data.len())?;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    #[inline(always)]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        if self.buf.len() == self.end {
            self.grow(1)?;
        }
        self.buf.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.buf)
    }
}
