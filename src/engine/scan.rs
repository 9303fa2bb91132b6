//! Ordered scans across shards.
//!
//! Each shard holds its keys in order (its memtable and its tree); a [`Scan`]
//! reads a chunk of every shard's next keys, on the caller's thread (no hop to
//! a shard: nodes not cached are read by the caller), then merges
//! the chunks in key order with a heap. When a shard's chunk runs out, the next
//! chunk is read from just after its last key; chunks start at 16 entries and double up to
//! `SCAN_CHUNK`, so a short scan costs little. Memory is bounded by
//! `shards x SCAN_CHUNK` entries, whatever the range's size.
//!
//! A scan sees every write acknowledged before it started. Writes made while
//! it runs may or may not appear (each chunk is read at its own moment); a key
//! never appears twice, since each key lives in exactly one shard.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::ops::Bound;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::key::{KeyRange, is_reserved};
use crate::shard::ShardHandle;
use crate::storage::index::Versioned;
use crate::value::Value;

/// The smallest key after every reserved one (the reserved prefix with its last byte
/// incremented).
const RESERVED_END: &[u8] = b"\xFFringdc";
const _: () = assert!(RESERVED_END.len() == crate::format::table::RESERVED_PREFIX.len());

/// Most entries fetched from a shard per request.
pub const SCAN_CHUNK: usize = 256;
/// Entries fetched from a shard by its first request; each later request doubles it,
/// up to [`SCAN_CHUNK`], so a short scan reads little and a long one soon reads a lot.
const SCAN_CHUNK_FIRST: usize = 16;

struct Cursor {
    buf: VecDeque<(Bytes, Bytes)>,
    /// The part of the range not fetched yet (it starts just after the last key fetched).
    rest: KeyRange,
    /// Entries the next request asks for.
    next_limit: usize,
    exhausted: bool,
}

/// An iterator over `(key, value)` pairs in key order; see the module docs.
pub struct Scan {
    shards: Vec<ShardHandle>,
    cursors: Vec<Cursor>,
    heap: BinaryHeap<Reverse<(Bytes, usize)>>,
    error: Option<Error>,
    /// An error to yield first (the scan of a closed database).
    pending: Option<Error>,
    started: bool,
    /// Leave out the typed tables' reserved keys (a user's scan; a table's own scans see them).
    hide_reserved: bool,
    /// Most entries read from a shard per chunk ([`SCAN_CHUNK`] unless set).
    chunk_max: usize,
}

impl Scan {
    pub(crate) fn new(shards: Vec<ShardHandle>, range: &KeyRange) -> Scan {
        let cursors = (0..shards.len())
            .map(|_| Cursor {
                buf: VecDeque::new(),
                rest: range.clone(),
                next_limit: SCAN_CHUNK_FIRST,
                exhausted: false,
            })
            .collect();
        Scan {
            shards,
            cursors,
            heap: BinaryHeap::new(),
            error: None,
            pending: None,
            started: false,
            hide_reserved: false,
            chunk_max: SCAN_CHUNK,
        }
    }

    /// This scan reading up to `chunk_max` entries of a shard per chunk (typed tables'
    /// records are small, so their scans take larger chunks).
    pub(crate) fn chunk_max(mut self, chunk_max: usize) -> Scan {
        assert!(chunk_max >= SCAN_CHUNK_FIRST, "a chunk holds at least the first one's entries");
        self.chunk_max = chunk_max;
        self
    }

    /// This scan without the typed tables' reserved keys (see `format::table`).
    pub(crate) fn hiding_reserved(mut self) -> Scan {
        self.hide_reserved = true;
        self
    }

    /// A scan that yields `error` and then ends.
    pub(crate) fn failed(error: Error) -> Scan {
        let mut scan = Scan::new(Vec::new(), &KeyRange::all());
        scan.pending = Some(error);
        scan
    }

    /// Reads the shard's next chunk of keys from its index (on this thread) and their
    /// values (the ones not in memory or in the cache in one read request).
    fn fetch(&mut self, shard: usize) -> Result<()> {
        let cursor = &self.cursors[shard];
        let mut chunk = Vec::with_capacity(cursor.next_limit);
        let (start, end) = cursor.rest.bounds();
        self.shards[shard].data()?.range(start, end, cursor.next_limit, &mut chunk)?;
        let cursor = &mut self.cursors[shard];
        cursor.exhausted = chunk.len() < cursor.next_limit;
        cursor.next_limit = (cursor.next_limit * 2).min(self.chunk_max);
        if let Some((last, _)) = chunk.last() {
            cursor.rest.start = if self.hide_reserved && is_reserved(last) {
                // The reserved keys are contiguous in key order: jump past all of them
                // rather than walk a table's records to drop them.
                Bound::Included(Bytes::from_static(RESERVED_END))
            } else {
                Bound::Excluded(last.clone())
            };
        }
        if self.hide_reserved {
            // Dropped before their values are read: a user's scan never pays for them.
            chunk.retain(|(key, _)| !is_reserved(key));
        }
        let resolved = crate::engine::read::resolve_many(&self.shards[shard], chunk)?;
        let cursor = &mut self.cursors[shard];
        cursor.buf.extend(resolved.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        Ok(())
    }

    /// Puts the shard's next key in the heap, fetching its next chunk if its buffer is
    /// empty (a chunk whose keys were all deleted meanwhile, or all reserved, leaves it
    /// empty: fetch again).
    fn refill(&mut self, shard: usize) -> Result<()> {
        loop {
            let cursor = &self.cursors[shard];
            if let Some((next, _)) = cursor.buf.front() {
                self.heap.push(Reverse((next.clone(), shard)));
                return Ok(());
            }
            if cursor.exhausted {
                return Ok(());
            }
            self.fetch(shard)?;
        }
    }

    fn start(&mut self) -> Result<()> {
        self.started = true;
        for shard in 0..self.shards.len() {
            self.refill(shard)?;
        }
        Ok(())
    }

    fn advance(&mut self) -> Result<Option<(Value, Value)>> {
        if !self.started {
            self.start()?;
        }
        let Some(Reverse((_, shard))) = self.heap.pop() else { return Ok(None) };
        let cursor = &mut self.cursors[shard];
        let (key, value) = cursor.buf.pop_front().expect("a shard in the heap has a buffered entry");
        self.refill(shard)?;
        Ok(Some((Value(key), Value(value))))
    }
}

impl Iterator for Scan {
    type Item = Result<(Value, Value)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            self.error = Some(e.clone());
            return Some(Err(e));
        }
        if self.error.is_some() {
            return None;
        }
        match self.advance() {
            Ok(Some(entry)) => Some(Ok(entry)),
            Ok(None) => None,
            Err(e) => {
                self.error = Some(e.clone());
                Some(Err(e))
            }
        }
    }
}

/// Number of keys in `range` on every shard, counted from the memtables and the trees'
/// leaves (no value in a chunk is read).
pub(crate) fn count_keys(shards: &[ShardHandle], range: &KeyRange) -> Result<u64> {
    let mut count = 0;
    for shard in shards {
        for_each_chunk(shard, range, |chunk| {
            count += chunk.len() as u64;
            Ok(())
        })?;
    }
    Ok(count)
}

/// Hands `f` every entry of `shard` in `range`, in key order, a chunk of at most
/// [`SCAN_CHUNK`] entries at a time (each chunk read from the index at its own moment).
pub(crate) fn for_each_chunk(
    shard: &ShardHandle,
    range: &KeyRange,
    mut f: impl FnMut(Vec<(Bytes, Versioned)>) -> Result<()>,
) -> Result<()> {
    let mut rest = range.clone();
    loop {
        let mut chunk = Vec::with_capacity(SCAN_CHUNK);
        let (start, end) = rest.bounds();
        shard.data()?.range(start, end, SCAN_CHUNK, &mut chunk)?;
        let exhausted = chunk.len() < SCAN_CHUNK;
        if let Some((last, _)) = chunk.last() {
            debug_assert!(range.contains(last), "a chunk holds keys of its range only");
            rest.start = Bound::Excluded(last.clone());
        }
        f(chunk)?;
        if exhausted {
            return Ok(());
        }
    }
}

/// Scans as the API asks for them, across every shard.
impl super::Engine {
    /// A scan of `range` across every shard, merged in key order.
    pub(crate) fn scan(&self, range: &KeyRange) -> Scan {
        Scan::new(self.shards().to_vec(), range)
    }

    /// Every entry of `range`, shard by shard, a chunk at a time, for a transaction's
    /// scan: `seen` gets each chunk's `(shard, [(key, version)])` before its values are
    /// read, and may refuse it (a transaction past its key limit reads no more). Returns
    /// the entries still present when their values were read, unordered across shards.
    pub(crate) fn scan_versioned(
        &self,
        range: &KeyRange,
        mut seen: impl FnMut(usize, Vec<(Bytes, u64)>) -> Result<()>,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let mut entries = Vec::new();
        if range.is_empty() {
            return Ok(entries);
        }
        for (s, shard) in self.shards().iter().enumerate() {
            for_each_chunk(shard, range, |chunk| {
                seen(s, chunk.iter().map(|(k, v)| (k.clone(), v.version)).collect())?;
                // A key deleted since its entry was taken changed version: a transaction
                // that saw it fails at commit, so leaving it out is as good as anything.
                let resolved = crate::engine::read::resolve_many(shard, chunk)?;
                entries.extend(resolved.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
                Ok(())
            })?;
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_end_follows_every_reserved_key() {
        assert_eq!(
            crate::key::prefix_end(crate::format::table::RESERVED_PREFIX),
            Bound::Excluded(Bytes::from_static(RESERVED_END))
        );
    }
}
