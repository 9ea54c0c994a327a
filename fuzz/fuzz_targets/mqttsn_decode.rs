//! Any datagram: decoding never panics, and whatever decodes re-encodes to bytes that decode to
//! the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = edgegate::mqttsn::codec::check_reencode(data) {
        panic!("{e}");
    }
});
