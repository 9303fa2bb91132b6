//! One log record and its ops, from arbitrary bytes: decoding never panics, never
//! allocates from a length field, and a record it accepts has ops that fit its body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringdb::format::record::{Decoded, HEADER_BYTES, decode_ops, decode_record, record_bytes};

fuzz_target!(|data: &[u8]| {
    let body_max = data.len().saturating_sub(HEADER_BYTES);
    if let Decoded::Record(h) = decode_record(data, body_max) {
        let body_len = h.body_len as usize;
        assert!(HEADER_BYTES + body_len <= data.len());
        assert!(record_bytes(body_len) >= HEADER_BYTES + body_len);
        if let Ok(ops) = decode_ops(&data[HEADER_BYTES..HEADER_BYTES + body_len], h.op_count) {
            assert_eq!(ops.len(), h.op_count as usize);
        }
    }
    // Ops alone, with a count taken from the input.
    if data.len() >= 4 {
        let count = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        let _ = decode_ops(&data[4..], count);
    }
});
