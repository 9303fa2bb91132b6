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
use std::os::fd::RawFd;
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
use crate::io::token::{Token, TokenKind};
use crate::io::{AlignedBuf, Completion, Io, SyncMode};
use crate::storage::index::{IndexWriter, Stored};

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
    pub chunks_written: u64,
    pub bytes_padded: u64,
    pub checkpoints: u64,
    pub checkpoint_us_last: u64,
    pub checkpoint_us_max: u64,
    pub checkpoint_bytes_last: u64,
    /// Bytes written by every checkpoint since open.
    pub checkpoint_bytes_total: u64,
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
        debug_assert!(
            self.records.len() <= records_max,
            "a page being built never holds more than records_max records"
        );
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

/// The newest valid slot of the `CHECKPOINT` file, if it exists and holds one. A file
/// with bytes but no valid slot is corruption.
fn read_newest_slot(fs: &dyn Fs, slot_path: &Path) -> Result<Option<Slot>> {
    match fs.read_file(slot_path) {
        Ok(bytes) => {
            let (slot, why) = newest_slot(&bytes);
            if slot.is_none() && bytes.iter().any(|&b| b != 0) {
                return Err(corruption(slot_path, 0, format!("no valid checkpoint slot ({})", why.join("; "))));
            }
            Ok(slot)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", slot_path.to_path_buf(), e)),
    }
}

/// A zeroed buffer of at least `len` bytes, aligned for O_DIRECT on the data file.
fn aligned(len: usize, mem_align: usize) -> AlignedBuf {
    AlignedBuf::zeroed(len.next_multiple_of(mem_align).max(mem_align), mem_align)
}

impl PageStore {
    /// Opens (creating if needed) the page store in `shard_dir` and reads its newest
    /// checkpoint's table.
    pub fn open(fs: &Arc<dyn Fs>, shard_dir: &Path, shard: usize, config: PageConfig) -> Result<Opened> {
        let data_path = shard_dir.join("pages.dat");
        let slot_path = shard_dir.join("CHECKPOINT");
        let stat = |path: &Path| fs.kind(path).map_err(|e| Error::io("stat", path.to_path_buf(), e));
        let existed = stat(&data_path)?.is_some();
        let data = crate::io::fs::open_data_file(fs.as_ref(), &data_path, true, config.direct)?;
        if !existed {
            crate::io::fs::sync_dir(fs.as_ref(), shard_dir)?;
        }
        let (mem_align, align) = if config.direct { data.direct_io_aligns() } else { (512, 512) };
        assert!(align.is_power_of_two() && mem_align.is_power_of_two(), "O_DIRECT alignments are powers of two");
        let unit = align.max(1024);
        let slot = read_newest_slot(fs.as_ref(), &slot_path)?;
        let slot_file = if stat(&slot_path)? == Some(NodeKind::File) {
            Some(fs.open(&slot_path, OpenFlags::EXISTING).map_err(|e| Error::io("open", slot_path.clone(), e))?)
        } else {
            None
        };
        let mut store = PageStore {
            shard,
            shard_dir: shard_dir.to_path_buf(),
            data_path,
            slot_path,
            fs: Arc::clone(fs),
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
        let entries = store.load_checkpoint(&slot, align)?;
        Ok(Opened { store, entries })
    }

    /// Loads the checkpoint `slot` describes: its page table and key directory, checked
    /// against each other and the data file. Returns the key directory's entries.
    fn load_checkpoint(&mut self, slot: &Slot, align: usize) -> Result<Vec<(Bytes, Stored, u64)>> {
        // The page table and the chunk accounting are filled from this checkpoint alone;
        // anything already there would be counted twice or left without an extent.
        assert!(
            self.pages.is_empty() && self.live_chunks.is_empty() && self.chunk_bytes_live == 0,
            "a checkpoint is loaded once, into an empty store"
        );
        if slot.shard as usize != self.shard {
            return Err(corruption(
                &self.slot_path,
                12,
                format!("checkpoint of shard {} in shard {}'s folder", slot.shard, self.shard),
            ));
        }
        let slot_unit = slot.page_unit as usize;
        if !slot_unit.is_power_of_two() || slot_unit < align {
            return Err(Error::Incompatible(format!(
                "{} was written with a page unit of {slot_unit} bytes, this device needs a multiple of {align}",
                self.slot_path.display()
            )));
        }
        self.unit = slot_unit;
        let (buf, table_len) = self.read_table(slot)?;
        let blob = &buf.as_slice()[..table_len];
        let table = decode_table(blob).map_err(|what| corruption(&self.data_path, slot.table_offset, what))?;
        let table_extent = Extent { offset: slot.table_offset, len: table_len.next_multiple_of(self.unit) as u64 };
        let mut used = Vec::with_capacity(table.pages.len() + 1);
        used.push(table_extent);
        self.load_page_table(slot, &table.pages, &mut used)?;
        let entries = self.load_key_directory(slot, &table.keys, &mut used)?;
        used.sort();
        if used.windows(2).any(|w| w[0].end() > w[1].offset) {
            return Err(corruption(&self.data_path, slot.table_offset, "checkpoint extents overlap"));
        }
        self.alloc = Allocator::new(self.unit as u64, slot.file_end, used);
        self.next_page_id = slot.next_page_id;
        self.generation = slot.generation;
        self.checkpoint_lsn = slot.checkpoint_lsn;
        self.table_extent = Some(table_extent);
        self.hot =
            self.pages.iter().filter(|(_, m)| (m.records as usize) < self.config.records_max).map(|(&id, _)| id).max();
        Ok(entries)
    }

    /// Reads the checkpoint's table blob and checks its checksum; returns the buffer and
    /// the blob's length in it.
    fn read_table(&self, slot: &Slot) -> Result<(AlignedBuf, usize)> {
        let table_len =
            usize::try_from(slot.table_len).map_err(|_| corruption(&self.slot_path, 48, "table too large"))?;
        let read_len = table_len.next_multiple_of(self.unit);
        if slot.table_offset % self.unit as u64 != 0 || slot.table_offset + read_len as u64 > slot.file_end {
            return Err(corruption(&self.slot_path, 40, "table outside the data file"));
        }
        let mut buf = aligned(read_len, self.mem_align);
        debug_assert_eq!(buf.as_slice().as_ptr() as usize % self.mem_align, 0, "O_DIRECT reads need aligned memory");
        self.data
            .read_exact_at(&mut buf.as_mut_slice()[..read_len], slot.table_offset)
            .map_err(|e| Error::io("read checkpoint table", self.data_path.clone(), e))?;
        if crc32fast::hash(&buf.as_slice()[..table_len]) != slot.table_crc {
            return Err(corruption(&self.data_path, slot.table_offset, "checkpoint table checksum mismatch"));
        }
        Ok((buf, table_len))
    }

    /// Takes the checkpoint's page table, checking every extent; adds them to `used`.
    fn load_page_table(&mut self, slot: &Slot, pages: &[PageEntry], used: &mut Vec<Extent>) -> Result<()> {
        let unit = self.unit as u64;
        for p in pages {
            let extent = Extent { offset: p.offset, len: u64::from(p.extent_len) };
            let in_file = p.offset.checked_add(extent.len).is_some_and(|end| end <= slot.file_end);
            let sizes =
                p.used <= p.capacity && u64::from(p.capacity) <= extent.len && p.used as usize >= PAGE_HEADER_BYTES;
            if extent.len == 0 || extent.offset % unit != 0 || extent.len % unit != 0 || !in_file || !sizes {
                return Err(corruption(
                    &self.data_path,
                    slot.table_offset,
                    format!("page {} has an impossible extent", p.page_id),
                ));
            }
            used.push(extent);
            if self.pages.contains_key(&p.page_id) {
                return Err(corruption(&self.data_path, slot.table_offset, format!("page {} listed twice", p.page_id)));
            }
            self.pages.insert(
                p.page_id,
                PageMeta { extent, capacity: p.capacity, used: p.used, records: p.records, dead: 0 },
            );
            self.locations.pin().insert(p.page_id, loc(extent, p.capacity));
        }
        // Readers find pages through `locations` only: a page missing there is unreadable.
        debug_assert_eq!(self.locations.pin().len(), self.pages.len(), "every page has a location for readers");
        Ok(())
    }

    /// Takes the checkpoint's key directory, checking every location against the page
    /// table and the file; adds the chunks' extents to `used`.
    fn load_key_directory(
        &mut self,
        slot: &Slot,
        keys: &[KeyEntry<'_>],
        used: &mut Vec<Extent>,
    ) -> Result<Vec<(Bytes, Stored, u64)>> {
        let table_at = slot.table_offset;
        debug_assert!(self.unit.is_power_of_two(), "chunk extents are checked against the slot's page unit");
        let mut entries: Vec<(Bytes, Stored, u64)> = Vec::with_capacity(keys.len());
        for k in keys {
            let stored = match k.location {
                KeyLocation::Page { page_id, value_offset, value_len } => {
                    let page = self.pages.get(&page_id).ok_or_else(|| {
                        corruption(&self.data_path, table_at, format!("a key points at unknown page {page_id}"))
                    })?;
                    if u64::from(value_offset) + u64::from(value_len) > u64::from(page.used) {
                        return Err(corruption(&self.data_path, table_at, "a key points past its page"));
                    }
                    Stored::Page { page_id, offset: value_offset, len: value_len }
                }
                KeyLocation::Chunk { offset, value_len, crc32 } => {
                    let extent = Extent { offset, len: chunk_bytes(value_len as usize, self.unit) as u64 };
                    if offset % self.unit as u64 != 0
                        || offset.checked_add(extent.len).is_none_or(|end| end > slot.file_end)
                    {
                        return Err(corruption(&self.data_path, table_at, "a key points at an impossible chunk"));
                    }
                    used.push(extent);
                    self.chunk_bytes_live += u64::from(value_len);
                    self.live_chunks.insert(offset, (value_len, crc32));
                    Stored::Chunk { offset, len: value_len, crc32 }
                }
            };
            if entries.last().is_some_and(|(last, _, _)| &last[..] >= k.key) {
                return Err(corruption(&self.data_path, table_at, "key directory out of order or repeated"));
            }
            entries.push((Bytes::copy_from_slice(k.key), stored, k.version));
        }
        Ok(entries)
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
                debug_assert!(self.live_chunks.contains_key(offset), "a key's chunk is live until the key leaves it");
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

    /// Starts a checkpoint covering every log record up to `lsn` (all applied to the
    /// index); see the module docs. Its first step, loading the pages it rewrites, is
    /// queued on `io`; the caller waits, hands each completion of kind
    /// [`TokenKind::Checkpoint`] to [`PageStore::checkpoint_completion`], and calls
    /// [`PageStore::advance_checkpoint`] whenever nothing of the run is in flight.
    pub fn start_checkpoint(
        &mut self,
        io: &mut dyn Io,
        index: &IndexWriter<'_>,
        cache: &PageCache,
        lsn: u64,
    ) -> CheckpointRun {
        assert!(lsn >= self.checkpoint_lsn, "a checkpoint never covers less of the log than the last one");
        let mut run = CheckpointRun::new(lsn);
        // 1. What to place.
        for key in self.dirty.drain() {
            if let Some(v) = index.index().get(&key) {
                if let Stored::Inline(value) = v.stored {
                    run.todo.push(Placing { key, version: v.version, value });
                }
            }
        }
        run.todo.sort_by(|a, b| a.key.cmp(&b.key));
        run.rewrite = self.pages.iter().filter(|(_, m)| m.dead > 0).map(|(&id, _)| id).collect();
        let hot = self.hot.filter(|h| !run.todo.is_empty() && self.pages.get(h).is_some_and(|m| m.dead == 0));
        run.rewrite.extend(hot);
        run.rewrite.sort_unstable();
        // 2. Load them: from the cache, or read with many reads in flight.
        let fd = self.data.fd();
        for &id in &run.rewrite {
            if let Some(image) = cache.get(id) {
                run.images.insert(id, image);
            } else {
                let extent = self.pages[&id].extent;
                let buf = aligned(extent.len as usize, self.mem_align);
                queue_checkpoint_io(io, fd, extent, buf, run.missing.len(), None);
                run.missing.push(id);
            }
        }
        run.in_flight = run.missing.len();
        run
    }

    /// Takes the completion of one of the running checkpoint's operations.
    pub fn checkpoint_completion(&mut self, run: &mut CheckpointRun, c: Completion) {
        let token = Token::decode(c.token).expect("the shard routes only checkpoint tokens here");
        debug_assert_eq!(token.kind, TokenKind::Checkpoint, "the shard routes only checkpoint tokens here");
        assert!(run.in_flight > 0, "a checkpoint completion arrived with nothing in flight");
        run.in_flight -= 1;
        let i = usize::try_from(token.payload).expect("checkpoint operations are numbered from 0");
        let result = match run.step {
            Step::LoadPages => self.on_page_loaded(run, i, c),
            Step::WritePages => on_pages_written(run, i, c, &self.data_path),
            Step::WriteTable => {
                c.result.map(|_| ()).map_err(|e| Error::io("write checkpoint table", self.data_path.clone(), e))
            }
            Step::Done => unreachable!("a finished checkpoint has nothing in flight"),
        };
        if let Err(e) = result {
            // Every completion is still awaited (the kernel owns the buffers until then);
            // the first failure ends the checkpoint.
            run.error.get_or_insert(e);
        }
    }

    /// Takes the running checkpoint's next step, once nothing of it is in flight.
    /// Returns whether the checkpoint is durable (done); an error ends it.
    pub fn advance_checkpoint(
        &mut self,
        run: &mut CheckpointRun,
        io: &mut dyn Io,
        index: &mut IndexWriter<'_>,
        cache: &PageCache,
    ) -> Result<bool> {
        assert_eq!(run.in_flight, 0, "a checkpoint step starts only once the last one's I/O is in");
        if let Some(e) = run.error.take() {
            return Err(e);
        }
        match run.step {
            Step::LoadPages => {
                crate::failpoint::hit("checkpoint-pages-loaded");
                let writes = self.assemble_pages(run, index)?;
                self.queue_page_writes(run, io, writes);
                run.step = Step::WritePages;
                Ok(false)
            }
            Step::WritePages => {
                crate::failpoint::hit("checkpoint-pages-written");
                crate::failpoint::error("checkpoint-error-pages-written")?;
                self.data.sync_data().map_err(|e| Error::io("fdatasync", self.data_path.clone(), e))?;
                crate::failpoint::hit("checkpoint-pages-synced");
                self.publish_pages(run, index, cache);
                self.queue_table_write(run, io, index)?;
                run.step = Step::WriteTable;
                Ok(false)
            }
            Step::WriteTable => {
                self.data.sync_data().map_err(|e| Error::io("fdatasync", self.data_path.clone(), e))?;
                crate::failpoint::hit("checkpoint-table-synced");
                self.commit_checkpoint(run, cache)?;
                run.step = Step::Done;
                Ok(true)
            }
            Step::Done => unreachable!("a finished checkpoint takes no more steps"),
        }
    }

    /// A page the checkpoint read: checked, and kept for assembly.
    fn on_page_loaded(&self, run: &mut CheckpointRun, i: usize, c: Completion) -> Result<()> {
        let id = run.missing[i];
        let meta = self.pages[&id];
        c.result.map_err(|e| Error::io("read page", self.data_path.clone(), e))?;
        let buf = c.buf.expect("a read returns its buffer");
        let image = Bytes::from_owner(buf).slice(..meta.capacity as usize);
        decode_page(&image).map_err(|what| corruption(&self.data_path, meta.extent.offset, what))?;
        let first = run.images.insert(id, image).is_none();
        debug_assert!(first, "each page a checkpoint rewrites is loaded once");
        Ok(())
    }

    /// Steps 2 to 4 of the module docs: keeps the loaded pages' live records, places the
    /// dirty ones, and encodes every changed page (and chunk) for writing.
    fn assemble_pages(&mut self, run: &mut CheckpointRun, index: &IndexWriter<'_>) -> Result<Vec<PendingWrite>> {
        debug_assert_eq!(run.images.len(), run.rewrite.len(), "every page to rewrite was loaded");
        let mut buildings: Vec<Building> = Vec::with_capacity(run.rewrite.len());
        let mut by_old: HashMap<u64, usize> = HashMap::new();
        for &page_id in &run.rewrite {
            by_old.insert(page_id, buildings.len());
            buildings.push(self.live_records(page_id, &run.images[&page_id], index)?);
        }
        run.images.clear();
        let mut writes: Vec<PendingWrite> = Vec::new();
        self.place_records(run, &mut buildings, &by_old, &mut writes);
        self.encode_pages(run, buildings, &mut writes)?;
        Ok(writes)
    }

    /// The live records of loaded page `page_id`, as a page being rebuilt.
    fn live_records(&self, page_id: u64, image: &Bytes, index: &IndexWriter<'_>) -> Result<Building> {
        let meta = self.pages[&page_id];
        debug_assert!(
            meta.dead > 0 || self.hot == Some(page_id),
            "a checkpoint rewrites only pages with dead records and the hot page"
        );
        let records_max = self.config.records_max;
        let page = decode_page(image).map_err(|what| corruption(&self.data_path, meta.extent.offset, what))?;
        let mut b = Building {
            frozen: (meta.records as usize >= records_max).then_some(meta.capacity as usize),
            records: Vec::with_capacity(page.records.len()),
            used: PAGE_HEADER_BYTES,
        };
        for r in &page.records {
            let live = matches!(index.index().get(r.key), Some(v) if v.version == r.version
                && matches!(v.stored, Stored::Page { page_id: p, .. } if p == page_id));
            if !live {
                continue;
            }
            let PageStored::Inline(value) = r.value else {
                return Err(corruption(
                    &self.data_path,
                    meta.extent.offset,
                    "a page record refers to a chunk, which this version never writes",
                ));
            };
            // Where the value lies in the image (pages written before records were
            // aligned have no padding, so the offset is taken, not computed).
            let value_start = value.as_ptr() as usize - image.as_ptr() as usize;
            b.records.push(Placing {
                key: Bytes::copy_from_slice(r.key),
                version: r.version,
                value: image.slice(value_start..value_start + value.len()),
            });
            b.used += r.bytes();
        }
        // A page written before records were padded to 8 bytes may no longer hold its own
        // live records once they are padded: give it the capacity they need (it goes to
        // a new extent anyway).
        if let Some(capacity) = b.frozen.filter(|&c| b.used > c) {
            b.frozen = Some(page_capacity(b.used, self.unit, self.config.free_space_factor).max(capacity));
        }
        Ok(b)
    }

    /// Step 3: places each dirty record in the page it came from if it fits there, else
    /// in the first loaded page with room, else in a new page; a large value gets a
    /// chunk of its own (queued in `writes`).
    fn place_records(
        &mut self,
        run: &mut CheckpointRun,
        buildings: &mut Vec<Building>,
        by_old: &HashMap<u64, usize>,
        writes: &mut Vec<PendingWrite>,
    ) {
        let records_max = self.config.records_max;
        let mut fill_from = 0;
        for p in std::mem::take(&mut run.todo) {
            if p.value.len() > self.config.chunk_threshold {
                self.place_chunk(run, p, writes);
                continue;
            }
            let rec = record_bytes(p.key.len(), p.value.len());
            let home = self.moved_from.get(&p.key).and_then(|old| by_old.get(old)).copied();
            let target = if let Some(b) = home.filter(|&b| buildings[b].fits(rec, records_max)) {
                b
            } else {
                while fill_from < buildings.len() && !buildings[fill_from].fits(rec, records_max) {
                    fill_from += 1;
                }
                let found = (fill_from..buildings.len()).find(|&b| buildings[b].fits(rec, records_max));
                found.unwrap_or_else(|| {
                    buildings.push(Building { frozen: None, records: Vec::new(), used: PAGE_HEADER_BYTES });
                    buildings.len() - 1
                })
            };
            let b = &mut buildings[target];
            b.used += rec;
            b.records.push(p);
            if b.records.len() == records_max && b.frozen.is_none() {
                b.frozen = Some(page_capacity(b.used, self.unit, self.config.free_space_factor));
            }
            debug_assert!(b.records.len() <= records_max, "a page holds at most records_max records");
        }
        self.moved_from.clear();
    }

    /// Gives a large value a chunk of its own.
    fn place_chunk(&mut self, run: &mut CheckpointRun, p: Placing, writes: &mut Vec<PendingWrite>) {
        let len = chunk_bytes(p.value.len(), self.unit);
        let extent = self.alloc.allocate(len as u64);
        debug_assert!(!self.live_chunks.contains_key(&extent.offset), "a fresh extent holds no live chunk");
        let mut buf = aligned(len, self.mem_align);
        let crc32 = encode_chunk(&p.value, &mut buf.as_mut_slice()[..len]);
        let value_len = u32::try_from(p.value.len()).expect("values are at most 16 MiB");
        self.chunk_bytes_live += u64::from(value_len);
        self.live_chunks.insert(extent.offset, (value_len, crc32));
        run.placed.push((p.key, p.version, Stored::Chunk { offset: extent.offset, len: value_len, crc32 }));
        writes.push((extent, buf, None));
        self.counters.chunks_written += 1;
    }

    /// Step 4: encodes every changed page under a new id, to a new extent.
    fn encode_pages(
        &mut self,
        run: &mut CheckpointRun,
        buildings: Vec<Building>,
        writes: &mut Vec<PendingWrite>,
    ) -> Result<()> {
        for b in buildings {
            if b.records.is_empty() {
                continue;
            }
            let capacity = b.frozen.unwrap_or_else(|| page_capacity(b.used, self.unit, self.config.free_space_factor));
            debug_assert!(b.used <= capacity, "a page's records fit its capacity");
            let page_id = self.next_page_id;
            self.next_page_id += 1;
            let extent = self.alloc.allocate(capacity as u64);
            let mut buf = aligned(capacity, self.mem_align);
            let records: Vec<PageRecord<'_>> = b
                .records
                .iter()
                .map(|r| PageRecord { version: r.version, key: &r.key, value: PageStored::Inline(&r.value) })
                .collect();
            let used = encode_page(page_id, &records, &mut buf.as_mut_slice()[..capacity])
                .map_err(|what| Error::InvalidArgument(format!("page assembly failed: {what}")))?;
            drop(records);
            let mut at = PAGE_HEADER_BYTES;
            for r in &b.records {
                let value_start = at + RECORD_HEADER_BYTES + r.key.len();
                let stored = Stored::Page { page_id, offset: value_start as u32, len: r.value.len() as u32 };
                run.placed.push((r.key.clone(), r.version, stored));
                at += record_bytes(r.key.len(), r.value.len());
            }
            if b.frozen.is_none() {
                run.new_hot = Some(page_id);
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
            run.new_pages.push((page_id, meta));
        }
        Ok(())
    }

    /// Step 5: queues every write. Extents adjacent in the file (fresh allocations mostly
    /// are) go out as one write of up to `WRITE_COALESCE_BYTES`, all in flight at once.
    fn queue_page_writes(&mut self, run: &mut CheckpointRun, io: &mut dyn Io, mut writes: Vec<PendingWrite>) {
        run.bytes_written = writes.iter().map(|(e, _, _)| e.len).sum();
        run.capacities = run.new_pages.iter().map(|(id, m)| (*id, m.capacity as usize)).collect();
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
                    groups.push(WriteGroup {
                        offset: extent.offset,
                        len: extent.len,
                        parts: vec![(extent, buf, page)],
                    });
                }
            }
        }
        debug_assert!(groups.windows(2).all(|w| w[0].offset + w[0].len <= w[1].offset), "checkpoint writes overlap");
        let fd = self.data.fd();
        for (i, g) in groups.into_iter().enumerate() {
            run.members.push(g.parts.iter().map(|(e, _, page)| (*page, (e.offset - g.offset) as usize)).collect());
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
            let extent = Extent { offset: g.offset, len: g.len };
            queue_checkpoint_io(io, fd, extent, buf, i, Some(SyncMode::None));
            run.in_flight += 1;
        }
    }

    /// Step 6: the new pages are durable: publish them (callers read pages by their
    /// published location), move the index entries to them, and only now let the old
    /// pages go (if anything before failed, the old pages still serve reads).
    fn publish_pages(&mut self, run: &mut CheckpointRun, index: &mut IndexWriter<'_>, cache: &PageCache) {
        for (page_id, meta) in run.new_pages.drain(..) {
            self.locations.pin().insert(page_id, loc(meta.extent, meta.capacity));
            let old = self.pages.insert(page_id, meta);
            debug_assert!(old.is_none(), "a new page id is never reused");
        }
        for (page_id, image) in run.images_out.drain(..) {
            cache.insert(page_id, image);
        }
        for (key, version, stored) in run.placed.drain(..) {
            index.relocate(&key, version, stored);
        }
        for &page_id in &run.rewrite {
            let meta = self.pages.remove(&page_id).expect("a rewritten page is live");
            self.locations.pin().remove(&page_id);
            self.alloc.retire(meta.extent);
            cache.remove(page_id);
        }
        self.hot = run.new_hot.or(self.hot.filter(|h| self.pages.contains_key(h)));
    }

    /// Step 7: encodes the table blob (every live page, and the key directory) and
    /// queues its write.
    fn queue_table_write(&mut self, run: &mut CheckpointRun, io: &mut dyn Io, index: &IndexWriter<'_>) -> Result<()> {
        debug_assert!(
            self.pages.values().all(|m| m.extent.end() <= self.alloc.file_end()),
            "the table lists only pages inside the file"
        );
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
        let order = index.index().order();
        let mut keys = Vec::with_capacity(order.len());
        for key in order.iter() {
            let v = index.index().get(key).expect("every ordered key is in the map");
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
        drop(order);
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
        run.bytes_written += table_extent.len;
        run.table = Some((table_extent, blob.len() as u64, table_crc));
        queue_checkpoint_io(io, self.data.fd(), table_extent, buf, 0, Some(SyncMode::None));
        run.in_flight += 1;
        Ok(())
    }

    /// Steps 8 and 9: frees what the table no longer references once the slot is
    /// durable, writes the slot, and counts the checkpoint.
    fn commit_checkpoint(&mut self, run: &mut CheckpointRun, cache: &PageCache) -> Result<()> {
        let (table_extent, table_len, table_crc) = run.table.expect("the table was written");
        assert!(run.lsn >= self.checkpoint_lsn, "checkpoints cover ever more of the log");
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
            checkpoint_lsn: run.lsn,
            next_page_id: self.next_page_id,
            table_offset: table_extent.offset,
            table_len,
            table_crc,
            page_unit: self.unit as u32,
            file_end: self.alloc.file_end(),
        };
        self.write_slot(&slot)?;
        crate::failpoint::hit("checkpoint-slot-synced");
        // 9. The previous checkpoint is superseded: its extents are free.
        self.alloc.checkpoint_durable();
        self.checkpoint_lsn = run.lsn;
        let us = run.started.elapsed().as_micros() as u64;
        self.counters.checkpoints += 1;
        self.counters.checkpoint_us_last = us;
        self.counters.checkpoint_us_max = self.counters.checkpoint_us_max.max(us);
        self.counters.checkpoint_bytes_last = run.bytes_written;
        self.counters.checkpoint_bytes_total += run.bytes_written;
        Ok(())
    }

    fn write_slot(&mut self, slot: &Slot) -> Result<()> {
        debug_assert!(slot.generation > 0, "generation 0 is no checkpoint; the first written is 1");
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
}

/// A written group of pages: checked, and its page images kept for the cache.
fn on_pages_written(run: &mut CheckpointRun, i: usize, c: Completion, data_path: &Path) -> Result<()> {
    c.result.map_err(|e| Error::io("write page", data_path.to_path_buf(), e))?;
    let written = Bytes::from_owner(c.buf.expect("a write returns its buffer"));
    for &(page, at) in &run.members[i] {
        debug_assert!(at < written.len(), "a part lies inside its write group");
        if let Some(page_id) = page {
            run.images_out.push((page_id, written.slice(at..at + run.capacities[&page_id])));
        }
    }
    Ok(())
}

/// Where a running checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Reading the pages it rewrites.
    LoadPages,
    /// Writing the new pages and chunks.
    WritePages,
    /// Writing the table blob.
    WriteTable,
    /// The slot is durable.
    Done,
}

/// A checkpoint in progress: its step, its I/O in flight, and what each step hands the
/// next. Made by [`PageStore::start_checkpoint`].
pub(crate) struct CheckpointRun {
    lsn: u64,
    started: Instant,
    step: Step,
    /// Operations of the current step not yet completed.
    in_flight: usize,
    /// First failure among the current step's completions.
    error: Option<Error>,
    /// Dirty records to place.
    todo: Vec<Placing>,
    /// Pages rewritten (holding dead records, or the hot page).
    rewrite: Vec<u64>,
    /// Pages read from the disk, by operation number.
    missing: Vec<u64>,
    /// Images of the pages rewritten.
    images: HashMap<u64, Bytes>,
    /// Where each placed record went: (key, version, location).
    placed: Vec<(Bytes, u64, Stored)>,
    new_pages: Vec<(u64, PageMeta)>,
    new_hot: Option<u64>,
    /// Per write group: each part's page (none for a chunk) and offset in the group.
    members: Vec<Vec<(Option<u64>, usize)>>,
    capacities: HashMap<u64, usize>,
    /// Images of the pages written, for the cache.
    images_out: Vec<(u64, Bytes)>,
    bytes_written: u64,
    /// The table written: extent, length, crc32.
    table: Option<(Extent, u64, u32)>,
}

impl CheckpointRun {
    fn new(lsn: u64) -> CheckpointRun {
        CheckpointRun {
            lsn,
            started: Instant::now(),
            step: Step::LoadPages,
            in_flight: 0,
            error: None,
            todo: Vec::new(),
            rewrite: Vec::new(),
            missing: Vec::new(),
            images: HashMap::new(),
            placed: Vec::new(),
            new_pages: Vec::new(),
            new_hot: None,
            members: Vec::new(),
            capacities: HashMap::new(),
            images_out: Vec::new(),
            bytes_written: 0,
            table: None,
        }
    }

    /// The LSN the checkpoint covers.
    pub fn lsn(&self) -> u64 {
        self.lsn
    }

    /// Operations of the current step not yet completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

/// Queues a write of `buf` to `extent` (with `sync`) or, with `sync` `None`, a read of
/// `extent` into `buf`, under a checkpoint token; `op` numbers the operation within its step.
fn queue_checkpoint_io(io: &mut dyn Io, fd: RawFd, extent: Extent, buf: AlignedBuf, op: usize, sync: Option<SyncMode>) {
    debug_assert_eq!(buf.as_slice().as_ptr() as usize % buf.align(), 0, "checkpoint buffers are aligned for O_DIRECT");
    let token = Token::new(TokenKind::Checkpoint, op as u64).encode();
    let len = usize::try_from(extent.len).expect("an extent fits in memory");
    match sync {
        Some(sync) => io.write(fd, extent.offset, buf, len, sync, token),
        None => io.read(fd, extent.offset, buf, len, token),
    }
}
