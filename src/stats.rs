//! Counters and latency histograms, readable while the database runs.
//!
//! Shard threads update their own counters (relaxed atomics: each is a plain
//! count, read only for reporting) and their write-latency histograms (a mutex
//! only the shard and `Db::stats` take). Gets run on client threads and record
//! into striped histograms, one stripe per thread slot, so two readers rarely
//! share a lock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;

/// Latency histograms are kept in nanoseconds up to this bound (one minute).
const LATENCY_NS_MAX: u64 = 60_000_000_000;

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

pub(crate) fn record(h: &mut Histogram<u64>, elapsed: Duration) {
    let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).clamp(1, LATENCY_NS_MAX);
    h.record(ns).expect("value clamped to the histogram's bounds");
}

/// Kinds of operations with a latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// `put`.
    Put,
    /// `get` (each key of a `multi_get` counts once).
    Get,
    /// `delete`.
    Delete,
    /// `write_batch` (per shard part).
    Batch,
}

impl OpKind {
    /// All kinds, in report order.
    pub const ALL: [OpKind; 4] = [OpKind::Put, OpKind::Get, OpKind::Delete, OpKind::Batch];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Put => "put",
            OpKind::Get => "get",
            OpKind::Delete => "delete",
            OpKind::Batch => "batch",
        }
    }
}

#[derive(Default)]
pub(crate) struct ShardCounters {
    pub puts: AtomicU64,
    pub deletes: AtomicU64,
    pub batches: AtomicU64,
    pub write_bytes: AtomicU64,
    pub wal_flushes: AtomicU64,
    pub wal_records: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub fsyncs: AtomicU64,
    pub wakeups: AtomicU64,
    pub requests: AtomicU64,
    pub segments: AtomicU64,
    pub wal_segments: AtomicU64,
    pub pages_read: AtomicU64,
    pub chunks_read: AtomicU64,
    pub recovered_records: AtomicU64,
    pub recovery_us: AtomicU64,
}

impl ShardCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Striped latency histograms for operations that run on client threads.
pub(crate) struct Striped {
    /// Each stripe on its own cache line: two threads recording into neighbouring stripes
    /// must not share the line holding the mutexes.
    stripes: Vec<CachePadded<Mutex<Histogram<u64>>>>,
}

impl Striped {
    pub fn new(stripes: usize) -> Striped {
        Striped { stripes: (0..stripes.max(1)).map(|_| CachePadded::new(Mutex::new(new_histogram()))).collect() }
    }

    pub fn record(&self, elapsed: Duration) {
        let stripe = thread_slot() % self.stripes.len();
        let mut h = self.stripes[stripe].lock().unwrap_or_else(|p| p.into_inner());
        record(&mut h, elapsed);
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut out = new_histogram();
        for s in &self.stripes {
            let h = s.lock().unwrap_or_else(|p| p.into_inner());
            out.add(&*h).expect("same bounds");
        }
        out
    }
}

fn thread_slot() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SLOT.with(|s| *s)
}

/// A snapshot of a database's counters and latencies, from [`crate::Db::stats`].
#[derive(Debug, Clone)]
pub struct Stats {
    /// Shards.
    pub shards: usize,
    /// `put` calls acknowledged.
    pub puts: u64,
    /// `get` lookups (each key of a `multi_get` counts).
    pub gets: u64,
    /// `delete` calls acknowledged.
    pub deletes: u64,
    /// Write-batch parts acknowledged (one per shard a batch touches).
    pub batches: u64,
    /// Key and value bytes written by callers.
    pub write_bytes: u64,
    /// Log flushes (batches written to the log).
    pub wal_batches: u64,
    /// Log records written.
    pub wal_records: u64,
    /// Bytes written to the log, block padding and rewritten tail blocks included.
    pub wal_bytes: u64,
    /// Flushes that made data durable (a write with RWF_DSYNC, or a write + fdatasync, or
    /// a standalone fdatasync).
    pub fsyncs: u64,
    /// Times a shard thread was woken by a client.
    pub wakeups: u64,
    /// Requests shard threads took off their queues.
    pub requests: u64,
    /// Log segments created since open.
    pub wal_segments_created: u64,
    /// Records replayed at open.
    pub recovered_records: u64,
    /// Time the slowest shard took to replay its log at open, in microseconds.
    pub recovery_us: u64,
    /// Keys in the index.
    pub keys: u64,
    /// Estimated memory held by the index, keys and in-memory values included, in bytes.
    pub index_bytes: u64,
    /// Bytes of values written since the last checkpoint, held in memory until it.
    pub dirty_bytes: u64,
    /// Page reads served from the page cache.
    pub cache_hits: u64,
    /// Page reads that missed the page cache.
    pub cache_misses: u64,
    /// Bytes in the page caches.
    pub cache_bytes: u64,
    /// Live pages.
    pub pages: u64,
    /// Pages written by checkpoints.
    pub pages_written: u64,
    /// Pages read from disk for callers (cache misses).
    pub pages_read: u64,
    /// Chunks read from disk for callers.
    pub chunks_read: u64,
    /// Chunks (values of their own) written by checkpoints.
    pub chunks_written: u64,
    /// Free space written into pages for later updates (the padding to the page unit).
    pub bytes_padded: u64,
    /// Pages with room for more records (the free-space heap).
    pub heap_pages: u64,
    /// Checkpoints completed since open.
    pub checkpoints: u64,
    /// Duration of the latest checkpoint (the slowest shard's), in microseconds.
    pub checkpoint_us_last: u64,
    /// Longest checkpoint since open, in microseconds.
    pub checkpoint_us_max: u64,
    /// Bytes the latest checkpoint of each shard wrote to its data file, summed.
    pub checkpoint_bytes_last: u64,
    /// Bytes all checkpoints wrote to the data files since open (pages, chunks, tables).
    pub checkpoint_bytes_total: u64,
    /// Bytes of the data files in use.
    pub data_file_bytes: u64,
    /// Bytes of live data in pages and chunks (records' bytes, not the pages' free space).
    pub live_bytes: u64,
    /// Bytes of live pages (their capacity, designed free space included) and chunks.
    pub page_bytes: u64,
    /// Log segment files on disk.
    pub wal_segments: u64,
    /// Transaction parts committed, summed over shards (a transaction across three
    /// shards counts three; a cross-shard write batch counts too).
    pub tx_commits: u64,
    /// Transaction parts a shard refused with a conflict.
    pub tx_conflicts: u64,
    /// Prepared transaction parts found undecided at open and decided committed (every
    /// participant had prepared), summed over shards.
    pub tx_in_doubt_committed: u64,
    /// Prepared transaction parts found undecided at open and decided aborted.
    pub tx_in_doubt_aborted: u64,
    /// Latency histograms in nanoseconds, per operation kind.
    pub latency_ns: Vec<(OpKind, Histogram<u64>)>,
}

impl Stats {
    /// Mean records per log batch (group commit's batching factor).
    pub fn mean_batch_records(&self) -> f64 {
        if self.wal_batches == 0 { 0.0 } else { self.wal_records as f64 / self.wal_batches as f64 }
    }

    /// Bytes written to disk (log and data files) per byte of keys and values written by
    /// callers; 0 before any write.
    pub fn write_amplification(&self) -> f64 {
        if self.write_bytes == 0 {
            0.0
        } else {
            (self.wal_bytes + self.checkpoint_bytes_total) as f64 / self.write_bytes as f64
        }
    }

    /// Cache hit ratio (0 when nothing was read from pages).
    pub fn cache_hit_ratio(&self) -> f64 {
        let total = self.cache_hits + self.cache_misses;
        if total == 0 { 0.0 } else { self.cache_hits as f64 / total as f64 }
    }

    /// Data file bytes per live byte (space amplification, counting pages' designed free
    /// space as overhead); 0 with no live data.
    pub fn space_amplification(&self) -> f64 {
        if self.live_bytes == 0 { 0.0 } else { self.data_file_bytes as f64 / self.live_bytes as f64 }
    }

    /// Estimated index memory per key, in bytes (keys and values included).
    pub fn index_bytes_per_key(&self) -> f64 {
        if self.keys == 0 { 0.0 } else { self.index_bytes as f64 / self.keys as f64 }
    }

    /// The latency histogram of one kind of operation.
    pub fn latency(&self, kind: OpKind) -> Option<&Histogram<u64>> {
        self.latency_ns.iter().find(|(k, _)| *k == kind).map(|(_, h)| h)
    }
}
