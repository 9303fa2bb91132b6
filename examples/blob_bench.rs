//! Blob log figures: append throughput of 1 KiB and 512 KiB blobs with `Sync` durability
//! and many writers, and random 4 KiB reads from sealed segments, both through the
//! library's `pread` path (O_DIRECT-aligned buffers) and through `mmap` of the same files,
//! the measurement behind the reader's design. `benches/blob.sh` runs it beside fio.
//!
//! ```text
//! cargo run --release --example blob_bench -- [--dir DIR] [--seconds S] [--read-gib G]
//!     [--small-writers N] [--large-writers N] [--readers N] [--only append|read]
//!     [--group-mib N] [--zero-fill true|false]
//! ```
//! Prints one `key=value` line per figure. Cold-cache reads need permission to write
//! `/proc/sys/vm/drop_caches` (the line says whether caches were dropped).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringdb::format::blob::{Decoded, check_meta, decode_header, frame_entry};
use ringdb::{BlobLog, BlobOptions, Durability, Location};

struct Args {
    dir: PathBuf,
    seconds: u64,
    read_gib: u64,
    small_writers: usize,
    large_writers: usize,
    readers: usize,
    only: Option<String>,
    group_mib: usize,
    zero_fill: bool,
}

fn args() -> Args {
    let mut a = Args {
        dir: std::env::temp_dir(),
        seconds: 8,
        read_gib: 2,
        small_writers: 64,
        large_writers: 16,
        readers: 32,
        only: None,
        group_mib: 4,
        zero_fill: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => a.dir = value.into(),
            "--seconds" => a.seconds = value.parse().expect("--seconds N"),
            "--read-gib" => a.read_gib = value.parse().expect("--read-gib G"),
            "--small-writers" => a.small_writers = value.parse().expect("--small-writers N"),
            "--large-writers" => a.large_writers = value.parse().expect("--large-writers N"),
            "--readers" => a.readers = value.parse().expect("--readers N"),
            "--only" => a.only = Some(value),
            "--group-mib" => a.group_mib = value.parse().expect("--group-mib N"),
            "--zero-fill" => a.zero_fill = value.parse().expect("--zero-fill true|false"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// splitmix64, for blob bytes and read choices.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed;
    (0..len.div_ceil(8)).flat_map(|_| next(&mut s).to_le_bytes()).take(len).collect()
}

fn append_run(dir: &Path, blob_bytes: usize, writers: usize, seconds: u64, group_mib: usize, zero_fill: bool) {
    let _ = std::fs::remove_dir_all(dir);
    let options = BlobOptions::default()
        .durability(Durability::Sync)
        .group_commit_bytes_max(group_mib << 20)
        .zero_fill(zero_fill);
    let log = BlobLog::open(dir, options).expect("open blob log");
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (log, stop, count) = (log.clone(), Arc::clone(&stop), Arc::clone(&count));
            std::thread::spawn(move || {
                let blob = random_bytes(w as u64, blob_bytes);
                while !stop.load(Ordering::Relaxed) {
                    log.append(&blob).expect("append");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let n = count.load(Ordering::Relaxed) as f64;
    let segments = log.segments().expect("segments").len();
    log.close().expect("close");
    println!(
        "append blob_bytes={blob_bytes} writers={writers} group_mib={group_mib} zero_fill={zero_fill} durability=sync blobs_per_s={:.0} mb_per_s={:.1} segments={segments}",
        n / secs,
        n * blob_bytes as f64 / secs / 1e6
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn drop_caches() -> bool {
    // Write back dirty pages first, so dropping them really empties the cache.
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

/// A sealed segment mapped read-only.
struct Mapped {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapping is read-only and lives until the process ends; sharing `&[u8]`
// views of it between threads is like sharing a `&'static [u8]`.
unsafe impl Send for Mapped {}
// SAFETY: as above.
unsafe impl Sync for Mapped {}

impl Mapped {
    fn open(path: &Path) -> Mapped {
        let file = std::fs::File::open(path).expect("open segment");
        let len = file.metadata().expect("stat").len() as usize;
        // SAFETY: a fresh read-only shared mapping of a file we opened; the file is sealed
        // (never written again) for the whole run, so the bytes do not change under us.
        let ptr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0) };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap {}", path.display());
        // SAFETY: advising on the mapping just made; random access, no read-ahead.
        unsafe { libc::madvise(ptr, len, libc::MADV_RANDOM) };
        Mapped { ptr: ptr.cast(), len }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes and is never unmapped.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The blob at `loc`, checked like the library checks it, copied out.
    fn read(&self, loc: Location) -> Vec<u8> {
        let bytes = &self.bytes()[loc.offset as usize..];
        let Decoded::Header(h) = decode_header(bytes, bytes.len() as u64) else { panic!("no blob at {loc}") };
        check_meta(&h, bytes).expect("meta crc");
        let mut at = h.meta_bytes() as usize;
        let mut out = Vec::with_capacity(loc.len as usize);
        for i in 0..h.frames() as usize {
            let e = frame_entry(bytes, i);
            let frame = &bytes[at..at + e.stored_len as usize];
            assert_eq!(crc32fast::hash(frame), e.crc, "frame crc");
            out.extend_from_slice(frame);
            at += e.stored_len as usize;
        }
        out
    }
}

fn read_run(dir: &Path, gib: u64, readers: usize, seconds: u64) {
    let _ = std::fs::remove_dir_all(dir);
    let blob_bytes = 4096usize;
    let total = (gib << 30) / blob_bytes as u64;
    let build = Instant::now();
    let options = BlobOptions::default().durability(Durability::None).group_commit_bytes_max(16 << 20);
    let log = BlobLog::open(dir, options).expect("open blob log");
    let mut locs = Vec::with_capacity(total as usize);
    let blob = random_bytes(42, blob_bytes);
    while (locs.len() as u64) < total {
        let mut txn = log.transaction();
        for _ in 0..256 {
            txn.append(&blob).expect("append");
        }
        locs.extend(txn.commit().expect("commit"));
    }
    log.sync().expect("sync");
    let current = log.current_segment();
    log.close().expect("close");
    locs.retain(|l| l.segment != current);
    let locs = Arc::new(locs);
    println!("read-setup blobs={} sealed_blobs={} build_s={:.1}", total, locs.len(), build.elapsed().as_secs_f64());
    for mode in ["pread", "mmap"] {
        let dropped = drop_caches();
        let log = BlobLog::open_read_only(dir, BlobOptions::default()).expect("open read-only");
        let maps: Arc<Vec<Mapped>> = Arc::new(if mode == "mmap" {
            (0..current).map(|s| Mapped::open(&dir.join(format!("{s:08x}.blob")))).collect()
        } else {
            Vec::new()
        });
        // At most a quarter of the blobs are read, so the page cache cannot serve most mmap reads.
        let budget = Arc::new(AtomicU64::new(locs.len() as u64 / 4));
        let count = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let threads: Vec<_> = (0..readers)
            .map(|r| {
                let (log, locs, maps, budget, count) =
                    (log.clone(), Arc::clone(&locs), Arc::clone(&maps), Arc::clone(&budget), Arc::clone(&count));
                std::thread::spawn(move || {
                    let mut s = 0x1234_5678 ^ r as u64;
                    let mut n = 0u64;
                    while n % 64 != 0 || Instant::now() < deadline {
                        if budget.fetch_sub(1, Ordering::Relaxed) as i64 <= 0 {
                            break;
                        }
                        let loc = locs[(next(&mut s) % locs.len() as u64) as usize];
                        let len = if maps.is_empty() {
                            log.read(loc).expect("read").len()
                        } else {
                            maps[loc.segment as usize].read(loc).len()
                        };
                        assert_eq!(len, 4096);
                        n += 1;
                    }
                    count.fetch_add(n, Ordering::Relaxed);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        let n = count.load(Ordering::Relaxed) as f64;
        println!(
            "randread mode={mode} blob_bytes=4096 readers={readers} caches_dropped={dropped} reads={n:.0} iops={:.0} mb_per_s={:.1}",
            n / secs,
            n * 4096.0 / secs / 1e6
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    let a = args();
    let base = a.dir.join(format!("ringdb-blob-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("create bench directory");
    if a.only.as_deref() != Some("read") {
        append_run(&base.join("small"), 1024, a.small_writers, a.seconds, a.group_mib, a.zero_fill);
        append_run(&base.join("large"), 512 << 10, a.large_writers, a.seconds, a.group_mib, a.zero_fill);
    }
    if a.only.as_deref() != Some("append") {
        read_run(&base.join("read"), a.read_gib, a.readers, a.seconds);
    }
    let _ = std::fs::remove_dir_all(&base);
}
