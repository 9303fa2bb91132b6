//! Recovery of a database directory built from arbitrary bytes, on the simulated disk.
//!
//! The first input byte picks how the directory is built:
//! - even: a real database (made once, at start: puts, deletes, a batch, a chunk-sized
//!   value, a checkpoint, more log after it) with the rest of the input applied as
//!   patches `(file u8, offset u16, len u8, bytes)` to its files;
//! - odd: files made from the input alone, `(file u8, len u16, bytes)` each.
//!
//! Then `Db::open` and, if it opens, a scan and a `get` of every key it returns. Any
//! error is fine; a panic (on any thread: the fuzzer aborts on one), a hang or an
//! allocation past the fuzzer's limit is a bug.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ringdb::format::manifest::decode_file;
use ringdb::{Db, IoBackend, Options, SimDisk, WriteBatch};

const DIR: &str = "/db";

/// Files a built directory may hold (relative to the database folder).
const NAMES: [&str; 8] = [
    "MANIFEST",
    "shard-000/CHECKPOINT",
    "shard-000/pages.dat",
    "shard-000/wal/0000000000000001.log",
    "shard-000/wal/0000000000000002.log",
    "shard-000/wal/0000000000000003.log",
    "shard-001/wal/0000000000000001.log",
    "shard-001/pages.dat",
];

fn options(disk: &SimDisk) -> Options {
    Options::default()
        .io_backend(IoBackend::Sim(disk.clone()))
        .pin_threads(false)
        .spin_us(0)
        .client_spin_us(0)
        .cache_bytes(64 << 10)
        .wal_segment_bytes(64 << 10)
        .checkpoint_wal_bytes(64 << 10)
        .page_records_max(4)
        .page_chunk_bytes(256)
}

/// The files of a real one-shard database, made once.
fn template() -> &'static Vec<(PathBuf, Vec<u8>)> {
    static TEMPLATE: OnceLock<Vec<(PathBuf, Vec<u8>)>> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let disk = SimDisk::new(1);
        let db = Db::open(DIR, options(&disk).shards(1)).expect("template database opens");
        for i in 0..12u32 {
            db.put(format!("key{i}").as_bytes(), format!("value{i}").as_bytes()).unwrap();
        }
        db.put(b"large", &vec![7u8; 700]).unwrap();
        db.delete(b"key3").unwrap();
        db.checkpoint().unwrap();
        let mut batch = WriteBatch::new();
        batch.put(b"key1", b"again").unwrap().delete(b"key4").unwrap().put(b"new", b"after").unwrap();
        db.write_batch(batch).unwrap();
        db.put(b"last", b"in the log").unwrap();
        db.close().unwrap();
        disk.files()
            .into_iter()
            .map(|p| {
                let bytes = disk.read_file(&p).expect("listed");
                (p, bytes)
            })
            .collect()
    })
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if data.len() < n {
        return None;
    }
    let (head, rest) = data.split_at(n);
    *data = rest;
    Some(head)
}

fn build(disk: &SimDisk, mut data: &[u8]) -> Option<()> {
    let mode = take(&mut data, 1)?[0];
    let dir = Path::new(DIR);
    if mode % 2 == 0 {
        let mut files = template().clone();
        while let Some(h) = take(&mut data, 4) {
            let file = h[0] as usize % files.len();
            let offset = u16::from_le_bytes([h[1], h[2]]) as usize;
            let bytes = take(&mut data, h[3] as usize).unwrap_or(&[]);
            let content = &mut files[file].1;
            let end = (offset + bytes.len()).min(content.len());
            if offset < end {
                content[offset..end].copy_from_slice(&bytes[..end - offset]);
            }
        }
        for (path, bytes) in &files {
            disk.write_file(path, bytes);
        }
    } else {
        while let Some(h) = take(&mut data, 3) {
            let name = NAMES[h[0] as usize % NAMES.len()];
            let len = u16::from_le_bytes([h[1], h[2]]) as usize;
            let len = len.min(data.len());
            let bytes = take(&mut data, len).unwrap_or(&[]);
            disk.write_file(&dir.join(name), bytes);
        }
    }
    Some(())
}

fuzz_target!(|data: &[u8]| {
    let disk = SimDisk::new(7);
    if build(&disk, data).is_none() {
        return;
    }
    // Shard count 0 takes the recorded one; a manifest asking for many shards is a
    // correct but slow open (a thread each), so keep to a few.
    if let Some(manifest) = disk.read_file(&Path::new(DIR).join("MANIFEST")) {
        if decode_file(&manifest).is_ok_and(|m| m.shard_count > 4) {
            return;
        }
    }
    let Ok(db) = Db::open(DIR, options(&disk)) else { return };
    let mut keys = Vec::new();
    for entry in db.scan(..) {
        match entry {
            Ok((k, _)) => keys.push(k.to_vec()),
            Err(_) => break,
        }
    }
    for k in &keys {
        let _ = db.get(k);
    }
    let _ = db.put(b"after recovery", b"x");
    let _ = db.close();
});
