//! Figures the shard publishes for `Db::stats`: counters it bumps as it goes live in
//! `ShardCounters`; these are the ones it copies out of its log and page store.

use std::sync::atomic::Ordering;

use super::Shard;
use super::handle::PageStats;

impl Shard {
    /// Publishes the page store's figures.
    pub(super) fn publish_page_stats(&self) {
        let stats = PageStats {
            counters: self.pages.counters,
            pages: self.pages.nodes(),
            file_bytes: self.pages.file_bytes(),
            live_bytes: self.pages.live_bytes(),
        };
        *self.shared.page_stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = stats;
    }

    /// Publishes the log's figures, and the record size it accepts now (a rotation into
    /// a segment of the configured size may raise it).
    pub(super) fn publish_log_stats(&self) {
        let counters = &self.shared.counters;
        counters.segments.store(self.wal.segments_created, Ordering::Relaxed);
        counters.wal_segments.store(self.wal.segments_on_disk() as u64, Ordering::Relaxed);
        self.shared.body_bytes_max.store(self.wal.body_bytes_max(), Ordering::Relaxed);
    }
}
