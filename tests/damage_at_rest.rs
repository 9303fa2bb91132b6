//! Damage to a database's files at rest is an error at open, never an open that quietly
//! holds less: each test builds the same database (2 shards, small log segments, puts,
//! a checkpoint, deletes and overwrites after it), damages one thing, and expects
//! `Error::Corruption` naming what is missing.

use std::path::{Path, PathBuf};

use ringdb::format::segment::SegmentHeader;
use ringdb::{Db, Error, Options};

fn options() -> Options {
    Options::default().shards(2).wal_segment_bytes(256 << 10)
}

/// The database every test damages; returns its directory.
fn build() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options()).unwrap();
    for i in 0..3000u32 {
        db.put(format!("key{i:05}"), vec![b'v'; 100]).unwrap();
    }
    db.checkpoint().unwrap();
    for i in (0..3000u32).step_by(7) {
        db.delete(format!("key{i:05}")).unwrap();
    }
    for i in (1..3000u32).step_by(5) {
        db.put(format!("key{i:05}"), vec![b'w'; 80]).unwrap();
    }
    db.close().unwrap();
    dir
}

fn shard(dir: &Path, id: usize) -> PathBuf {
    dir.join(format!("shard-{id:03}"))
}

/// Opening `dir` fails with corruption; returns the file named and the message.
fn corruption(dir: &Path) -> (PathBuf, String) {
    match Db::open(dir, options()) {
        Err(Error::Corruption { file, what, .. }) => (file, what),
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(db) => {
            let keys = db.stats().keys;
            panic!("opened a damaged database (holding {keys} keys)")
        }
    }
}

#[test]
fn an_undamaged_database_opens_with_every_key() {
    let dir = build();
    let db = Db::open(dir.path(), options()).unwrap();
    // Deleted every 7th key, then put every 5th from 1 again (some of the deleted ones).
    let expected = (0..3000u32).filter(|i| i % 7 != 0 || i % 5 == 1).count() as u64;
    assert_eq!(db.stats().keys, expected);
    db.close().unwrap();
}

#[test]
fn a_deleted_checkpoint_is_corruption() {
    let dir = build();
    std::fs::remove_file(shard(dir.path(), 0).join("CHECKPOINT")).unwrap();
    let (file, what) = corruption(dir.path());
    assert!(file.ends_with("CHECKPOINT"), "{file:?}: {what}");
}

#[test]
fn an_emptied_checkpoint_is_corruption() {
    let dir = build();
    std::fs::write(shard(dir.path(), 1).join("CHECKPOINT"), b"").unwrap();
    let (file, what) = corruption(dir.path());
    assert!(file.ends_with("CHECKPOINT"), "{file:?}: {what}");
}

#[test]
fn a_deleted_shard_folder_is_corruption() {
    let dir = build();
    std::fs::remove_dir_all(shard(dir.path(), 1)).unwrap();
    let (file, what) = corruption(dir.path());
    assert!(file.ends_with("shard-001"), "{file:?}: {what}");
    assert!(what.contains("missing"), "{what}");
}

#[test]
fn a_deleted_log_folder_is_corruption() {
    let dir = build();
    std::fs::remove_dir_all(shard(dir.path(), 0).join("wal")).unwrap();
    let (file, what) = corruption(dir.path());
    assert!(file.ends_with("wal"), "{file:?}: {what}");
}

#[test]
fn the_last_log_segment_deleted_before_a_spare_is_corruption() {
    let dir = build();
    let wal = shard(dir.path(), 0).join("wal");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let holds_records = |path: &Path| {
        let bytes = std::fs::read(path).unwrap();
        let block = SegmentHeader::decode(&bytes).unwrap().block_bytes as usize;
        bytes[block..].iter().any(|&b| b != 0)
    };
    let last = segments.iter().rposition(|p| holds_records(p)).expect("a segment holds records");
    assert!(last + 1 < segments.len(), "a spare segment follows the last one holding records");
    std::fs::remove_file(&segments[last]).unwrap();
    let (file, what) = corruption(dir.path());
    assert!(what.contains("missing"), "{file:?}: {what}");
}

#[test]
fn a_truncated_or_deleted_data_file_is_corruption() {
    let dir = build();
    let data = shard(dir.path(), 0).join("pages.dat");
    let len = std::fs::metadata(&data).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&data).unwrap().set_len(len / 2).unwrap();
    let (file, what) = corruption(dir.path());
    assert!(file.ends_with("pages.dat"), "{file:?}: {what}");
    assert!(what.contains("truncated"), "{what}");
    std::fs::remove_file(&data).unwrap();
    let (file, _) = corruption(dir.path());
    assert!(file.ends_with("pages.dat"), "{file:?}");
}
