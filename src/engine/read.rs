//! Reads by key, on the caller's thread.
//!
//! Every read takes one path (`storage/page/reader.rs`): the shard's memtable,
//! else its tree from the newest published root, each node from the page cache
//! or read by the caller itself (no hop to the shard); a value in a chunk is
//! read and checked the same way.

use bytes::Bytes;

use crate::error::Result;
use crate::shard::ShardHandle;
use crate::storage::index::{Stored, Versioned};
use crate::storage::page::reader::CachedEntry;

/// A key's version and value, read from wherever it is; `None` if the key is absent.
pub(crate) fn get_versioned(shard: &ShardHandle, key: &[u8]) -> Result<Option<(u64, Bytes)>> {
    shard.data()?.get(key)
}

/// A key's value, read from wherever it is; `None` if the key is absent.
pub(crate) fn get(shard: &ShardHandle, key: &[u8]) -> Result<Option<Bytes>> {
    Ok(get_versioned(shard, key)?.map(|(_, value)| value))
}

/// What the lock-free path made of a key: absent, answered, or needing a read.
pub(crate) enum Fast<R> {
    Absent,
    Done(R),
    /// Not in the memtable nor in a cached leaf: read it with [`get`].
    Slow,
}

/// Runs `f` on `key`'s value where it lies (in the memtable, or in a cached leaf's
/// image), with no copy, if it is there; `f` is not called when the answer is
/// [`Fast::Slow`] or [`Fast::Absent`].
pub(crate) fn with_fast<R>(shard: &ShardHandle, key: &[u8], f: &mut impl FnMut(&[u8]) -> R) -> Fast<R> {
    let view = shard.view();
    for memtable in view.memtables() {
        let in_memtable = memtable.with(key, |entry| match entry {
            None => None,
            Some(Versioned { stored: Stored::Inline(value), .. }) => Some(Fast::Done(f(value))),
            Some(Versioned { stored: Stored::Tombstone, .. }) => Some(Fast::Absent),
            Some(Versioned { stored: Stored::Chunk { .. }, .. }) => Some(Fast::Slow),
        });
        if let Some(answer) = in_memtable {
            return answer;
        }
    }
    // Missed in the memtables of this view: the tree of the same view holds the key.
    match shard.data().map(|d| d.tree_entry_if_cached(&view.root.root, key)) {
        Ok(CachedEntry::Present(Versioned { stored: Stored::Inline(value), .. })) => Fast::Done(f(&value)),
        Ok(CachedEntry::Absent) => Fast::Absent,
        _ => Fast::Slow,
    }
}

/// Values of many keys (each with its shard), in order.
pub(crate) fn get_many(shards: &[ShardHandle], keys: &[(usize, &[u8])]) -> Result<Vec<Option<Bytes>>> {
    keys.iter().map(|&(s, key)| get(&shards[s], key)).collect()
}

/// Values of a shard's `(key, entry)` pairs, in order; `None` for a key deleted since
/// its entry was taken.
pub(crate) fn resolve_many(
    shard: &ShardHandle,
    entries: Vec<(Bytes, Versioned)>,
) -> Result<Vec<(Bytes, Option<Bytes>)>> {
    let data = shard.data()?;
    let started = data.views.load().root;
    let mut out = Vec::with_capacity(entries.len());
    for (key, entry) in entries {
        let value = match data.value(&started, &entry)? {
            Some(v) => Some(v),
            // A chunk freed and reused since the entry was taken: look it up again (it
            // may also have been deleted since).
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

    /// Whether `key` is present now (from the memtable, else the tree's leaf holding it;
    /// a value in a chunk is not read).
    pub(crate) fn contains(&self, key: &[u8]) -> Result<bool> {
        Ok(self.shard_for(key).data()?.entry(key)?.is_some())
    }

    /// [`with_fast`] on the shard that owns `key`.
    pub(crate) fn with_fast<R>(&self, key: &[u8], f: &mut impl FnMut(&[u8]) -> R) -> Fast<R> {
        with_fast(self.shard_for(key), key, f)
    }

    /// Values of `keys`, in order.
    pub(crate) fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Bytes>>> {
        let routed: Vec<(usize, &[u8])> = keys.iter().map(|&key| (self.shard_of(key), key)).collect();
        let values = get_many(self.shards(), &routed)?;
        assert_eq!(values.len(), keys.len(), "a multi-key read answers every key, in order");
        Ok(values)
    }
}
