//! The fuzzing seeds in `fuzz/corpus/<target>/` are real encodings made by ringdb's own
//! encoders, each checked here to decode. The test fails when an encoding changes and
//! the committed seeds no longer match; `RINGDB_WRITE_FUZZ_CORPUS=1` rewrites them.
//! Other files (`regress-*`, inputs that once crashed a target) are kept as they are.

use std::collections::BTreeMap;
use std::path::Path;

use ringdb::format::blob::{BlobSegmentHeader, SegmentState, decode_blob_record, encode_blob_record};
use ringdb::format::checkpoint::{Slot, decode_free_list, encode_free_list, newest_slot};
use ringdb::format::manifest::{Manifest, decode_file};
use ringdb::format::page::{ChunkRef, chunk_bytes, decode_chunk, encode_chunk};
use ringdb::format::record::{
    Decoded, HEADER_BYTES, KIND_OPS, OP_DELETE, OP_PUT, decode_ops, decode_record, encode_header, encode_op,
    record_bytes,
};
use ringdb::format::segment::SegmentHeader;
use ringdb::format::tree::{BranchItem, LeafItem, LeafValue, NodeRef, check_node, encode_branch, encode_leaf};

type Seeds = BTreeMap<String, Vec<u8>>;

fn record(lsn: u64, group_lsn: u64, ops: &[(u8, &[u8], &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, key, value) in ops {
        encode_op(&mut body, *kind, key, value);
    }
    let mut out = vec![0u8; record_bytes(body.len())];
    encode_header(&mut out, KIND_OPS, lsn, group_lsn, ops.len() as u32, body.len() as u32, crc32fast::hash(&body));
    out[HEADER_BYTES..HEADER_BYTES + body.len()].copy_from_slice(&body);
    out
}

fn log_record() -> Seeds {
    let mut s = Seeds::new();
    s.insert("put".into(), record(1, 1, &[(OP_PUT, b"key", b"value")]));
    s.insert("delete".into(), record(9, 7, &[(OP_DELETE, b"key", b"")]));
    s.insert(
        "batch".into(),
        record(3, 3, &[(OP_PUT, b"a", b"1"), (OP_DELETE, b"b", b""), (OP_PUT, b"c", &[9u8; 300])]),
    );
    s
}

fn log_block() -> Seeds {
    let block = 512usize;
    let mut seg = vec![0u8; 4 * block];
    SegmentHeader { shard: 0, segment_seq: 1, segment_bytes: seg.len() as u64, block_bytes: block as u32 }
        .encode(&mut seg);
    let mut at = block;
    for (lsn, rec) in [record(1, 1, &[(OP_PUT, b"k1", b"v1")]), record(2, 2, &[(OP_PUT, b"k2", &[5u8; 100])])]
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i + 1, r))
    {
        let _ = lsn;
        seg[at..at + rec.len()].copy_from_slice(&rec);
        at += rec.len();
    }
    let mut s = Seeds::new();
    s.insert("segment".into(), seg);
    s
}

fn page() -> Seeds {
    let mut s = Seeds::new();
    let value = vec![0x5au8; 900];
    let mut chunk = vec![0u8; chunk_bytes(value.len(), 1024)];
    let crc = encode_chunk(&value, &mut chunk);
    let items = [
        LeafItem { key: b"alpha", version: 4, value: LeafValue::Inline(b"one") },
        LeafItem { key: b"beta", version: 5, value: LeafValue::Inline(&[3u8; 200]) },
        LeafItem {
            key: b"gamma",
            version: 6,
            value: LeafValue::Chunk(ChunkRef { offset: 2048, len: 900, crc32: crc }),
        },
    ];
    let mut leaf = vec![0u8; 1024];
    encode_leaf(17, &items, &mut leaf).expect("fits");
    s.insert("leaf".into(), leaf);
    let children = [
        BranchItem { key: b"", child: NodeRef { id: 17, offset: 0, len: 1024 } },
        BranchItem { key: b"m", child: NodeRef { id: 18, offset: 1024, len: 1024 } },
    ];
    let mut branch = vec![0u8; 1024];
    encode_branch(19, 1, &children, &mut branch).expect("fits");
    s.insert("branch".into(), branch);
    let mut with_ref = Vec::new();
    with_ref.extend_from_slice(&(value.len() as u32).to_le_bytes());
    with_ref.extend_from_slice(&crc.to_le_bytes());
    with_ref.extend_from_slice(&chunk);
    s.insert("chunk".into(), with_ref);
    let slot = Slot {
        shard: 0,
        generation: 2,
        checkpoint_lsn: 40,
        next_node_id: 20,
        root: (19, 3072, 1024),
        root_level: 1,
        keys: 3,
        free_offset: 4096,
        free_len: 48,
        free_crc: 0x1234_5678,
        page_unit: 1024,
        file_end: 8192,
        nodes: 3,
        log_seq: 2,
    };
    let older = Slot { generation: 1, ..slot };
    let mut slots = Vec::new();
    slots.extend_from_slice(&older.encode());
    slots.extend_from_slice(&slot.encode());
    s.insert("slots".into(), slots);
    let mut free = Vec::new();
    encode_free_list(&[(5120, 1024), (7168, 1024)], &mut free);
    s.insert("free-list".into(), free);
    s
}

fn manifest() -> Seeds {
    let slot = Manifest::new(2).encode().expect("fits");
    let mut file = vec![0u8; 2 * slot.len()];
    file[..slot.len()].copy_from_slice(&slot);
    let mut s = Seeds::new();
    s.insert("manifest".into(), file);
    s
}

fn blob_frame() -> Seeds {
    let mut s = Seeds::new();
    let blob: Vec<u8> = (0..10_000u32).map(|i| (i / 13) as u8).collect();
    s.insert("plain".into(), encode_blob_record(&blob, 12, None).expect("encodes"));
    s.insert("zstd".into(), encode_blob_record(&blob, 12, Some(3)).expect("encodes"));
    let mut block = vec![0u8; 4096];
    BlobSegmentHeader { segment: 3, segment_bytes: 1 << 20, block_bytes: 4096 }.encode(&mut block);
    let state = SegmentState { generation: 1, data_start: 4096, sealed_end: 0 };
    state.encode(&mut block[state.slot_offset()..]);
    s.insert("header-block".into(), block);
    s
}

fn recovery() -> Seeds {
    // Mode byte even: the fuzz target's built-in database, patched by
    // (file u8, offset u16, len u8, bytes) entries; odd: files from (file u8, len u16, bytes).
    let mut s = Seeds::new();
    s.insert("template".into(), vec![0]);
    s.insert("template-patched".into(), vec![0, 3, 0x10, 0x02, 4, 0xde, 0xad, 0xbe, 0xef]);
    let manifest = &manifest()["manifest"];
    let mut raw = vec![1, 0];
    raw.extend_from_slice(&(manifest.len() as u16).to_le_bytes());
    raw.extend_from_slice(manifest);
    s.insert("manifest-only".into(), raw);
    s
}

fn check_valid(target: &str, name: &str, bytes: &[u8]) {
    let ok = match target {
        "log_record" => match decode_record(bytes, bytes.len()) {
            Decoded::Record(h) => {
                decode_ops(&bytes[HEADER_BYTES..HEADER_BYTES + h.body_len as usize], h.op_count).is_ok()
            }
            _ => false,
        },
        "log_block" => SegmentHeader::decode(bytes).is_ok(),
        "page" => match name {
            "leaf" | "branch" => check_node(bytes).is_ok(),
            "chunk" => {
                let r = ChunkRef {
                    offset: 0,
                    len: u32::from_le_bytes(bytes[..4].try_into().unwrap()),
                    crc32: u32::from_le_bytes(bytes[4..8].try_into().unwrap()),
                };
                decode_chunk(&bytes[8..], &r).is_ok()
            }
            "slots" => newest_slot(bytes).0.is_some_and(|s| s.generation == 2),
            _ => decode_free_list(bytes, 1024, 8192).is_ok(),
        },
        "manifest" => decode_file(bytes).is_ok(),
        "blob_frame" => match name {
            "header-block" => BlobSegmentHeader::decode(bytes).is_ok() && SegmentState::newest(bytes).is_some(),
            _ => decode_blob_record(bytes, 1 << 20).is_ok(),
        },
        _ => true,
    };
    assert!(ok, "seed {target}/{name} does not decode");
}

#[test]
fn fuzz_seeds_are_current() {
    let targets: [(&str, Seeds); 6] = [
        ("log_record", log_record()),
        ("log_block", log_block()),
        ("page", page()),
        ("manifest", manifest()),
        ("blob_frame", blob_frame()),
        ("recovery", recovery()),
    ];
    let write = std::env::var("RINGDB_WRITE_FUZZ_CORPUS").is_ok();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, seeds) in targets {
        let dir = root.join(target);
        for (name, bytes) in &seeds {
            check_valid(target, name, bytes);
            let path = dir.join(name);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, bytes).unwrap();
            } else {
                let committed = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("{}: {e} (regenerate with RINGDB_WRITE_FUZZ_CORPUS=1)", path.display()));
                assert!(
                    committed == *bytes,
                    "{} is stale (regenerate with RINGDB_WRITE_FUZZ_CORPUS=1)",
                    path.display()
                );
            }
        }
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(seeds.contains_key(&name) || name.starts_with("regress-"), "unknown seed {target}/{name}");
        }
    }
}
