//! The `SCM_RIGHTS` control-data codec, in safe code.
//!
//! Control data is a run of `cmsghdr` records (see cmsg(3)): on Linux a header of
//! `{ size_t cmsg_len; int cmsg_level; int cmsg_type; }` followed by the payload,
//! each record padded to the alignment of `size_t`. We encode and parse those bytes
//! with plain arithmetic, so nothing here needs `unsafe`: the syscalls and the
//! adoption of received descriptors live in [`crate::sys`].

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use nix::libc;

/// The most descriptors one `SCM_RIGHTS` message may carry (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

const FD_SIZE: usize = size_of::<RawFd>();
const ALIGN: usize = size_of::<usize>();
const HEADER_LEN: usize = size_of::<libc::cmsghdr>();

const fn align(len: usize) -> usize {
    (len + ALIGN - 1) & !(ALIGN - 1)
}

/// `CMSG_LEN`: header plus `payload` bytes, without trailing padding.
const fn cmsg_len(payload: usize) -> usize {
    align(HEADER_LEN) + payload
}

/// `CMSG_SPACE`: header plus `payload` bytes, with trailing padding.
const fn cmsg_space(payload: usize) -> usize {
    align(HEADER_LEN) + align(payload)
}

/// Room for a full `SCM_RIGHTS` record plus the records a peer can make the kernel
/// add by setting options on a socket it shares with us (`SO_PASSCRED`,
/// `SO_PASSPIDFD`, `SO_PASSSEC`), so that those cannot push our descriptors into
/// truncation. Anything larger is reported as truncated, never overrun.
pub const CONTROL_CAPACITY: usize = cmsg_space(MAX_FDS_PER_MESSAGE * FD_SIZE)
    + cmsg_space(size_of::<libc::ucred>())
    + cmsg_space(FD_SIZE)
    + 512;

// The receive buffer holds a full SCM_RIGHTS record plus credentials and a pidfd.
const _: () = assert!(CONTROL_CAPACITY >= 1032 + 32 + 24);

/// `SCM_PIDFD` (Linux 6.5): a pidfd the kernel installs when the socket has
/// `SO_PASSPIDFD`. Not in every libc release yet, so named here.
pub const SCM_PIDFD: i32 = 0x04;

/// An aligned, zeroed buffer for the control data `recvmsg` returns, large enough
/// for any message we accept. Zeroed because the kernel counts the alignment
/// padding after each record in `msg_controllen` without writing it: the prefix it
/// reports is only fully initialised if we initialised it first.
#[repr(C, align(8))]
pub struct ControlBuffer {
    bytes: [u8; CONTROL_CAPACITY],
}

impl ControlBuffer {
    /// A zeroed buffer.
    pub fn new() -> Self {
        ControlBuffer {
            bytes: [0; CONTROL_CAPACITY],
        }
    }

    /// The whole buffer, for `recvmsg` to fill.
    pub fn as_mut_bytes(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// The first `len` bytes (at most the whole buffer): what `recvmsg` reported.
    pub fn filled(&self, len: usize) -> &[u8] {
        &self.bytes[..len.min(CONTROL_CAPACITY)]
    }
}

/// An aligned buffer for one outgoing `SCM_RIGHTS` record. Only made when a message
/// carries descriptors.
#[repr(C, align(8))]
pub struct RightsBuffer {
    bytes: [u8; cmsg_space(MAX_FDS_PER_MESSAGE * FD_SIZE)],
}

impl RightsBuffer {
    /// A zeroed buffer.
    pub fn new() -> Self {
        RightsBuffer {
            bytes: [0; cmsg_space(MAX_FDS_PER_MESSAGE * FD_SIZE)],
        }
    }

    /// Writes one `SCM_RIGHTS` record carrying `fds` and returns its bytes (empty for
    /// no descriptors). All-or-nothing: too many descriptors is an error.
    pub fn encode(&mut self, fds: &[BorrowedFd<'_>]) -> io::Result<&[u8]> {
        if fds.len() > MAX_FDS_PER_MESSAGE {
            return Err(too_many_fds(fds.len()));
        }
        if fds.is_empty() {
            return Ok(&[]);
        }
        let payload = fds.len() * FD_SIZE;
        let out = &mut self.bytes[..cmsg_space(payload)];
        out[..ALIGN].copy_from_slice(&cmsg_len(payload).to_ne_bytes());
        out[ALIGN..ALIGN + 4].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        out[ALIGN + 4..ALIGN + 8].copy_from_slice(&libc::SCM_RIGHTS.to_ne_bytes());
        let body = &mut out[align(HEADER_LEN)..cmsg_len(payload)];
        for (slot, fd) in body.chunks_exact_mut(FD_SIZE).zip(fds) {
            slot.copy_from_slice(&fd.as_raw_fd().to_ne_bytes());
        }
        Ok(out)
    }
}

impl Default for RightsBuffer {
    fn default() -> Self {
        Self::new()
    }
}

/// The error for a message with more than [`MAX_FDS_PER_MESSAGE`] descriptors.
pub fn too_many_fds(count: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("a message can carry at most {MAX_FDS_PER_MESSAGE} descriptors (SCM_MAX_FD), not {count}"),
    )
}

/// One control record, as parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// `SCM_RIGHTS`: the descriptor numbers, as native-endian `int`s.
    Rights(FdNumbers<'a>),
    /// `SCM_PIDFD`: a descriptor the kernel installed although we did not ask.
    PidFd(FdNumbers<'a>),
    /// Any other record (credentials, security labels, ...): ignored.
    Other {
        /// `cmsg_level`
        level: i32,
        /// `cmsg_type`
        kind: i32,
    },
    /// A header that does not fit or claims a length shorter than itself.
    /// Parsing stops here.
    Malformed,
}

/// The descriptor numbers in one record's payload; a partial trailing `int` is ignored.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct FdNumbers<'a>(&'a [u8]);

impl<'a> Iterator for FdNumbers<'a> {
    type Item = RawFd;

    fn next(&mut self) -> Option<RawFd> {
        if self.0.len() < FD_SIZE {
            return None;
        }
        let (head, rest) = self.0.split_at(FD_SIZE);
        self.0 = rest;
        Some(RawFd::from_ne_bytes(head.try_into().ok()?))
    }
}

/// Parses the control bytes the kernel returned. Robust against any input: lengths
/// are checked against the buffer, and a bad header ends the walk with
/// [`Record::Malformed`] rather than reading past it.
pub fn parse(control: &[u8]) -> Records<'_> {
    Records { rest: control }
}

/// Iterator returned by [`parse`].
#[derive(Debug)]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(header) = self.rest.get(..HEADER_LEN) else {
            self.rest = &[];
            return Some(Record::Malformed);
        };
        let len = usize::from_ne_bytes(header[..ALIGN].try_into().ok()?);
        let level = i32::from_ne_bytes(header[ALIGN..ALIGN + 4].try_into().ok()?);
        let kind = i32::from_ne_bytes(header[ALIGN + 4..ALIGN + 8].try_into().ok()?);
        if len < align(HEADER_LEN) || len > self.rest.len() {
            self.rest = &[];
            return Some(Record::Malformed);
        }
        let payload = &self.rest[align(HEADER_LEN)..len];
        self.rest = self.rest.get(align(len)..).unwrap_or(&[]);
        Some(match (level, kind) {
            (libc::SOL_SOCKET, libc::SCM_RIGHTS) => Record::Rights(FdNumbers(payload)),
            (libc::SOL_SOCKET, SCM_PIDFD) => Record::PidFd(FdNumbers(payload)),
            (level, kind) => Record::Other { level, kind },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, AsRawFd};

    fn encode(fds: &[BorrowedFd<'_>]) -> Vec<u8> {
        RightsBuffer::new().encode(fds).unwrap().to_vec()
    }

    fn record(level: i32, kind: i32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; cmsg_space(payload.len())];
        out[..ALIGN].copy_from_slice(&cmsg_len(payload.len()).to_ne_bytes());
        out[ALIGN..ALIGN + 4].copy_from_slice(&level.to_ne_bytes());
        out[ALIGN + 4..ALIGN + 8].copy_from_slice(&kind.to_ne_bytes());
        out[align(HEADER_LEN)..align(HEADER_LEN) + payload.len()].copy_from_slice(payload);
        out
    }

    fn ints(values: &[RawFd]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    /// Found by cargo-mutants (`<` taken for `<=` survived): a record of just a
    /// header (`CMSG_LEN(0)`, 16 bytes) is well-formed and carries nothing; the
    /// record after it is still read.
    #[test]
    fn a_header_only_record_is_empty_not_malformed() {
        let mut control = record(libc::SOL_SOCKET, libc::SCM_RIGHTS, &[]);
        assert_eq!(control.len(), 16);
        control.extend(record(libc::SOL_SOCKET, libc::SCM_RIGHTS, &ints(&[7])));
        let records: Vec<_> = parse(&control).collect();
        assert_eq!(records.len(), 2, "{records:?}");
        assert!(matches!(&records[0], Record::Rights(numbers) if (*numbers).count() == 0));
        assert!(matches!(&records[1], Record::Rights(numbers) if (*numbers).eq([7])));
    }

    #[test]
    fn sizes_match_the_kernel_abi() {
        assert_eq!(HEADER_LEN, 16);
        assert_eq!(cmsg_len(4), 20);
        assert_eq!(cmsg_space(4), 24);
        assert_eq!(cmsg_space(253 * 4), 1032);
    }

    #[test]
    fn no_fds_encode_to_nothing() {
        assert!(encode(&[]).is_empty());
        assert_eq!(parse(&[]).count(), 0);
    }

    #[test]
    fn one_fd_round_trips() {
        let stdin = std::io::stdin();
        let fd = stdin.as_fd();
        let bytes = encode(&[fd]);
        assert_eq!(bytes.len(), 24);
        let records: Vec<_> = parse(&bytes).collect();
        assert_eq!(records.len(), 1);
        match &records[0] {
            Record::Rights(fds) => assert_eq!(fds.collect::<Vec<_>>(), vec![fd.as_raw_fd()]),
            other => panic!("expected rights, got {other:?}"),
        }
    }

    #[test]
    fn max_fds_round_trip_and_one_more_is_refused() {
        let stdin = std::io::stdin();
        let fds = vec![stdin.as_fd(); MAX_FDS_PER_MESSAGE];
        let bytes = encode(&fds);
        assert_eq!(bytes.len(), 1032);
        let Some(Record::Rights(numbers)) = parse(&bytes).next() else {
            panic!("expected a rights record");
        };
        assert_eq!(numbers.count(), MAX_FDS_PER_MESSAGE);

        let over = vec![stdin.as_fd(); MAX_FDS_PER_MESSAGE + 1];
        let err = RightsBuffer::new().encode(&over).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("253"), "{err}");
    }

    #[test]
    fn truncated_header_is_malformed() {
        let bytes = record(libc::SOL_SOCKET, libc::SCM_RIGHTS, &ints(&[7]));
        let records: Vec<_> = parse(&bytes[..10]).collect();
        assert_eq!(records, vec![Record::Malformed]);
    }

    #[test]
    fn length_past_the_buffer_is_malformed() {
        let mut bytes = record(libc::SOL_SOCKET, libc::SCM_RIGHTS, &ints(&[7, 8]));
        bytes.truncate(cmsg_len(4)); // the kernel's MSG_CTRUNC cut, with the old length
        let records: Vec<_> = parse(&bytes).collect();
        assert_eq!(records, vec![Record::Malformed]);
    }

    #[test]
    fn length_below_header_is_malformed_and_stops() {
        let mut bytes = record(libc::SOL_SOCKET, libc::SCM_RIGHTS, &ints(&[7]));
        bytes[..ALIGN].copy_from_slice(&3usize.to_ne_bytes());
        bytes.extend(record(libc::SOL_SOCKET, libc::SCM_RIGHTS, &ints(&[9])));
        assert_eq!(parse(&bytes).collect::<Vec<_>>(), vec![Record::Malformed]);
    }

    #[test]
    fn unexpected_types_are_reported_and_walked_past() {
        let mut bytes = record(libc::SOL_SOCKET, libc::SCM_CREDENTIALS, &[0u8; 12]);
        bytes.extend(record(libc::SOL_SOCKET, SCM_PIDFD, &ints(&[42])));
        bytes.extend(record(libc::SOL_IP, 1, &[1, 2, 3]));
        bytes.extend(record(libc::SOL_SOCKET, libc::SCM_RIGHTS, &ints(&[5, 6])));
        let records: Vec<_> = parse(&bytes).collect();
        assert_eq!(records.len(), 4);
        assert_eq!(
            records[0],
            Record::Other {
                level: libc::SOL_SOCKET,
                kind: libc::SCM_CREDENTIALS
            }
        );
        let Record::PidFd(pidfd) = records[1] else {
            panic!("expected a pidfd record, got {:?}", records[1]);
        };
        assert_eq!(pidfd.collect::<Vec<_>>(), vec![42]);
        assert_eq!(
            records[2],
            Record::Other {
                level: libc::SOL_IP,
                kind: 1
            }
        );
        let Record::Rights(rights) = records[3] else {
            panic!("expected rights, got {:?}", records[3]);
        };
        assert_eq!(rights.collect::<Vec<_>>(), vec![5, 6]);
    }

    #[test]
    fn partial_trailing_int_is_ignored() {
        let mut payload = ints(&[11]);
        payload.extend([1, 2]);
        let bytes = record(libc::SOL_SOCKET, libc::SCM_RIGHTS, &payload);
        let Some(Record::Rights(numbers)) = parse(&bytes).next() else {
            panic!("expected rights");
        };
        assert_eq!(numbers.collect::<Vec<_>>(), vec![11]);
    }
}
