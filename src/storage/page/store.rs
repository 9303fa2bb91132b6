//! The paged store of one shard: pages of records in `pages.dat`, checkpoints.
//!
//! Writes never touch pages: a put makes its index entry `Inline` and notes
//! the key as dirty (and the page it left, if any, as holding one more dead
//! record). A checkpoint, on the shard thread, then:
//!
//! 1. loads every page holding dead records, and the hot page (the newest
//!    page not yet full) if there are new records to place;
//! 2. keeps each loaded page's live records; puts each dirty record back in
//!    the page it came from if it fits there (a full page's capacity is fixed;
//!    seed 000's rule), else in the first loaded page with room (the
//!    free-space heap), else in a new page; a value over the chunk threshold
//!    gets a chunk of its own;
//! 3. writes every changed page under a **new page id** to a **new extent**
//!    (copy-on-write: an extent the last durable checkpoint references is never
//!    overwritten, and a page image never changes once written, so a reader
//!    holding a page id can never see another layout);
//! 4. moves the index entries to their new places, writes the table blob (page
//!    table and key directory) and then the checkpoint slot, each synced;
//! 5. frees the extents the previous checkpoint used and this one does not.
//!
//! A crash anywhere before the slot is durable recovers the previous slot,
//! whose extents are intact; extents the unfinished checkpoint allocated are
//! free again, since the recovered table does not reference them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::alloc::{Allocator, Extent};
use super::cache::PageCache;
use super::disk::{PageLoc, PageLocations};
use crate::error::{Error, Result};
use crate::format::checkpoint::{
    KeyEntry, KeyLocation, PageEntry, SLOT_BYTES, Slot, decode_table, encode_table, newest_slot,
};
use crate::format::page::{
    PAGE_HEADER_BYTES, PageRecord, RECORD_HEADER_BYTES, Stored as PageStored, chunk_bytes, decode_page, encode_chunk,
    encode_page, page_capacity, record_bytes,
};
use crate::io::fs::{FileRef, Fs, NodeKind, OpenFlags};
use crate::io::{AlignedBuf, Completion, Io, SyncMode};
use crate::storage::index::{IndexWriter, Stored};

/// Tokens of checkpoint I/O carry this bit.
pub(crate) const CHECKPOINT_TOKEN_BIT: u64 = 1 << 61;

/// Settings of a page store.
#[derive(Debug, Clone)]
pub(crate) struct PageConfig {
    pub records_max: usize,
    pub free_space_factor: usize,
    pub chunk_threshold: usize,
    pub direct: bool,
}

/// A live page.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageMeta {
    pub extent: Extent,
    pub capacity: u32,
    pub used: u32,
    pub records: u16,
    pub dead: u16,
}

/// Counters of a page store.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PageCounters {
    pub pages_written: u64,
    pub pages_read: u64,
    pub chunks_written: u64,
    pub bytes_padded: u64,
    pub checkpoints: u64,
    pub checkpoint_us_last: u64,
    pub checkpoint_us_max: u64,
    pub checkpoint_bytes_last: u64,
    /// Bytes written by every checkpoint since open.
    pub checkpoint_bytes_total: u64,
    /// Pages loaded by checkpoints (from the cache or the disk).
    pub checkpoint_pages_read: u64,
}

/// What `open` found.
pub(crate) struct Opened {
    pub store: PageStore,
    /// Entries of the key directory, for the index.
    pub entries: Vec<(Bytes, Stored, u64)>,
}

/// A write a checkpoint queues: where, what, and the page it holds (none for a chunk).
type PendingWrite = (Extent, AlignedBuf, Option<(u64, PageMeta)>);

/// Largest write a checkpoint makes of adjacent extents, in bytes.
const WRITE_COALESCE_BYTES: u64 = 1 << 20;

/// Adjacent extents written as one.
struct WriteGroup {
    offset: u64,
    len: u64,
    /// Each part: its extent, its bytes, and the page it holds (none for a chunk).
    parts: Vec<(Extent, AlignedBuf, Option<u64>)>,
}

/// A record being placed in a page.
struct Placing {
    key: Bytes,
    version: u64,
    value: Bytes,
}

/// A page being assembled by a checkpoint.
struct Building {
    /// Fixed capacity (the page was full), if any.
    frozen: Option<usize>,
    records: Vec<Placing>,
    used: usize,
}

/// Largest page, in bytes (before its free space): keeps page sizes far inside the
/// format's 32-bit fields whatever `page_records_max` and `page_chunk_bytes` allow.
const PAGE_BYTES_MAX: usize = 16 << 20;

impl Building {
    fn fits(&self, rec: usize, records_max: usize) -> bool {
        self.records.len() < records_max
            && self.used + rec <= PAGE_BYTES_MAX
            && self.frozen.is_none_or(|cap| self.used + rec <= cap)
    }
}

/// See the module docs.
pub(crate) struct PageStore {
    shard: usize,
    shard_dir: PathBuf,
    pub data_path: PathBuf,
    slot_path: PathBuf,
    fs: Arc<dyn Fs>,
    pub data: FileRef,
    slot_file: Option<FileRef>,
    pub config: PageConfig,
    pub unit: usize,
    /// Memory alignment of buffers for O_DIRECT on the data file.
    pub mem_align: usize,
    alloc: Allocator,
    pub pages: HashMap<u64, PageMeta>,
    /// Where each page of `pages` lies, for callers' reads (see `disk.rs`).
    pub locations: PageLocations,
    next_page_id: u64,
    generation: u64,
    pub checkpoint_lsn: u64,
    table_extent: Option<Extent>,
    dead_chunks: Vec<Extent>,
    /// The chunks the index references: offset to (value length, value crc32). Only a
    /// read of one of these, that checks against them, may be cached; a superseded chunk
    /// may be freed and its extent reused.
    pub live_chunks: HashMap<u64, (u32, u32)>,
    dirty: HashSet<Bytes>,
    moved_from: HashMap<Bytes, u64>,
    hot: Option<u64>,
    pub counters: PageCounters,
    /// Bytes of chunk values referenced by the index (for live-byte stats).
    pub chunk_bytes_live: u64,
}

fn loc(extent: Extent, capacity: u32) -> PageLoc {
    PageLoc { offset: extent.offset, len: u32::try_from(extent.len).expect("page extents fit in 32 bits"), capacity }
}

fn corruption(file: &Path, offset: u64, what: impl Into<String>) -> Error {
    Error::Corruption { file: file.to_path_buf(), offset, what: what.into() }
}

/// A zeroed buffer of at least `len` bytes, aligned for O_DIRECT on the data file.
fn aligned(len: usize, mem_align: usize) -> AlignedBuf {
    AlignedBuf::zeroed(len.next_multiple_of(mem_align).max(mem_align), mem_align)
}

impl PageStore {
    /// Opens (creating if needed) the page store in `shard_dir` and reads its newest
    /// checkpoint's table.
    pub fn open(fs: Arc<dyn Fs>, shard_dir: &Path, shard: usize, config: PageConfig) -> Result<Opened> {
        let data_path = shard_dir.join("pages.dat");
        let slot_path = shard_dir.join("CHECKPOINT");
        let stat = |path: &Path| fs.kind(path).map_err(|e| Error::io("stat", path.to_path_buf(), e));
        let existed = stat(&data_path)?.is_some();
        let data = crate::io::fs::open_data_file(fs.as_ref(), &data_path, true, config.direct)?;
        if !existed {
            crate::io::fs::sync_dir(fs.as_ref(), shard_dir)?;
        }
        let (mem_align, align) = if config.direct { data.direct_io_aligns() } else { (512, 512) };
        let mut unit = align.max(1024);
        let slot = match fs.read_file(&slot_path) {
            Ok(bytes) => {
                let (slot, why) = newest_slot(&bytes);
                if slot.is_none() && bytes.iter().any(|&b| b != 0) {
                    return Err(corruption(&slot_path, 0, format!("no valid checkpoint slot ({})", why.join("; "))));
                }
                slot
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("read", slot_path.clone(), e)),
        };
        let slot_file = if stat(&slot_path)? == Some(NodeKind::File) {
            Some(fs.open(&slot_path, OpenFlags::EXISTING).map_err(|e| Error::io("open", slot_path.clone(), e))?)
        } else {
            None
        };
        let mut store = PageStore {
            shard,
            shard_dir: shard_dir.to_path_buf(),
            data_path: data_path.clone(),
            slot_path: slot_path.clone(),
            fs: Arc::clone(&fs),
            data,
            slot_file,
            config,
            unit,
            mem_align,
            alloc: Allocator::new(unit as u64, 0, []),
            pages: HashMap::new(),
            locations: PageLocations::default(),
            next_page_id: 1,
            generation: 0,
            checkpoint_lsn: 0,
            table_extent: None,
            dead_chunks: Vec::new(),
            live_chunks: HashMap::new(),
            dirty: HashSet::new(),
            moved_from: HashMap::new(),
            hot: None,
            counters: PageCounters::default(),
            chunk_bytes_live: 0,
        };
        let Some(slot) = slot else { return Ok(Opened { store, entries: Vec::new() }) };
        if slot.shard as usize != shard {
            return Err(corruption(
                &slot_path,
                12,
                format!("checkpoint of shard {} in shard {shard}'s folder", slot.shard),
            ));
        }
        let slot_unit = slot.page_unit as usize;
        if !slot_unit.is_power_of_two() || slot_unit < align {
            return Err(Error::Incompatible(format!(
                "{} was written with a page unit of {slot_unit} bytes, this device needs a multiple of {align}",
                slot_path.display()
            )));
        }
        unit = slot_unit;
        store.unit = unit;
        // Read the table blob.
        let table_len = usize::try_from(slot.table_len).map_err(|_| corruption(&slot_path, 48, "table too large"))?;
        let read_len = table_len.next_multiple_of(unit);
        if slot.table_offset % unit as u64 != 0 || slot.table_offset + read_len as u64 > slot.file_end {
            return Err(corruption(&slot_path, 40, "table outside the data file"));
        }
        let mut buf = aligned(read_len, store.mem_align);
        store
            .data
            .read_exact_at(&mut buf.as_mut_slice()[..read_len], slot.table_offset)
            .map_err(|e| Error::io("read checkpoint table", data_path.clone(), e))?;
        let blob = &buf.as_slice()[..table_len];
        if crc32fast::hash(blob) != slot.table_crc {
            return Err(corruption(&data_path, slot.table_offset, "checkpoint table checksum mismatch"));
        }
        let table = decode_table(blob).map_err(|what| corruption(&data_path, slot.table_offset, what))?;
        let mut used = Vec::with_capacity(table.pages.len() + 1);
        let table_extent = Extent { offset: slot.table_offset, len: read_len as u64 };
        used.push(table_extent);
        for p in &table.pages {
            let extent = Extent { offset: p.offset, len: u64::from(p.extent_len) };
            let in_file = p.offset.checked_add(extent.len).is_some_and(|end| end <= slot.file_end);
            let sizes =
                p.used <= p.capacity && u64::from(p.capacity) <= extent.len && p.used as usize >= PAGE_HEADER_BYTES;
            if extent.len == 0
                || extent.offset % unit as u64 != 0
                || extent.len % unit as u64 != 0
                || !in_file
                || !sizes
            {
                return Err(corruption(
                    &data_path,
                    slot.table_offset,
                    format!("page {} has an impossible extent", p.page_id),
                ));
            }
            used.push(extent);
            if store.pages.contains_key(&p.page_id) {
                return Err(corruption(&data_path, slot.table_offset, format!("page {} listed twice", p.page_id)));
            }
            store.pages.insert(
                p.page_id,
                PageMeta { extent, capacity: p.capacity, used: p.used, records: p.records, dead: 0 },
            );
            store.locations.pin().insert(p.page_id, loc(extent, p.capacity));
        }
        let mut entries = Vec::with_capacity(table.keys.len());
        for k in &table.keys {
            let stored = match k.location {
                KeyLocation::Page { page_id, value_offset, value_len } => {
                    let page = store.pages.get(&page_id).ok_or_else(|| {
                        corruption(&data_path, slot.table_offset, format!("a key points at unknown page {page_id}"))
                    })?;
                    if u64::from(value_offset) + u64::from(value_len) > u64::from(page.used) {
                        return Err(corruption(&data_path, slot.table_offset, "a key points past its page"));
                    }
                    Stored::Page { page_id, offset: value_offset, len: value_len }
                }
                KeyLocation::Chunk { offset, value_len, crc32 } => {
                    let extent = Extent { offset, len: chunk_bytes(value_len as usize, unit) as u64 };
                    if offset % unit as u64 != 0 || offset.checked_add(extent.len).is_none_or(|end| end > slot.file_end)
                    {
                        return Err(corruption(&data_path, slot.table_offset, "a key points at an impossible chunk"));
                    }
                    used.push(extent);
                    store.chunk_bytes_live += u64::from(value_len);
                    store.live_chunks.insert(offset, (value_len, crc32));
                    Stored::Chunk { offset, len: value_len, crc32 }
                }
            };
            if entries.last().is_some_and(|(last, _, _): &(Bytes, Stored, u64)| &last[..] >= k.key) {
                return Err(corruption(&data_path, slot.table_offset, "key directory out of order or repeated"));
            }
            entries.push((Bytes::copy_from_slice(k.key), stored, k.version));
        }
        used.sort();
        if used.windows(2).any(|w| w[0].end() > w[1].offset) {
            return Err(corruption(&data_path, slot.table_offset, "checkpoint extents overlap"));
        }
        store.alloc = Allocator::new(unit as u64, slot.file_end, used);
        store.next_page_id = slot.next_page_id;
        store.generation = slot.generation;
        store.checkpoint_lsn = slot.checkpoint_lsn;
        store.table_extent = Some(table_extent);
        store.hot = store
            .pages
            .iter()
            .filter(|(_, m)| (m.records as usize) < store.config.records_max)
            .map(|(&id, _)| id)
            .max();
        Ok(Opened { store, entries })
    }

    /// Notes a write to `key` that replaced `old` (or a delete of it).
    pub fn note_write(&mut self, key: &Bytes, old: Option<&Stored>) {
        match old {
            Some(Stored::Page { page_id, .. }) => {
                if let Some(m) = self.pages.get_mut(page_id) {
                    m.dead = m.dead.saturating_add(1);
                }
                self.moved_from.entry(key.clone()).or_insert(*page_id);
            }
            Some(Stored::Chunk { offset, len, .. }) => {
                self.dead_chunks.push(Extent { offset: *offset, len: chunk_bytes(*len as usize, self.unit) as u64 });
                self.live_chunks.remove(offset);
                self.chunk_bytes_live = self.chunk_bytes_live.saturating_sub(u64::from(*len));
            }
            _ => {}
        }
        self.dirty.insert(key.clone());
    }

    /// Keys written since the last checkpoint.
    pub fn dirty_keys(&self) -> usize {
        self.dirty.len()
    }

    /// Pages with room for more records (the free-space heap).
    pub fn heap_pages(&self) -> usize {
        self.pages.values().filter(|m| (m.records as usize) < self.config.records_max || m.dead > 0).count()
    }

    /// Bytes of `pages.dat` in use.
    pub fn file_bytes(&self) -> u64 {
        self.alloc.file_end()
    }

    /// Bytes of live pages (their capacity, free space included) and chunks on disk.
    pub fn footprint_bytes(&self) -> u64 {
        self.pages.values().map(|m| m.extent.len).sum::<u64>() + self.chunk_bytes_live
    }

    /// Bytes of live data in pages and chunks (page bytes used, chunk values).
    pub fn live_bytes(&self) -> u64 {
        self.pages.values().map(|m| u64::from(m.used)).sum::<u64>() + self.chunk_bytes_live
    }

    /// After a failed checkpoint: its retirements are void (the previous checkpoint still
    /// references those extents). The shard refuses writes after a failure, so nothing
    /// more is allocated; this keeps the bookkeeping true for what remains.
    pub fn abandon_checkpoint(&mut self) {
        self.alloc.checkpoint_abandoned();
    }

    /// Writes a checkpoint covering every log record up to `lsn` (all applied to the
    /// index); see the module docs. Completions of other I/O that arrive meanwhile are
    /// appended to `stash` for the shard's loop.
    pub fn checkpoint(
        &mut self,
        io: &mut dyn Io,
        index: &mut IndexWriter<'_>,
        cache: &PageCache,
        lsn: u64,
        stash: &mut Vec<Completion>,
    ) -> Result<()> {
        let started = Instant::now();
        let unit = self.unit;
        let records_max = self.config.records_max;
        // 1. What to place.
        let mut todo: Vec<Placing> = Vec::with_capacity(self.dirty.len());
        for key in self.dirty.drain() {
            if let Some(v) = index.index.get(&key) {
                if let Stored::Inline(value) = v.stored {
                    todo.push(Placing { key, version: v.version, value });
                }
            }
        }
        todo.sort_by(|a, b| a.key.cmp(&b.key));
        let mut rewrite: Vec<u64> = self.pages.iter().filter(|(_, m)| m.dead > 0).map(|(&id, _)| id).collect();
        if let Some(hot) = self.hot.filter(|h| !todo.is_empty() && self.pages.get(h).is_some_and(|m| m.dead == 0)) {
            rewrite.push(hot);
        }
        rewrite.sort_unstable();
        // 2. Load them.
        let images = self.load_pages(io, cache, &rewrite, stash)?;
        self.counters.checkpoint_pages_read += images.len() as u64;
        crate::failpoint::hit("checkpoint-pages-loaded");
        let mut buildings: Vec<Building> = Vec::new();
        let mut by_old: HashMap<u64, usize> = HashMap::new();
        for &page_id in &rewrite {
            let meta = self.pages[&page_id];
            let image = &images[&page_id];
            let page = decode_page(image).map_err(|what| corruption(&self.data_path, meta.extent.offset, what))?;
            let mut b = Building {
                frozen: (meta.records as usize >= records_max).then_some(meta.capacity as usize),
                records: Vec::with_capacity(page.records.len()),
                used: PAGE_HEADER_BYTES,
            };
            for r in &page.records {
                let len = r.bytes();
                let live = matches!(index.index.get(r.key), Some(v) if v.version == r.txid
                    && matches!(v.stored, Stored::Page { page_id: p, .. } if p == page_id));
                if live {
                    let PageStored::Inline(value) = r.value else {
                        return Err(corruption(
                            &self.data_path,
                            meta.extent.offset,
                            "a page record refers to a chunk, which this version never writes",
                        ));
                    };
                    {
                        // Where the value lies in the image (pages written before records
                        // were aligned have no padding, so the offset is taken, not computed).
                        let value_start = value.as_ptr() as usize - image.as_ptr() as usize;
                        b.records.push(Placing {
                            key: Bytes::copy_from_slice(r.key),
                            version: r.txid,
                            value: image.slice(value_start..value_start + value.len()),
                        });
                        b.used += len;
                    }
                }
            }
            // A page written before records were padded to 8 bytes may no longer hold its
            // own live records once they are padded: give it the capacity they need (it
            // goes to a new extent anyway).
            if let Some(capacity) = b.frozen.filter(|&c| b.used > c) {
                b.frozen = Some(page_capacity(b.used, unit, self.config.free_space_factor).max(capacity));
            }
            by_old.insert(page_id, buildings.len());
            buildings.push(b);
        }
        // 3. Place the dirty records.
        let mut placed: Vec<(Bytes, u64, Stored)> = Vec::new();
        let mut writes: Vec<PendingWrite> = Vec::new();
        let mut fill_from = 0;
        for p in todo {
            if p.value.len() > self.config.chunk_threshold {
                let len = chunk_bytes(p.value.len(), unit);
                let extent = self.alloc.allocate(len as u64);
                let mut buf = aligned(len, self.mem_align);
                let crc32 = encode_chunk(&p.value, &mut buf.as_mut_slice()[..len]);
                let value_len = u32::try_from(p.value.len()).expect("values are at most 16 MiB");
                self.chunk_bytes_live += u64::from(value_len);
                self.live_chunks.insert(extent.offset, (value_len, crc32));
                placed.push((p.key, p.version, Stored::Chunk { offset: extent.offset, len: value_len, crc32 }));
                writes.push((extent, buf, None));
                self.counters.chunks_written += 1;
                continue;
            }
            let rec = record_bytes(p.key.len(), p.value.len());
            let home = self.moved_from.get(&p.key).and_then(|old| by_old.get(old)).copied();
            let target = match home.filter(|&b| buildings[b].fits(rec, records_max)) {
                Some(b) => b,
                None => {
                    while fill_from < buildings.len() && !buildings[fill_from].fits(rec, records_max) {
                        fill_from += 1;
                    }
                    let found = (fill_from..buildings.len()).find(|&b| buildings[b].fits(rec, records_max));
                    found.unwrap_or_else(|| {
                        buildings.push(Building { frozen: None, records: Vec::new(), used: PAGE_HEADER_BYTES });
                        buildings.len() - 1
                    })
                }
            };
            let b = &mut buildings[target];
            b.used += rec;
            b.records.push(p);
            if b.records.len() == records_max && b.frozen.is_none() {
                b.frozen = Some(page_capacity(b.used, unit, self.config.free_space_factor));
            }
        }
        self.moved_from.clear();
        // 4. Encode every changed page under a new id, to a new extent.
        let mut new_hot = None;
        let mut new_pages: Vec<(u64, PageMeta)> = Vec::new();
        for b in buildings {
            if b.records.is_empty() {
                continue;
            }
            let capacity = b.frozen.unwrap_or_else(|| page_capacity(b.used, unit, self.config.free_space_factor));
            debug_assert!(b.used <= capacity);
            let page_id = self.next_page_id;
            self.next_page_id += 1;
            let extent = self.alloc.allocate(capacity as u64);
            let mut buf = aligned(capacity, self.mem_align);
            let records: Vec<PageRecord<'_>> = b
                .records
                .iter()
                .map(|r| PageRecord { txid: r.version, key: &r.key, value: PageStored::Inline(&r.value) })
                .collect();
            let used = encode_page(page_id, &records, &mut buf.as_mut_slice()[..capacity])
                .map_err(|what| Error::InvalidArgument(format!("page assembly failed: {what}")))?;
            drop(records);
            let mut at = PAGE_HEADER_BYTES;
            for r in &b.records {
                let value_start = at + RECORD_HEADER_BYTES + r.key.len();
                placed.push((
                    r.key.clone(),
                    r.version,
                    Stored::Page { page_id, offset: value_start as u32, len: r.value.len() as u32 },
                ));
                at += record_bytes(r.key.len(), r.value.len());
            }
            if b.frozen.is_none() {
                new_hot = Some(page_id);
            }
            let meta = PageMeta {
                extent,
                capacity: capacity as u32,
                used: used as u32,
                records: b.records.len() as u16,
                dead: 0,
            };
            self.counters.pages_written += 1;
            self.counters.bytes_padded += (capacity - used) as u64;
            writes.push((extent, buf, Some((page_id, meta))));
            new_pages.push((page_id, meta));
        }
        // 5. Write them all, then sync the data file. Extents adjacent in the file (fresh
        // allocations mostly are) go out as one write of up to WRITE_COALESCE_BYTES, and
        // every write is in flight at once.
        let mut bytes_written: u64 = writes.iter().map(|(e, _, _)| e.len).sum();
        let capacities: HashMap<u64, usize> = new_pages.iter().map(|(id, m)| (*id, m.capacity as usize)).collect();
        writes.sort_by_key(|(e, _, _)| e.offset);
        let mut groups: Vec<WriteGroup> = Vec::new();
        for (extent, buf, page) in writes {
            let page = page.map(|(id, _)| id);
            match groups.last_mut() {
                Some(g) if g.offset + g.len == extent.offset && g.len + extent.len <= WRITE_COALESCE_BYTES => {
                    g.len += extent.len;
                    g.parts.push((extent, buf, page));
                }
                _ => {
                    groups.push(WriteGroup { offset: extent.offset, len: extent.len, parts: vec![(extent, buf, page)] })
                }
            }
        }
        let mut members: Vec<Vec<(Option<u64>, usize)>> = Vec::with_capacity(groups.len());
        let fd = self.data.fd();
        let count = groups.len();
        for (i, g) in groups.into_iter().enumerate() {
            members.push(g.parts.iter().map(|(e, _, page)| (*page, (e.offset - g.offset) as usize)).collect());
            let buf = if g.parts.len() == 1 {
                g.parts.into_iter().next().expect("one part").1
            } else {
                let mut big = aligned(g.len as usize, self.mem_align);
                for (e, part, _) in &g.parts {
                    let at = (e.offset - g.offset) as usize;
                    big.as_mut_slice()[at..at + e.len as usize].copy_from_slice(&part.as_slice()[..e.len as usize]);
                }
                big
            };
            io.write(fd, g.offset, buf, g.len as usize, SyncMode::None, CHECKPOINT_TOKEN_BIT | i as u64);
        }
        let mut images_out: Vec<(u64, Bytes)> = Vec::new();
        wait_all(io, count, stash, |c| {
            let i = (c.token & !CHECKPOINT_TOKEN_BIT) as usize;
            c.result.map_err(|e| Error::io("write page", self.data_path.clone(), e))?;
            let written = Bytes::from_owner(c.buf.expect("a write returns its buffer"));
            for &(page, at) in &members[i] {
                if let Some(page_id) = page {
                    images_out.push((page_id, written.slice(at..at + capacities[&page_id])));
                }
            }
            Ok(())
        })?;
        crate::failpoint::hit("checkpoint-pages-written");
        crate::failpoint::error("checkpoint-error-pages-written")?;
        self.data.sync_data().map_err(|e| Error::io("fdatasync", self.data_path.clone(), e))?;
        crate::failpoint::hit("checkpoint-pages-synced");
        // 6. The new pages are durable: publish them (callers read pages by their
        // published location), move the index entries to them, and only now let the old
        // pages go (if anything before failed, the old pages still serve reads).
        for (page_id, meta) in new_pages {
            self.locations.pin().insert(page_id, loc(meta.extent, meta.capacity));
            self.pages.insert(page_id, meta);
        }
        for (page_id, image) in images_out {
            cache.insert(page_id, image);
        }
        for (key, version, stored) in placed {
            index.relocate(&key, version, stored);
        }
        for &page_id in &rewrite {
            let meta = self.pages.remove(&page_id).expect("a rewritten page is live");
            self.locations.pin().remove(&page_id);
            self.alloc.retire(meta.extent);
            cache.remove(page_id);
        }
        self.hot = new_hot.or(self.hot.filter(|h| self.pages.contains_key(h)));
        // 7. The table blob: every live page, and the key directory.
        let mut page_entries: Vec<PageEntry> = self
            .pages
            .iter()
            .map(|(&page_id, m)| PageEntry {
                page_id,
                offset: m.extent.offset,
                extent_len: m.extent.len as u32,
                capacity: m.capacity,
                used: m.used,
                records: m.records,
            })
            .collect();
        page_entries.sort_by_key(|p| p.page_id);
        let order = index.index.order();
        let mut keys = Vec::with_capacity(order.len());
        for key in order.iter() {
            let v = index.index.get(key).expect("every ordered key is in the map");
            let location = match v.stored {
                Stored::Page { page_id, offset, len } => {
                    KeyLocation::Page { page_id, value_offset: offset, value_len: len }
                }
                Stored::Chunk { offset, len, crc32 } => KeyLocation::Chunk { offset, value_len: len, crc32 },
                Stored::Inline(_) => {
                    return Err(Error::InvalidArgument(format!(
                        "checkpoint of shard {} found a key written since its start unplaced",
                        self.shard
                    )));
                }
            };
            keys.push((key.clone(), v.version, location));
        }
        let mut blob = Vec::with_capacity(24 + page_entries.len() * 32 + keys.len() * 48);
        encode_table(
            &page_entries,
            keys.iter().map(|(key, version, location)| KeyEntry { key, version: *version, location: *location }),
            &mut blob,
        );
        let table_crc = crc32fast::hash(&blob);
        let table_extent = self.alloc.allocate(blob.len() as u64);
        let mut buf = aligned(table_extent.len as usize, self.mem_align);
        buf.as_mut_slice()[..blob.len()].copy_from_slice(&blob);
        bytes_written += table_extent.len;
        io.write(fd, table_extent.offset, buf, table_extent.len as usize, SyncMode::None, CHECKPOINT_TOKEN_BIT);
        wait_all(io, 1, stash, |c| {
            c.result.map(|_| ()).map_err(|e| Error::io("write checkpoint table", self.data_path.clone(), e))
        })?;
        self.data.sync_data().map_err(|e| Error::io("fdatasync", self.data_path.clone(), e))?;
        crate::failpoint::hit("checkpoint-table-synced");
        if let Some(old) = self.table_extent.replace(table_extent) {
            self.alloc.retire(old);
        }
        for chunk in self.dead_chunks.drain(..) {
            self.alloc.retire(chunk);
            // Freed below; a later chunk or page may take the extent.
            cache.remove(crate::storage::page::cache::CHUNK_KEY_BIT | chunk.offset);
        }
        // 8. The slot, in the other half of CHECKPOINT from the newest one.
        self.generation += 1;
        let slot = Slot {
            shard: self.shard as u32,
            generation: self.generation,
            checkpoint_lsn: lsn,
            next_page_id: self.next_page_id,
            table_offset: table_extent.offset,
            table_len: blob.len() as u64,
            table_crc,
            page_unit: unit as u32,
            file_end: self.alloc.file_end(),
        };
        self.write_slot(&slot)?;
        crate::failpoint::hit("checkpoint-slot-synced");
        // 9. The previous checkpoint is superseded: its extents are free.
        self.alloc.checkpoint_durable();
        self.checkpoint_lsn = lsn;
        let us = started.elapsed().as_micros() as u64;
        self.counters.checkpoints += 1;
        self.counters.checkpoint_us_last = us;
        self.counters.checkpoint_us_max = self.counters.checkpoint_us_max.max(us);
        self.counters.checkpoint_bytes_last = bytes_written;
        self.counters.checkpoint_bytes_total += bytes_written;
        Ok(())
    }

    fn write_slot(&mut self, slot: &Slot) -> Result<()> {
        if self.slot_file.is_none() {
            let file = self
                .fs
                .open(&self.slot_path, OpenFlags::CREATE)
                .map_err(|e| Error::io("create", self.slot_path.clone(), e))?;
            file.write_all_at(&[0u8; 2 * SLOT_BYTES], 0).map_err(|e| Error::io("write", self.slot_path.clone(), e))?;
            file.sync_all().map_err(|e| Error::io("fsync", self.slot_path.clone(), e))?;
            crate::io::fs::sync_dir(self.fs.as_ref(), &self.shard_dir)?;
            self.slot_file = Some(file);
        }
        let file = self.slot_file.as_ref().expect("created above");
        let offset = (slot.generation % 2) * SLOT_BYTES as u64;
        file.write_all_at(&slot.encode(), offset).map_err(|e| Error::io("write", self.slot_path.clone(), e))?;
        file.sync_data().map_err(|e| Error::io("fdatasync", self.slot_path.clone(), e))
    }

    /// Images of `page_ids`, from the cache or read with many reads in flight.
    fn load_pages(
        &mut self,
        io: &mut dyn Io,
        cache: &PageCache,
        page_ids: &[u64],
        stash: &mut Vec<Completion>,
    ) -> Result<HashMap<u64, Bytes>> {
        let mut images = HashMap::with_capacity(page_ids.len());
        let mut missing = Vec::new();
        for &id in page_ids {
            match cache.get(id) {
                Some(image) => {
                    images.insert(id, image);
                }
                None => missing.push(id),
            }
        }
        let fd = self.data.fd();
        for (i, &id) in missing.iter().enumerate() {
            let extent = self.pages[&id].extent;
            io.read(
                fd,
                extent.offset,
                aligned(extent.len as usize, self.mem_align),
                extent.len as usize,
                CHECKPOINT_TOKEN_BIT | i as u64,
            );
        }
        let path = self.data_path.clone();
        let pages = &self.pages;
        let mut read = 0;
        wait_all(io, missing.len(), stash, |c| {
            let id = missing[(c.token & !CHECKPOINT_TOKEN_BIT) as usize];
            let meta = pages[&id];
            c.result.map_err(|e| Error::io("read page", path.clone(), e))?;
            let buf = c.buf.expect("a read returns its buffer");
            let image = Bytes::from_owner(buf).slice(..meta.capacity as usize);
            decode_page(&image).map_err(|what| corruption(&path, meta.extent.offset, what))?;
            images.insert(id, image);
            read += 1;
            Ok(())
        })?;
        self.counters.pages_read += read;
        Ok(images)
    }
}

/// Waits for `count` checkpoint completions, handing each to `each`; completions of
/// other I/O go to `stash`. Every completion is awaited even after a failure (the
/// kernel owns the buffers until then); the first failure is returned.
fn wait_all(
    io: &mut dyn Io,
    count: usize,
    stash: &mut Vec<Completion>,
    mut each: impl FnMut(Completion) -> Result<()>,
) -> Result<()> {
    let mut remaining = count;
    let mut first_error = None;
    let mut batch = Vec::new();
    while remaining > 0 {
        io.wait(true, None, &mut batch)?;
        for c in batch.drain(..) {
            if c.token & CHECKPOINT_TOKEN_BIT != 0 {
                remaining -= 1;
                if let Err(e) = each(c) {
                    first_error.get_or_insert(e);
                }
            } else {
                stash.push(c);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
