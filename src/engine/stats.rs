//! The shards' counters gathered into one [`Stats`].
//!
//! Each shard's figures are read into a `Stats` of their own, and folded into the
//! database's by `Stats::merge`, which knows for each figure whether shards sum or
//! the slowest one counts (see `stats.rs`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::Engine;
use crate::shard::ShardHandle;
use crate::stats::{OpKind, Stats, new_histogram};

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// One shard's figures (its latencies aside).
fn shard_stats(shard: &ShardHandle) -> Stats {
    let s = shard;
    let p = s.page_stats();
    let (in_doubt_committed, in_doubt_aborted) = s.tx_in_doubt();
    let pc = &p.counters;
    let mut stats = Stats {
        keys: s.index().len() as u64,
        index_bytes: s.index().memory_bytes(),
        dirty_bytes: s.index().inline_bytes(),
        cache_hits: load(&s.cache().hits),
        cache_misses: load(&s.cache().misses),
        cache_bytes: s.cache().bytes(),
        pages: p.pages,
        pages_written: pc.pages_written,
        chunks_written: pc.chunks_written,
        bytes_padded: pc.bytes_padded,
        heap_pages: p.heap_pages,
        checkpoints: pc.checkpoints,
        checkpoint_us_last: pc.checkpoint_us_last,
        checkpoint_us_max: pc.checkpoint_us_max,
        checkpoint_bytes_last: pc.checkpoint_bytes_last,
        checkpoint_bytes_total: pc.checkpoint_bytes_total,
        data_file_bytes: p.file_bytes,
        live_bytes: p.live_bytes,
        page_bytes: p.footprint_bytes,
        tx_commits: s.tx_commits(),
        tx_conflicts: s.tx_conflicts(),
        tx_in_doubt_committed: in_doubt_committed,
        tx_in_doubt_aborted: in_doubt_aborted,
        ..Stats::empty(1)
    };
    s.counters().read_into(&mut stats);
    stats
}

impl Engine {
    /// Counters and latency histograms since open, summed over the shards.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats::empty(self.shards().len());
        let mut writes = [new_histogram(), new_histogram(), new_histogram()];
        for shard in self.shards() {
            stats.merge(&shard_stats(shard));
            let latency = shard.write_latency();
            for (total, h) in writes.iter_mut().zip(latency.iter()) {
                total.add(h).expect("same bounds");
            }
        }
        let gets = self.get_latency.merged();
        stats.gets = gets.len();
        let [put, delete, batch] = writes;
        stats.latency_ns =
            vec![(OpKind::Put, put), (OpKind::Get, gets), (OpKind::Delete, delete), (OpKind::Batch, batch)];
        stats
    }
}
