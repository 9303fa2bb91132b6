//! The shards' counters gathered into one [`Stats`].
//!
//! Each shard's figures are read into a `Stats` of their own, and folded into the
//! database's by `Stats::merge`, which knows for each figure whether shards sum or
//! the slowest one counts (see `stats.rs`).

use super::Engine;
use crate::shard::ShardHandle;
use crate::stats::{OpKind, Stats, new_histogram};
use crate::storage::index::Stored;

/// The shard's keys: its tree's, corrected by each memtable entry (a new key adds one,
/// a delete of a key in the tree takes one away). Each entry is looked up in the tree
/// of the root published now; the memtable is bounded, so this is too.
fn keys(shard: &ShardHandle) -> u64 {
    let Ok(data) = shard.data() else { return 0 };
    let view = shard.view();
    let root = view.root.root;
    // Each key once, with its newest entry (the active memtable's over the frozen one's).
    let mut memtable: std::collections::BTreeMap<bytes::Bytes, bool> = std::collections::BTreeMap::new();
    for m in view.memtables() {
        let order = m.order();
        for k in order.iter() {
            if !memtable.contains_key(k) {
                memtable.insert(k.clone(), m.get(k).is_some_and(|v| v.stored != Stored::Tombstone));
            }
        }
    }
    drop(view);
    let mut keys = root.keys;
    for (key, live) in memtable {
        // A key whose leaf cannot be read is counted as absent from the tree.
        let in_tree = crate::storage::tree::get(&data, &root, &key).is_ok_and(|found| found.is_some());
        match (live, in_tree) {
            (true, false) => keys += 1,
            (false, true) => keys = keys.saturating_sub(1),
            _ => {}
        }
    }
    keys
}

/// One shard's figures (its latencies aside).
fn shard_stats(shard: &ShardHandle) -> Stats {
    let s = shard;
    let p = s.page_stats();
    let (in_doubt_committed, in_doubt_aborted) = s.tx_in_doubt();
    let pc = &p.counters;
    let mut stats = Stats {
        keys: keys(s),
        memtable_keys: s.view().memtables().map(|m| m.len() as u64).sum(),
        index_bytes: s.view().memtables().map(|m| m.memory_bytes()).sum(),
        dirty_bytes: s.view().memtables().map(|m| m.inline_bytes()).sum(),
        cache_hits: s.cache().hits.load(),
        cache_misses: s.cache().misses.load(),
        cache_bytes: s.cache().bytes(),
        pages: p.pages,
        pages_written: pc.pages_written,
        chunks_written: pc.chunks_written,
        bytes_padded: pc.bytes_padded,
        checkpoints: pc.checkpoints,
        checkpoint_us_last: pc.checkpoint_us_last,
        checkpoint_us_max: pc.checkpoint_us_max,
        checkpoint_bytes_last: pc.checkpoint_bytes_last,
        checkpoint_bytes_total: pc.checkpoint_bytes_total,
        data_file_bytes: p.file_bytes,
        live_bytes: p.live_bytes,
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
