//! Entry points for the fuzz targets in `fuzz/` (`--cfg fuzzing`, as cargo-fuzz builds). Not a stable
//! API: it exposes internals so that they can be fed arbitrary input.

use crate::ancillary::{self, Record};

/// Walks `control` as the receive path does and returns how many descriptor
/// numbers it found. Checks the parser's invariant: it never yields more numbers
/// than the input could hold.
pub fn parse_control(control: &[u8]) -> usize {
    let mut numbers = 0;
    for record in ancillary::parse(control) {
        if let Record::Rights(fds) | Record::PidFd(fds) = record {
            numbers += fds.count();
        }
    }
    assert!(
        numbers * 4 <= control.len(),
        "more descriptor numbers than bytes"
    );
    numbers
}
