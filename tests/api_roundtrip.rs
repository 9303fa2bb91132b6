//! Proves the blocking API round-trips: put/get/overwrite/delete, empty keys and values,
//! write batches (last op on a key wins), multi_get and stats, from one thread and from
//! 16 at once, and that everything acknowledged is there again after a reopen.

use std::collections::HashMap;
use std::sync::{Arc, Barrier};

use ringdb::{Db, Error, Options, WriteBatch};

mod common;
use common::counters;

const _: fn() = || {
    fn clone_send_sync<T: Clone + Send + Sync + 'static>() {}
    clone_send_sync::<Db>();
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Error>();
    send_sync::<ringdb::Value>();
};

/// Small segments keep opening (a zero-filled segment and a spare per shard) cheap.
fn options() -> Options {
    Options::default().shards(4).wal_segment_bytes(1 << 20)
}

fn get(db: &Db, key: &[u8]) -> Option<Vec<u8>> {
    db.get(key).expect("get").map(Vec::from)
}

#[test]
fn single_thread_round_trip_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options()).unwrap();
    assert_eq!(db.shard_count(), 4);
    assert_eq!(db.path(), dir.path());
    let fresh = db.stats();
    assert_eq!((fresh.puts, fresh.deletes, fresh.batches, fresh.keys, fresh.recovered_records), (0, 0, 0, 0, 0));

    // Put, get, overwrite.
    assert_eq!(get(&db, b"k1"), None);
    db.put(b"k1", b"v1").unwrap();
    assert_eq!(get(&db, b"k1").as_deref(), Some(&b"v1"[..]));
    db.put(b"k1", b"v1-second").unwrap();
    assert_eq!(get(&db, b"k1").as_deref(), Some(&b"v1-second"[..]));

    // A value read stays valid after its key is overwritten.
    let held = db.get(b"k1").unwrap().unwrap();
    db.put(b"k1", b"v1-third").unwrap();
    assert_eq!(&held[..], b"v1-second");
    assert_eq!(get(&db, b"k1").as_deref(), Some(&b"v1-third"[..]));

    // Delete, and delete of an absent key.
    db.put(b"gone", b"soon").unwrap();
    db.delete(b"gone").unwrap();
    assert_eq!(get(&db, b"gone"), None);
    db.delete(b"never-written").unwrap();
    assert_eq!(get(&db, b"never-written"), None);

    // Empty value (present, not absent), empty key.
    db.put(b"empty-value", b"").unwrap();
    assert_eq!(get(&db, b"empty-value").as_deref(), Some(&b""[..]));
    db.put(b"", b"value of the empty key").unwrap();
    assert_eq!(get(&db, b"").as_deref(), Some(&b"value of the empty key"[..]));
    db.put(b"", b"").unwrap();
    assert_eq!(get(&db, b"").as_deref(), Some(&b""[..]));

    // Binary keys and values, including zero bytes and a value of several blocks.
    let binary_key = [0u8, 255, 0, 1, 2];
    let big_value: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + 3) as u8).collect();
    db.put(binary_key, &big_value).unwrap();
    assert_eq!(get(&db, &binary_key), Some(big_value.clone()));

    // A write batch across shards: mixed puts and deletes, later ops on a key win.
    db.put(b"b-del", b"to be deleted by the batch").unwrap();
    db.put(b"b-readd", b"old").unwrap();
    let mut batch = WriteBatch::new();
    batch
        .put(b"b1", b"first")
        .unwrap()
        .put(b"b2", b"two")
        .unwrap()
        .put(b"b1", b"second")
        .unwrap()
        .delete(b"b-del")
        .unwrap()
        .delete(b"b-readd")
        .unwrap()
        .put(b"b-readd", b"new")
        .unwrap()
        .put(b"b3", b"three")
        .unwrap()
        .delete(b"b3")
        .unwrap();
    assert_eq!(batch.len(), 8);
    assert!(!batch.is_empty());
    db.write_batch(batch.clone()).unwrap();
    assert_eq!(get(&db, b"b1").as_deref(), Some(&b"second"[..]));
    assert_eq!(get(&db, b"b2").as_deref(), Some(&b"two"[..]));
    assert_eq!(get(&db, b"b-del"), None);
    assert_eq!(get(&db, b"b-readd").as_deref(), Some(&b"new"[..]));
    assert_eq!(get(&db, b"b3"), None);
    // The ops of the batch span more than one shard, so the batch was split.
    let batch_shards: std::collections::BTreeSet<usize> =
        [&b"b1"[..], b"b2", b"b-del", b"b-readd", b"b3"].iter().map(|k| db.shard_of(k)).collect();
    assert!(batch_shards.len() > 1, "pick batch keys that span shards: {batch_shards:?}");

    // An empty batch is a no-op; a cleared batch is empty.
    db.write_batch(WriteBatch::new()).unwrap();
    batch.clear();
    assert!(batch.is_empty());
    db.write_batch(batch).unwrap();

    // multi_get keeps the order given, with None for absent keys.
    let keys: Vec<&[u8]> = vec![b"b2", b"missing", b"k1", b"", b"b-del", b"empty-value"];
    let got: Vec<Option<Vec<u8>>> = db.multi_get(&keys).unwrap().into_iter().map(|v| v.map(Vec::from)).collect();
    assert_eq!(
        got,
        vec![Some(b"two".to_vec()), None, Some(b"v1-third".to_vec()), Some(Vec::new()), None, Some(Vec::new())]
    );

    // Stats: every acknowledged write was counted, gets too.
    let stats = db.stats();
    assert_eq!(stats.shards, 4);
    assert_eq!(stats.puts, 10, "{}", counters(&stats));
    assert_eq!(stats.deletes, 2, "{}", counters(&stats));
    assert_eq!(stats.batches as usize, batch_shards.len(), "one batch part per shard touched: {}", counters(&stats));
    assert_eq!(stats.gets, 16 + keys.len() as u64, "each get and each multi_get key counts once: {}", counters(&stats));
    // A batch spanning shards commits as a transaction: a prepare record per part, then a
    // commit record per part, which is not synced on its own (it may still wait in the
    // log's next batch).
    let singles = stats.puts + stats.deletes;
    assert!(
        (singles + stats.batches..=singles + 2 * stats.batches).contains(&stats.wal_records),
        "{}",
        counters(&stats)
    );
    assert!(stats.wal_batches >= 1 && stats.wal_batches <= stats.wal_records, "{}", counters(&stats));
    assert!(stats.fsyncs >= 1, "Sync writes were made durable: {}", counters(&stats));
    assert!(stats.wal_bytes >= stats.write_bytes, "{}", counters(&stats));
    assert!(stats.write_bytes > big_value.len() as u64, "{}", counters(&stats));
    let expected_live: HashMap<Vec<u8>, Vec<u8>> = [
        (&b"k1"[..], &b"v1-third"[..]),
        (b"empty-value", b""),
        (b"", b""),
        (&binary_key[..], &big_value[..]),
        (b"b1", b"second"),
        (b"b2", b"two"),
        (b"b-readd", b"new"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_vec(), v.to_vec()))
    .collect();
    assert_eq!(stats.keys, expected_live.len() as u64, "{}", counters(&stats));
    // Singles, then a prepare and a commit record per part of the cross-shard batch (the
    // commit records are written by close at the latest).
    let records_written = stats.puts + stats.deletes + 2 * stats.batches;
    db.close().unwrap();

    // Reopen: everything is there, the log was replayed record by record.
    let db = Db::open(dir.path(), Options::default().wal_segment_bytes(1 << 20)).unwrap();
    assert_eq!(db.shard_count(), 4, "shard count 0 takes the recorded count");
    let stats = db.stats();
    assert_eq!(stats.recovered_records, records_written, "{}", counters(&stats));
    assert_eq!(stats.keys, expected_live.len() as u64, "{}", counters(&stats));
    assert_eq!((stats.puts, stats.deletes, stats.batches), (0, 0, 0), "counters are per open: {}", counters(&stats));
    for (k, v) in &expected_live {
        assert_eq!(get(&db, k).as_ref(), Some(v), "key {k:?}");
    }
    for k in [&b"gone"[..], b"never-written", b"b-del", b"b3"] {
        assert_eq!(get(&db, k), None, "key {k:?}");
    }
    // The reopened log takes new writes, which survive another reopen.
    db.put(b"after-reopen", b"yes").unwrap();
    db.delete(b"k1").unwrap();
    db.close().unwrap();
    let db = Db::open(dir.path(), options()).unwrap();
    assert_eq!(get(&db, b"after-reopen").as_deref(), Some(&b"yes"[..]));
    assert_eq!(get(&db, b"k1"), None);
    assert_eq!(get(&db, b"b2").as_deref(), Some(&b"two"[..]));
    assert_eq!(db.stats().recovered_records, records_written + 2);
    db.close().unwrap();
}

#[test]
fn dropping_the_last_handle_closes_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path(), options()).unwrap();
        let clone = db.clone();
        db.put(b"dropped", b"but durable").unwrap();
        drop(db);
        // The clone still works: dropping one handle closes nothing.
        clone.put(b"clone", b"also").unwrap();
    }
    let db = Db::open(dir.path(), options()).expect("the lock is released when the last handle drops");
    assert_eq!(get(&db, b"dropped").as_deref(), Some(&b"but durable"[..]));
    assert_eq!(get(&db, b"clone").as_deref(), Some(&b"also"[..]));
    db.close().unwrap();
}

const THREADS: usize = 16;
const OPS_PER_THREAD: usize = 120;
const SHARED_KEYS: usize = 8;

fn own_key(t: usize, i: usize) -> Vec<u8> {
    format!("t{t:02}/own/{i:04}").into_bytes()
}

fn own_value(t: usize, i: usize, round: usize) -> Vec<u8> {
    format!("t{t:02}-i{i}-r{round}-{}", "x".repeat(1000 + (t * 31 + i * 7) % 1000)).into_bytes()
}

fn shared_key(j: usize) -> Vec<u8> {
    format!("shared/{j}").into_bytes()
}

/// A shared key's value names its writer and the writer's step; parsing it checks the
/// value is one some thread wrote, not a mix of two.
fn shared_value(t: usize, i: usize) -> Vec<u8> {
    format!("shared-by-t{t:02}-step{i:04}").into_bytes()
}

fn parse_shared(v: &[u8]) -> (usize, usize) {
    let s = std::str::from_utf8(v).expect("utf8");
    let rest = s.strip_prefix("shared-by-t").unwrap_or_else(|| panic!("foreign shared value {s:?}"));
    let (t, i) = rest.split_once("-step").unwrap_or_else(|| panic!("foreign shared value {s:?}"));
    (t.parse().unwrap(), i.parse().unwrap())
}

#[test]
fn sixteen_threads_then_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options().wal_segment_bytes(256 << 10)).unwrap();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = db.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                // Expected final state of this thread's own keys.
                let mut own: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
                for i in 0..OPS_PER_THREAD {
                    let key = own_key(t, i % 40);
                    let round = i / 40;
                    match i % 6 {
                        0..=2 => {
                            let value = own_value(t, i % 40, round);
                            db.put(&key, &value).unwrap();
                            assert_eq!(get(&db, &key).as_ref(), Some(&value), "read your own write");
                            own.insert(key, Some(value));
                        }
                        3 => {
                            db.delete(&key).unwrap();
                            assert_eq!(get(&db, &key), None);
                            own.insert(key, None);
                        }
                        4 => {
                            let j = (t + i) % SHARED_KEYS;
                            let value = shared_value(t, i);
                            db.put(shared_key(j), &value).unwrap();
                            let seen = get(&db, &shared_key(j)).expect("a shared key once written stays");
                            parse_shared(&seen);
                        }
                        _ => {
                            let mut batch = WriteBatch::new();
                            let value = own_value(t, i % 40, round);
                            batch.put(&key, b"overwritten in the same batch").unwrap();
                            batch.put(&key, &value).unwrap();
                            let j = (t * 3 + i) % SHARED_KEYS;
                            batch.put(shared_key(j), shared_value(t, i)).unwrap();
                            db.write_batch(batch).unwrap();
                            assert_eq!(get(&db, &key).as_ref(), Some(&value));
                            own.insert(key, Some(value));
                        }
                    }
                    if i % 10 == 9 {
                        let keys: Vec<Vec<u8>> = own.keys().cloned().collect();
                        let got = db.multi_get(&keys).unwrap();
                        for (k, v) in keys.iter().zip(got) {
                            assert_eq!(v.map(Vec::from), own[k], "multi_get of {k:?}");
                        }
                    }
                }
                own
            })
        })
        .collect();
    let mut expected: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
    for h in handles {
        expected.extend(h.join().expect("writer thread"));
    }
    // The shared keys' final values, as the live database shows them.
    for j in 0..SHARED_KEYS {
        let v = get(&db, &shared_key(j)).expect("every shared key was written");
        parse_shared(&v);
        expected.insert(shared_key(j), Some(v));
    }
    let stats = db.stats();
    let live = expected.values().filter(|v| v.is_some()).count() as u64;
    assert_eq!(stats.keys, live, "{}", counters(&stats));
    assert_eq!(stats.puts, (THREADS * OPS_PER_THREAD * 4 / 6) as u64, "{}", counters(&stats));
    assert_eq!(stats.deletes, (THREADS * OPS_PER_THREAD / 6) as u64, "{}", counters(&stats));
    let batches = (THREADS * OPS_PER_THREAD / 6) as u64;
    assert!(
        (batches..=2 * batches).contains(&stats.batches),
        "one part per shard a batch touches: {}",
        counters(&stats)
    );
    assert!(stats.wal_segments_created >= 1, "256 KiB segments rotate under this load: {}", counters(&stats));
    db.close().unwrap();

    let db = Db::open(dir.path(), options()).unwrap();
    for (k, v) in &expected {
        assert_eq!(get(&db, k).as_ref(), v.as_ref(), "after reopen, key {:?}", String::from_utf8_lossy(k));
    }
    assert_eq!(db.stats().keys, live);
    db.close().unwrap();
}
