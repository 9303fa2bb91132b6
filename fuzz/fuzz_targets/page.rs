//! The paged store's decoders from arbitrary bytes: a tree node (checked, then every
//! item read through its view), a chunk, the checkpoint slots and the free list.
//! Never panic, never allocate from a length field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringdb::format::checkpoint::{Slot, decode_free_list, newest_slot};
use ringdb::format::page::{ChunkRef, decode_chunk};
use ringdb::format::tree::{NodeView, check_node};

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = check_node(data) {
        assert!(info.used <= data.len() && info.count <= data.len());
        let view = NodeView::new(data);
        for n in 0..view.count() {
            let key = view.key(n);
            if view.is_leaf() {
                let item = view.leaf_item(n);
                assert_eq!(item.key, key);
                assert_eq!(view.search(key), Ok(n));
            } else {
                let _ = view.child(n);
                if n > 0 {
                    assert_eq!(view.child_for(key), n);
                }
            }
        }
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
    if let Ok(free) = decode_free_list(data, 1024, u64::MAX) {
        assert!(free.len() * 16 <= data.len());
    }
});
