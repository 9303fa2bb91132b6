//! Measures typed tables: `Table::with` and `Table::get` per second on cached records of
//! 64 bytes in one shard, and a full scan of a table of 64-byte records read from disk
//! (cold cache) in MB/s. `benches/table.sh` runs it beside fio on the same filesystem.
//!
//! ```text
//! table_bench point DIR RECORDS SECONDS THREADS   (one shard; loads, checkpoints, reads at random)
//! table_bench scan  DIR RECORDS                   (two shards; loads, checkpoints, reopens, scans)
//! table_bench rescan DIR RECORDS                  (opens what `scan` loaded and scans again)
//! ```
//! Every line of output is `name value unit`, for the script to read.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use ringdb::{Db, Durability, Options, Table};

/// A 64-byte record.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Tick {
    at_ns: u64,
    price: f64,
    volume: f64,
    instrument: u32,
    venue: u32,
    flags: u64,
    bid: f64,
    ask: f64,
    last: f64,
}
ringdb::record!(Tick, "Tick", 1, [at_ns, price, volume, instrument, venue, flags, bid, ask, last]);
const _: () = assert!(size_of::<Tick>() == 64);

fn tick(i: u64) -> Tick {
    Tick {
        at_ns: i * 1_000,
        price: 100.0 + (i % 1000) as f64 / 100.0,
        volume: (i % 77) as f64,
        instrument: (i % 5000) as u32,
        venue: (i % 7) as u32,
        flags: i.rotate_left(17),
        bid: 99.5,
        ask: 100.5,
        last: 100.0,
    }
}

fn arg(i: usize) -> String {
    std::env::args().nth(i).unwrap_or_else(|| panic!("argument {i} missing; see the file's docs"))
}

fn num(i: usize) -> u64 {
    arg(i).parse().unwrap_or_else(|_| panic!("argument {i} is not a number"))
}

fn options(shards: usize, cache_bytes: u64) -> Options {
    Options::default()
        .shards(shards)
        .cache_bytes(cache_bytes)
        .durability(Durability::None)
        .checkpoint_wal_bytes(512 << 20)
        .page_records_max(64)
}

/// Sets records `0..records` in batches from two threads, then checkpoints.
fn load(db: &Db, table: &Table<Tick>, records: u64) {
    let started = Instant::now();
    const BATCH: u64 = 2000;
    std::thread::scope(|s| {
        for part in 0..2u64 {
            s.spawn(move || {
                let mut batch = Vec::with_capacity(BATCH as usize);
                let mut i = part * BATCH;
                while i < records {
                    batch.clear();
                    batch.extend((i..(i + BATCH).min(records)).map(|j| (j, tick(j))));
                    table.set_many(&batch).unwrap();
                    i += 2 * BATCH;
                }
            });
        }
    });
    db.flush().unwrap();
    let loaded = started.elapsed().as_secs_f64();
    let t = Instant::now();
    db.checkpoint().unwrap();
    println!("load_records_per_s {:.0} records/s", records as f64 / loaded);
    println!("checkpoint_seconds {:.3} s", t.elapsed().as_secs_f64());
    let stats = db.stats();
    println!("data_file_bytes {} B", stats.data_file_bytes);
    println!("index_bytes {} B", stats.index_bytes);
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// CPU time of the calling thread so far, in nanoseconds (`/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("read /proc/thread-self/schedstat");
    text.split_whitespace().next().and_then(|f| f.parse().ok()).expect("schedstat starts with the CPU time")
}

/// CPU time of the whole process so far (every thread, user and system), in seconds
/// (`/proc/self/stat`, in clock ticks of 10 ms).
fn process_cpu_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &text[text.rfind(')').expect("stat has the command in parentheses") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Runs `read` from `threads` threads for `seconds`; returns reads per second of wall
/// time, and reads per second of CPU time the reading threads got (the figure that does
/// not depend on how busy the machine is).
fn rate(threads: u64, seconds: u64, read: &(dyn Fn(&mut u64) -> u64 + Sync)) -> (f64, f64) {
    let stop = AtomicBool::new(false);
    let ops = AtomicU64::new(0);
    let cpu_ns = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (stop, ops, cpu_ns) = (&stop, &ops, &cpu_ns);
            s.spawn(move || {
                let cpu_started = thread_cpu_ns();
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t + 1);
                let (mut n, mut sum) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        sum = sum.wrapping_add(read(&mut x));
                    }
                    n += 256;
                }
                black_box(sum);
                ops.fetch_add(n, Ordering::Relaxed);
                cpu_ns.fetch_add(thread_cpu_ns() - cpu_started, Ordering::Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
    });
    let n = ops.load(Ordering::Relaxed) as f64;
    (n / started.elapsed().as_secs_f64(), n / (cpu_ns.load(Ordering::Relaxed) as f64 / 1e9))
}

fn main() {
    let mode = arg(1);
    let dir = arg(2);
    match mode.as_str() {
        "point" => {
            let (records, seconds, threads) = (num(3), num(4), num(5));
            let db = Db::open(&dir, options(1, 1 << 30)).unwrap();
            let table = db.table::<Tick>("ticks").unwrap();
            load(&db, &table, records);
            // Warm the cache: every page once.
            for i in (0..records).step_by(16) {
                black_box(table.with(i, |t| t.at_ns).unwrap());
            }
            let hits_before = db.stats().cache_misses;
            let with = rate(threads, seconds, &|x| {
                let i = xorshift(x) % records;
                table.with(i, |t| t.at_ns ^ t.flags).unwrap().expect("loaded")
            });
            let get = rate(threads, seconds, &|x| {
                let i = xorshift(x) % records;
                let t = table.get(i).unwrap().expect("loaded");
                t.at_ns ^ t.flags
            });
            let misses = db.stats().cache_misses - hits_before;
            // The same number of plain key-value pairs of 64 bytes in the same shard, read
            // with Db::get after a checkpoint: the baseline the table's reads compare to.
            let kv_key = |i: u64| i.to_be_bytes();
            for chunk in (0..records).collect::<Vec<_>>().chunks(2000) {
                let mut batch = ringdb::WriteBatch::new();
                for &i in chunk {
                    batch.put(kv_key(i), bytemuck::bytes_of(&tick(i))).unwrap();
                }
                db.write_batch(batch).unwrap();
            }
            db.checkpoint().unwrap();
            for i in (0..records).step_by(16) {
                black_box(db.get(kv_key(i)).unwrap());
            }
            let kv_get = rate(threads, seconds, &|x| {
                let i = xorshift(x) % records;
                let v = db.get(kv_key(i)).unwrap().expect("loaded");
                u64::from(v[0])
            });
            println!("with_per_s {:.0} ops/s", with.0);
            println!("get_per_s {:.0} ops/s", get.0);
            println!("kv_get_per_s {:.0} ops/s", kv_get.0);
            println!("with_per_cpu_s {:.0} ops/s", with.1);
            println!("get_per_cpu_s {:.0} ops/s", get.1);
            println!("kv_get_per_cpu_s {:.0} ops/s", kv_get.1);
            println!("cache_misses_during_reads {misses} misses");
            println!("copied_reads {} reads", table.copied_reads());
            db.close().unwrap();
        }
        "scan" | "rescan" => {
            let records = num(3);
            if mode == "scan" {
                let db = Db::open(&dir, options(2, 256 << 20)).unwrap();
                let table = db.table::<Tick>("ticks").unwrap();
                load(&db, &table, records);
                db.close().unwrap();
            }
            // Reopen so the cache starts cold (the checkpoint cached what it wrote).
            let opened = Instant::now();
            let db = Db::open(&dir, options(2, 256 << 20)).unwrap();
            println!("open_seconds {:.3} s", opened.elapsed().as_secs_f64());
            let opened = Instant::now();
            let table = db.table::<Tick>("ticks").unwrap();
            println!("table_open_seconds {:.3} s", opened.elapsed().as_secs_f64());
            let started = Instant::now();
            let cpu_started = process_cpu_seconds();
            let mut n = 0u64;
            for (expected, entry) in (0u64..).zip(table.scan(..)) {
                let (i, t) = entry.unwrap();
                assert_eq!(i, expected, "scan in index order");
                assert_eq!(t.at_ns, i * 1_000);
                n += 1;
            }
            let secs = started.elapsed().as_secs_f64();
            let cpu_secs = process_cpu_seconds() - cpu_started;
            assert_eq!(n, records);
            println!("scan_records_per_cpu_s {:.0} records/s", n as f64 / cpu_secs);
            println!("scan_cpu_seconds {cpu_secs:.2} s");
            let stats = db.stats();
            println!("scan_records_per_s {:.0} records/s", n as f64 / secs);
            println!("scan_mb_s {:.1} MB/s", (n * 64) as f64 / secs / 1e6);
            println!("scan_pages_read {} pages", stats.pages_read);
            println!("scan_seconds {secs:.3} s");
            db.close().unwrap();
        }
        other => panic!("unknown mode {other}; see the file's docs"),
    }
}
