//! Proves typed tables round-trip records of mixed fields through the log, the pages and
//! a reopen; refuse another layout (type, field order, version) with
//! `Error::SchemaMismatch`, also after a restart; keep index order in scans; let `with`
//! see the latest value, in place (no copy) once records are in pages; make `update`
//! atomic under concurrent writers; and keep the reserved keys away from the
//! key-value API.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};
use ringdb::{Db, Error, Options, Record, Table, WriteBatch};

mod common;
use common::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Mixed {
    weight: f64,
    tag: [u8; 16],
    count: u32,
    kind: u8,
    pad: [u8; 3],
}
ringdb::record!(Mixed, "Mixed", 1, [weight, tag, count, kind, pad]);

/// Same size, two fields swapped: a changed layout.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct MixedSwapped {
    weight: f64,
    tag: [u8; 16],
    kind: u8,
    pad: [u8; 3],
    count: u32,
}
ringdb::record!(MixedSwapped, "Mixed", 1, [weight, tag, kind, pad, count]);

/// Same fields, a new version.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct MixedV2 {
    weight: f64,
    tag: [u8; 16],
    count: u32,
    kind: u8,
    pad: [u8; 3],
}
ringdb::record!(MixedV2, "Mixed", 2, [weight, tag, count, kind, pad]);

/// Another type altogether.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Counter {
    hits: u64,
}
ringdb::record!(Counter, "Counter", 1, [hits]);

/// A hand-written schema that lists a field twice (and leaves one out).
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Twice {
    a: u32,
    b: u32,
}
impl Record for Twice {
    fn schema() -> ringdb::Schema {
        let a = ringdb::Field { name: "a", offset: 0, size: 4 };
        ringdb::Schema { name: "Twice", version: 1, fields: vec![a.clone(), a] }
    }
}

fn mixed(i: u64) -> Mixed {
    let mut tag = [0u8; 16];
    tag[..8].copy_from_slice(&i.to_le_bytes());
    tag[15] = 0xA5;
    Mixed {
        weight: i as f64 * 0.5 - 3.25,
        tag,
        count: (i as u32).wrapping_mul(2_654_435_761),
        kind: (i % 251) as u8,
        pad: [0; 3],
    }
}

fn options() -> Options {
    Options::default().shards(2).wal_segment_bytes(1 << 20)
}

#[test]
fn mixed_records_round_trip_through_pages_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let indices: Vec<u64> = (0..300).map(|i| i * 7919 + (i % 3)).collect();
    {
        let db = Db::open(dir.path(), options()).unwrap();
        let t = db.table::<Mixed>("mixed").unwrap();
        assert!(t.is_empty());
        for &i in &indices {
            t.set(i, &mixed(i)).unwrap();
        }
        assert_eq!(t.len(), indices.len() as u64);
        // Before a checkpoint the records are in memory (inline); after, in pages.
        for &i in &indices {
            assert_eq!(t.get(i).unwrap(), Some(mixed(i)));
        }
        db.checkpoint().unwrap();
        for &i in &indices {
            assert_eq!(t.get(i).unwrap(), Some(mixed(i)));
        }
        assert_eq!(t.get(1).unwrap(), None);
        db.close().unwrap();
    }
    let db = Db::open(dir.path(), options()).unwrap();
    let t = db.table::<Mixed>("mixed").unwrap();
    assert_eq!(t.len(), indices.len() as u64, "the record count is rebuilt on open");
    for &i in &indices {
        assert_eq!(t.get(i).unwrap(), Some(mixed(i)), "record {i} after reopen");
        assert_eq!(t.with(i, |r| r.count).unwrap(), Some(mixed(i).count));
    }
    db.close().unwrap();
}

#[test]
fn another_layout_is_refused_also_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path(), options()).unwrap();
        let t = db.table::<Mixed>("m").unwrap();
        t.set(5, &mixed(5)).unwrap();
        // In the same process, through the shared handle registry.
        let err = db.table::<MixedSwapped>("m").unwrap_err();
        assert!(matches!(&err, Error::SchemaMismatch { table, .. } if table == "m"), "{err}");
        db.close().unwrap();
    }
    let db = Db::open(dir.path(), options()).unwrap();
    for err in [
        db.table::<MixedSwapped>("m").unwrap_err(),
        db.table::<MixedV2>("m").unwrap_err(),
        db.table::<Counter>("m").unwrap_err(),
    ] {
        let Error::SchemaMismatch { table, stored, requested } = &err else {
            panic!("expected a schema mismatch: {err}")
        };
        assert_eq!(table, "m");
        assert!(stored.contains("`Mixed` v1") && stored.contains("count@24+4"), "stored: {stored}");
        assert_ne!(stored, requested);
        let text = err.to_string();
        assert!(text.contains(stored.as_str()) && text.contains(requested.as_str()), "{text}");
    }
    let err = db.table::<Counter>("m").unwrap_err().to_string();
    assert!(err.contains("`Counter` v1, 8 bytes"), "{err}");
    // The right type still opens and reads the record.
    let t = db.table::<Mixed>("m").unwrap();
    assert_eq!(t.get(5).unwrap(), Some(mixed(5)));
    // Other tables are independent of it.
    let c = db.table::<Counter>("counters").unwrap();
    c.set(5, &Counter { hits: 1 }).unwrap();
    assert_eq!(t.get(5).unwrap(), Some(mixed(5)));
    assert_eq!(c.get(5).unwrap(), Some(Counter { hits: 1 }));
    assert_eq!(t.scan(..).count(), 1);
    let err = db.table::<Twice>("twice").unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("overlaps")), "{err}");
    assert!(matches!(db.table::<Counter>(""), Err(Error::InvalidArgument(_))));
    db.close().unwrap();
}

#[test]
fn scans_are_in_index_order_and_respect_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options().shards(3)).unwrap();
    let t = db.table::<Counter>("c").unwrap();
    let seed = common::seed("scans_are_in_index_order_and_respect_bounds");
    let mut rng = Rng::new(seed);
    let mut model = std::collections::BTreeMap::new();
    // Indices that differ in every byte, so big-endian key order is tested, and records
    // both in pages and in memory.
    for round in 0..2 {
        for _ in 0..400 {
            let i = rng.next_u64() >> rng.range(0, 63);
            model.insert(i, i ^ 0xFFFF);
            t.set(i, &Counter { hits: i ^ 0xFFFF }).unwrap();
        }
        if round == 0 {
            db.checkpoint().unwrap();
        }
    }
    let got: Vec<(u64, u64)> = t.scan(..).map(|e| e.map(|(i, r)| (i, r.hits))).collect::<Result<_, _>>().unwrap();
    let want: Vec<(u64, u64)> = model.iter().map(|(&i, &h)| (i, h)).collect();
    assert_eq!(got, want);
    let keys: Vec<u64> = model.keys().copied().collect();
    let (lo, hi) = (keys[keys.len() / 4], keys[3 * keys.len() / 4]);
    let part: Vec<u64> = t.scan(lo..hi).map(|e| e.unwrap().0).collect();
    assert_eq!(part, model.range(lo..hi).map(|(&i, _)| i).collect::<Vec<_>>());
    let part: Vec<u64> = t.scan(lo..=hi).map(|e| e.unwrap().0).collect();
    assert_eq!(part, model.range(lo..=hi).map(|(&i, _)| i).collect::<Vec<_>>());
    // u64::MAX is a valid index and the last in order.
    t.set(u64::MAX - 1, &Counter { hits: 9 }).unwrap();
    assert_eq!(t.scan(..).last().unwrap().unwrap(), (u64::MAX - 1, Counter { hits: 9 }));
    // A user's scan sees none of it; a table's scan sees no user key.
    db.put(b"\xFF\xFF", b"user").unwrap();
    assert_eq!(db.scan_prefix(b"").map(|e| e.unwrap().0.to_vec()).collect::<Vec<_>>(), [b"\xFF\xFF".to_vec()]);
    assert_eq!(t.scan(..).count(), model.len() + 1);
    db.close().unwrap();
}

#[test]
fn long_scans_see_every_record_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options().shards(3).durability(ringdb::Durability::None)).unwrap();
    let t = db.table::<Counter>("long").unwrap();
    // About 13,000 records per shard: chunks grow to full size (4096) and the next ones
    // are asked for ahead. Half are in pages, the odd ones rewritten in memory after.
    let records: Vec<(u64, Counter)> = (0..40_000u64).map(|i| (i * 3, Counter { hits: i })).collect();
    for part in records.chunks(5000) {
        t.set_many(part).unwrap();
    }
    db.checkpoint().unwrap();
    let rewritten: Vec<(u64, Counter)> =
        records.iter().filter(|(i, _)| i % 2 == 1).map(|&(i, c)| (i, Counter { hits: c.hits + 1 })).collect();
    t.set_many(&rewritten).unwrap();
    assert_eq!(t.len(), records.len() as u64);
    let mut expected: std::collections::BTreeMap<u64, u64> = records.iter().map(|&(i, c)| (i, c.hits)).collect();
    for (i, c) in &rewritten {
        expected.insert(*i, c.hits);
    }
    let got: Vec<(u64, u64)> = t.scan(..).map(|e| e.map(|(i, c)| (i, c.hits))).collect::<Result<_, _>>().unwrap();
    assert_eq!(got, expected.iter().map(|(&i, &h)| (i, h)).collect::<Vec<_>>());
    let from = 30_001;
    let got: Vec<u64> = t.scan(from..).map(|e| e.unwrap().0).collect();
    assert_eq!(got, expected.range(from..).map(|(&i, _)| i).collect::<Vec<_>>());
    // Dropping a scan with chunks asked for ahead is fine.
    let mut scan = t.scan(..);
    for _ in 0..9000 {
        scan.next().unwrap().unwrap();
    }
    drop(scan);
    assert_eq!(t.get(3).unwrap(), Some(Counter { hits: 2 }));
    db.close().unwrap();
}

#[test]
fn with_sees_the_latest_value_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options()).unwrap();
    let t = db.table::<Mixed>("w").unwrap();
    for i in 0..200 {
        t.set(i, &mixed(i)).unwrap();
    }
    // User records of odd sizes, which sort before the table's and share its pages.
    for k in 0..7u8 {
        db.put(vec![b'k'; 1 + k as usize], vec![k; 3 + 2 * k as usize]).unwrap();
    }
    db.checkpoint().unwrap();
    // Read every record where it lies in the page cache (the pages were just written,
    // so they are cached) and check that it needed no copy: records start 8-aligned in
    // pages and a table's 20-byte keys put the value 40 bytes after the record's start,
    // whatever records of other sizes come before it in the page.
    for i in 0..200 {
        let seen = t.with(i, |r| *r).unwrap();
        assert_eq!(seen, Some(mixed(i)));
    }
    assert_eq!(t.copied_reads(), 0, "records in pages are read in place");
    for i in 0..200 {
        let mut next = mixed(i + 1000);
        next.kind = 7;
        t.set(i, &next).unwrap();
        // In memory now (written since the checkpoint), also read in place.
        assert_eq!(t.with(i, |r| (r.kind, r.count)).unwrap(), Some((7, next.count)), "after set");
        t.update(i, |r| r.kind = 8).unwrap();
        assert_eq!(t.with(i, |r| r.kind).unwrap(), Some(8), "after update");
        if i % 50 == 0 {
            db.checkpoint().unwrap();
            assert_eq!(t.with(i, |r| r.kind).unwrap(), Some(8), "after a checkpoint");
        }
    }
    assert_eq!(t.copied_reads(), 0, "records written since the checkpoint are read in place too");
    assert!(t.delete(3).unwrap());
    assert_eq!(t.with(3, |_| panic!("not called for an absent record")).unwrap(), None);
    assert!(!t.delete(3).unwrap());
    assert_eq!(t.update(3, |r| r.kind = 1).unwrap(), None, "update of an absent record writes nothing");
    assert_eq!(t.get(3).unwrap(), None);
    let seen = t.with_many(&[5, 3, 2_000, 6], |i, r| (i, r.map(|r| r.kind))).unwrap();
    assert_eq!(seen, [(5, Some(8)), (3, None), (2_000, None), (6, Some(8))]);
    assert_eq!(t.len(), 199);
    db.close().unwrap();
}

/// A record larger than `page_chunk_bytes`: stored in a chunk of its own.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Wide {
    words: [u64; 512],
}
ringdb::record!(Wide, "Wide", 1, [words]);

#[test]
fn records_larger_than_a_page_value_live_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let wide = |i: u64| Wide { words: std::array::from_fn(|k| i * 1000 + k as u64) };
    {
        let db = Db::open(dir.path(), options().cache_bytes(64 << 10)).unwrap();
        let t = db.table::<Wide>("wide").unwrap();
        for i in 0..20 {
            t.set(i, &wide(i)).unwrap();
        }
        db.checkpoint().unwrap();
        for i in 0..20 {
            assert_eq!(t.with(i, |w| w.words[511]).unwrap(), Some(i * 1000 + 511));
        }
        let got = t.with_many(&[19, 0, 7], |i, w| (i, w.map(|w| w.words[0]))).unwrap();
        assert_eq!(got, [(19, Some(19_000)), (0, Some(0)), (7, Some(7000))]);
        t.update(4, |w| w.words[100] = 1).unwrap();
        db.close().unwrap();
    }
    let db = Db::open(dir.path(), options()).unwrap();
    let t = db.table::<Wide>("wide").unwrap();
    let mut four = wide(4);
    four.words[100] = 1;
    assert_eq!(t.get(4).unwrap(), Some(four));
    assert_eq!(t.scan(..).map(|e| e.unwrap().1).collect::<Vec<_>>().len(), 20);
    db.close().unwrap();
}

#[test]
fn with_many_reads_uncached_pages() {
    let dir = tempfile::tempdir().unwrap();
    // A cache far smaller than the data: most records are read from disk.
    let db = Db::open(dir.path(), options().cache_bytes(64 << 10).page_records_max(64)).unwrap();
    let t = db.table::<Mixed>("big").unwrap();
    let mut batch: Vec<u64> = (0..4000).collect();
    for &i in &batch {
        t.set(i, &mixed(i)).unwrap();
    }
    db.checkpoint().unwrap();
    let mut rng = Rng::new(7);
    for i in (1..batch.len()).rev() {
        batch.swap(i, rng.range(0, i as u64) as usize);
    }
    for chunk in batch.chunks(100) {
        let got = t.with_many(chunk, |i, r| r.copied().map(|r| (i, r))).unwrap();
        let want: Vec<_> = chunk.iter().map(|&i| Some((i, mixed(i)))).collect();
        assert_eq!(got, want);
    }
    for &i in batch.iter().take(300) {
        assert_eq!(t.with(i, |r| r.weight).unwrap(), Some(mixed(i).weight));
    }
    db.close().unwrap();
}

#[test]
fn update_is_atomic_under_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options().durability(ringdb::Durability::None)).unwrap();
    let t = db.table::<Counter>("hits").unwrap();
    const SLOTS: u64 = 4;
    const THREADS: u64 = 6;
    const ROUNDS: u64 = 300;
    for s in 0..SLOTS {
        t.set(s, &Counter { hits: 0 }).unwrap();
    }
    let t = Arc::new(t);
    let threads: Vec<_> = (0..THREADS)
        .map(|n| {
            // Separate handles of the same table share its stripes.
            let t: Table<Counter> = if n % 2 == 0 { (*t).clone() } else { db.table::<Counter>("hits").unwrap() };
            std::thread::spawn(move || {
                for r in 0..ROUNDS {
                    t.update((n + r) % SLOTS, |c| c.hits += 1).unwrap().expect("slot is set");
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let total: u64 = (0..SLOTS).map(|s| t.get(s).unwrap().unwrap().hits).sum();
    assert_eq!(total, THREADS * ROUNDS, "no increment was lost");
    db.close().unwrap();
}

#[test]
fn capacity_bounds_indices_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path(), options()).unwrap();
        let t = db.table::<Counter>("cap").unwrap();
        assert_eq!(t.capacity(), u64::MAX);
        let t = t.with_capacity(100).unwrap();
        t.set(99, &Counter { hits: 1 }).unwrap();
        let err = t.set(100, &Counter { hits: 1 }).unwrap_err();
        assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("capacity of 100")), "{err}");
        let err = t.clone().with_capacity(50).unwrap_err();
        assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("record 99")), "{err}");
        assert_eq!(t.capacity(), 100);
        db.close().unwrap();
    }
    let db = Db::open(dir.path(), options()).unwrap();
    let t = db.table::<Counter>("cap").unwrap();
    assert_eq!(t.capacity(), 100);
    assert!(t.set(100, &Counter { hits: 1 }).is_err());
    t.delete(99).unwrap();
    let t = t.with_capacity(10).unwrap();
    assert_eq!(t.capacity(), 10);
    db.close().unwrap();
}

#[test]
fn reserved_keys_are_refused_by_the_key_value_api() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options()).unwrap();
    let t = db.table::<Counter>("r").unwrap();
    t.set(1, &Counter { hits: 1 }).unwrap();
    let reserved = b"\xFFringdb\x01anything";
    for err in [
        db.put(reserved, b"x").unwrap_err(),
        db.delete(reserved).unwrap_err(),
        db.get(reserved).unwrap_err(),
        db.multi_get(&[reserved]).unwrap_err(),
        WriteBatch::new().put(reserved, b"x").map(|_| ()).unwrap_err(),
        WriteBatch::new().delete(reserved).map(|_| ()).unwrap_err(),
    ] {
        assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("reserved for typed tables")), "{err}");
    }
    // Keys next to the prefix are the user's; a user's scan skips the table's records
    // (enough of them to fill many chunks) and sees the keys on both sides.
    let many: Vec<(u64, Counter)> = (0..3000).map(|i| (i, Counter { hits: i })).collect();
    t.set_many(&many).unwrap();
    db.put(b"\xFFringd", b"ok").unwrap();
    db.put(b"\xFFringdc", b"ok").unwrap();
    db.put(b"\xFFz", b"ok").unwrap();
    let keys: Vec<Vec<u8>> = db.scan(..).map(|e| e.unwrap().0.to_vec()).collect();
    assert_eq!(keys, [b"\xFFringd".to_vec(), b"\xFFringdc".to_vec(), b"\xFFz".to_vec()]);
    let keys: Vec<Vec<u8>> = db.scan(&b"\xFFringdb"[..]..).map(|e| e.unwrap().0.to_vec()).collect();
    assert_eq!(keys, [b"\xFFringdc".to_vec(), b"\xFFz".to_vec()]);
    assert_eq!(db.scan_prefix(b"\xFFringdb").count(), 0);
    t.set(1, &Counter { hits: 1 }).unwrap();
    assert_eq!(t.get(1).unwrap(), Some(Counter { hits: 1 }));
    db.close().unwrap();
}
