//! A shard's page cache: page id (or chunk offset) to image, read and filled by
//! any thread.
//!
//! Callers look images up and slice values out of them without a hop to the
//! shard; a caller that read an uncached page or chunk itself inserts it. A
//! page image never changes (a page that changes gets a new id, and ids are
//! never reused), so a cached page image is right for as long as anyone holds
//! it, and one inserted after its page was released is merely dead weight that
//! the hand evicts. A chunk is cached by its offset, and a freed chunk's extent
//! may be reused by another chunk, so a cached chunk carries the crc32 it was
//! checked against, and only a look-up for that same chunk (offset and crc32,
//! from the index entry) finds it; any other is a miss and reads the disk.
//!
//! Eviction is CLOCK: a hit sets the image's referenced bit; the hand clears
//! set bits and evicts the first image found clear, until the cache is within
//! its byte budget. The hand and its ring are under a mutex taken by inserts
//! and removals only; look-ups take no lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::format::page::ChunkRef;
use crate::stats::StripedCounter;

/// Cache keys of chunks: the chunk's offset with this bit set (page ids never reach it).
pub(crate) const CHUNK_KEY_BIT: u64 = 1 << 63;

struct Cached {
    image: Bytes,
    /// For a chunk, the crc32 of the value it was checked against when inserted (0 for
    /// a page); a look-up for another chunk at the same offset does not match it.
    crc32: u32,
    referenced: AtomicBool,
}

impl Cached {
    /// The value of `chunk` if this image is that chunk's (same crc32, long enough).
    fn chunk(&self, chunk: &ChunkRef) -> Option<Bytes> {
        let len = chunk.len as usize;
        (self.crc32 == chunk.crc32 && self.image.len() >= len).then(|| self.image.slice(..len))
    }
}

/// See the module docs.
pub(crate) struct PageCache {
    map: papaya::HashMap<u64, Arc<Cached>, foldhash::fast::RandomState>,
    bytes: AtomicU64,
    budget_bytes: u64,
    /// The CLOCK ring of cached keys (and of removed ones not yet passed by the hand).
    clock: Mutex<VecDeque<u64>>,
    pub hits: StripedCounter,
    pub misses: StripedCounter,
}

impl PageCache {
    pub fn new(budget_bytes: u64) -> PageCache {
        PageCache {
            map: papaya::HashMap::default(),
            bytes: AtomicU64::new(0),
            budget_bytes,
            clock: Mutex::new(VecDeque::new()),
            hits: StripedCounter::default(),
            misses: StripedCounter::default(),
        }
    }

    /// Looks `key` up and hands what is cached there to `accept`, which answers `None`
    /// for an image that is not the one wanted. With `count`, a found image is marked
    /// referenced (for the CLOCK hand) and the look-up counts as a hit or a miss; without
    /// it, the look-up leaves no trace (the shard's second look after a caller's miss).
    fn find<R>(&self, key: u64, count: bool, accept: impl FnOnce(&Cached) -> Option<R>) -> Option<R> {
        let guard = self.map.guard();
        let found = self.map.get(&key, &guard).and_then(|c| accept(c).map(|r| (c, r)));
        if !count {
            return found.map(|(_, r)| r);
        }
        if let Some((c, r)) = found {
            if !c.referenced.load(Ordering::Relaxed) {
                c.referenced.store(true, Ordering::Relaxed);
            }
            self.hits.add(1);
            Some(r)
        } else {
            self.misses.add(1);
            None
        }
    }

    /// Runs `f` on the image of `page_id` where it lies in the cache, without a
    /// reference-count change, if it is cached. A found image is marked referenced;
    /// nothing is counted (the caller counts its hits with [`PageCache::count_hits`]
    /// once it knows its look-ups are all answered here).
    pub fn with<R>(&self, page_id: u64, f: impl FnOnce(&Bytes) -> R) -> Option<R> {
        debug_assert!(page_id & CHUNK_KEY_BIT == 0, "page ids stay below the chunk key bit");
        let guard = self.map.guard();
        let c = self.map.get(&page_id, &guard)?;
        if !c.referenced.load(Ordering::Relaxed) {
            c.referenced.store(true, Ordering::Relaxed);
        }
        Some(f(&c.image))
    }

    /// Counts `n` hits of look-ups made with [`PageCache::with`].
    pub fn count_hits(&self, n: u64) {
        self.hits.add(n);
    }

    /// The image of `page_id`, if cached.
    pub fn get(&self, page_id: u64) -> Option<Bytes> {
        debug_assert!(page_id & CHUNK_KEY_BIT == 0, "page ids stay below the chunk key bit");
        self.find(page_id, true, |c| Some(c.image.clone()))
    }

    /// The value of the chunk `chunk`, if cached (an image of another chunk that was at
    /// the same offset earlier counts as a miss).
    pub fn chunk(&self, chunk: &ChunkRef) -> Option<Bytes> {
        debug_assert!(chunk.offset & CHUNK_KEY_BIT == 0, "chunk offsets stay below the chunk key bit");
        self.find(CHUNK_KEY_BIT | chunk.offset, true, |c| c.chunk(chunk))
    }

    /// The image of `page_id`, if cached, without counting a hit or a miss (for the
    /// shard's own second look after a caller's miss).
    pub fn peek(&self, page_id: u64) -> Option<Bytes> {
        debug_assert!(page_id & CHUNK_KEY_BIT == 0, "page ids stay below the chunk key bit");
        self.find(page_id, false, |c| Some(c.image.clone()))
    }

    /// Bytes cached.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn clock(&self) -> std::sync::MutexGuard<'_, VecDeque<u64>> {
        self.clock.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Caches the image of page `page_id` (replacing what was there), then evicts down to
    /// the budget.
    pub fn insert(&self, page_id: u64, image: Bytes) {
        debug_assert!(page_id & CHUNK_KEY_BIT == 0);
        self.insert_cached(page_id, image, 0);
    }

    /// Caches a chunk's bytes, already checked against `chunk` (replacing what was at its
    /// offset), then evicts down to the budget.
    pub fn insert_chunk(&self, chunk: &ChunkRef, raw: Bytes) {
        debug_assert!(chunk.offset & CHUNK_KEY_BIT == 0, "chunk offsets stay below the chunk key bit");
        // A look-up slices the value out of the cached bytes: shorter bytes would make
        // every later look-up for this chunk a miss, or worse, a short value.
        debug_assert!(raw.len() >= chunk.len as usize, "a cached chunk holds the whole value it was checked against");
        self.insert_cached(CHUNK_KEY_BIT | chunk.offset, raw, chunk.crc32);
    }

    fn insert_cached(&self, key: u64, image: Bytes, crc32: u32) {
        let mut clock = self.clock();
        let guard = self.map.guard();
        let len = image.len() as u64;
        let old = self.map.insert(key, Arc::new(Cached { image, crc32, referenced: AtomicBool::new(false) }), &guard);
        match old {
            Some(old) => {
                // Every change of `bytes` happens under the clock lock, so it covers each
                // cached image exactly; an underflow would disable eviction for good.
                debug_assert!(
                    self.bytes.load(Ordering::Relaxed) >= old.image.len() as u64,
                    "the cache's byte count covers every cached image"
                );
                self.bytes.fetch_sub(old.image.len() as u64, Ordering::Relaxed);
            }
            None => clock.push_back(key),
        }
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.evict(&mut clock, &guard);
    }

    /// Drops `key` from the cache.
    pub fn remove(&self, key: u64) {
        let clock = &mut *self.clock();
        let guard = self.map.guard();
        if let Some(old) = self.map.remove(&key, &guard) {
            debug_assert!(
                self.bytes.load(Ordering::Relaxed) >= old.image.len() as u64,
                "the cache's byte count covers every cached image"
            );
            self.bytes.fetch_sub(old.image.len() as u64, Ordering::Relaxed);
        }
        // The key stays in the ring until the hand reaches it and skips it; prune the
        // ring when such stale keys outnumber the live ones, so it cannot grow for ever.
        if clock.len() > 2 * self.map.len() + 1024 {
            clock.retain(|k| self.map.contains_key(k, &guard));
        }
    }

    fn evict(&self, clock: &mut VecDeque<u64>, guard: &impl papaya::Guard) {
        // Bounded: each turn either evicts, drops a stale key, or clears one bit; after
        // two passes every bit is clear.
        let mut turns = 2 * clock.len() + 1;
        while self.bytes.load(Ordering::Relaxed) > self.budget_bytes && turns > 0 {
            turns -= 1;
            let Some(key) = clock.pop_front() else { break };
            match self.map.get(&key, guard) {
                None => {}
                Some(c) if c.referenced.swap(false, Ordering::Relaxed) => clock.push_back(key),
                Some(c) => {
                    self.bytes.fetch_sub(c.image.len() as u64, Ordering::Relaxed);
                    self.map.remove(&key, guard);
                }
            }
        }
        // An image off the ring can never be evicted: the cache would outgrow its budget.
        debug_assert!(self.map.len() <= clock.len(), "every cached image is on the CLOCK ring");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_keeps_within_budget_and_prefers_referenced_pages() {
        let cache = PageCache::new(3000);
        for id in 0..3 {
            cache.insert(id, Bytes::from(vec![0u8; 1000]));
        }
        assert!(cache.get(0).is_some());
        cache.insert(3, Bytes::from(vec![0u8; 1000]));
        assert!(cache.bytes() <= 3000);
        assert!(cache.get(0).is_some(), "a referenced page survives a pass of the hand");
        assert!(cache.get(1).is_none(), "the first unreferenced page is evicted");
        cache.remove(3);
        assert_eq!(cache.bytes(), 2000);
    }

    #[test]
    fn a_chunk_is_found_only_by_the_reference_it_was_checked_against() {
        let cache = PageCache::new(1 << 20);
        let chunk = ChunkRef { offset: 4096, len: 3, crc32: 7 };
        cache.insert_chunk(&chunk, Bytes::from_static(b"abcdef"));
        assert_eq!(cache.chunk(&chunk).as_deref(), Some(&b"abc"[..]));
        assert!(cache.chunk(&ChunkRef { crc32: 8, ..chunk }).is_none(), "another chunk once at that offset");
        assert!(cache.chunk(&ChunkRef { len: 9, ..chunk }).is_none(), "longer than the cached bytes");
        assert!(cache.get(4096).is_none(), "page ids and chunk offsets do not collide");
    }
}
