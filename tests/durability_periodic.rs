//! Proves `Durability::Periodic`: writes are acknowledged (and readable) before they are
//! durable; the byte, item and interval limits each start a durable flush on their own;
//! `on_persist` reports every shard's durable LSNs as contiguous increasing ranges that
//! cover all writes, across reopens; and `flush()` makes everything acknowledged durable
//! (checked by SIGKILLing a child process right after its flush returns).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringdb::{Db, Durability, Options, PersistEvent, WriteBatch};

mod common;
use common::{counters, flush_kill};

type Events = Arc<Mutex<Vec<PersistEvent>>>;

fn periodic(bytes: u64, items: u64, interval: Duration) -> Durability {
    Durability::Periodic { bytes, items, interval }
}

/// Limits that are never reached in these tests: only `flush` (or close) persists.
fn never() -> Durability {
    periodic(1 << 40, 1 << 40, Duration::from_secs(3600))
}

fn open(dir: &std::path::Path, shards: usize, durability: Durability) -> (Db, Events) {
    let events: Events = Arc::default();
    let sink = Arc::clone(&events);
    let options = Options::default()
        .shards(shards)
        .wal_segment_bytes(1 << 20)
        .durability(durability)
        .on_persist(move |e| sink.lock().unwrap().push(e));
    (Db::open(dir, options).unwrap(), events)
}

fn taken(events: &Events) -> Vec<PersistEvent> {
    events.lock().unwrap().clone()
}

/// Per shard, the events' ranges in the order reported: each starts right after the
/// previous one, from `first[shard]`. Returns the last LSN reported per shard.
fn check_contiguous(events: &[PersistEvent], shards: usize, first: &[u64]) -> Vec<u64> {
    let mut next: Vec<u64> = first.to_vec();
    let mut last_time = vec![None; shards];
    for e in events {
        assert!(e.shard < shards, "{e:?}");
        assert!(e.first_lsn <= e.last_lsn, "empty or reversed range: {e:?}");
        assert_eq!(e.first_lsn, next[e.shard], "shard {} ranges must be contiguous: {e:?}", e.shard);
        next[e.shard] = e.last_lsn + 1;
        if let Some(t) = last_time[e.shard] {
            assert!(e.timestamp >= t, "timestamps of one shard go forward: {e:?}");
        }
        last_time[e.shard] = Some(e.timestamp);
    }
    next.iter().map(|n| n - 1).collect()
}

/// Waits (up to 10 s) until `done` holds for the events; the limits under test start a
/// flush well before that.
fn wait_for(events: &Events, what: &str, done: impl Fn(&[PersistEvent]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if done(&taken(events)) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: no such on_persist event in 10 s: {:?}", taken(events));
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn acknowledged_before_durable_then_flush_persists_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (db, events) = open(dir.path(), 1, never());
    for i in 0..100u32 {
        db.put(format!("k{i}").as_bytes(), i.to_le_bytes()).unwrap();
    }
    let mut batch = WriteBatch::new();
    batch.put(b"b1", b"1").unwrap().delete(b"k0").unwrap();
    db.write_batch(batch).unwrap();
    db.delete(b"k1").unwrap();
    // All 102 writes are acknowledged and visible, and none is durable yet.
    assert_eq!(db.get(b"k50").unwrap().map(Vec::from), Some(50u32.to_le_bytes().to_vec()));
    assert_eq!(db.get(b"k0").unwrap(), None);
    assert_eq!(db.get(b"b1").unwrap().as_deref(), Some(&b"1"[..]));
    assert!(taken(&events).is_empty(), "nothing was persisted before flush: {:?}", taken(&events));
    let stats = db.stats();
    assert_eq!(stats.fsyncs, 0, "{}", counters(&stats));
    assert_eq!((stats.puts, stats.batches, stats.deletes), (100, 1, 1), "{}", counters(&stats));

    db.flush().unwrap();
    let reported = check_contiguous(&taken(&events), 1, &[1]);
    assert_eq!(reported, vec![102], "flush persisted LSNs 1..=102: {:?}", taken(&events));
    assert!(db.stats().fsyncs >= 1);

    // A flush with nothing new to persist reports nothing new.
    let before = taken(&events).len();
    db.flush().unwrap();
    assert_eq!(taken(&events).len(), before);

    // More writes, then close (which persists them too).
    for i in 100..110u32 {
        db.put(format!("k{i}").as_bytes(), i.to_le_bytes()).unwrap();
    }
    db.close().unwrap();
    let reported = check_contiguous(&taken(&events), 1, &[1]);
    assert_eq!(reported, vec![112], "close persisted LSNs 103..=112: {:?}", taken(&events));

    // After a reopen the LSNs go on from where the log ended.
    let (db, events) = open(dir.path(), 1, never());
    assert_eq!(db.stats().recovered_records, 112);
    assert_eq!(db.get(b"k109").unwrap().map(Vec::from), Some(109u32.to_le_bytes().to_vec()));
    assert_eq!(db.get(b"k1").unwrap(), None);
    db.put(b"after reopen", b"1").unwrap();
    db.flush().unwrap();
    assert_eq!(check_contiguous(&taken(&events), 1, &[113]), vec![113], "{:?}", taken(&events));
    db.close().unwrap();
}

#[test]
fn item_limit_persists_without_flush() {
    let dir = tempfile::tempdir().unwrap();
    let (db, events) = open(dir.path(), 1, periodic(1 << 40, 8, Duration::from_secs(3600)));
    for i in 0..8u32 {
        db.put(i.to_le_bytes(), b"v").unwrap();
    }
    wait_for(&events, "8 pending records reach items = 8", |e| e.last().is_some_and(|e| e.last_lsn >= 8));
    check_contiguous(&taken(&events), 1, &[1]);
    db.close().unwrap();
}

#[test]
fn byte_limit_persists_without_flush() {
    let dir = tempfile::tempdir().unwrap();
    let (db, events) = open(dir.path(), 1, periodic(16 << 10, 1 << 40, Duration::from_secs(3600)));
    db.put(b"small", b"v").unwrap();
    db.put(b"large", vec![7u8; 20 << 10]).unwrap();
    wait_for(&events, "20 KiB pending reach bytes = 16 KiB", |e| e.last().is_some_and(|e| e.last_lsn >= 2));
    check_contiguous(&taken(&events), 1, &[1]);
    db.close().unwrap();
}

#[test]
fn interval_persists_without_flush() {
    let dir = tempfile::tempdir().unwrap();
    let (db, events) = open(dir.path(), 2, periodic(1 << 40, 1 << 40, Duration::from_millis(20)));
    let keys: Vec<Vec<u8>> = (0..20u32).map(|i| format!("key{i}").into_bytes()).collect();
    for k in &keys {
        db.put(k, b"v").unwrap();
    }
    let mut per_shard = [0u64; 2];
    for k in &keys {
        per_shard[db.shard_of(k)] += 1;
    }
    wait_for(&events, "the interval passes", |e| {
        (0..2).all(|s| per_shard[s] == 0 || e.iter().any(|e| e.shard == s && e.last_lsn >= per_shard[s]))
    });
    check_contiguous(&taken(&events), 2, &[1, 1]);
    db.close().unwrap();
}

#[test]
fn on_persist_ranges_cover_all_writes_of_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    let shards = 3;
    let (db, events) = open(dir.path(), shards, periodic(32 << 10, 16, Duration::from_millis(5)));
    let threads = 4;
    let per_thread = 400;
    std::thread::scope(|s| {
        for t in 0..threads {
            let db = db.clone();
            s.spawn(move || {
                for i in 0..per_thread {
                    let key = format!("t{t}-{i}");
                    if i % 50 == 49 {
                        let mut batch = WriteBatch::new();
                        batch.put(key.as_bytes(), b"in a batch").unwrap();
                        db.write_batch(batch).unwrap();
                    } else {
                        db.put(key.as_bytes(), vec![b'v'; 100 + i % 300]).unwrap();
                    }
                }
            });
        }
    });
    // Records per shard: one per write (each batch here touches one key).
    let mut records = vec![0u64; shards];
    for t in 0..threads {
        for i in 0..per_thread {
            records[db.shard_of(format!("t{t}-{i}").as_bytes())] += 1;
        }
    }
    db.flush().unwrap();
    let reported = check_contiguous(&taken(&events), shards, &vec![1; shards]);
    assert_eq!(reported, records, "every record of every shard was reported durable");
    let flushes = taken(&events).len();
    assert!(flushes > shards, "the limits flushed during the writes too ({flushes} events)");
    db.close().unwrap();

    let (db, events) = open(dir.path(), shards, never());
    assert_eq!(db.stats().recovered_records, records.iter().sum::<u64>());
    for t in 0..threads {
        for i in (0..per_thread).step_by(37) {
            assert!(db.get(format!("t{t}-{i}").as_bytes()).unwrap().is_some());
        }
    }
    db.close().unwrap();
    assert!(taken(&events).is_empty(), "nothing was written after the reopen");
}

/// Child mode for `flush_makes_writes_durable_against_sigkill`.
#[test]
fn child_periodic_flush_then_write() {
    flush_kill::child(never());
}

#[test]
fn flush_makes_writes_durable_against_sigkill() {
    flush_kill::parent("flush_makes_writes_durable_against_sigkill", "child_periodic_flush_then_write", 5);
}
