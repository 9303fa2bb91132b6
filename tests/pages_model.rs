//! The paged store matches a `BTreeMap` model through random puts (values growing,
//! shrinking, some large enough for chunks), deletes, gets, multi_gets, scans,
//! checkpoints and reopens, with a page cache far smaller than the data; its log is
//! truncated by checkpoints, its data file stays bounded, and a corrupt page is
//! reported as corruption naming the file and offset, never returned as data.

use std::collections::BTreeMap;

use ringdb::format::checkpoint::newest_slot;
use ringdb::format::tree::{NodeView, check_node};
use ringdb::{Db, Error, Options};

mod common;

use common::Rng;

fn seed() -> u64 {
    common::seed("pages_model")
}

fn options() -> Options {
    Options::default()
        .shards(2)
        .cache_bytes(128 << 10)
        .page_records_max(4)
        .page_chunk_bytes(3000)
        .wal_segment_bytes(256 << 10)
        .checkpoint_wal_bytes(256 << 10)
}

fn value(rng: &mut Rng, round: usize, i: usize) -> Vec<u8> {
    let len = match rng.range(0, 9) {
        0 => 3000 + rng.range(0, 5999) as usize,
        1..=3 => 0,
        _ => rng.range(0, 599) as usize,
    };
    let mut v = format!("{round}:{i}:").into_bytes();
    v.resize(len.max(v.len()), b'a' + (i % 26) as u8);
    v
}

fn check(db: &Db, model: &BTreeMap<Vec<u8>, Vec<u8>>, rng: &mut Rng, keys: u64) {
    for _ in 0..200 {
        let k = format!("key{:05}", rng.range(0, keys - 1)).into_bytes();
        assert_eq!(db.get(&k).unwrap().map(|v| v.to_vec()), model.get(&k).cloned(), "get {k:?}");
    }
    let probe: Vec<Vec<u8>> = (0..64).map(|_| format!("key{:05}", rng.range(0, keys - 1)).into_bytes()).collect();
    let got = db.multi_get(&probe).unwrap();
    for (k, v) in probe.iter().zip(got) {
        assert_eq!(v.map(|v| v.to_vec()), model.get(k).cloned(), "multi_get {k:?}");
    }
    let scanned: Vec<(Vec<u8>, Vec<u8>)> =
        db.scan(..).map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec()))).collect::<Result<_, _>>().unwrap();
    let want: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(scanned.len(), want.len());
    assert!(scanned == want, "scan differs from the model");
}

#[test]
fn random_operations_match_a_model_across_checkpoints_and_reopens() {
    let mut rng = Rng::new(seed());
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(dir.path(), options()).unwrap();
    let mut model = BTreeMap::new();
    let keys = 600;
    for round in 0..12 {
        for i in 0..500 {
            let k = format!("key{:05}", rng.range(0, keys - 1)).into_bytes();
            if rng.range(0, 4) == 0 {
                db.delete(&k).unwrap();
                model.remove(&k);
            } else {
                let v = value(&mut rng, round, i);
                db.put(&k, &v).unwrap();
                model.insert(k, v);
            }
        }
        match round % 4 {
            0 => db.checkpoint().unwrap(),
            1 => {
                db.close().unwrap();
                db = Db::open(dir.path(), options()).unwrap();
            }
            2 => {
                db.checkpoint().unwrap();
                db.close().unwrap();
                db = Db::open(dir.path(), options()).unwrap();
            }
            _ => {}
        }
        check(&db, &model, &mut rng, keys);
    }
    let stats = db.stats();
    assert!(stats.pages > 0, "{} pages", stats.pages);
    assert!(stats.cache_misses > 0, "a cache of 128 KiB must miss on this data set");
    db.close().unwrap();
}

#[test]
fn checkpoints_truncate_the_log_and_reopen_replays_only_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options().checkpoint_wal_bytes(64 << 20)).unwrap();
    let v = vec![7u8; 500];
    for i in 0..3000u32 {
        db.put(format!("k{i:06}").as_bytes(), &v).unwrap();
    }
    let before = db.stats().wal_segments;
    db.checkpoint().unwrap();
    let after = db.stats();
    assert!(before > 3 && after.wal_segments < before, "segments {before} -> {}", after.wal_segments);
    for i in 0..10u32 {
        db.put(format!("late{i}").as_bytes(), b"x").unwrap();
    }
    db.close().unwrap();
    let db = Db::open(dir.path(), options().checkpoint_wal_bytes(64 << 20)).unwrap();
    let stats = db.stats();
    assert_eq!(stats.keys, 3010);
    assert!(stats.recovered_records <= 10 + 1000, "replayed {} records", stats.recovered_records);
    assert_eq!(db.get(b"k002999").unwrap().as_deref(), Some(&v[..]));
    assert_eq!(db.get(b"late9").unwrap().as_deref(), Some(&b"x"[..]));
    db.close().unwrap();
}

#[test]
fn space_stays_bounded_under_overwrites_of_changing_size() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options()).unwrap();
    let keys = 2000u32;
    for round in 0..10u32 {
        let len = 40 + ((round * 97) % 400) as usize;
        for i in 0..keys {
            db.put(format!("k{i:05}").as_bytes(), vec![round as u8; len]).unwrap();
        }
        db.checkpoint().unwrap();
    }
    let stats = db.stats();
    // The last round's records: 2000 keys of 6 bytes and values of its length.
    let len = 40 + ((9 * 97) % 400) as u64;
    let user = u64::from(keys) * (6 + len);
    // The bounds: leaves of at most 4 records (this test's `page_records_max`) are at
    // least half full and padded to the page unit, so the nodes in use hold at most
    // three times the records; a checkpoint that rewrites every leaf needs the old and
    // the new copy at once, and freed extents of other sizes than the next round's
    // nodes stay free until they fit, so the file holds at most four times what is in
    // use, plus 256 KiB of slack per shard.
    let constant = 2 * (256 << 10);
    assert!(stats.live_bytes <= 3 * user + constant, "{} bytes in use for {user}", stats.live_bytes);
    println!(
        "data file {} bytes for {} bytes of records ({:.2}x); {} bytes in use, {} nodes",
        stats.data_file_bytes,
        user,
        stats.data_file_bytes as f64 / user as f64,
        stats.live_bytes,
        stats.pages
    );
    assert!(
        stats.data_file_bytes <= 4 * stats.live_bytes + constant,
        "data file {} bytes for {} bytes of records",
        stats.data_file_bytes,
        user
    );
    db.close().unwrap();
}

#[test]
fn a_corrupt_page_is_reported_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || options().shards(1);
    let db = Db::open(dir.path(), opts()).unwrap();
    for i in 0..40u32 {
        db.put(format!("k{i:03}").as_bytes(), format!("value {i}").as_bytes()).unwrap();
    }
    db.checkpoint().unwrap();
    db.close().unwrap();
    // Find the leaf holding k007 by walking the tree from the checkpoint's root.
    let shard = dir.path().join("shard-000");
    let slot = newest_slot(&std::fs::read(shard.join("CHECKPOINT")).unwrap()).0.unwrap();
    let data = std::fs::read(shard.join("pages.dat")).unwrap();
    let node_at = |offset: u64, len: u32| {
        let image = &data[offset as usize..(offset + u64::from(len)) as usize];
        check_node(image).unwrap();
        image
    };
    let (_, mut offset, mut len) = slot.root;
    let leaf = loop {
        let view = NodeView::new(node_at(offset, len));
        if view.is_leaf() {
            break view;
        }
        let child = view.child(view.child_for(b"k007"));
        (offset, len) = (child.offset, child.len);
    };
    assert!(slot.root_level > 0, "40 keys of at most 4 per leaf make a tree of several nodes");
    let n = leaf.search(b"k007").unwrap();
    let (value_at, _) = leaf.value_span(n);
    let other_key = (0..40u32).map(|i| format!("k{i:03}").into_bytes()).find(|k| leaf.search(k).is_err()).unwrap();
    let mut data = data.clone();
    data[offset as usize + value_at] ^= 0x10;
    std::fs::write(shard.join("pages.dat"), &data).unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    match db.get(b"k007") {
        Err(Error::Corruption { file, offset: at, .. }) => {
            assert!(file.ends_with("pages.dat"), "{file:?}");
            assert_eq!(at, offset);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // Keys in other leaves still read.
    assert!(db.get(&other_key).unwrap().is_some());
    db.close().unwrap();
}

/// Checkpoints must not starve under a steady write load (a flush is almost always in
/// flight), under every durability mode, and what was written must all be there after.
#[test]
fn checkpoints_keep_up_under_sustained_writes() {
    for durability in [
        ringdb::Durability::Sync,
        ringdb::Durability::Periodic { bytes: 64 << 10, items: 256, interval: std::time::Duration::from_millis(2) },
        ringdb::Durability::None,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let opts = || options().durability(durability).checkpoint_wal_bytes(128 << 10);
        let db = Db::open(dir.path(), opts()).unwrap();
        let writers = 6u64;
        let per_writer = 1500u64;
        std::thread::scope(|s| {
            for w in 0..writers {
                let db = db.clone();
                s.spawn(move || {
                    for i in 0..per_writer {
                        db.put(format!("w{w}-{:04}", i % 400).as_bytes(), format!("{i:0100}").as_bytes()).unwrap();
                    }
                });
            }
        });
        let stats = db.stats();
        assert!(stats.checkpoints >= 2, "{durability:?}: only {} checkpoints during the load", stats.checkpoints);
        assert!(stats.wal_segments <= 16, "{durability:?}: {} log segments kept", stats.wal_segments);
        db.close().unwrap();
        let db = Db::open(dir.path(), opts()).unwrap();
        for w in 0..writers {
            for k in 0..400u64 {
                let last = (0..per_writer).rev().find(|i| i % 400 == k).unwrap();
                let got = db.get(format!("w{w}-{k:04}").as_bytes()).unwrap();
                assert_eq!(got.as_deref(), Some(format!("{last:0100}").as_bytes()), "{durability:?}: w{w}-{k}");
            }
        }
        db.close().unwrap();
    }
}

/// A get that misses the page cache counts one miss and one node read per node on its
/// path (the root branch, then the leaf); the next get of a key in the same leaf hits
/// both.
#[test]
fn cache_counters_count_each_lookup_once() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || options().shards(1);
    let db = Db::open(dir.path(), opts()).unwrap();
    for i in 0..8u32 {
        db.put(format!("k{i}").as_bytes(), b"small value").unwrap();
    }
    db.checkpoint().unwrap();
    db.close().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    let before = db.stats();
    assert_eq!(db.get(b"k0").unwrap().as_deref(), Some(&b"small value"[..]));
    let after = db.stats();
    assert_eq!(after.cache_misses - before.cache_misses, 2, "a miss for the root and one for the leaf");
    assert_eq!(after.pages_read - before.pages_read, 2, "the root and the leaf read for one uncached get");
    assert_eq!(db.get(b"k1").unwrap().as_deref(), Some(&b"small value"[..]));
    let again = db.stats();
    assert_eq!(again.cache_hits - after.cache_hits, 2, "k1 shares k0's leaf (4 records a leaf)");
    assert_eq!(again.pages_read, after.pages_read);
    db.close().unwrap();
}
