//! Proves a typed table is sparse: with a capacity of 10^10 records of 64 bytes (640 GB
//! if dense) and 1,000 records set at random indices, the database's files take less
//! than 4 MiB of allocated blocks (`st_blocks`, not the apparent size; most of it is the
//! preallocated log segments) and the data files less than 1 MiB, before and after a
//! checkpoint and a reopen, and every record reads back.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use bytemuck::{Pod, Zeroable};
use ringdb::{Db, Options};

mod common;
use common::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Row {
    id: u64,
    values: [f64; 7],
}
ringdb::record!(Row, "Row", 1, [id, values]);

const CAPACITY: u64 = 10_000_000_000;
const RECORDS: usize = 1000;
const ALLOCATED_MAX: u64 = 4 << 20;
const DATA_FILES_MAX: u64 = 1 << 20;

/// Bytes of disk allocated to every file under `dir` (st_blocks counts 512-byte units).
fn allocated_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        total += meta.blocks() * 512;
        if meta.is_dir() {
            total += allocated_bytes(&entry.path());
        }
    }
    total
}

/// Bytes of disk allocated to the shards' data files (`pages.dat`).
fn data_file_bytes(dir: &Path, shards: usize) -> u64 {
    (0..shards)
        .map(|s| std::fs::metadata(dir.join(format!("shard-{s:03}/pages.dat"))).map_or(0, |m| m.blocks() * 512))
        .sum()
}

fn row(i: u64) -> Row {
    Row { id: i, values: std::array::from_fn(|k| i as f64 + k as f64 / 8.0) }
}

#[test]
fn ten_billion_capacity_costs_only_the_records_set() {
    let seed = common::seed("ten_billion_capacity_costs_only_the_records_set");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    // Small log segments: the log is preallocated per segment, whatever the table holds.
    let options = || Options::default().shards(2).wal_segment_bytes(256 << 10);
    let mut indices: Vec<u64> = (0..RECORDS).map(|_| rng.range(0, CAPACITY - 1)).collect();
    indices.sort_unstable();
    indices.dedup();
    {
        let db = Db::open(dir.path(), options()).unwrap();
        let table = db.table::<Row>("sparse").unwrap().with_capacity(CAPACITY).unwrap();
        assert_eq!(table.capacity(), CAPACITY);
        for &i in &indices {
            table.set(i, &row(i)).unwrap();
        }
        assert!(table.set(CAPACITY, &row(0)).is_err(), "past the capacity");
        let before = allocated_bytes(dir.path());
        db.checkpoint().unwrap();
        let after = allocated_bytes(dir.path());
        let data = data_file_bytes(dir.path(), 2);
        println!("allocated: {before} bytes before the checkpoint, {after} after, {data} in data files");
        assert!(before < ALLOCATED_MAX && after < ALLOCATED_MAX, "{before} / {after} bytes allocated");
        assert!(data > 0 && data < DATA_FILES_MAX, "{data} bytes allocated to the data files");
        db.close().unwrap();
    }
    let db = Db::open(dir.path(), options()).unwrap();
    let table = db.table::<Row>("sparse").unwrap();
    assert_eq!(table.capacity(), CAPACITY);
    assert_eq!(table.len(), indices.len() as u64);
    for &i in &indices {
        assert_eq!(table.get(i).unwrap(), Some(row(i)));
    }
    let scanned: Vec<u64> = table.scan(..).map(|e| e.unwrap().0).collect();
    assert_eq!(scanned, indices);
    let allocated = allocated_bytes(dir.path());
    println!("allocated after reopen: {allocated} bytes");
    assert!(allocated < ALLOCATED_MAX, "{allocated} bytes allocated after reopen");
    db.close().unwrap();
}
