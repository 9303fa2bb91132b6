//! The paged store's decoders from arbitrary bytes: a page, a chunk, the checkpoint
//! slots and the checkpoint table. Never panic, never allocate from a length field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringdb::format::checkpoint::{Slot, decode_table, newest_slot};
use ringdb::format::page::{ChunkRef, decode_chunk, decode_page};

fuzz_target!(|data: &[u8]| {
    if let Ok(page) = decode_page(data) {
        assert!(page.records.len() <= data.len());
    }
    if data.len() >= 8 {
        let reference = ChunkRef {
            offset: 0,
            len: u32::from_le_bytes([data[0], data[1], data[2], data[3]]),
            crc32: u32::from_le_bytes([data[4], data[5], data[6], data[7]]),
        };
        if let Ok(value) = decode_chunk(&data[8..], &reference) {
            assert_eq!(value.len(), reference.len as usize);
        }
    }
    let _ = Slot::decode(data);
    let _ = newest_slot(data);
    if let Ok(table) = decode_table(data) {
        assert!(table.pages.len() + table.keys.len() <= data.len());
    }
});
