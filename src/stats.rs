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
        let mut h = self.stripes[stripe].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        record(&mut h, elapsed);
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut out = new_histogram();
        for s in &self.stripes {
            let h = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            out.add(&*h).expect("same bounds");
        }
        out
    }
}

/// A counter bumped by many threads: one cell per thread slot, each on its own cache
/// line, summed when read (a single shared counter bumped on every cache look-up cost
/// two reader threads most of their time in cache-line transfers).
pub(crate) struct StripedCounter {
    cells: Vec<CachePadded<AtomicU64>>,
}

impl Default for StripedCounter {
    fn default() -> StripedCounter {
        StripedCounter { cells: (0..16).map(|_| CachePadded::new(AtomicU64::new(0))).collect() }
    }
}

impl StripedCounter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.cells[thread_slot() % self.cells.len()].fetch_add(n, Ordering::Relaxed);
    }

    /// The total.
    pub fn load(&self) -> u64 {
        self.cells.iter().map(|c| c.load(Ordering::Relaxed)).sum()
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

/// Declares [`Stats`]: each figure once, with its docs, how the shards' figures combine
/// (`sum`, or `max` for the slowest shard's), and, for a figure a shard counts as it
/// goes, its counter in [`ShardCounters`] (`= counters.field`). So a new counter is one
/// entry here; a figure read from elsewhere (the index, the cache, the page store) is
/// one entry here and one line in `engine/stats.rs`.
macro_rules! stats {
    ($($(#[doc = $doc:expr])* $name:ident: $merge:ident $(= counters.$counter:ident)?,)*) => {
        /// A shard's counters, updated by its thread (and by readers on client threads).
        #[derive(Default)]
        pub(crate) struct ShardCounters {
            $($(pub $counter: AtomicU64,)?)*
        }

        impl ShardCounters {
            /// Copies every counter into the figure it counts.
            pub(crate) fn read_into(&self, stats: &mut Stats) {
                $($(stats.$name = self.$counter.load(Ordering::Relaxed);)?)*
            }
        }

        /// A snapshot of a database's counters and latencies, from [`crate::Db::stats`].
        ///
        /// ```
        /// # let dir = tempfile::tempdir()?;
        /// let db = ringdb::Db::open(dir.path(), ringdb::Options::default())?;
        /// db.put("a", "1")?;
        /// db.get("a")?;
        /// let stats = db.stats();
        /// assert_eq!((stats.puts, stats.gets, stats.keys), (1, 1, 1));
        /// let gets = stats.latency(ringdb::OpKind::Get).expect("gets are timed");
        /// assert_eq!(gets.len(), 1);
        /// println!("get p99 {} ns; {:.1} records per log batch", gets.value_at_quantile(0.99), stats.mean_batch_records());
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        #[derive(Debug, Clone)]
        pub struct Stats {
            /// Shards.
            pub shards: usize,
            $($(#[doc = $doc])* pub $name: u64,)*
            /// Latency histograms in nanoseconds, per operation kind.
            pub latency_ns: Vec<(OpKind, Histogram<u64>)>,
        }

        impl Stats {
            /// Figures of `shards` shards, all zero, with no latencies.
            pub(crate) fn empty(shards: usize) -> Stats {
                Stats { shards, $($name: 0,)* latency_ns: Vec::new() }
            }

            /// Folds one shard's figures into these.
            pub(crate) fn merge(&mut self, shard: &Stats) {
                $(self.$name = $merge(self.$name, shard.$name);)*
            }
        }
    };
}

fn sum(total: u64, shard: u64) -> u64 {
    total + shard
}

fn max(largest: u64, shard: u64) -> u64 {
    largest.max(shard)
}

stats! {
    /// `put` calls acknowledged.
    puts: sum = counters.puts,
    /// `get` lookups (each key of a `multi_get` counts).
    gets: sum,
    /// `delete` calls acknowledged.
    deletes: sum = counters.deletes,
    /// Write-batch parts acknowledged (one per shard a batch touches).
    batches: sum = counters.batches,
    /// Key and value bytes written by callers.
    write_bytes: sum = counters.write_bytes,
    /// Log flushes (batches written to the log).
    wal_batches: sum = counters.wal_flushes,
    /// Log records written.
    wal_records: sum = counters.wal_records,
    /// Bytes written to the log, block padding and rewritten tail blocks included.
    wal_bytes: sum = counters.wal_bytes,
    /// Flushes that made data durable (a write with RWF_DSYNC, or a write + fdatasync, or
    /// a standalone fdatasync).
    fsyncs: sum = counters.fsyncs,
    /// Times a shard thread was woken by a client.
    wakeups: sum = counters.wakeups,
    /// Requests shard threads took off their queues.
    requests: sum = counters.requests,
    /// Log segments created since open.
    wal_segments_created: sum = counters.segments,
    /// Records replayed at open.
    recovered_records: sum = counters.recovered_records,
    /// Time the slowest shard took to replay its log at open, in microseconds.
    recovery_us: max = counters.recovery_us,
    /// Keys in the database (the trees' keys as of their checkpoints, corrected by the
    /// memtables' entries, each looked up in its tree).
    keys: sum,
    /// Estimated memory held by the memtables (the keys written since the last
    /// checkpoint, their values and per-entry overhead), in bytes.
    index_bytes: sum,
    /// Bytes of values written since the last checkpoint, held in memory until it.
    dirty_bytes: sum,
    /// Entries in the memtables (keys written since the last checkpoint, deletes included).
    memtable_keys: sum,
    /// Page reads served from the page cache.
    cache_hits: sum,
    /// Page reads that missed the page cache.
    cache_misses: sum,
    /// Bytes in the page caches.
    cache_bytes: sum,
    /// Nodes (leaves and branches) in the trees.
    pages: sum,
    /// Nodes written by checkpoints.
    pages_written: sum,
    /// Nodes read from disk for callers (cache misses).
    pages_read: sum = counters.pages_read,
    /// Chunks read from disk for callers.
    chunks_read: sum = counters.chunks_read,
    /// Chunks (values of their own) written by checkpoints.
    chunks_written: sum,
    /// Bytes of padding written into nodes (to the page unit).
    bytes_padded: sum,
    /// Checkpoints completed since open.
    checkpoints: sum,
    /// Duration of the latest checkpoint (the slowest shard's), in microseconds.
    checkpoint_us_last: max,
    /// Longest checkpoint since open, in microseconds.
    checkpoint_us_max: max,
    /// Bytes the latest checkpoint of each shard wrote to its data file, summed.
    checkpoint_bytes_last: sum,
    /// Bytes all checkpoints wrote to the data files since open (nodes, chunks, free lists).
    checkpoint_bytes_total: sum,
    /// Bytes of the data files in use.
    data_file_bytes: sum,
    /// Bytes of the data files holding the trees' nodes, chunks and free lists (the rest
    /// is free extents, reused by later checkpoints).
    live_bytes: sum,
    /// Log segment files on disk.
    wal_segments: sum = counters.wal_segments,
    /// Transaction parts committed, summed over shards (a transaction across three
    /// shards counts three; a cross-shard write batch counts too).
    tx_commits: sum,
    /// Transaction parts a shard refused with a conflict.
    tx_conflicts: sum,
    /// Prepared transaction parts found undecided at open and decided committed (every
    /// participant had prepared), summed over shards.
    tx_in_doubt_committed: sum,
    /// Prepared transaction parts found undecided at open and decided aborted.
    tx_in_doubt_aborted: sum,
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

    /// Data file bytes per byte in use (free extents counted as overhead); 0 with no
    /// live data.
    pub fn space_amplification(&self) -> f64 {
        if self.live_bytes == 0 { 0.0 } else { self.data_file_bytes as f64 / self.live_bytes as f64 }
    }

    /// Estimated memtable memory per key of the database, in bytes.
    pub fn index_bytes_per_key(&self) -> f64 {
        if self.keys == 0 { 0.0 } else { self.index_bytes as f64 / self.keys as f64 }
    }

    /// The latency histogram of one kind of operation.
    pub fn latency(&self, kind: OpKind) -> Option<&Histogram<u64>> {
        self.latency_ns.iter().find(|(k, _)| *k == kind).map(|(_, h)| h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_sum_their_counts_and_the_slowest_sets_a_duration() {
        let mut total = Stats::empty(2);
        let mut one = Stats::empty(1);
        (one.puts, one.recovery_us, one.checkpoint_us_max) = (3, 70, 5);
        let mut two = Stats::empty(1);
        (two.puts, two.recovery_us, two.checkpoint_us_max) = (4, 20, 9);
        total.merge(&one);
        total.merge(&two);
        assert_eq!((total.shards, total.puts), (2, 7));
        assert_eq!((total.recovery_us, total.checkpoint_us_max), (70, 9));
    }

    #[test]
    fn a_shards_counters_land_in_their_figures() {
        let counters = ShardCounters::default();
        ShardCounters::add(&counters.wal_flushes, 2);
        ShardCounters::add(&counters.segments, 1);
        let mut stats = Stats::empty(1);
        counters.read_into(&mut stats);
        assert_eq!((stats.wal_batches, stats.wal_segments_created), (2, 1));
    }
}
