//! Proves `Durability::None`: writes are acknowledged at once, `flush()` and `close()`
//! make everything acknowledged durable (checked against SIGKILL right after a flush),
//! and `on_persist` reports the LSN ranges those flushes made durable, as it does in
//! every mode.

use std::sync::{Arc, Mutex};

use ringdb::{Db, Durability, Options, PersistEvent, WriteBatch};

mod common;
use common::flush_kill;

type Events = Arc<Mutex<Vec<PersistEvent>>>;

fn open(dir: &std::path::Path, shards: usize) -> (Db, Events) {
    let events: Events = Arc::default();
    let sink = Arc::clone(&events);
    let options = Options::default()
        .shards(shards)
        .wal_segment_bytes(256 << 10)
        .durability(Durability::None)
        .on_persist(move |e| sink.lock().unwrap().push(e));
    (Db::open(dir, options).unwrap(), events)
}

/// The last LSN reported durable per shard, checking that the ranges of each shard are
/// contiguous from LSN 1.
fn reported(events: &Events, shards: usize) -> Vec<u64> {
    let mut next = vec![1u64; shards];
    for e in events.lock().unwrap().iter() {
        assert!(e.first_lsn <= e.last_lsn, "{e:?}");
        assert_eq!(e.first_lsn, next[e.shard], "contiguous ranges per shard: {e:?}");
        next[e.shard] = e.last_lsn + 1;
    }
    next.iter().map(|n| n - 1).collect()
}

#[test]
fn close_makes_acknowledged_writes_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = open(dir.path(), 2);
    for i in 0..500u32 {
        db.put(i.to_le_bytes(), vec![b'n'; 300]).unwrap();
    }
    let mut batch = WriteBatch::new();
    batch.delete(0u32.to_le_bytes()).unwrap();
    db.write_batch(batch).unwrap();
    db.close().unwrap();
    let (db, _) = open(dir.path(), 2);
    assert_eq!(db.stats().recovered_records, 501);
    assert_eq!(db.get(0u32.to_le_bytes()).unwrap(), None);
    for i in 1..500u32 {
        assert_eq!(db.get(i.to_le_bytes()).unwrap().map(|v| v.len()), Some(300), "key {i}");
    }
    db.close().unwrap();
}

/// `Options::on_persist` is documented to report each durable LSN range in every mode:
/// after `flush` returns, everything written before it was reported durable.
#[test]
fn on_persist_reports_what_flush_made_durable() {
    let dir = tempfile::tempdir().unwrap();
    let shards = 2;
    let (db, events) = open(dir.path(), shards);
    let mut records = vec![0u64; shards];
    for i in 0..200u32 {
        let key = format!("k{i}");
        db.put(key.as_bytes(), [b'v'; 200]).unwrap();
        records[db.shard_of(key.as_bytes())] += 1;
    }
    db.flush().unwrap();
    assert_eq!(reported(&events, shards), records, "after flush: {:?}", events.lock().unwrap());
    for i in 200..220u32 {
        let key = format!("k{i}");
        db.put(key.as_bytes(), b"more").unwrap();
        records[db.shard_of(key.as_bytes())] += 1;
    }
    db.close().unwrap();
    assert_eq!(reported(&events, shards), records, "after close: {:?}", events.lock().unwrap());
}

/// Child mode for `flush_makes_writes_durable_against_sigkill`.
#[test]
fn child_none_flush_then_write() {
    flush_kill::child(Durability::None);
}

#[test]
fn flush_makes_writes_durable_against_sigkill() {
    flush_kill::parent("flush_makes_writes_durable_against_sigkill", "child_none_flush_then_write", 5);
}
