//! Turning an index entry into its value, on the caller's thread.
//!
//! Every read takes one path: the value in memory ([`cached`]: in the entry, or
//! in the page's image or the chunk in the shard's cache), else the bytes read
//! from the disk, else a check of those bytes ([`value_of`]). An `Inline` value
//! is in the entry. A `Page` value is sliced out of the page's image; on a miss,
//! a single `get` reads the page itself (`page/disk.rs`: no hop to the shard),
//! while `multi_get` and scans ask the shard to read all their misses (one
//! request per shard, so the shard has them in flight together on its ring).
//! Page images never change, so a slice is always the value that entry names. If
//! a checkpoint replaced the page meanwhile, the page is gone, and the caller
//! looks the key up again. A `Chunk` is read the same way and checked here
//! against the entry's length and checksum; a mismatch is corruption only if the
//! entry still names that chunk (else the chunk was freed by a checkpoint and the
//! key moved).

use std::collections::HashMap;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::page::{ChunkRef, decode_chunk};
use crate::shard::{ReadReply, Request, ShardHandle};
use crate::stats::ShardCounters;
use crate::storage::index::{Stored, Versioned};
use crate::storage::page::disk::DiskReader;

/// Lookups of one key before giving up (each retry means a checkpoint moved the key
/// while it was being read; more than a few in a row is a bug).
const ATTEMPTS_MAX: usize = 16;

/// A key's version and value, read from wherever it is; `None` if the key is absent.
pub(crate) fn get_versioned(shard: &ShardHandle, key: &[u8]) -> Result<Option<(u64, Bytes)>> {
    for _ in 0..ATTEMPTS_MAX {
        let Some(entry) = shard.index().get(key) else { return Ok(None) };
        // `None`: a checkpoint moved the value while it was read; look again.
        if let Some(value) = resolve(shard, key, &entry)? {
            return Ok(Some((entry.version, value)));
        }
    }
    Err(Error::InvalidArgument(format!("key {key:?} moved {ATTEMPTS_MAX} times while being read (a ringdb bug)")))
}

/// A key's value, read from wherever it is; `None` if the key is absent.
pub(crate) fn get(shard: &ShardHandle, key: &[u8]) -> Result<Option<Bytes>> {
    Ok(get_versioned(shard, key)?.map(|(_, value)| value))
}

/// What the lock-free path made of a key: absent, answered, or needing the shard.
pub(crate) enum Fast<R> {
    Absent,
    Done(R),
    /// In a page that is not cached, or in a chunk: read it with [`get`] or [`get_many`].
    Slow,
}

/// Runs `f` on `key`'s value where it lies (in the index entry, or in the page's image
/// in the shard's cache), with no copy and no reference-count change, if it is there;
/// `f` is not called when the answer is [`Fast::Slow`] or [`Fast::Absent`].
pub(crate) fn with_fast<R>(shard: &ShardHandle, key: &[u8], f: &mut impl FnMut(&[u8]) -> R) -> Fast<R> {
    let shared = shard;
    shared.index().with(key, |entry| match entry {
        None => Fast::Absent,
        Some(Versioned { stored: Stored::Inline(value), .. }) => Fast::Done(f(value)),
        Some(Versioned { stored: Stored::Page { page_id, offset, len }, .. }) => {
            let range = *offset as usize..*offset as usize + *len as usize;
            match shared.cache().with(*page_id, |image| f(&image[range])) {
                Some(r) => Fast::Done(r),
                None => Fast::Slow,
            }
        }
        Some(Versioned { stored: Stored::Chunk { .. }, .. }) => Fast::Slow,
    })
}

/// Bytes read for an entry whose value was not in memory.
enum Fetched {
    /// A page's image; `None` if the page is gone (replaced by a checkpoint).
    Page(Option<Bytes>),
    /// A chunk's raw bytes, unchecked.
    Chunk(Bytes),
}

fn chunk_ref(entry: &Versioned) -> Option<ChunkRef> {
    match entry.stored {
        Stored::Chunk { offset, len, crc32 } => Some(ChunkRef { offset, len, crc32 }),
        _ => None,
    }
}

/// The value `entry` names if memory holds it: in the entry itself, or in the shard's
/// cache (counting a hit or a miss there).
fn cached(shard: &ShardHandle, entry: &Versioned) -> Option<Bytes> {
    let cache = &shard.cache();
    match &entry.stored {
        Stored::Inline(value) => Some(value.clone()),
        Stored::Page { page_id, offset, len } => cache.get(*page_id).map(|image| slice(&image, *offset, *len)),
        Stored::Chunk { .. } => cache.chunk(&chunk_ref(entry).expect("a chunk entry")),
    }
}

/// The value `entry` names, from the bytes read for it; `None` if it went away meanwhile.
fn value_of(shard: &ShardHandle, key: &[u8], entry: &Versioned, fetched: Fetched) -> Result<Option<Bytes>> {
    match (&entry.stored, fetched) {
        (Stored::Page { offset, len, .. }, Fetched::Page(image)) => Ok(image.map(|i| slice(&i, *offset, *len))),
        (Stored::Chunk { .. }, Fetched::Chunk(raw)) => {
            check_chunk(shard, key, entry, &raw, chunk_ref(entry).expect("a chunk entry"))
        }
        _ => unreachable!("bytes are read for a page or chunk entry, as the entry says"),
    }
}

/// Reads what `entry` names on this thread, counting the read and caching a page.
fn fetch_on_caller(shard: &ShardHandle, disk: &DiskReader, entry: &Versioned) -> Result<Fetched> {
    let shared = shard;
    match &entry.stored {
        Stored::Page { page_id, .. } => {
            let image = disk.read_page(*page_id)?;
            if let Some(image) = &image {
                ShardCounters::add(&shared.counters().pages_read, 1);
                shared.cache().insert(*page_id, image.clone());
            }
            Ok(Fetched::Page(image))
        }
        Stored::Chunk { offset, len, .. } => {
            let raw = disk.read_chunk(*offset, *len)?;
            ShardCounters::add(&shared.counters().chunks_read, 1);
            Ok(Fetched::Chunk(raw))
        }
        Stored::Inline(_) => unreachable!("an inline value is never read from the disk"),
    }
}

/// The value `entry` names, or `None` if its page or chunk went away meanwhile.
pub(crate) fn resolve(shard: &ShardHandle, key: &[u8], entry: &Versioned) -> Result<Option<Bytes>> {
    if let Some(value) = cached(shard, entry) {
        return Ok(Some(value));
    }
    let Some(disk) = shard.disk() else {
        let fetched = request_misses(shard, std::slice::from_ref(entry))?.wait()?.pop().expect("one read");
        return value_of(shard, key, entry, fetched);
    };
    let fetched = fetch_on_caller(shard, disk, entry)?;
    let raw = match &fetched {
        Fetched::Chunk(raw) => Some(raw.clone()),
        Fetched::Page(_) => None,
    };
    let value = value_of(shard, key, entry, fetched)?;
    if let (Some(raw), Some(_)) = (raw, &value) {
        shard.cache().insert_chunk(&chunk_ref(entry).expect("a chunk entry"), raw);
    }
    Ok(value)
}

fn slice(image: &Bytes, offset: u32, len: u32) -> Bytes {
    image.slice(offset as usize..offset as usize + len as usize)
}

fn check_chunk(
    shard: &ShardHandle,
    key: &[u8],
    entry: &Versioned,
    raw: &Bytes,
    chunk: ChunkRef,
) -> Result<Option<Bytes>> {
    match decode_chunk(raw, &chunk) {
        Ok(value) => {
            let start = value.as_ptr() as usize - raw.as_ptr() as usize;
            Ok(Some(raw.slice(start..start + value.len())))
        }
        Err(what) => {
            let still =
                shard.index().get(key).is_some_and(|now| now.version == entry.version && now.stored == entry.stored);
            if still {
                let file = shard.data_path();
                Err(Error::Corruption { file, offset: chunk.offset, what })
            } else {
                Ok(None)
            }
        }
    }
}

/// A shard's read of the pages and chunks of some entries, in flight.
struct PendingRead {
    /// Per entry: its page's place in `pages`, or its chunk's in the request.
    at: Vec<Result<usize, usize>>,
    pages: Vec<u64>,
    rx: Option<oneshot::Receiver<Result<ReadReply>>>,
}

impl PendingRead {
    /// Waits for the shard, and returns what was read for each entry, in order.
    fn wait(self) -> Result<Vec<Fetched>> {
        let reply = match self.rx {
            Some(rx) => rx.recv().map_err(|_| Error::Closed)??,
            None => ReadReply { pages: Vec::new(), chunks: Vec::new() },
        };
        debug_assert_eq!(reply.pages.len(), self.pages.len(), "the shard answers every page asked for");
        let fetched = self
            .at
            .iter()
            .map(|at| match *at {
                Ok(p) => Fetched::Page(reply.pages.get(p).cloned().flatten()),
                Err(c) => Fetched::Chunk(reply.chunks.get(c).cloned().unwrap_or_default()),
            })
            .collect();
        Ok(fetched)
    }
}

/// Asks `shard` to read the pages and chunks `entries` name (each page once), without
/// waiting.
fn request_misses(shard: &ShardHandle, entries: &[Versioned]) -> Result<PendingRead> {
    let mut pages: Vec<u64> = Vec::new();
    let mut page_at: HashMap<u64, usize> = HashMap::new();
    let mut chunks = Vec::new();
    let mut at = Vec::with_capacity(entries.len());
    for entry in entries {
        match &entry.stored {
            Stored::Page { page_id, .. } => at.push(Ok(*page_at.entry(*page_id).or_insert_with(|| {
                pages.push(*page_id);
                pages.len() - 1
            }))),
            Stored::Chunk { offset, len, .. } => {
                chunks.push((*offset, *len));
                at.push(Err(chunks.len() - 1));
            }
            Stored::Inline(_) => unreachable!("inline values are never misses"),
        }
    }
    let rx = if at.is_empty() {
        None
    } else {
        let (reply, rx) = oneshot::channel();
        shard.send(Request::Read { pages: pages.clone(), chunks, reply })?;
        Some(rx)
    };
    Ok(PendingRead { at, pages, rx })
}

/// Values of many keys (each with its shard), with every miss of a shard read in one
/// request, all shards at once.
pub(crate) fn get_many(shards: &[ShardHandle], keys: &[(usize, &[u8])]) -> Result<Vec<Option<Bytes>>> {
    let mut out: Vec<Option<Bytes>> = vec![None; keys.len()];
    // (key index, entry) of the keys whose values are not in memory, per shard.
    let mut misses: Vec<Vec<(usize, Versioned)>> = vec![Vec::new(); shards.len()];
    for (i, &(s, key)) in keys.iter().enumerate() {
        let Some(entry) = shards[s].index().get(key) else { continue };
        match cached(&shards[s], &entry) {
            Some(value) => out[i] = Some(value),
            None => misses[s].push((i, entry)),
        }
    }
    let mut pending = Vec::new();
    for (s, shard_misses) in misses.into_iter().enumerate() {
        if !shard_misses.is_empty() {
            let entries: Vec<Versioned> = shard_misses.iter().map(|(_, e)| e.clone()).collect();
            pending.push((s, shard_misses, request_misses(&shards[s], &entries)?));
        }
    }
    for (s, shard_misses, read) in pending {
        for ((i, entry), fetched) in shard_misses.into_iter().zip(read.wait()?) {
            let key = keys[i].1;
            out[i] = match value_of(&shards[s], key, &entry, fetched)? {
                Some(v) => Some(v),
                // Moved by a checkpoint meanwhile: look it up again.
                None => get(&shards[s], key)?,
            };
        }
    }
    Ok(out)
}

/// Values of a shard's `(key, entry)` pairs, in order, with every miss read in one
/// request; `None` for a key deleted since its entry was taken.
pub(crate) fn resolve_many(
    shard: &ShardHandle,
    entries: Vec<(Bytes, Versioned)>,
) -> Result<Vec<(Bytes, Option<Bytes>)>> {
    let values: Vec<Option<Bytes>> = entries.iter().map(|(_, entry)| cached(shard, entry)).collect();
    let missed: Vec<Versioned> =
        entries.iter().zip(&values).filter(|(_, v)| v.is_none()).map(|((_, e), _)| e.clone()).collect();
    let mut fetched = request_misses(shard, &missed)?.wait()?.into_iter();
    let mut out = Vec::with_capacity(entries.len());
    for ((key, entry), value) in entries.into_iter().zip(values) {
        let value = match value {
            Some(v) => Some(v),
            None => value_of(shard, &key, &entry, fetched.next().expect("a read per miss"))?,
        };
        let value = match value {
            Some(v) => Some(v),
            // Moved by a checkpoint (or evicted) since the entry was taken: look it up
            // again; it may also have been deleted since.
            None => get(shard, &key)?,
        };
        out.push((key, value));
    }
    Ok(out)
}

/// Reads as the API asks for them: by key, routed to the owning shard here, so the
/// API never holds a shard's handle.
impl super::Engine {
    /// The value of `key`, or `None`.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        get(self.shard_for(key), key)
    }

    /// The version and value of `key`, or `None` (a transaction's read).
    pub(crate) fn get_versioned(&self, key: &[u8]) -> Result<Option<(u64, Bytes)>> {
        get_versioned(self.shard_for(key), key)
    }

    /// Whether `key` is present now (from its shard's index alone; no value is read).
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.shard_for(key).index().contains(key)
    }

    /// [`with_fast`] on the shard that owns `key`.
    pub(crate) fn with_fast<R>(&self, key: &[u8], f: &mut impl FnMut(&[u8]) -> R) -> Fast<R> {
        with_fast(self.shard_for(key), key, f)
    }

    /// Values of `keys`, in order, with every miss of a shard read in one request, all
    /// shards at once.
    pub(crate) fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Bytes>>> {
        let routed: Vec<(usize, &[u8])> = keys.iter().map(|&key| (self.shard_of(key), key)).collect();
        let values = get_many(self.shards(), &routed)?;
        assert_eq!(values.len(), keys.len(), "a multi-key read answers every key, in order");
        Ok(values)
    }
}
