//! Ordered scans across shards return exactly the model's entries, in key order, for
//! random ranges and prefixes, across chunk boundaries, deletes and reopens.

use std::collections::BTreeMap;
use std::ops::Bound;

use ringdb::{Db, Options, SCAN_CHUNK};

mod common;

use common::Rng;

fn seed() -> u64 {
    common::seed("scan_ordered")
}

fn key(rng: &mut Rng) -> Vec<u8> {
    // Short keys over a small alphabet, so prefixes and ranges have many members.
    let len = 1 + rng.range(0, 3) as usize;
    (0..len).map(|_| b"abcd\xff"[rng.range(0, 4) as usize]).collect()
}

fn collect(scan: ringdb::Scan) -> Vec<(Vec<u8>, Vec<u8>)> {
    scan.map(|e| {
        let (k, v) = e.expect("scan entry");
        (k.to_vec(), v.to_vec())
    })
    .collect()
}

fn model_range(model: &BTreeMap<Vec<u8>, Vec<u8>>, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
    model.iter().filter(|(k, _)| (start, end).contains(&k[..])).map(|(k, v)| (k.clone(), v.clone())).collect()
}

trait Contains {
    fn contains(&self, k: &[u8]) -> bool;
}
impl Contains for (Bound<&[u8]>, Bound<&[u8]>) {
    fn contains(&self, k: &[u8]) -> bool {
        std::ops::RangeBounds::<[u8]>::contains(self, k)
    }
}

fn bound(rng: &mut Rng) -> Bound<Vec<u8>> {
    match rng.range(0, 2) {
        0 => Bound::Unbounded,
        1 => Bound::Included(key(rng)),
        _ => Bound::Excluded(key(rng)),
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(&k[..]),
        Bound::Excluded(k) => Bound::Excluded(&k[..]),
        Bound::Unbounded => Bound::Unbounded,
    }
}

#[test]
fn random_scans_match_a_model() {
    let mut rng = Rng::new(seed());
    let dir = tempfile::tempdir().unwrap();
    let options = || Options::default().shards(3).wal_segment_bytes(256 << 10);
    let mut db = Db::open(dir.path(), options()).unwrap();
    let mut model = BTreeMap::new();
    for round in 0..6 {
        for i in 0..400 {
            let k = key(&mut rng);
            if rng.range(0, 3) == 0 {
                db.delete(&k).unwrap();
                model.remove(&k);
            } else {
                let v = format!("{round}-{i}").into_bytes();
                db.put(&k, &v).unwrap();
                model.insert(k, v);
            }
        }
        for _ in 0..40 {
            let (start, end) = (bound(&mut rng), bound(&mut rng));
            let (s, e) = (as_ref(&start), as_ref(&end));
            let got = collect(db.scan((s.map(|k| k), e.map(|k| k))));
            assert_eq!(got, model_range(&model, s, e), "range {start:?}..{end:?}");
            let prefix = key(&mut rng);
            let got = collect(db.scan_prefix(&prefix));
            let want: Vec<_> =
                model.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(k, v)| (k.clone(), v.clone())).collect();
            assert_eq!(got, want, "prefix {prefix:?}");
        }
        assert_eq!(collect(db.scan(..)), model.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>());
        if round % 2 == 1 {
            db.close().unwrap();
            db = Db::open(dir.path(), options()).unwrap();
        }
    }
    db.close().unwrap();
}

#[test]
fn long_scans_cross_chunk_boundaries_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default().shards(4)).unwrap();
    let n = SCAN_CHUNK * 9 + 7;
    let mut batch = ringdb::WriteBatch::new();
    for i in 0..n {
        batch.put(format!("key{i:06}").as_bytes(), (i as u64).to_le_bytes()).unwrap();
    }
    db.write_batch(batch).unwrap();
    let got: Vec<_> = db.scan(..).map(|e| e.unwrap()).collect();
    assert_eq!(got.len(), n);
    for (i, (k, v)) in got.iter().enumerate() {
        assert_eq!(&k[..], format!("key{i:06}").as_bytes());
        assert_eq!(&v[..], &(i as u64).to_le_bytes());
    }
    // An empty and an inverted range hold nothing, and do not panic.
    assert_eq!(db.scan(&b"key000010"[..]..&b"key000010"[..]).count(), 0);
    assert_eq!(db.scan((Bound::Excluded(&b"b"[..]), Bound::Excluded(&b"b"[..]))).count(), 0);
    assert_eq!(db.scan(&b"z"[..]..&b"a"[..]).count(), 0);
    assert_eq!(db.scan_prefix(b"key0001").count(), 100);
    let stats = db.stats();
    assert_eq!(stats.keys, n as u64);
    assert!(stats.index_bytes_per_key() > 15.0, "{}", stats.index_bytes_per_key());
    db.close().unwrap();
}

#[test]
fn scan_after_close_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default().shards(2)).unwrap();
    db.put(b"a", b"1").unwrap();
    let clone = db.clone();
    db.close().unwrap();
    let first = clone.scan(..).next().expect("an error item");
    assert!(matches!(first, Err(ringdb::Error::Closed)), "{first:?}");
}
