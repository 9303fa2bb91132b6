//! Measures the paged store: checkpoint write-back, uncached point reads, a full
//! ordered scan, and open (recovery) time after a crash. `benches/pages.sh` runs it
//! beside fio on the same filesystem and prints the ratios.
//!
//! ```text
//! pages_bench reads   DIR KEYS VALUE_BYTES CACHE_BYTES THREADS SECONDS [BATCH]
//! pages_bench scan    DIR KEYS VALUE_BYTES
//! pages_bench crash   DIR KEYS VALUE_BYTES WAL_BYTES    (loads, checkpoints, fills the log, aborts)
//! pages_bench recover DIR                                (opens and reports the time)
//! pages_bench costs   DIR KEYS VALUE_BYTES               (loads KEYS, checkpoints, closes)
//! pages_bench reopen  DIR KEYS OVERWRITES                (in a fresh process: open time and
//!                                                         memory, then the bytes one checkpoint
//!                                                         writes after OVERWRITES random puts)
//! ```
//! Every line of output is `name value unit`, for the script to read.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringdb::{Db, Durability, Options, WriteBatch};

fn arg(i: usize) -> String {
    std::env::args().nth(i).unwrap_or_else(|| panic!("argument {i} missing; see the file's docs"))
}

fn num(i: usize) -> u64 {
    arg(i).parse().unwrap_or_else(|_| panic!("argument {i} is not a number"))
}

fn key(i: u64) -> [u8; 16] {
    let mut k = [b'-'; 16];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k
}

fn value(i: u64, len: usize) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; len];
    v[..8.min(len)].copy_from_slice(&i.to_le_bytes()[..8.min(len)]);
    v
}

fn options(cache_bytes: u64) -> Options {
    Options::default().cache_bytes(cache_bytes).durability(Durability::None).checkpoint_wal_bytes(256 << 20)
}

/// Loads `keys` values and checkpoints; prints the final checkpoint's write-back rate.
fn load(db: &Db, keys: u64, value_bytes: usize) {
    let started = Instant::now();
    let mut batch = WriteBatch::new();
    for i in 0..keys {
        batch.put(key(i), value(i, value_bytes)).unwrap();
        if batch.len() == 1000 {
            db.write_batch(std::mem::take(&mut batch)).unwrap();
        }
    }
    db.write_batch(batch).unwrap();
    db.flush().unwrap();
    let loaded = started.elapsed();
    let t = Instant::now();
    db.checkpoint().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let after = db.stats();
    // What this checkpoint wrote on every shard (earlier automatic ones wrote the rest).
    let written = after.checkpoint_bytes_last;
    println!("load_seconds {:.3} s", loaded.as_secs_f64());
    println!("checkpoint_bytes {written} B");
    println!("checkpoint_seconds {secs:.4} s");
    println!("checkpoint_mb_s {:.1} MB/s", written as f64 / secs / 1e6);
    println!("data_file_bytes {} B", after.data_file_bytes);
    println!("nodes {}", after.pages);
    println!("live_bytes {} B", after.live_bytes);
}

/// Resident memory of this process, in bytes (Linux `/proc/self/statm`).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Opens a loaded database in a fresh process: what open costs, and what one
/// checkpoint writes after `overwrites` random puts.
fn reopen(dir: &str, keys: u64, overwrites: u64) {
    let before = rss_bytes();
    let started = Instant::now();
    let db = Db::open(dir, options(64 << 20)).unwrap();
    let open_secs = started.elapsed().as_secs_f64();
    let after = rss_bytes();
    println!("open_seconds {open_secs:.4} s");
    println!("open_rss_bytes {} B", after.saturating_sub(before));
    println!("rss_after_open_bytes {after} B");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut batch = WriteBatch::new();
    for _ in 0..overwrites {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = x % keys;
        batch.put(key(i), value(i ^ 1, 100)).unwrap();
        if batch.len() == 100 {
            db.write_batch(std::mem::take(&mut batch)).unwrap();
        }
    }
    db.write_batch(batch).unwrap();
    let user = overwrites * (16 + 100);
    db.checkpoint().unwrap();
    let stats = db.stats();
    println!("checkpoint_bytes {} B", stats.checkpoint_bytes_last);
    println!("checkpoint_bytes_per_user_byte {:.1}", stats.checkpoint_bytes_last as f64 / user as f64);
    println!("checkpoint_seconds {:.4} s", stats.checkpoint_us_last as f64 / 1e6);
    println!("keys {}", stats.keys);
    println!("data_file_bytes {} B", stats.data_file_bytes);
    db.close().unwrap();
}

fn main() {
    let mode = arg(1);
    let dir = arg(2);
    match mode.as_str() {
        "costs" => {
            let db = Db::open(&dir, options(64 << 20)).unwrap();
            load(&db, num(3), num(4) as usize);
            db.close().unwrap();
        }
        "reopen" => reopen(&dir, num(3), num(4)),
        "reads" => {
            let (keys, value_bytes, cache, threads, seconds) = (num(3), num(4) as usize, num(5), num(6), num(7));
            let batch: usize = std::env::args().nth(8).map_or(1, |b| b.parse().unwrap());
            let db = Db::open(&dir, options(cache)).unwrap();
            load(&db, keys, value_bytes);
            db.close().unwrap();
            // Reopen so the cache starts cold (the checkpoint cached what it wrote).
            let db = Db::open(&dir, options(cache)).unwrap();
            let stop = AtomicBool::new(false);
            let ops = AtomicU64::new(0);
            let started = Instant::now();
            std::thread::scope(|s| {
                for t in 0..threads {
                    let (db, stop, ops) = (&db, &stop, &ops);
                    s.spawn(move || {
                        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                        let mut n = 0;
                        let mut keys_buf = Vec::with_capacity(batch);
                        while !stop.load(Ordering::Relaxed) {
                            keys_buf.clear();
                            for _ in 0..batch {
                                x ^= x << 13;
                                x ^= x >> 7;
                                x ^= x << 17;
                                keys_buf.push(key(x % keys));
                            }
                            if batch == 1 {
                                let v = db.get(keys_buf[0]).unwrap().expect("every key was loaded");
                                assert_eq!(v.len(), value_bytes);
                            } else {
                                for v in db.multi_get(&keys_buf).unwrap() {
                                    assert_eq!(v.expect("every key was loaded").len(), value_bytes);
                                }
                            }
                            n += batch as u64;
                        }
                        ops.fetch_add(n, Ordering::Relaxed);
                    });
                }
                std::thread::sleep(Duration::from_secs(seconds));
                stop.store(true, Ordering::Relaxed);
            });
            let secs = started.elapsed().as_secs_f64();
            let stats = db.stats();
            let total = ops.load(Ordering::Relaxed);
            println!("reads {total} ops");
            println!("reads_per_s {:.0} ops/s", total as f64 / secs);
            println!("cache_hit_ratio {:.3} ratio", stats.cache_hit_ratio());
            println!("data_over_cache {:.1} x", stats.live_bytes as f64 / cache as f64);
            db.close().unwrap();
        }
        "scan" => {
            let (keys, value_bytes) = (num(3), num(4) as usize);
            let db = Db::open(&dir, options(64 << 20)).unwrap();
            load(&db, keys, value_bytes);
            db.close().unwrap();
            let db = Db::open(&dir, options(64 << 20)).unwrap();
            let started = Instant::now();
            let (mut records, mut bytes) = (0u64, 0u64);
            let mut last: Option<Vec<u8>> = None;
            for entry in db.scan(..) {
                let (k, v) = entry.unwrap();
                if let Some(prev) = &last {
                    assert!(prev.as_slice() < &k[..], "scan out of order");
                }
                last = Some(k.to_vec());
                records += 1;
                bytes += (k.len() + v.len()) as u64;
            }
            let secs = started.elapsed().as_secs_f64();
            assert_eq!(records, keys);
            println!("scan_records {records} records");
            println!("scan_records_per_s {:.0} records/s", records as f64 / secs);
            println!("scan_mb_s {:.1} MB/s", bytes as f64 / secs / 1e6);
            db.close().unwrap();
        }
        "crash" => {
            let (keys, value_bytes, wal_bytes) = (num(3), num(4) as usize, num(5));
            let opts = options(64 << 20).durability(Durability::Sync).checkpoint_wal_bytes(wal_bytes.max(64 << 10) * 2);
            let db = Db::open(&dir, opts).unwrap();
            load(&db, keys, value_bytes);
            // Fill the log with overwrites that no checkpoint covers, then crash.
            let per_batch = 1000u64;
            let mut written = 0u64;
            let mut i = 0u64;
            while written < wal_bytes {
                let mut batch = WriteBatch::new();
                for _ in 0..per_batch {
                    batch.put(key(i % keys), value(i + 7, value_bytes)).unwrap();
                    i += 1;
                }
                db.write_batch(batch).unwrap();
                written += per_batch * (value_bytes as u64 + 40);
            }
            println!("unreplayed_log_bytes {written} B");
            std::process::abort();
        }
        "recover" => {
            let started = Instant::now();
            let db = Db::open(&dir, Options::default()).unwrap();
            let secs = started.elapsed().as_secs_f64();
            let stats = db.stats();
            println!("open_seconds {secs:.3} s");
            println!("recovered_records {} records", stats.recovered_records);
            println!("keys {} keys", stats.keys);
            println!("live_bytes {} B", stats.live_bytes + stats.dirty_bytes);
            db.close().unwrap();
        }
        other => panic!("unknown mode {other}; see the file's docs"),
    }
}
