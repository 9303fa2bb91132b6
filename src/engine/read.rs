//! Turning an index entry into its value, on the caller's thread.
//!
//! An `Inline` value is in the entry. A `Page` value is sliced out of the page's
//! image in the shard's cache; on a miss, a single `get` reads the page itself
//! (`page/disk.rs`: no hop to the shard), while `multi_get` and scans ask the
//! shard to read all their misses (one request per shard, so the shard has them
//! in flight together on its ring). Page images never change, so a slice is always
//! the value that entry names. If a checkpoint replaced the page meanwhile, the
//! shard answers that the page is gone, and the caller looks the key up again.
//! A `Chunk` is read the same way and checked here against the entry's length
//! and checksum; a mismatch is corruption only if the entry still names that
//! chunk (else the chunk was freed by a checkpoint and the key moved).

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::page::{ChunkRef, decode_chunk};
use crate::shard::{ReadReply, Request, ShardHandle};
use crate::stats::ShardCounters;
use crate::storage::index::{Stored, Versioned};

/// Lookups of one key before giving up (each retry means a checkpoint moved the key
/// while it was being read; more than a few in a row is a bug).
const ATTEMPTS_MAX: usize = 16;

/// A key's value, read from wherever it is; `None` if the key is absent.
pub(crate) fn get(shard: &ShardHandle, key: &[u8]) -> Result<Option<Bytes>> {
    for _ in 0..ATTEMPTS_MAX {
        let Some(entry) = shard.index().get(key) else { return Ok(None) };
        if let Some(value) = resolve(shard, key, &entry)? {
            return Ok(Some(value));
        }
    }
    Err(moved_too_often(key))
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
    shard.index().with(key, |entry| match entry {
        None => Fast::Absent,
        Some(Versioned { stored: Stored::Inline(value), .. }) => Fast::Done(f(value)),
        Some(Versioned { stored: Stored::Page { page_id, offset, len }, .. }) => {
            let range = *offset as usize..*offset as usize + *len as usize;
            match shard.cache().with(*page_id, |image| f(&image[range])) {
                Some(r) => Fast::Done(r),
                None => Fast::Slow,
            }
        }
        Some(Versioned { stored: Stored::Chunk { .. }, .. }) => Fast::Slow,
    })
}

fn moved_too_often(key: &[u8]) -> Error {
    Error::InvalidArgument(format!("key {key:?} moved {ATTEMPTS_MAX} times while being read (a ringdb bug)"))
}

/// The value `entry` names, or `None` if its page or chunk went away meanwhile.
pub(crate) fn resolve(shard: &ShardHandle, key: &[u8], entry: &Versioned) -> Result<Option<Bytes>> {
    match &entry.stored {
        Stored::Inline(value) => Ok(Some(value.clone())),
        Stored::Page { page_id, offset, len } => {
            let image = match shard.cache().get(*page_id) {
                Some(image) => image,
                None => {
                    let read = match shard.disk() {
                        Some(disk) => disk.read_page(*page_id)?,
                        None => read(shard, vec![*page_id], Vec::new())?.pages.pop().flatten(),
                    };
                    match read {
                        Some(image) => {
                            ShardCounters::add(&shard.counters().pages_read, 1);
                            shard.cache().insert(*page_id, image.clone());
                            image
                        }
                        None => return Ok(None),
                    }
                }
            };
            Ok(Some(slice(&image, *offset, *len)))
        }
        Stored::Chunk { offset, len, crc32 } => {
            let chunk = ChunkRef { offset: *offset, len: *len, crc32: *crc32 };
            if let Some(value) = shard.cache().chunk(&chunk) {
                return Ok(Some(value));
            }
            let Some(disk) = shard.disk() else {
                let raw = read(shard, Vec::new(), vec![(*offset, *len)])?.chunks.pop().unwrap_or_default();
                return check_chunk(shard, key, entry, raw, chunk);
            };
            let raw = disk.read_chunk(*offset, *len)?;
            ShardCounters::add(&shard.counters().chunks_read, 1);
            let value = check_chunk(shard, key, entry, raw.clone(), chunk)?;
            if value.is_some() {
                shard.cache().insert_chunk(&chunk, raw);
            }
            Ok(value)
        }
    }
}

fn slice(image: &Bytes, offset: u32, len: u32) -> Bytes {
    image.slice(offset as usize..offset as usize + len as usize)
}

fn check_chunk(
    shard: &ShardHandle,
    key: &[u8],
    entry: &Versioned,
    raw: Bytes,
    chunk: ChunkRef,
) -> Result<Option<Bytes>> {
    match decode_chunk(&raw, &chunk) {
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

/// Asks the shard to read pages and chunks, and waits.
pub(crate) fn read(shard: &ShardHandle, pages: Vec<u64>, chunks: Vec<(u64, u32)>) -> Result<ReadReply> {
    let (reply, rx) = oneshot::channel();
    shard.send(Request::Read { pages, chunks, reply })?;
    rx.recv().map_err(|_| Error::Closed)?
}

/// Values of many keys (each with its shard), with every miss of a shard read in one
/// request, all shards at once.
pub(crate) fn get_many(shards: &[ShardHandle], keys: &[(usize, &[u8])]) -> Result<Vec<Option<Bytes>>> {
    let mut out: Vec<Option<Bytes>> = vec![None; keys.len()];
    // (key index, entry) of the keys whose pages are not cached, per shard.
    let mut misses: Vec<Vec<(usize, Versioned)>> = vec![Vec::new(); shards.len()];
    for (i, &(s, key)) in keys.iter().enumerate() {
        let Some(entry) = shards[s].index().get(key) else { continue };
        match &entry.stored {
            Stored::Inline(v) => out[i] = Some(v.clone()),
            Stored::Page { page_id, offset, len } => match shards[s].cache().get(*page_id) {
                Some(image) => out[i] = Some(slice(&image, *offset, *len)),
                None => misses[s].push((i, entry)),
            },
            Stored::Chunk { offset, len, crc32 } => {
                match shards[s].cache().chunk(&ChunkRef { offset: *offset, len: *len, crc32: *crc32 }) {
                    Some(v) => out[i] = Some(v),
                    None => misses[s].push((i, entry)),
                }
            }
        }
    }
    let mut pending = Vec::new();
    for (s, shard_misses) in misses.into_iter().enumerate() {
        if shard_misses.is_empty() {
            continue;
        }
        let mut pages = Vec::new();
        let mut chunks = Vec::new();
        for (_, entry) in &shard_misses {
            match &entry.stored {
                Stored::Page { page_id, .. } => pages.push(*page_id),
                Stored::Chunk { offset, len, .. } => chunks.push((*offset, *len)),
                Stored::Inline(_) => unreachable!("inline values are never misses"),
            }
        }
        let (reply, rx) = oneshot::channel();
        shards[s].send(Request::Read { pages, chunks, reply })?;
        pending.push((s, shard_misses, rx));
    }
    for (s, shard_misses, rx) in pending {
        let reply = rx.recv().map_err(|_| Error::Closed)??;
        let (mut pages, mut chunks) = (reply.pages.into_iter(), reply.chunks.into_iter());
        for (i, entry) in shard_misses {
            let key = keys[i].1;
            let value = match &entry.stored {
                Stored::Page { offset, len, .. } => pages.next().flatten().map(|image| slice(&image, *offset, *len)),
                Stored::Chunk { offset, len, crc32 } => {
                    let raw = chunks.next().unwrap_or_default();
                    check_chunk(&shards[s], key, &entry, raw, ChunkRef { offset: *offset, len: *len, crc32: *crc32 })?
                }
                Stored::Inline(_) => unreachable!("inline values are never misses"),
            };
            out[i] = match value {
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
    let mut pages = Vec::new();
    let mut chunks = Vec::new();
    // For each chunk entry, its value already at hand (cached) or its place in `chunks`.
    let mut chunk_at: Vec<Option<Result<Bytes, usize>>> = Vec::with_capacity(entries.len());
    for (_, entry) in &entries {
        let mut at = None;
        match &entry.stored {
            Stored::Page { page_id, .. } if shard.cache().get(*page_id).is_none() => pages.push(*page_id),
            Stored::Chunk { offset, len, crc32 } => {
                at = Some(match shard.cache().chunk(&ChunkRef { offset: *offset, len: *len, crc32: *crc32 }) {
                    Some(value) => Ok(value),
                    None => {
                        chunks.push((*offset, *len));
                        Err(chunks.len() - 1)
                    }
                });
            }
            _ => {}
        }
        chunk_at.push(at);
    }
    pages.sort_unstable();
    pages.dedup();
    let reply = if pages.is_empty() && chunks.is_empty() {
        ReadReply { pages: Vec::new(), chunks: Vec::new() }
    } else {
        read(shard, pages.clone(), chunks)?
    };
    let read_pages: std::collections::HashMap<u64, Option<Bytes>> = pages.into_iter().zip(reply.pages).collect();
    let read_chunks = reply.chunks;
    let mut out = Vec::with_capacity(entries.len());
    for ((key, entry), at) in entries.into_iter().zip(chunk_at) {
        let value = match &entry.stored {
            Stored::Inline(v) => Some(v.clone()),
            Stored::Page { page_id, offset, len } => {
                let image = match read_pages.get(page_id) {
                    Some(read) => read.clone(),
                    None => shard.cache().get(*page_id),
                };
                image.map(|image| slice(&image, *offset, *len))
            }
            Stored::Chunk { offset, len, crc32 } => match at.expect("every chunk entry has a source") {
                Ok(value) => Some(value),
                Err(i) => {
                    let raw = read_chunks.get(i).cloned().unwrap_or_default();
                    check_chunk(shard, &key, &entry, raw, ChunkRef { offset: *offset, len: *len, crc32: *crc32 })?
                }
            },
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
