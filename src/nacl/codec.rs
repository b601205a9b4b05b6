//! Native Client's typed-message layout (`NaClImcSendTypedMessage` and
//! `NaClImcRecvTypedMessage` in native_client's `src/trusted/desc/nrd_xfer.c`),
//! in safe code: the bytes only; descriptors are counted, never touched here.
//!
//! ```text
//! u32 protocol = 0xd3c0de01 | u32 section length | 8 zero bytes   (little-endian)
//! section: entries, then the end tag 0xff, then zeros up to a multiple of 16
//!          (no section at all, length 0, for a message without descriptors)
//! entry:   u8 tag | u32 flags | [i32 type, u32 n, n bytes if flags & 0x10000] | payload
//! data:    the rest of the record
//! ```

use std::io;

/// `NACL_HANDLE_TRANSFER_PROTOCOL`.
pub const PROTOCOL: u32 = 0xd3c0_de01;
/// `sizeof(struct NaClInternalHeader)`.
pub const HEADER_LEN: usize = 16;
/// `NACL_DESC_TYPE_END_TAG`.
const END_TAG: u8 = 0xff;
/// `NACL_DESC_FLAGS_HAS_METADATA`: a metadata block follows the flags word.
const HAS_METADATA: u32 = 0x1_0000;
/// `NACL_ABI_IMC_USER_DESC_MAX`: descriptors per message.
pub const MAX_DESCRIPTORS: usize = 8;
/// `NACL_ABI_IMC_USER_BYTES_MAX`: user bytes per message.
pub const MAX_DATA: usize = 128 * 1024;

/// Type tags (`NACL_DESC_*` in `nacl_desc_base.h`, current numbering) of the
/// kinds tokio-imc represents.
mod tag {
    pub const HOST_IO: u8 = 2;
    pub const CONN_CAP_FD: u8 = 4;
    pub const SHM: u8 = 7;
    pub const TRANSFERABLE_DATA_SOCKET: u8 = 13;
}

/// What one descriptor entry says, besides the descriptor itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `NACL_DESC_HOST_IO`: a host file, with its `NACL_ABI_O_*` open flags.
    HostFile { open_flags: i32 },
    /// `NACL_DESC_CONN_CAP_FD`: a connection capability (an address).
    Address,
    /// `NACL_DESC_SHM`: shared memory of `size` bytes.
    SharedMemory { size: i64 },
    /// `NACL_DESC_TRANSFERABLE_DATA_SOCKET`: a connected socket.
    Socket,
}

/// One entry: its kind and NaCl's flags word (`NaClDesc.flags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The kind, with its payload.
    pub kind: Kind,
    /// `NaClDesc.flags`, without `HAS_METADATA` (metadata is skipped on receipt
    /// and never sent).
    pub flags: u32,
}

/// `NACL_ABI_O_ACCMODE` and the open flags NaCl's `NaClHostDescPosixTake` allows.
const ACCESS_MODE: i32 = 3;
const ALLOWED_OPEN_FLAGS: i32 = ACCESS_MODE | 0o100 | 0o200 | 0o1000 | 0o2000;

fn invalid_data(what: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("NaCl typed message: {}", what.into()),
    )
}

fn invalid_input(what: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("NaCl typed message: {}", what.into()),
    )
}

/// Checks what NaCl's receiver would refuse or lose: more than eight descriptors,
/// more than 128 KiB of data, open flags NaCl rejects, a negative size.
pub fn check_sendable(entries: &[Entry], data_len: usize) -> io::Result<()> {
    if entries.len() > MAX_DESCRIPTORS {
        return Err(invalid_input(format!(
            "{} descriptors; NaCl takes at most {MAX_DESCRIPTORS} (NACL_ABI_IMC_USER_DESC_MAX)",
            entries.len()
        )));
    }
    if data_len > MAX_DATA {
        return Err(invalid_input(format!(
            "{data_len} bytes of data; NaCl takes at most {MAX_DATA} (NACL_ABI_IMC_USER_BYTES_MAX)"
        )));
    }
    for entry in entries {
        if entry.flags & HAS_METADATA != 0 {
            return Err(invalid_input(
                "descriptor flags with HAS_METADATA (0x10000)",
            ));
        }
        match entry.kind {
            Kind::HostFile { open_flags } if !open_flags_valid(open_flags) => {
                return Err(invalid_input(format!(
                    "host file open flags {open_flags:#o} are not ones NaCl accepts"
                )))
            }
            Kind::SharedMemory { size } if size < 0 => {
                return Err(invalid_input(format!("shared memory size {size}")))
            }
            _ => {}
        }
    }
    Ok(())
}

fn open_flags_valid(open_flags: i32) -> bool {
    open_flags & !ALLOWED_OPEN_FLAGS == 0 && open_flags & ACCESS_MODE != ACCESS_MODE
}

/// The header and descriptor section for `entries` before `data_len` bytes of
/// data, as NaCl's sender writes them.
pub fn encode_prefix(entries: &[Entry], data_len: usize) -> io::Result<Vec<u8>> {
    check_sendable(entries, data_len)?;
    let mut section = Vec::new();
    if !entries.is_empty() {
        for entry in entries {
            let (tag, payload) = match entry.kind {
                Kind::HostFile { open_flags } => (tag::HOST_IO, open_flags.to_le_bytes().to_vec()),
                Kind::Address => (tag::CONN_CAP_FD, Vec::new()),
                Kind::SharedMemory { size } => (tag::SHM, size.to_le_bytes().to_vec()),
                Kind::Socket => (tag::TRANSFERABLE_DATA_SOCKET, Vec::new()),
            };
            section.push(tag);
            section.extend_from_slice(&entry.flags.to_le_bytes());
            section.extend_from_slice(&payload);
        }
        section.push(END_TAG);
        section.resize(section.len().next_multiple_of(16), 0);
    }
    let mut prefix = Vec::with_capacity(HEADER_LEN + section.len());
    prefix.extend_from_slice(&PROTOCOL.to_le_bytes());
    prefix.extend_from_slice(&(section.len() as u32).to_le_bytes());
    prefix.extend_from_slice(&[0; 8]);
    prefix.extend_from_slice(&section);
    Ok(prefix)
}

/// A record, parsed: its entries and where its data starts.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The entries, in order; entry `i` owns the `i`-th descriptor received.
    pub entries: Vec<Entry>,
    /// The offset of the user data in the record.
    pub data_start: usize,
}

/// Parses a record that arrived with `fd_count` descriptors. Stricter than NaCl's
/// own receiver, which stops at the first entry it cannot use and drops the rest
/// silently: here anything that is not exactly a well-formed message is an
/// error, and the caller closes every descriptor.
pub fn decode(record: &[u8], fd_count: usize) -> io::Result<Parsed> {
    let header = record.get(..HEADER_LEN).ok_or_else(|| {
        invalid_data(format!(
            "{} bytes, shorter than its 16-byte header",
            record.len()
        ))
    })?;
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if word(0) != PROTOCOL {
        return Err(invalid_data(format!(
            "protocol word {:#010x}, not {PROTOCOL:#010x}",
            word(0)
        )));
    }
    if header[8..].iter().any(|&b| b != 0) {
        return Err(invalid_data("non-zero header padding"));
    }
    let section_len = word(4) as usize;
    let section = record
        .get(HEADER_LEN..)
        .and_then(|rest| rest.get(..section_len))
        .ok_or_else(|| {
            invalid_data(format!(
                "a {section_len}-byte descriptor section in a {}-byte record",
                record.len()
            ))
        })?;
    let entries = parse_section(section)?;
    // Checked after the entries, whose errors say more. NaCl pads the section to a multiple of 16 (as `encode_prefix` does); a
    // length that is not would make the padding's tail read as data.
    if section_len % 16 != 0 {
        return Err(invalid_data(format!(
            "a {section_len}-byte descriptor section, not a multiple of 16"
        )));
    }
    if entries.len() != fd_count {
        return Err(invalid_data(format!(
            "{} descriptor entries but {fd_count} descriptors arrived",
            entries.len()
        )));
    }
    let data_start = HEADER_LEN + section_len;
    let data_len = record.len() - data_start;
    if data_len > MAX_DATA {
        return Err(invalid_data(format!(
            "{data_len} bytes of data, more than NaCl's {MAX_DATA}"
        )));
    }
    Ok(Parsed {
        entries,
        data_start,
    })
}

/// Parses a descriptor section: entries up to the end tag, then only zeros.
fn parse_section(section: &[u8]) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    if section.is_empty() {
        return Ok(entries);
    }
    let mut rest = section;
    loop {
        let (&tag, after) = rest
            .split_first()
            .ok_or_else(|| invalid_data("the descriptor section has no end tag"))?;
        rest = after;
        if tag == END_TAG {
            break;
        }
        if entries.len() == MAX_DESCRIPTORS {
            return Err(invalid_data(format!(
                "more than {MAX_DESCRIPTORS} descriptor entries"
            )));
        }
        let flags = take_u32(&mut rest)?;
        if flags & HAS_METADATA != 0 {
            let _metadata_type = take_u32(&mut rest)?;
            let len = take_u32(&mut rest)? as usize;
            take(&mut rest, len)?;
        }
        let kind = match tag {
            tag::HOST_IO => {
                let open_flags = take_u32(&mut rest)? as i32;
                if !open_flags_valid(open_flags) {
                    return Err(invalid_data(format!(
                        "host file open flags {open_flags:#o} are not ones NaCl accepts"
                    )));
                }
                Kind::HostFile { open_flags }
            }
            tag::CONN_CAP_FD => Kind::Address,
            tag::SHM => {
                let size = i64::from_le_bytes(
                    take(&mut rest, 8)?
                        .try_into()
                        .map_err(|_| invalid_data("a shared memory size"))?,
                );
                if size < 0 {
                    return Err(invalid_data(format!("shared memory size {size}")));
                }
                Kind::SharedMemory { size }
            }
            tag::TRANSFERABLE_DATA_SOCKET => Kind::Socket,
            other => {
                return Err(invalid_data(format!(
                    "descriptor type tag {other}, which tokio-imc does not represent (it takes \
                     host files 2, connection capabilities 4, shared memory 7 and data sockets 13)"
                )))
            }
        };
        entries.push(Entry {
            kind,
            flags: flags & !HAS_METADATA,
        });
    }
    if rest.iter().any(|&b| b != 0) {
        return Err(invalid_data("non-zero bytes after the end tag"));
    }
    Ok(entries)
}

fn take<'a>(rest: &mut &'a [u8], len: usize) -> io::Result<&'a [u8]> {
    if rest.len() < len {
        return Err(invalid_data("a descriptor entry runs past its section"));
    }
    let (taken, after) = rest.split_at(len);
    *rest = after;
    Ok(taken)
}

fn take_u32(rest: &mut &[u8]) -> io::Result<u32> {
    let bytes = take(rest, 4)?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Observed on the wire from Native Client's own code: one host file opened
    /// `O_WRONLY` and the data `typed hello`.
    const OBSERVED: [u8; 43] = [
        0x01, 0xde, 0xc0, 0xd3, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, //
        0x02, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, //
        b't', b'y', b'p', b'e', b'd', b' ', b'h', b'e', b'l', b'l', b'o',
    ];

    const HOST_FILE_WRONLY: Entry = Entry {
        kind: Kind::HostFile { open_flags: 1 },
        flags: 1,
    };

    #[test]
    fn the_observed_message_decodes_and_encodes_byte_for_byte() {
        let parsed = decode(&OBSERVED, 1).expect("NaCl's own message");
        assert_eq!(parsed.entries, vec![HOST_FILE_WRONLY]);
        assert_eq!(&OBSERVED[parsed.data_start..], b"typed hello");
        let mut encoded = encode_prefix(&[HOST_FILE_WRONLY], 11).expect("encode");
        encoded.extend_from_slice(b"typed hello");
        assert_eq!(encoded, OBSERVED);
    }

    #[test]
    fn the_observed_reply_decodes() {
        let mut reply = OBSERVED;
        reply[17] = 2; // flags O_RDWR
        reply[21] = 2; // open flags O_RDWR
        let parsed = decode(&reply, 1).expect("NaCl's reply");
        assert_eq!(
            parsed.entries,
            vec![Entry {
                kind: Kind::HostFile { open_flags: 2 },
                flags: 2
            }]
        );
    }

    #[test]
    fn no_descriptors_is_the_bare_header() {
        let prefix = encode_prefix(&[], 3).expect("encode");
        assert_eq!(
            prefix,
            [0x01, 0xde, 0xc0, 0xd3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let mut record = prefix;
        record.extend_from_slice(b"abc");
        let parsed = decode(&record, 0).expect("decode");
        assert!(parsed.entries.is_empty());
        assert_eq!(&record[parsed.data_start..], b"abc");
    }

    #[test]
    fn metadata_is_skipped() {
        let mut record = OBSERVED[..16].to_vec();
        record[4] = 32;
        let mut section = vec![tag::CONN_CAP_FD];
        section.extend_from_slice(&(HAS_METADATA | 5).to_le_bytes());
        section.extend_from_slice(&7u32.to_le_bytes());
        section.extend_from_slice(&3u32.to_le_bytes());
        section.extend_from_slice(b"tok");
        section.push(END_TAG);
        section.resize(32, 0);
        record.extend_from_slice(&section);
        let parsed = decode(&record, 1).expect("decode");
        assert_eq!(
            parsed.entries,
            vec![Entry {
                kind: Kind::Address,
                flags: 5
            }]
        );
    }

    #[test]
    fn limits_are_refused_before_sending() {
        let nine = [HOST_FILE_WRONLY; 9];
        assert_eq!(
            encode_prefix(&nine, 0).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            encode_prefix(&[], MAX_DATA + 1).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(encode_prefix(&[HOST_FILE_WRONLY; 8], MAX_DATA).is_ok());
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            (0i32..=2, proptest::bool::ANY, proptest::bool::ANY).prop_map(
                |(mode, trunc, append)| {
                    Kind::HostFile {
                        open_flags: mode
                            | if trunc { 0o1000 } else { 0 }
                            | if append { 0o2000 } else { 0 },
                    }
                }
            ),
            Just(Kind::Address),
            (0i64..=i64::MAX).prop_map(|size| Kind::SharedMemory { size }),
            Just(Kind::Socket),
        ]
    }

    fn entries() -> impl Strategy<Value = Vec<Entry>> {
        proptest::collection::vec(
            (kind(), 0u32..0x1_0000).prop_map(|(kind, flags)| Entry { kind, flags }),
            0..=MAX_DESCRIPTORS,
        )
    }

    /// Found by `damaged_records_are_errors_never_panics`: a section length cut
    /// from 16 to 10 (one flipped bit) still parsed, the padding's last six
    /// zeros taken for data.
    #[test]
    fn a_section_length_that_is_not_a_multiple_of_16_is_refused() {
        let entries = [Entry {
            kind: Kind::HostFile { open_flags: 0 },
            flags: 0,
        }];
        let mut record = encode_prefix(&entries, 0).expect("encode");
        assert_eq!(record.len(), HEADER_LEN + 16);
        record[4] = 10;
        let err = decode(&record, 1).expect_err("a 10-byte section");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("multiple of 16"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn every_message_round_trips(entries in entries(), data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut record = encode_prefix(&entries, data.len()).expect("encode");
            record.extend_from_slice(&data);
            let parsed = decode(&record, entries.len()).expect("decode");
            prop_assert_eq!(&parsed.entries, &entries);
            prop_assert_eq!(&record[parsed.data_start..], &data[..]);
        }

        /// A record with a byte changed either is an `InvalidData` error or
        /// decodes to a message whose encoding is exactly the changed record
        /// (nothing ignored, nothing guessed); one cut short, or with a wrong
        /// descriptor count, is always an error.
        #[test]
        fn damaged_records_are_errors_never_panics(
            entries in entries(),
            data in proptest::collection::vec(any::<u8>(), 0..64),
            at in any::<prop::sample::Index>(),
            flip in 1u8..,
            cut in any::<prop::sample::Index>(),
            extra_fds in 1usize..4,
        ) {
            let mut record = encode_prefix(&entries, data.len()).expect("encode");
            record.extend_from_slice(&data);
            prop_assert!(decode(&record, entries.len() + extra_fds).is_err());
            if !entries.is_empty() {
                prop_assert!(decode(&record, entries.len() - 1).is_err());
            }
            let prefix_len = record.len() - data.len();
            let mut changed = record.clone();
            let i = at.index(prefix_len);
            changed[i] ^= flip;
            match decode(&changed, entries.len()) {
                // A change that still parses must make another well-formed
                // message: decoding is strict, so what it accepts is exactly the
                // encoding of what it returns (nothing ignored, nothing guessed).
                Ok(parsed) => {
                    let reencoded = encode_prefix(&parsed.entries, data.len()).expect("encode");
                    prop_assert_eq!(parsed.data_start, prefix_len);
                    prop_assert_eq!(&reencoded[..], &changed[..prefix_len]);
                }
                Err(err) => prop_assert_eq!(err.kind(), io::ErrorKind::InvalidData),
            }
            let cut_at = cut.index(prefix_len);
            prop_assert!(decode(&record[..cut_at], entries.len()).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(record in proptest::collection::vec(any::<u8>(), 0..96), fds in 0usize..10) {
            let _ = decode(&record, fds);
        }
    }

    #[test]
    fn every_malformed_part_is_named() {
        let check = |record: &[u8], fds: usize, what: &str| {
            let err = decode(record, fds).expect_err(what);
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}");
        };
        check(&OBSERVED[..15], 1, "short header");
        let mut bad = OBSERVED;
        bad[0] = 0;
        check(&bad, 1, "protocol word");
        let mut bad = OBSERVED;
        bad[12] = 1;
        check(&bad, 1, "header padding");
        let mut bad = OBSERVED;
        bad[4] = 0xf0;
        check(&bad, 1, "section longer than the record");
        let mut bad = OBSERVED;
        bad[16] = 5;
        check(&bad, 1, "bound socket tag");
        let mut bad = OBSERVED;
        bad[16] = 200;
        check(&bad, 1, "unknown tag");
        let mut bad = OBSERVED;
        bad[25] = 0;
        check(&bad, 1, "no end tag");
        let mut bad = OBSERVED;
        bad[27] = 1;
        check(&bad, 1, "non-zero padding after the end tag");
        let mut bad = OBSERVED;
        bad[21] = 3;
        check(&bad, 1, "access mode 3");
        check(&OBSERVED, 0, "a descriptor missing");
        check(&OBSERVED, 2, "a descriptor too many");
    }
}
