//! A shard's page cache: page id to immutable page image, read by any thread.
//!
//! Only the shard thread inserts and evicts; callers look images up and slice
//! values out of them without a hop to the shard. Images never change (a page
//! that changes gets a new id), so a caller holding an image can use it for as
//! long as it likes. Eviction is CLOCK: a hit sets the page's referenced bit;
//! the hand clears set bits and evicts the first page found clear, until the
//! cache is within its byte budget.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;

/// Cache keys of chunks: the chunk's offset with this bit set (page ids never reach it).
pub(crate) const CHUNK_KEY_BIT: u64 = 1 << 63;

struct Cached {
    image: Bytes,
    referenced: AtomicBool,
}

/// See the module docs.
pub(crate) struct PageCache {
    map: papaya::HashMap<u64, Arc<Cached>>,
    bytes: AtomicU64,
    budget_bytes: u64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl PageCache {
    pub fn new(budget_bytes: u64) -> PageCache {
        PageCache {
            map: papaya::HashMap::new(),
            bytes: AtomicU64::new(0),
            budget_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The image of `page_id`, if cached.
    pub fn get(&self, page_id: u64) -> Option<Bytes> {
        let guard = self.map.guard();
        match self.map.get(&page_id, &guard) {
            Some(c) => {
                if !c.referenced.load(Ordering::Relaxed) {
                    c.referenced.store(true, Ordering::Relaxed);
                }
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(c.image.clone())
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Runs `f` on the image of `page_id` where it lies in the cache (no reference-count
    /// change: the guard keeps the image alive while `f` runs), if cached. Counts a hit or
    /// a miss like [`PageCache::get`].
    pub fn with<R>(&self, page_id: u64, f: impl FnOnce(&Bytes) -> R) -> Option<R> {
        let guard = self.map.guard();
        match self.map.get(&page_id, &guard) {
            Some(c) => {
                if !c.referenced.load(Ordering::Relaxed) {
                    c.referenced.store(true, Ordering::Relaxed);
                }
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(f(&c.image))
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The image of `page_id`, if cached, without counting a hit or a miss (for the
    /// shard's own second look after a caller's miss).
    pub fn peek(&self, page_id: u64) -> Option<Bytes> {
        let guard = self.map.guard();
        self.map.get(&page_id, &guard).map(|c| c.image.clone())
    }

    /// Bytes cached.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// The shard thread's side: insertion, removal and the CLOCK hand.
pub(crate) struct CacheWriter {
    clock: VecDeque<u64>,
}

impl CacheWriter {
    pub fn new() -> CacheWriter {
        CacheWriter { clock: VecDeque::new() }
    }

    pub fn insert(&mut self, cache: &PageCache, page_id: u64, image: Bytes) {
        let guard = cache.map.guard();
        let len = image.len() as u64;
        let old = cache.map.insert(page_id, Arc::new(Cached { image, referenced: AtomicBool::new(false) }), &guard);
        match old {
            Some(old) => {
                cache.bytes.fetch_sub(old.image.len() as u64, Ordering::Relaxed);
            }
            None => self.clock.push_back(page_id),
        }
        cache.bytes.fetch_add(len, Ordering::Relaxed);
        drop(guard);
        self.evict(cache);
    }

    pub fn remove(&mut self, cache: &PageCache, page_id: u64) {
        let guard = cache.map.guard();
        if let Some(old) = cache.map.remove(&page_id, &guard) {
            cache.bytes.fetch_sub(old.image.len() as u64, Ordering::Relaxed);
        }
        // The id stays in the clock until the hand reaches it and skips it; prune the
        // clock when such stale ids outnumber the live ones, so it cannot grow for ever.
        if self.clock.len() > 2 * cache.map.len() + 1024 {
            self.clock.retain(|id| cache.map.contains_key(id, &guard));
        }
    }

    fn evict(&mut self, cache: &PageCache) {
        let guard = cache.map.guard();
        // Bounded: each turn either evicts, drops a stale id, or clears one bit; after
        // two passes every bit is clear.
        let mut turns = 2 * self.clock.len() + 1;
        while cache.bytes.load(Ordering::Relaxed) > cache.budget_bytes && turns > 0 {
            turns -= 1;
            let Some(page_id) = self.clock.pop_front() else { break };
            match cache.map.get(&page_id, &guard) {
                None => {}
                Some(c) if c.referenced.swap(false, Ordering::Relaxed) => self.clock.push_back(page_id),
                Some(c) => {
                    cache.bytes.fetch_sub(c.image.len() as u64, Ordering::Relaxed);
                    cache.map.remove(&page_id, &guard);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_keeps_within_budget_and_prefers_referenced_pages() {
        let cache = PageCache::new(3000);
        let mut w = CacheWriter::new();
        for id in 0..3 {
            w.insert(&cache, id, Bytes::from(vec![0u8; 1000]));
        }
        assert!(cache.get(0).is_some());
        w.insert(&cache, 3, Bytes::from(vec![0u8; 1000]));
        assert!(cache.bytes() <= 3000);
        assert!(cache.get(0).is_some(), "a referenced page survives a pass of the hand");
        assert!(cache.get(1).is_none(), "the first unreferenced page is evicted");
        w.remove(&cache, 3);
        assert_eq!(cache.bytes(), 2000);
    }
}
