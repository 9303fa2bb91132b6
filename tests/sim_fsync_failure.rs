//! A failed fsync on the simulated disk: the shard refuses writes with
//! `Error::Poisoned` (for every caller of the failed flush and every later one), never
//! acknowledges the failed batch, never shows it to readers, and a reopen, after a crash
//! that keeps any subset of what was unsynced, recovers every acknowledged write, with
//! the failed batch all there or not there at all. Linux's behaviour after an fsync error
//! is simulated (the unsynced pages are marked clean, some never reaching the disk), so
//! retrying the fsync as if the data were safe would be caught here.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::sim::read_all;
use ringdb::{CrashMode, Db, Durability, Error, IoBackend, Options, SimDisk, WalSync, WriteBatch};

/// Keys and values.
type State = BTreeMap<Vec<u8>, Vec<u8>>;

fn options(disk: &SimDisk, durability: Durability, wal_sync: WalSync) -> Options {
    Options::default()
        .io_backend(IoBackend::Sim(disk.clone()))
        .shards(1)
        .durability(durability)
        .wal_sync(wal_sync)
        .pin_threads(false)
        .wal_segment_bytes(64 << 10)
        .checkpoint_wal_bytes(64 << 10)
        .page_chunk_bytes(512)
}

fn poisoned(result: ringdb::Result<()>, what: &str) {
    match result {
        Err(Error::Poisoned { cause, .. }) => assert!(!cause.is_empty(), "{what}: a poisoned error says why"),
        other => panic!("{what}: expected Error::Poisoned, got {other:?}"),
    }
}

/// Writes `acked` keys, fails the next log sync, and checks the refusal; returns the
/// keys acknowledged and the failed batch's keys.
fn fail_a_flush(db: &Db, disk: &SimDisk, large: bool) -> (State, Vec<Vec<u8>>) {
    let mut acked = BTreeMap::new();
    for i in 0..20u32 {
        let k = format!("acked{i:02}").into_bytes();
        let v = if large && i % 3 == 0 { vec![b'v'; 900 + i as usize] } else { format!("value{i}").into_bytes() };
        db.put(&k, &v).unwrap();
        acked.insert(k, v);
        if i == 9 {
            db.checkpoint().unwrap();
        }
    }
    disk.fail_syncs("/wal/", 1);
    let mut batch = WriteBatch::new();
    let failed: Vec<Vec<u8>> = (0..4).map(|i| format!("failed{i}").into_bytes()).collect();
    for k in &failed {
        batch.put(k, b"never acknowledged").unwrap();
    }
    batch.delete(b"acked00").unwrap();
    poisoned(db.write_batch(batch), "the failed batch");
    for k in &failed {
        assert_eq!(db.get(k).unwrap(), None, "a write of the failed batch is visible");
    }
    assert!(db.get(b"acked00").unwrap().is_some(), "the failed batch's delete is visible");
    poisoned(db.put(b"after", b"x"), "a put after the failure");
    poisoned(db.delete(b"acked01"), "a delete after the failure");
    poisoned(db.flush(), "a flush after the failure");
    match db.checkpoint() {
        Err(Error::Poisoned { .. }) => {}
        other => panic!("a checkpoint after the failure: {other:?}"),
    }
    // Reads of acknowledged data still work.
    for (k, v) in &acked {
        assert_eq!(db.get(k).unwrap().as_deref(), Some(&v[..]));
    }
    (acked, failed)
}

fn check_recovered(db: &Db, acked: &BTreeMap<Vec<u8>, Vec<u8>>, failed: &[Vec<u8>]) {
    let keys: Vec<Vec<u8>> = acked.keys().chain(failed.iter()).cloned().collect();
    let actual = read_all(db, &keys).unwrap();
    let batch_there = failed.iter().filter(|k| actual.contains_key(*k)).count();
    assert!(batch_there == 0 || batch_there == failed.len(), "half of the failed batch survived: {batch_there}");
    for (k, v) in acked {
        if k == b"acked00" && batch_there > 0 {
            assert!(!actual.contains_key(k), "the batch's put survived without its delete");
            continue;
        }
        assert_eq!(actual.get(k), Some(v), "acknowledged {} lost", String::from_utf8_lossy(k));
    }
    assert!(!actual.contains_key(&b"after"[..]));
}

#[test]
fn a_failed_log_sync_poisons_the_shard_and_recovers() {
    let base = common::seed("a_failed_log_sync_poisons_the_shard_and_recovers");
    let mut kept = [0u32; 2];
    for i in 0..24u64 {
        let seed = base.wrapping_add(i);
        let disk = SimDisk::new(seed);
        let wal_sync = if i % 2 == 0 { WalSync::Dsync } else { WalSync::Fdatasync };
        let opts = options(&disk, Durability::Sync, wal_sync);
        let dir = Path::new("/db");
        let db = Db::open(dir, opts.clone()).unwrap();
        let (acked, failed) = fail_a_flush(&db, &disk, i % 4 < 2);
        poisoned(db.close(), "close after the failure");
        // Reopen without a crash, then after crashes of each kind.
        let db = Db::open(dir, opts.clone()).unwrap_or_else(|e| panic!("seed {seed}: reopen: {e}"));
        check_recovered(&db, &acked, &failed);
        let there = failed.iter().filter(|k| db.get(k).unwrap().is_some()).count();
        drop(db);
        let mode = [CrashMode::KeepNone, CrashMode::KeepAll, CrashMode::Random][(i % 3) as usize];
        disk.crash_with(mode, seed);
        let db = Db::open(dir, opts.clone()).unwrap_or_else(|e| panic!("seed {seed}: reopen after a crash: {e}"));
        check_recovered(&db, &acked, &failed);
        kept[usize::from(there > 0)] += 1;
        // The database takes writes again.
        db.put(b"after", b"reopened").unwrap();
        assert_eq!(db.get(b"after").unwrap().as_deref(), Some(&b"reopened"[..]));
        db.close().unwrap();
    }
    println!("failed batch found after reopen: {} times, not found: {} times", kept[1], kept[0]);
}

#[test]
fn a_failed_sync_under_none_and_periodic_fails_the_flush() {
    let base = common::seed("a_failed_sync_under_none_and_periodic_fails_the_flush");
    let modes = [
        Durability::None,
        Durability::Periodic { bytes: 1 << 20, items: 100_000, interval: Duration::from_secs(3600) },
    ];
    for (i, durability) in modes.into_iter().enumerate() {
        for j in 0..8u64 {
            let seed = base.wrapping_add(j * 2 + i as u64);
            let disk = SimDisk::new(seed);
            let opts = options(&disk, durability, WalSync::Dsync);
            let dir = Path::new("/db");
            let db = Db::open(dir, opts.clone()).unwrap();
            let mut durable = BTreeMap::new();
            for n in 0..10u32 {
                let k = format!("d{n}").into_bytes();
                db.put(&k, b"durable").unwrap();
                durable.insert(k, b"durable".to_vec());
            }
            db.flush().unwrap();
            for n in 0..10u32 {
                db.put(format!("u{n}").as_bytes(), b"unflushed").unwrap();
            }
            disk.fail_syncs("/wal/", 1);
            poisoned(db.flush(), "the flush whose sync failed");
            poisoned(db.put(b"after", b"x"), "a put after the failure");
            drop(db);
            disk.crash(seed);
            let db = Db::open(dir, opts).unwrap_or_else(|e| panic!("seed {seed}: reopen: {e}"));
            let actual = read_all(&db, &[]).unwrap();
            for (k, v) in &durable {
                assert_eq!(actual.get(k), Some(v), "seed {seed}: flushed {} lost", String::from_utf8_lossy(k));
            }
            // The unflushed writes are a prefix (one log, in order).
            let kept: Vec<bool> = (0..10).map(|n| actual.contains_key(format!("u{n}").as_bytes())).collect();
            assert!(kept.windows(2).all(|w| w[0] >= w[1]), "seed {seed}: unflushed writes kept out of order: {kept:?}");
            assert!(!actual.contains_key(&b"after"[..]));
            db.close().unwrap();
        }
    }
}

#[test]
fn a_failed_checkpoint_sync_poisons_and_recovers() {
    let base = common::seed("a_failed_checkpoint_sync_poisons_and_recovers");
    for (j, target) in ["pages.dat", "CHECKPOINT"].into_iter().enumerate() {
        for i in 0..6u64 {
            let seed = base.wrapping_add(i * 2 + j as u64);
            let disk = SimDisk::new(seed);
            let opts = options(&disk, Durability::Sync, WalSync::Dsync);
            let dir = Path::new("/db");
            let db = Db::open(dir, opts.clone()).unwrap();
            let mut acked = BTreeMap::new();
            for n in 0..30u32 {
                let k = format!("k{n:02}").into_bytes();
                let v = vec![b'a' + (n % 26) as u8; 10 + 60 * (n as usize % 20)];
                db.put(&k, &v).unwrap();
                acked.insert(k, v);
                if n == 10 {
                    db.checkpoint().unwrap();
                }
            }
            disk.fail_syncs(target, 1);
            match db.checkpoint() {
                Err(Error::Io { .. }) => {}
                other => panic!("seed {seed}: a checkpoint whose {target} sync failed answered {other:?}"),
            }
            poisoned(db.put(b"after", b"x"), "a put after the failed checkpoint");
            drop(db);
            disk.crash(seed);
            let db = Db::open(dir, opts).unwrap_or_else(|e| panic!("seed {seed}: reopen: {e}"));
            let actual = read_all(&db, &acked.keys().cloned().collect::<Vec<_>>()).unwrap();
            assert_eq!(actual, acked, "seed {seed}: state after a failed {target} sync");
            db.close().unwrap();
        }
    }
}
