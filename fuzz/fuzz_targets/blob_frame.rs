//! Blob segment structures from arbitrary bytes: the header block's identity and state
//! slots, and a whole blob record (header, frame index, checksums, zstd frames). Never
//! panics; a compressed frame never inflates past the bound given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringdb::format::blob::{BlobSegmentHeader, SegmentState, decode_blob_record};

/// Largest blob the fuzzer lets a record claim.
const BLOB_BYTES_MAX: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let _ = BlobSegmentHeader::decode(data);
    let _ = SegmentState::newest(data);
    if let Ok(blob) = decode_blob_record(data, BLOB_BYTES_MAX) {
        assert!(blob.len() as u64 <= BLOB_BYTES_MAX);
    }
});
