//! Reads of a shard's data from any thread: the memtable, then the frozen
//! memtable a running checkpoint merges, then the tree from the newest durable
//! root.
//!
//! The three come together in one [`View`], which the shard replaces whole
//! (`arc_swap`): when a checkpoint starts (the active memtable becomes the
//! frozen one and a new, empty one takes writes) and when it is durable (the
//! new root replaces the old and the frozen memtable goes). A reader loads one
//! view and reads it through, so it always sees every key exactly where that
//! view has it. Nodes and chunks come from the page cache or are read by the
//! caller (`disk.rs`). A node or chunk that is not what its reference says means
//! its extent was freed and reused after a newer root was published, unless the
//! root is still the one the reader started from, which makes it damage:
//! `Error::Corruption`.

use std::ops::Bound;
use std::sync::atomic::AtomicU64;

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;

use super::cache::PageCache;
use super::disk::DiskReader;
use crate::error::{Error, Result};
use crate::format::page::{ChunkRef, decode_chunk};
use crate::format::tree::{NodeRef, NodeView};
use crate::stats::ShardCounters;
use crate::storage::index::{Index, Stored, Versioned, range_chunk as memtable_range};
use crate::storage::tree::{self, Found, LoadError, NodeSource, Record, TreeRoot, leaf_found};

/// Lookups of one key before giving up (each retry means a checkpoint freed what was
/// being read and a later one reused it; more than a few in a row is a bug).
const ATTEMPTS_MAX: usize = 16;

/// A published root: the tree of the newest durable checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Published {
    /// Counts checkpoints; a reader compares it to tell a freed node from damage.
    pub generation: u64,
    pub root: TreeRoot,
}

/// What the cache alone says of a key (see [`ShardData::tree_entry_if_cached`]).
pub(crate) enum CachedEntry {
    Present(Versioned),
    Absent,
    /// A node on the key's path is not cached.
    NotCached,
}

/// What a reader reads, in order: the memtable taking writes, the memtable a running
/// checkpoint merges (if one runs), the tree of the newest durable checkpoint.
#[derive(Default)]
pub(crate) struct View {
    pub active: Arc<Index>,
    pub frozen: Option<Arc<Index>>,
    pub root: Published,
}

impl View {
    /// The memtables, newest first.
    pub fn memtables(&self) -> impl Iterator<Item = &Arc<Index>> {
        std::iter::once(&self.active).chain(self.frozen.iter())
    }

    /// `key`'s entry in the memtables (a tombstone included), newest first.
    fn memtable_entry(&self, key: &[u8]) -> Option<Versioned> {
        self.memtables().find_map(|m| m.get(key))
    }
}

/// The view readers start from; the shard replaces it whole.
pub(crate) type Views = ArcSwap<View>;

/// Where a shard's readers find its data.
pub(crate) struct ShardData<'a> {
    pub views: &'a Views,
    pub cache: &'a PageCache,
    pub disk: &'a DiskReader,
    /// Counts nodes read from the disk.
    pub nodes_read: &'a AtomicU64,
    /// Counts chunks read from the disk.
    pub chunks_read: &'a AtomicU64,
}

impl NodeSource for ShardData<'_> {
    fn load(&self, node: &NodeRef) -> std::result::Result<Bytes, LoadError> {
        if let Some(image) = self.cache.get(node.id) {
            return Ok(image);
        }
        match self.disk.read_node(node)? {
            Ok(image) => {
                ShardCounters::add(self.nodes_read, 1);
                self.cache.insert(node.id, image.clone());
                Ok(image)
            }
            Err(what) => Err(LoadError::Gone { offset: node.offset, what }),
        }
    }

    fn prefetch(&self, nodes: &[NodeRef]) {
        let missing: Vec<NodeRef> = nodes.iter().copied().filter(|n| self.cache.peek(n.id).is_none()).collect();
        let read = self.disk.read_nodes_ahead(&missing);
        ShardCounters::add(self.nodes_read, read.len() as u64);
        for (id, image) in read {
            self.cache.insert(id, image);
        }
    }
}

fn versioned(version: u64, found: Found) -> Versioned {
    let stored = match found {
        Found::Inline(v) => Stored::Inline(v),
        Found::Chunk(c) => Stored::Chunk { offset: c.offset, len: c.len, crc32: c.crc32 },
    };
    Versioned { stored, version }
}

impl ShardData<'_> {
    /// The outcome of a failed tree read that started at `started`: `Ok(())` to try
    /// again (a newer root was published meanwhile), else the error.
    fn retry_or(&self, started: &Published, e: LoadError) -> Result<()> {
        match e {
            LoadError::Failed(e) => Err(e),
            LoadError::Gone { offset, what } => {
                if self.views.load().root.generation == started.generation {
                    Err(Error::Corruption { file: self.disk.path().clone(), offset, what })
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Runs `f` on the leaf of the tree at `root` that holds or would hold `key`, and
    /// where `key` is or would go in it, if every node on the path is cached; `None` if
    /// one is not (or is not at the level its parent says: the loading path reports
    /// that). Nodes are read in place: no reference count changes on the way down.
    pub fn with_cached_leaf<R>(
        &self,
        root: &TreeRoot,
        key: &[u8],
        f: impl FnOnce(&Bytes, &NodeView<'_>, std::result::Result<usize, usize>) -> R,
    ) -> Option<R> {
        let mut node = root.node?;
        let mut level = root.level;
        let mut f = Some(f);
        let mut hits = 1;
        loop {
            let step = self.cache.with(node.id, |image| {
                let view = NodeView::new(image);
                if view.level() != level {
                    return None;
                }
                Some(if view.is_leaf() {
                    Ok(f.take().expect("called at the leaf only")(image, &view, view.search(key)))
                } else {
                    Err(view.child(view.child_for(key)))
                })
            })??;
            match step {
                Ok(r) => {
                    self.cache.count_hits(hits);
                    return Some(r);
                }
                Err(child) => {
                    node = child;
                    level -= 1;
                    hits += 1;
                }
            }
        }
    }

    /// `key`'s entry: from the memtable, else from the tree (a value in a leaf comes as
    /// `Inline`, sharing the cached leaf's bytes). `None` if the key is absent.
    pub fn entry(&self, key: &[u8]) -> Result<Option<Versioned>> {
        Ok(self.entry_read(key)?.0)
    }

    /// [`ShardData::entry`], and the root of the view it was read in.
    fn entry_read(&self, key: &[u8]) -> Result<(Option<Versioned>, Published)> {
        for _ in 0..ATTEMPTS_MAX {
            let view = self.views.load();
            let started = view.root;
            if let Some(v) = view.memtable_entry(key) {
                return Ok(((v.stored != Stored::Tombstone).then_some(v), started));
            }
            if let CachedEntry::Present(v) = self.tree_entry_if_cached(&started.root, key) {
                return Ok((Some(v), started));
            }
            match tree::get(self, &started.root, key) {
                Ok(found) => return Ok((found.map(|(version, f)| versioned(version, f)), started)),
                Err(e) => self.retry_or(&started, e)?,
            }
        }
        Err(moved(key))
    }

    /// `key`'s entry in the tree at `root` if every node on its path is cached (the
    /// caller has looked in the memtables of the view `root` belongs to).
    pub fn tree_entry_if_cached(&self, root: &TreeRoot, key: &[u8]) -> CachedEntry {
        let found = self.with_cached_leaf(root, key, |image, view, at| {
            at.ok().map(|n| versioned(view.leaf_item(n).version, leaf_found(image, view, n)))
        });
        match found {
            Some(Some(entry)) => CachedEntry::Present(entry),
            Some(None) => CachedEntry::Absent,
            None => CachedEntry::NotCached,
        }
    }

    /// `key`'s version and value, `None` if absent.
    pub fn get(&self, key: &[u8]) -> Result<Option<(u64, Bytes)>> {
        for _ in 0..ATTEMPTS_MAX {
            let (entry, started) = self.entry_read(key)?;
            let Some(entry) = entry else { return Ok(None) };
            if let Some(value) = self.value(&started, &entry)? {
                return Ok(Some((entry.version, value)));
            }
        }
        Err(moved(key))
    }

    /// The value an entry names; `None` if it is a chunk freed and reused since the entry
    /// was read under the root `started` (look the key up again).
    pub fn value(&self, started: &Published, entry: &Versioned) -> Result<Option<Bytes>> {
        match &entry.stored {
            Stored::Inline(v) => Ok(Some(v.clone())),
            Stored::Tombstone => unreachable!("a tombstone is never handed out as an entry"),
            &Stored::Chunk { offset, len, crc32 } => {
                let chunk = ChunkRef { offset, len, crc32 };
                if let Some(value) = self.cache.chunk(&chunk) {
                    return Ok(Some(value));
                }
                let raw = self.disk.read_chunk(offset, len)?;
                ShardCounters::add(self.chunks_read, 1);
                match decode_chunk(&raw, &chunk) {
                    Ok(value) => {
                        let start = value.as_ptr() as usize - raw.as_ptr() as usize;
                        let value = raw.slice(start..start + value.len());
                        self.cache.insert_chunk(&chunk, raw);
                        Ok(Some(value))
                    }
                    Err(what) => {
                        self.retry_or(started, LoadError::Gone { offset, what })?;
                        Ok(None)
                    }
                }
            }
        }
    }

    /// Appends to `out` up to `limit` live entries with keys in `(start, end)`, in key
    /// order, from the memtable and the tree merged (the memtable's entry wins, and a
    /// tombstone hides the key). Fewer than `limit` only when the range holds no more.
    pub fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        out: &mut Vec<(Bytes, Versioned)>,
    ) -> Result<()> {
        let mut from: Bound<Bytes> = bound_to_owned(start);
        let mut attempts = 0;
        while out.len() < limit {
            let want = limit - out.len();
            let from_ref = as_ref(&from);
            if crate::key::bounds_are_empty(from_ref, end) {
                return Ok(());
            }
            let view = self.views.load();
            // The memtables' entries, newest first: each stops at `want` entries, and
            // past the last key of one that did, the others cannot be merged yet.
            let mut mem: Vec<(Bytes, Versioned)> = Vec::new();
            let mut mem_cut: Option<Bytes> = None;
            for memtable in view.memtables() {
                let mut more = Vec::new();
                memtable_range(memtable, from_ref, end, want, &mut more);
                if more.len() == want {
                    let last = more.last().expect("full").0.clone();
                    mem_cut = Some(mem_cut.map_or(last.clone(), |c| c.min(last)));
                }
                mem = merge_newest_first(mem, more);
            }
            let started = view.root;
            let mut disk: Vec<Record> = Vec::new();
            let disk_more = match tree::range(self, &started.root, from_ref, end, want, &mut disk) {
                Ok(more) => more,
                Err(e) => {
                    self.retry_or(&started, e)?;
                    attempts += 1;
                    if attempts >= ATTEMPTS_MAX {
                        return Err(Error::InvalidArgument(format!(
                            "a scan was restarted {ATTEMPTS_MAX} times by checkpoints (a ringdb bug)"
                        )));
                    }
                    continue;
                }
            };
            // Past the last key of a source that stopped at the limit, the other source's
            // keys cannot be merged yet.
            let disk_cut = disk_more.then(|| disk.last().expect("full").key.clone());
            let cut: Option<Bytes> = match (mem_cut, disk_cut) {
                (Some(m), Some(d)) => Some(m.min(d)),
                (m, d) => m.or(d),
            };
            merge_into(mem, disk, cut.as_deref(), limit, out);
            match cut {
                None => return Ok(()),
                Some(cut) => from = Bound::Excluded(cut),
            }
        }
        Ok(())
    }
}

/// Merges two runs of memtable entries in key order; on a key in both, `newer`'s entry.
fn merge_newest_first(newer: Vec<(Bytes, Versioned)>, older: Vec<(Bytes, Versioned)>) -> Vec<(Bytes, Versioned)> {
    if older.is_empty() {
        return newer;
    }
    if newer.is_empty() {
        return older;
    }
    let mut out = Vec::with_capacity(newer.len() + older.len());
    let mut older = older.into_iter().peekable();
    for (key, entry) in newer {
        while let Some(o) = older.next_if(|(k, _)| *k < key) {
            out.push(o);
        }
        older.next_if(|(k, _)| *k == key);
        out.push((key, entry));
    }
    out.extend(older);
    out
}

/// Merges memtable entries and tree records (each in key order) into `out`, up to
/// `limit` entries and up to `cut` included.
fn merge_into(
    mem: Vec<(Bytes, Versioned)>,
    disk: Vec<Record>,
    cut: Option<&[u8]>,
    limit: usize,
    out: &mut Vec<(Bytes, Versioned)>,
) {
    let mut mem = mem.into_iter().peekable();
    let mut disk = disk.into_iter().peekable();
    while out.len() < limit {
        let take_mem = match (mem.peek(), disk.peek()) {
            (None, None) => return,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((mk, _)), Some(r)) => mk[..] <= r.key[..],
        };
        let (key, entry) = if take_mem {
            let (key, entry) = mem.next().expect("peeked");
            // The memtable's entry supersedes the tree's record of the same key.
            disk.next_if(|r| r.key == key);
            (key, entry)
        } else {
            let r = disk.next().expect("peeked");
            (r.key, versioned(r.version, r.value))
        };
        if cut.is_some_and(|c| &key[..] > c) {
            return;
        }
        if entry.stored != Stored::Tombstone {
            out.push((key, entry));
        }
    }
}

fn bound_to_owned(b: Bound<&[u8]>) -> Bound<Bytes> {
    match b {
        Bound::Included(k) => Bound::Included(Bytes::copy_from_slice(k)),
        Bound::Excluded(k) => Bound::Excluded(Bytes::copy_from_slice(k)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn as_ref(b: &Bound<Bytes>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(&k[..]),
        Bound::Excluded(k) => Bound::Excluded(&k[..]),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn moved(key: &[u8]) -> Error {
    Error::InvalidArgument(format!(
        "key {key:?} was moved by checkpoints {ATTEMPTS_MAX} times while being read (a ringdb bug)"
    ))
}
