//! Readers that miss the cache read pages and chunks themselves, on their own
//! threads, while checkpoints move records, free extents and reuse them. Every value
//! they get must be one that was written for that key (values name their key and
//! carry a checksum), never bytes of another record, never a false corruption error.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ringdb::{Db, Durability, Options};

mod common;

use common::Rng;

const KEYS: u64 = 400;

fn options() -> Options {
    Options::default()
        .shards(2)
        .durability(Durability::None)
        .cache_bytes(64 << 10)
        .page_records_max(4)
        .page_chunk_bytes(1500)
        .wal_segment_bytes(256 << 10)
        .checkpoint_wal_bytes(128 << 10)
}

fn key(k: u64) -> Vec<u8> {
    format!("key-{k:05}").into_bytes()
}

/// A value for key `k`, of `len` bytes (at least 24): the key number, the write's
/// sequence number, the payload's checksum, then the payload.
fn value(k: u64, seq: u64, len: usize) -> Vec<u8> {
    let len = len.max(24);
    let mut payload = Vec::with_capacity(len - 24);
    let mut x = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq;
    while payload.len() < len - 24 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        payload.push(x as u8);
    }
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&k.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&u64::from(crc32(&payload)).to_le_bytes());
    v.extend_from_slice(&payload);
    v
}

fn crc32(bytes: &[u8]) -> u32 {
    // A plain bitwise CRC-32 (IEEE), so the test does not share the engine's code.
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn check(k: u64, v: &[u8]) {
    assert!(v.len() >= 24, "key {k}: a value of {} bytes", v.len());
    let got_key = u64::from_le_bytes(v[..8].try_into().unwrap());
    assert_eq!(got_key, k, "key {k} returned the value of key {got_key}");
    let sum = u64::from_le_bytes(v[16..24].try_into().unwrap());
    assert_eq!(sum, u64::from(crc32(&v[24..])), "key {k}: value bytes damaged");
}

#[test]
fn callers_reads_race_checkpoints_without_wrong_data() {
    let seed = common::seed("pages_concurrent_reads");
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options()).unwrap();
    for k in 0..KEYS {
        db.put(key(k), value(k, 0, 100)).unwrap();
    }
    db.checkpoint().unwrap();
    let stop = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    std::thread::scope(|s| {
        for r in 0..4u64 {
            let (db, stop, reads) = (&db, &stop, &reads);
            s.spawn(move || {
                let mut rng = Rng::for_parts(&[seed, r + 1]);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    if rng.range(0, 9) == 0 {
                        let ks: Vec<u64> = (0..8).map(|_| rng.range(0, KEYS - 1)).collect();
                        let keys: Vec<Vec<u8>> = ks.iter().map(|&k| key(k)).collect();
                        for (k, v) in ks.iter().zip(db.multi_get(&keys).unwrap()) {
                            check(*k, &v.expect("keys are never deleted"));
                        }
                        n += 8;
                    } else {
                        let k = rng.range(0, KEYS - 1);
                        check(k, &db.get(key(k)).unwrap().expect("keys are never deleted"));
                        n += 1;
                    }
                }
                reads.fetch_add(n, Ordering::Relaxed);
            });
        }
        let mut rng = Rng::for_parts(&[seed, 0]);
        for seq in 1..=6000u64 {
            let k = rng.range(0, KEYS - 1);
            // Sizes that move records between pages and chunks and change chunk sizes,
            // so that freed extents are reused by other records.
            let len = match rng.range(0, 3) {
                0 => rng.range(24, 400) as usize,
                1 => rng.range(1501, 3000) as usize,
                _ => rng.range(3000, 9000) as usize,
            };
            db.put(key(k), value(k, seq, len)).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let stats = db.stats();
    eprintln!(
        "seed={seed} reads={} checkpoints={} cache_misses={}",
        reads.load(Ordering::Relaxed),
        stats.checkpoints,
        stats.cache_misses
    );
    assert!(stats.checkpoints >= 5, "only {} checkpoints ran", stats.checkpoints);
    assert!(stats.chunks_read + stats.pages_read > 100, "too few reads reached the disk");
    db.close().unwrap();
}
