//! Ordered scans across shards.
//!
//! Each shard holds its keys in order; a [`Scan`] asks every shard for a chunk
//! of its next keys (all shards at once), then merges the chunks in key order
//! with a heap. When a shard's chunk runs out, the next chunk is fetched from
//! just after its last key; chunks start at 16 entries and double up to
//! `SCAN_CHUNK`, so a short scan costs little. Once a shard's chunks are at
//! full size, its next chunk is asked for as soon as one arrives, so the shard
//! walks its index while the caller consumes. Memory is bounded by
//! `2 x shards x SCAN_CHUNK` entries, whatever the range's size.
//!
//! A scan sees every write acknowledged before it started. Writes made while
//! it runs may or may not appear (each chunk is read at its own moment); a key
//! never appears twice, since each key lives in exactly one shard.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::ops::{Bound, RangeBounds};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::index::Versioned;
use crate::shard::{Request, ShardHandle};
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
    /// Where the next chunk starts (just after the last key fetched).
    next_start: Bound<Bytes>,
    /// Entries the next request asks for.
    next_limit: usize,
    exhausted: bool,
    /// The next chunk, asked for as soon as the previous full-size one arrived, so that
    /// the shard gathers it while the caller consumes the previous one.
    pending: Option<oneshot::Receiver<Vec<(Bytes, Versioned)>>>,
}

/// An iterator over `(key, value)` pairs in key order; see the module docs.
pub struct Scan {
    shards: Vec<ShardHandle>,
    cursors: Vec<Cursor>,
    heap: BinaryHeap<Reverse<(Bytes, usize)>>,
    end: Bound<Bytes>,
    error: Option<Error>,
    started: bool,
    /// Leave out the typed tables' reserved keys (a user's scan; a table's own scans see them).
    hide_reserved: bool,
    /// Most entries asked of a shard per request ([`SCAN_CHUNK`] unless set).
    chunk_max: usize,
}

fn owned(bound: Bound<&&[u8]>) -> Bound<Bytes> {
    match bound {
        Bound::Included(k) => Bound::Included(Bytes::copy_from_slice(k)),
        Bound::Excluded(k) => Bound::Excluded(Bytes::copy_from_slice(k)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The smallest key greater than every key that starts with `prefix`, if any.
pub(crate) fn prefix_end(prefix: &[u8]) -> Bound<Bytes> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Bound::Excluded(Bytes::from(end));
        }
    }
    Bound::Unbounded
}

impl Scan {
    pub(crate) fn new(shards: Vec<ShardHandle>, start: Bound<Bytes>, end: Bound<Bytes>) -> Scan {
        let cursors = (0..shards.len())
            .map(|_| Cursor {
                buf: VecDeque::new(),
                next_start: start.clone(),
                next_limit: SCAN_CHUNK_FIRST,
                exhausted: false,
                pending: None,
            })
            .collect();
        Scan {
            shards,
            cursors,
            heap: BinaryHeap::new(),
            end,
            error: None,
            started: false,
            hide_reserved: false,
            chunk_max: SCAN_CHUNK,
        }
    }

    /// This scan asking shards for up to `chunk_max` entries per request (typed tables'
    /// records are small, so their scans take larger chunks: fewer hops per byte).
    pub(crate) fn chunk_max(mut self, chunk_max: usize) -> Scan {
        assert!(chunk_max >= SCAN_CHUNK_FIRST, "a chunk holds at least the first request's entries");
        self.chunk_max = chunk_max;
        self
    }

    /// This scan without the typed tables' reserved keys (see `format::table`).
    pub(crate) fn hiding_reserved(mut self) -> Scan {
        self.hide_reserved = true;
        self
    }

    pub(crate) fn range<'a>(shards: Vec<ShardHandle>, range: impl RangeBounds<&'a [u8]>) -> Scan {
        Scan::new(shards, owned(range.start_bound()), owned(range.end_bound()))
    }

    fn request(&self, shard: usize) -> Result<oneshot::Receiver<Vec<(Bytes, Versioned)>>> {
        let (reply, rx) = oneshot::channel();
        let cursor = &self.cursors[shard];
        self.shards[shard].send(Request::Scan {
            start: cursor.next_start.clone(),
            end: self.end.clone(),
            limit: cursor.next_limit,
            reply,
        })?;
        Ok(rx)
    }

    fn receive_only(&mut self, shard: usize, rx: oneshot::Receiver<Vec<(Bytes, Versioned)>>) -> Result<()> {
        let mut chunk = rx.recv().map_err(|_| Error::Closed)?;
        let cursor = &mut self.cursors[shard];
        let limit = cursor.next_limit;
        cursor.exhausted = chunk.len() < limit;
        cursor.next_limit = (limit * 2).min(self.chunk_max);
        if let Some((last, _)) = chunk.last() {
            cursor.next_start = if self.hide_reserved && crate::format::table::is_reserved(last) {
                // The reserved keys are contiguous in key order: jump past all of them
                // rather than walk a table's records to drop them.
                Bound::Included(Bytes::from_static(RESERVED_END))
            } else {
                Bound::Excluded(last.clone())
            };
        }
        // A long scan (its chunks at full size): ask for the next chunk now, so that the
        // shard walks its index while this one is resolved and consumed. Short scans
        // never reach full size and ask for nothing ahead.
        if !cursor.exhausted && limit >= self.chunk_max {
            debug_assert!(cursor.pending.is_none());
            let rx = self.request(shard)?;
            self.cursors[shard].pending = Some(rx);
        }
        if self.hide_reserved {
            // Dropped before their values are read: a user's scan never pays for them.
            chunk.retain(|(key, _)| !crate::format::table::is_reserved(key));
        }
        // Values not in memory or in the cache are read in one request per chunk.
        let resolved = crate::read::resolve_many(&self.shards[shard], chunk)?;
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
            let rx = match self.cursors[shard].pending.take() {
                Some(rx) => rx,
                None => self.request(shard)?,
            };
            self.receive_only(shard, rx)?;
        }
    }

    fn start(&mut self) -> Result<()> {
        self.started = true;
        // Ask every shard first, then collect: the shards fill their chunks in parallel.
        let receivers = (0..self.shards.len()).map(|s| self.request(s)).collect::<Result<Vec<_>>>()?;
        for (shard, rx) in receivers.into_iter().enumerate() {
            self.receive_only(shard, rx)?;
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

/// Number of keys in `(start, end)` on every shard, counted from the index alone (no
/// value is read), `limit` keys per request.
pub(crate) fn count_keys(shards: &[ShardHandle], start: Bound<Bytes>, end: Bound<Bytes>) -> Result<u64> {
    const LIMIT: usize = 1 << 16;
    let mut total = 0u64;
    for shard in shards {
        let mut from = start.clone();
        loop {
            let (reply, rx) = oneshot::channel();
            shard.send(Request::Scan { start: from.clone(), end: end.clone(), limit: LIMIT, reply })?;
            let chunk = rx.recv().map_err(|_| Error::Closed)?;
            total += chunk.len() as u64;
            match chunk.last() {
                Some((last, _)) if chunk.len() == LIMIT => from = Bound::Excluded(last.clone()),
                _ => break,
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_end_follows_every_reserved_key() {
        assert_eq!(
            prefix_end(crate::format::table::RESERVED_PREFIX),
            Bound::Excluded(Bytes::from_static(RESERVED_END))
        );
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"ab"), Bound::Excluded(Bytes::from_static(b"ac")));
        assert_eq!(prefix_end(b"a\xff"), Bound::Excluded(Bytes::from_static(b"b")));
        assert_eq!(prefix_end(b"\xff\xff"), Bound::Unbounded);
        assert_eq!(prefix_end(b""), Bound::Unbounded);
    }
}
