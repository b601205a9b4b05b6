//! The SCM_RIGHTS control-data parser on arbitrary bytes: no panic, no read past
//! the input, never more descriptor numbers than the input holds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|control: &[u8]| {
    tokio_imc::fuzzing::parse_control(control);
});
