//! A log segment from arbitrary bytes, read as recovery reads it: the header, then
//! records from the first block on until the first position that is not a record.
//! Never panics, never loops without moving forward.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringdb::format::record::{Decoded, RECORD_ALIGN, decode_ops, decode_record, record_bytes};
use ringdb::format::segment::{SegmentHeader, parse_file_name};

fuzz_target!(|data: &[u8]| {
    if let Ok(name) = std::str::from_utf8(&data[..data.len().min(40)]) {
        let _ = parse_file_name(name);
    }
    let block = match SegmentHeader::decode(data) {
        Ok(h) => h.block_bytes as usize,
        // Still walk the records, as if the header had said 512.
        Err(_) => 512,
    };
    let mut at = block.min(data.len());
    let mut records = 0usize;
    while at < data.len() {
        match decode_record(&data[at..], data.len()) {
            Decoded::Record(h) => {
                let len = record_bytes(h.body_len as usize);
                let body = &data[at + 32..at + 32 + h.body_len as usize];
                let _ = decode_ops(body, h.op_count);
                assert!(len >= RECORD_ALIGN);
                at += len;
                records += 1;
            }
            Decoded::End | Decoded::Invalid(_) => break,
        }
    }
    assert!(records <= data.len() / RECORD_ALIGN);
});
