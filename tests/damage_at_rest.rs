//! Damage to a database's files at rest is an error at open, never an open that quietly
//! holds less: each test builds the same database (2 shards, small log segments, puts,
//! a checkpoint, deletes and overwrites after it), damages one thing, and expects
//! `Error::Corruption` naming what is missing.

use std::path::{Path, PathBuf};

use ringdb::format::checkpoint::newest_slot;
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
fn the_log_segment_a_checkpoint_names_deleted_is_corruption() {
    let dir = build();
    let db = Db::open(dir.path(), options()).unwrap();
    db.checkpoint().unwrap();
    db.put("after", "the checkpoint").unwrap();
    db.close().unwrap();
    let shard0 = shard(dir.path(), 0);
    let slots = std::fs::read(shard0.join("CHECKPOINT")).unwrap();
    let slot = newest_slot(&slots).0.expect("a checkpoint");
    let named = shard0.join("wal").join(format!("{:016x}.log", slot.log_seq));
    assert!(named.exists(), "the segment a checkpoint names stays until a later checkpoint");
    std::fs::remove_file(&named).unwrap();
    let (file, what) = corruption(dir.path());
    assert!(file.ends_with(named.file_name().unwrap()), "{file:?}: {what}");
    assert!(what.contains("missing"), "{what}");
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
