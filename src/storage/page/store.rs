//! The paged store of one shard: its tree's nodes and its chunks in
//! `pages.dat`, and checkpoints.
//!
//! Writes never touch the disk's tree: a put or delete enters the memtable
//! (`index.rs`). A checkpoint, on the shard thread, then:
//!
//! 1. takes the frozen memtable's entries in key order as changes (writes go to
//!    a new memtable meanwhile); writes each value over the chunk threshold to a
//!    chunk of its own;
//! 2. finds the leaves the changes fall in (reading only branches, which the
//!    cache mostly holds) and reads those not cached, many in flight;
//! 3. merges the changes into the tree (`tree.rs`): every node on the path to
//!    a changed key is written under a **new id** to a **new extent**
//!    (copy-on-write: an extent the last durable checkpoint references is never
//!    overwritten); the rest of the tree is shared with the previous version;
//! 4. writes the free list (the extents no node of the new version uses), then
//!    the checkpoint slot naming the new root, each synced;
//! 5. frees the extents only the previous version used.
//!
//! What one checkpoint writes therefore follows the number of leaves changed
//! since the last one, not the number of keys. A crash anywhere before the slot
//! is durable recovers the previous slot, whose extents are intact; extents the
//! unfinished checkpoint allocated are free in the previous free list.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::alloc::{Allocator, Extent};
use super::cache::PageCache;
use crate::error::{Error, Result};
use crate::format::checkpoint::{SLOT_BYTES, Slot, decode_free_list, encode_free_list, free_list_bytes, newest_slot};
use crate::format::page::{ChunkRef, chunk_bytes, encode_chunk};
use crate::format::tree::{NodeRef, check_node};
use crate::io::fs::{FileRef, Fs, NodeKind, OpenFlags};
use crate::io::token::{Token, TokenKind};
use crate::io::{AlignedBuf, Completion, Io, SyncMode};
use crate::storage::index::{Index, Stored};
use crate::storage::tree::{self, Change, ChangeOp, LoadError, NodeSink, NodeSource, Shape, TreeRoot};

/// Bytes a tree node is filled to (rounded up to the page unit): a leaf of 4 KiB reads
/// in one device page and holds a few dozen small records.
pub(crate) const NODE_BYTES: usize = 4096;

/// Settings of a page store.
#[derive(Debug, Clone)]
pub(crate) struct PageConfig {
    /// Records a leaf holds at most.
    pub records_max: usize,
    /// Values longer than this go to a chunk of their own.
    pub chunk_threshold: usize,
    /// Bytes a node is filled to (rounded up to the page unit).
    pub node_bytes: usize,
    pub direct: bool,
    /// Merge on the shard thread instead of a thread of its own (the file system says
    /// helper threads may not run: the simulated disk replays a run exactly only with
    /// everything on the shard thread).
    pub merge_inline: bool,
}

/// Called by a checkpoint's merge thread when its result is ready, to wake the shard.
pub(crate) type Waker = Arc<dyn Fn() + Send + Sync>;

/// What a merge thread hands back: its outcome, and the allocator, the next node id and
/// the writes it took.
struct Merged {
    outcome: std::result::Result<tree::MergeOutcome, LoadError>,
    alloc: Allocator,
    next_node_id: u64,
    writes: Vec<Grouped>,
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

/// A write a checkpoint queues: where, what, and the node it holds (none for a chunk
/// or the free list).
type PendingWrite = (Extent, AlignedBuf, Option<u64>);

/// Largest write a checkpoint makes of adjacent extents, in bytes.
const WRITE_COALESCE_BYTES: u64 = 1 << 20;

/// Adjacent extents written as one.
struct WriteGroup {
    offset: u64,
    len: u64,
    parts: Vec<PendingWrite>,
}

/// A write of adjacent extents, ready to queue: where, the bytes, and each part's node
/// (none for a chunk), offset in the write and length.
struct Grouped {
    extent: Extent,
    buf: AlignedBuf,
    members: Vec<(Option<u64>, usize, usize)>,
}

/// Sorts `writes` by offset and joins adjacent ones into writes of up to
/// `WRITE_COALESCE_BYTES` (copying their bytes into one buffer: done on the merge
/// thread, off the shard's).
fn group_writes(mut writes: Vec<PendingWrite>, mem_align: usize) -> Vec<Grouped> {
    writes.sort_by_key(|(e, _, _)| e.offset);
    let mut groups: Vec<WriteGroup> = Vec::new();
    for (extent, buf, node) in writes {
        match groups.last_mut() {
            Some(g) if g.offset + g.len == extent.offset && g.len + extent.len <= WRITE_COALESCE_BYTES => {
                g.len += extent.len;
                g.parts.push((extent, buf, node));
            }
            _ => groups.push(WriteGroup { offset: extent.offset, len: extent.len, parts: vec![(extent, buf, node)] }),
        }
    }
    debug_assert!(groups.windows(2).all(|w| w[0].offset + w[0].len <= w[1].offset), "checkpoint writes overlap");
    groups
        .into_iter()
        .map(|g| {
            let members =
                g.parts.iter().map(|(e, _, node)| (*node, (e.offset - g.offset) as usize, e.len as usize)).collect();
            let buf = if g.parts.len() == 1 {
                g.parts.into_iter().next().expect("one part").1
            } else {
                let mut big = aligned(g.len as usize, mem_align);
                for (e, part, _) in &g.parts {
                    let at = (e.offset - g.offset) as usize;
                    big.as_mut_slice()[at..at + e.len as usize].copy_from_slice(&part.as_slice()[..e.len as usize]);
                }
                big
            };
            Grouped { extent: Extent { offset: g.offset, len: g.len }, buf, members }
        })
        .collect()
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
    next_node_id: u64,
    generation: u64,
    pub checkpoint_lsn: u64,
    /// The durable tree.
    root: TreeRoot,
    /// Nodes in the durable tree.
    nodes: u64,
    /// The log segment the records after the durable checkpoint start in (0: none yet).
    pub log_seq: u64,
    /// The durable free list's extent.
    free_extent: Option<Extent>,
    pub counters: PageCounters,
    /// Wakes the shard when a merge thread is done.
    waker: Option<Waker>,
}

fn corruption(file: &Path, offset: u64, what: impl Into<String>) -> Error {
    Error::Corruption { file: file.to_path_buf(), offset, what: what.into() }
}

/// The newest valid slot of the `CHECKPOINT` file, if it exists and holds one. A file
/// with bytes but no valid slot is corruption (or an older format: incompatible).
fn read_newest_slot(fs: &dyn Fs, slot_path: &Path) -> Result<Option<Slot>> {
    match fs.read_file(slot_path) {
        Ok(bytes) => {
            let (slot, why) = newest_slot(&bytes);
            if slot.is_none() && bytes.iter().any(|&b| b != 0) {
                if why.iter().any(|w| w.contains("older format")) {
                    return Err(Error::Incompatible(format!("{}: {}", slot_path.display(), why.join("; "))));
                }
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
    /// checkpoint: the slot and the free list, never the tree.
    pub fn open(fs: &Arc<dyn Fs>, shard_dir: &Path, shard: usize, config: PageConfig) -> Result<PageStore> {
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
            next_node_id: 1,
            generation: 0,
            checkpoint_lsn: 0,
            root: TreeRoot::default(),
            nodes: 0,
            log_seq: 0,
            free_extent: None,
            counters: PageCounters::default(),
            waker: None,
        };
        if let Some(slot) = slot {
            store.load_checkpoint(&slot, align)?;
        }
        Ok(store)
    }

    /// Loads the checkpoint `slot` describes: its root and its free list, checked
    /// against the data file.
    fn load_checkpoint(&mut self, slot: &Slot, align: usize) -> Result<()> {
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
        let unit = slot_unit as u64;
        let file_len = self.data.len().map_err(|e| Error::io("stat", self.data_path.clone(), e))?;
        if file_len < slot.file_end {
            return Err(corruption(
                &self.data_path,
                file_len,
                format!(
                    "the data file holds {file_len} bytes, its checkpoint (generation {}) uses {}: \
                     the file was truncated",
                    slot.generation, slot.file_end
                ),
            ));
        }
        let (root_id, root_offset, root_len) = slot.root;
        let node = (root_id != 0).then_some(NodeRef { id: root_id, offset: root_offset, len: root_len });
        if let Some(n) = node {
            let inside = n.offset.checked_add(u64::from(n.len)).is_some_and(|end| end <= slot.file_end);
            if n.offset % unit != 0
                || u64::from(n.len) % unit != 0
                || n.len == 0
                || !inside
                || n.id >= slot.next_node_id
            {
                return Err(corruption(&self.slot_path, 40, "the checkpoint's root lies outside the data file"));
            }
        }
        let free = self.read_free_list(slot)?;
        self.alloc =
            Allocator::with_free(unit, slot.file_end, free.into_iter().map(|(offset, len)| Extent { offset, len }));
        self.free_extent =
            Some(Extent { offset: slot.free_offset, len: u64::from(slot.free_len).next_multiple_of(unit) });
        self.root = TreeRoot { node, level: slot.root_level, keys: slot.keys };
        self.nodes = slot.nodes;
        self.log_seq = slot.log_seq;
        self.next_node_id = slot.next_node_id;
        self.generation = slot.generation;
        self.checkpoint_lsn = slot.checkpoint_lsn;
        Ok(())
    }

    /// Reads and checks the checkpoint's free list.
    fn read_free_list(&self, slot: &Slot) -> Result<Vec<(u64, u64)>> {
        let len = slot.free_len as usize;
        let read_len = len.next_multiple_of(self.unit);
        if slot.free_offset % self.unit as u64 != 0 || slot.free_offset + read_len as u64 > slot.file_end {
            return Err(corruption(&self.slot_path, 72, "free list outside the data file"));
        }
        let mut buf = aligned(read_len, self.mem_align);
        self.data
            .read_exact_at(&mut buf.as_mut_slice()[..read_len], slot.free_offset)
            .map_err(|e| Error::io("read checkpoint free list", self.data_path.clone(), e))?;
        let blob = &buf.as_slice()[..len];
        if crc32fast::hash(blob) != slot.free_crc {
            return Err(corruption(&self.data_path, slot.free_offset, "checkpoint free list checksum mismatch"));
        }
        let free = decode_free_list(blob, self.unit as u64, slot.file_end)
            .map_err(|what| corruption(&self.data_path, slot.free_offset, what))?;
        let free_blob = Extent { offset: slot.free_offset, len: read_len as u64 };
        if free.iter().any(|&(o, l)| o < free_blob.end() && free_blob.offset < o + l) {
            return Err(corruption(&self.data_path, slot.free_offset, "the free list lists its own extent as free"));
        }
        Ok(free)
    }

    /// Sets what wakes the shard when a checkpoint's merge, on a thread of its own, is
    /// done.
    pub fn set_waker(&mut self, waker: Waker) {
        self.waker = Some(waker);
    }

    /// The durable tree's root.
    pub fn root(&self) -> TreeRoot {
        self.root
    }

    /// Checkpoints made since the store was created (the slot's generation).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Nodes in the durable tree.
    pub fn nodes(&self) -> u64 {
        self.nodes
    }

    /// Bytes of `pages.dat` in use.
    pub fn file_bytes(&self) -> u64 {
        self.alloc.file_end()
    }

    /// Bytes of `pages.dat` holding live nodes, chunks and the free list.
    pub fn live_bytes(&self) -> u64 {
        self.alloc.file_end() - self.alloc.free_bytes()
    }

    /// After a failed checkpoint: its retirements are void (the previous checkpoint still
    /// references those extents). The shard refuses writes after a failure, so nothing
    /// more is allocated; this keeps the bookkeeping true for what remains.
    pub fn abandon_checkpoint(&mut self) {
        self.alloc.checkpoint_abandoned();
    }

    /// The tree's shape for merges.
    fn shape(&self) -> Shape {
        Shape {
            node_bytes: self.config.node_bytes.max(self.unit),
            records_max: self.config.records_max,
            unit: self.unit,
            mem_align: self.mem_align,
        }
    }

    /// Starts a checkpoint covering every log record up to `lsn` (all applied to the
    /// memtable); see the module docs. Its first steps (chunks written, leaves read)
    /// are queued on `io`; the caller waits, hands each completion of kind
    /// [`TokenKind::Checkpoint`] to [`PageStore::checkpoint_completion`], and calls
    /// [`PageStore::advance_checkpoint`] whenever nothing of the run is in flight.
    pub fn start_checkpoint(
        &mut self,
        io: &mut dyn Io,
        memtable: &Index,
        cache: &PageCache,
        lsn: u64,
        log_seq: u64,
    ) -> Result<CheckpointRun> {
        assert!(lsn >= self.checkpoint_lsn, "a checkpoint never covers less of the log than the last one");
        let mut run = CheckpointRun::new(lsn);
        run.log_seq = log_seq;
        // 1. The changes, in key order; large values to chunks.
        let order = memtable.order();
        run.changes.reserve(order.len());
        for key in order.iter() {
            let v = memtable.get(key).expect("every ordered key is in the memtable");
            let op = match v.stored {
                Stored::Inline(value) if value.len() > self.config.chunk_threshold => {
                    ChangeOp::PutChunk(self.write_chunk(&value, &mut run.writes))
                }
                Stored::Inline(value) => ChangeOp::Put(value),
                Stored::Tombstone => ChangeOp::Delete,
                Stored::Chunk { .. } => unreachable!("the memtable holds values, never chunk references"),
            };
            run.changes.push(Change { key: key.clone(), version: v.version, op });
        }
        drop(order);
        // 2. The leaves to rewrite: cached, or read with many reads in flight.
        // Every node the merge will read is gathered in `run.loaded` (branches as they
        // are read here, leaves from the cache or the disk), so the merge needs no cache.
        let touched = {
            let src = StoreNodes { store: self, cache, loaded: &run.loaded, seen: std::cell::RefCell::default() };
            let touched = tree::leaves_touched(&src, &self.root, &run.changes).map_err(|e| self.load_error(e))?;
            run.loaded.extend(src.seen.into_inner());
            touched
        };
        let fd = self.data.fd();
        for node in touched {
            if let Some(image) = cache.peek(node.id) {
                run.loaded.insert(node.id, image);
            } else {
                let extent = Extent { offset: node.offset, len: u64::from(node.len) };
                queue_checkpoint_io(
                    io,
                    fd,
                    extent,
                    aligned(node.len as usize, self.mem_align),
                    run.missing.len(),
                    None,
                );
                run.missing.push(node);
            }
        }
        run.in_flight = run.missing.len();
        Ok(run)
    }

    fn load_error(&self, e: LoadError) -> Error {
        match e {
            LoadError::Failed(e) => e,
            LoadError::Gone { offset, what } => corruption(&self.data_path, offset, what),
        }
    }

    /// Places a value in a chunk of its own, queued in `writes`; returns its reference.
    fn write_chunk(&mut self, value: &[u8], writes: &mut Vec<PendingWrite>) -> ChunkRef {
        let len = chunk_bytes(value.len(), self.unit);
        let extent = self.alloc.allocate(len as u64);
        let mut buf = aligned(len, self.mem_align);
        let crc32 = encode_chunk(value, &mut buf.as_mut_slice()[..len]);
        writes.push((extent, buf, None));
        self.counters.chunks_written += 1;
        ChunkRef { offset: extent.offset, len: u32::try_from(value.len()).expect("values fit in 32 bits"), crc32 }
    }

    /// Takes the completion of one of the running checkpoint's operations.
    pub fn checkpoint_completion(&mut self, run: &mut CheckpointRun, c: Completion) {
        let token = Token::decode(c.token).expect("the shard routes only checkpoint tokens here");
        debug_assert_eq!(token.kind, TokenKind::Checkpoint, "the shard routes only checkpoint tokens here");
        assert!(run.in_flight > 0, "a checkpoint completion arrived with nothing in flight");
        run.in_flight -= 1;
        let i = usize::try_from(token.payload).expect("checkpoint operations are numbered from 0");
        let result = match run.step {
            Step::LoadLeaves => self.on_leaf_loaded(run, i, c),
            Step::WriteNodes => on_nodes_written(run, i, c, &self.data_path),
            Step::Merge => unreachable!("a merge hands its result back through `poll_merge`"),
            Step::SyncNodes | Step::SyncFreeList => {
                c.result.map(|_| ()).map_err(|e| Error::io("fdatasync", self.data_path.clone(), e))
            }
            Step::WriteFreeList => {
                c.result.map(|_| ()).map_err(|e| Error::io("write checkpoint free list", self.data_path.clone(), e))
            }
            Step::WriteSlot => c.result.map(|_| ()).map_err(|e| Error::io("write", self.slot_path.clone(), e)),
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
    pub fn advance_checkpoint(&mut self, run: &mut CheckpointRun, io: &mut dyn Io, cache: &PageCache) -> Result<bool> {
        assert_eq!(run.in_flight, 0, "a checkpoint step starts only once the last one's I/O is in");
        if let Some(e) = run.error.take() {
            return Err(e);
        }
        match run.step {
            Step::LoadLeaves => {
                crate::failpoint::hit("checkpoint-pages-loaded");
                self.start_merge(run, cache);
                run.step = Step::Merge;
                Ok(false)
            }
            Step::Merge => {
                let groups = std::mem::take(&mut run.grouped);
                self.queue_writes(run, io, groups);
                run.step = Step::WriteNodes;
                Ok(false)
            }
            Step::WriteNodes => {
                crate::failpoint::hit("checkpoint-pages-written");
                crate::failpoint::error("checkpoint-error-pages-written")?;
                self.queue_sync(run, io);
                run.step = Step::SyncNodes;
                Ok(false)
            }
            Step::SyncNodes => {
                crate::failpoint::hit("checkpoint-pages-synced");
                self.queue_free_list_write(run, io);
                run.step = Step::WriteFreeList;
                Ok(false)
            }
            Step::WriteFreeList => {
                self.queue_sync(run, io);
                run.step = Step::SyncFreeList;
                Ok(false)
            }
            Step::SyncFreeList => {
                crate::failpoint::hit("checkpoint-table-synced");
                self.queue_slot_write(run, io)?;
                run.step = Step::WriteSlot;
                Ok(false)
            }
            Step::WriteSlot => {
                crate::failpoint::hit("checkpoint-slot-synced");
                self.commit_checkpoint(run);
                run.step = Step::Done;
                Ok(true)
            }
            Step::Done => unreachable!("a finished checkpoint takes no more steps"),
        }
    }

    /// A leaf the checkpoint read: checked, and kept for the merge.
    fn on_leaf_loaded(&self, run: &mut CheckpointRun, i: usize, c: Completion) -> Result<()> {
        let node = run.missing[i];
        c.result.map_err(|e| Error::io("read tree node", self.data_path.clone(), e))?;
        let buf = c.buf.expect("a read returns its buffer");
        let image = Bytes::from_owner(buf).slice(..node.len as usize);
        match check_node(&image) {
            Ok(info) if info.id == node.id => {}
            Ok(info) => {
                return Err(corruption(
                    &self.data_path,
                    node.offset,
                    format!("node {} found where node {} should be", info.id, node.id),
                ));
            }
            Err(what) => return Err(corruption(&self.data_path, node.offset, format!("node {}: {what}", node.id))),
        }
        let first = run.loaded.insert(node.id, image).is_none();
        debug_assert!(first, "each leaf a checkpoint rewrites is read once");
        Ok(())
    }

    /// Step 3 of the module docs: the merge, placing new nodes in new extents. It reads
    /// only `run.loaded` (and, for a node missing there, the data file: every node it
    /// reads belongs to the durable tree, which nothing overwrites meanwhile), so it
    /// runs on a thread of its own, with the allocator lent to it, while the shard
    /// serves requests; [`PageStore::poll_merge`] takes its result back.
    fn start_merge(&mut self, run: &mut CheckpointRun, cache: &PageCache) {
        let shape = self.shape();
        let root = self.root;
        let changes = std::mem::take(&mut run.changes);
        let loaded = std::mem::take(&mut run.loaded);
        let mut alloc = std::mem::replace(&mut self.alloc, Allocator::new(self.unit as u64, 0, []));
        let mut next_node_id = self.next_node_id;
        let data = Arc::clone(&self.data);
        let data_path = self.data_path.clone();
        let mem_align = self.mem_align;
        let mut writes = std::mem::take(&mut run.writes);
        let merge = move |cache: Option<&PageCache>| {
            let outcome = {
                let mut sink = StoreSink {
                    alloc: &mut alloc,
                    next_node_id: &mut next_node_id,
                    writes: &mut writes,
                    run_end: None,
                };
                let src = StoreReader { data: &data, data_path: &data_path, mem_align, cache, loaded: &loaded };
                tree::merge(&src, &mut sink, &root, &changes, shape)
            };
            Merged { outcome, alloc, next_node_id, writes: group_writes(writes, mem_align) }
        };
        run.in_flight += 1;
        if let Some(waker) = self.waker.clone().filter(|_| !self.config.merge_inline) {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let spawned = std::thread::Builder::new().name(format!("ringdb-merge-{}", self.shard)).spawn(move || {
                let _ = tx.send(merge(None));
                waker();
            });
            match spawned {
                Ok(_) => run.merging = Some(rx),
                Err(e) => {
                    // The closure (and the allocator it holds) is gone with the failed
                    // spawn: the checkpoint fails, and the shard refuses writes until a
                    // reopen rebuilds the allocator from the durable free list.
                    run.in_flight -= 1;
                    run.error = Some(Error::io("start a checkpoint's merge thread", None, e));
                }
            }
        } else {
            let merged = merge(Some(cache));
            run.in_flight -= 1;
            self.take_merged(run, merged);
        }
    }

    /// Takes the merge thread's result if it is ready; returns whether it was.
    pub fn poll_merge(&mut self, run: &mut CheckpointRun) -> bool {
        let Some(rx) = &run.merging else { return false };
        let merged = match rx.try_recv() {
            Ok(merged) => merged,
            Err(crossbeam_channel::TryRecvError::Empty) => return false,
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                run.merging = None;
                run.in_flight -= 1;
                run.error.get_or_insert(Error::io(
                    "a checkpoint's merge thread",
                    None,
                    std::io::Error::other("the merge thread ended without a result"),
                ));
                return true;
            }
        };
        run.merging = None;
        run.in_flight -= 1;
        self.take_merged(run, merged);
        true
    }

    /// The merge's result: the allocator back, the old nodes and chunks retired.
    fn take_merged(&mut self, run: &mut CheckpointRun, merged: Merged) {
        self.alloc = merged.alloc;
        self.next_node_id = merged.next_node_id;
        run.grouped = merged.writes;
        let outcome = match merged.outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                run.error.get_or_insert(self.load_error(e));
                return;
            }
        };
        for node in &outcome.freed_nodes {
            self.alloc.retire(Extent { offset: node.offset, len: u64::from(node.len) });
        }
        for chunk in &outcome.freed_chunks {
            self.alloc.retire(Extent { offset: chunk.offset, len: chunk_bytes(chunk.len as usize, self.unit) as u64 });
        }
        self.counters.pages_written += outcome.nodes_written;
        self.counters.bytes_padded += outcome.bytes_padded;
        run.nodes = self.nodes + outcome.nodes_written - outcome.freed_nodes.len() as u64;
        run.freed_nodes = outcome.freed_nodes.iter().map(|n| n.id).collect();
        run.freed_chunks = outcome.freed_chunks;
        run.root = Some(outcome.root);
    }

    /// Queues every write. Extents adjacent in the file (fresh allocations mostly are)
    /// go out as one write of up to `WRITE_COALESCE_BYTES`, all in flight at once.
    fn queue_writes(&mut self, run: &mut CheckpointRun, io: &mut dyn Io, groups: Vec<Grouped>) {
        run.bytes_written = groups.iter().map(|g| g.extent.len).sum();
        let fd = self.data.fd();
        for (i, g) in groups.into_iter().enumerate() {
            run.members.push(g.members);
            queue_checkpoint_io(io, fd, g.extent, g.buf, i, Some(SyncMode::None));
            run.in_flight += 1;
        }
    }

    /// Step 4: the free list of the new version (every extent free once it is durable),
    /// written to an extent of its own.
    fn queue_free_list_write(&mut self, run: &mut CheckpointRun, io: &mut dyn Io) {
        if let Some(old) = self.free_extent {
            self.alloc.retire(old);
        }
        // Allocating the list's extent may split a free extent, never add one: the bound
        // taken before holds.
        let bound = free_list_bytes(self.alloc.extents_free_or_retired() + 1);
        let extent = self.alloc.allocate(bound as u64);
        let free: Vec<(u64, u64)> = self.alloc.free_after_checkpoint().iter().map(|e| (e.offset, e.len)).collect();
        let mut blob = Vec::with_capacity(bound);
        encode_free_list(&free, &mut blob);
        debug_assert!(blob.len() <= extent.len as usize, "the free list fits the extent sized for it");
        let crc = crc32fast::hash(&blob);
        let mut buf = aligned(extent.len as usize, self.mem_align);
        buf.as_mut_slice()[..blob.len()].copy_from_slice(&blob);
        run.bytes_written += extent.len;
        run.free_list = Some((extent, blob.len() as u32, crc));
        queue_checkpoint_io(io, self.data.fd(), extent, buf, 0, Some(SyncMode::None));
        run.in_flight += 1;
    }

    /// Queues an `fdatasync` of the data file on the ring.
    fn queue_sync(&self, run: &mut CheckpointRun, io: &mut dyn Io) {
        io.fdatasync(self.data.fd(), Token::new(TokenKind::Checkpoint, 0).encode());
        run.in_flight += 1;
    }

    /// Step 5: queues the write of the slot naming the new root (with `RWF_DSYNC`), in
    /// the half of `CHECKPOINT` the newest slot is not in.
    fn queue_slot_write(&mut self, run: &mut CheckpointRun, io: &mut dyn Io) -> Result<()> {
        let (free_extent, free_len, free_crc) = run.free_list.expect("the free list was written");
        let root = run.root.expect("the merge made a root");
        assert!(run.lsn >= self.checkpoint_lsn, "checkpoints cover ever more of the log");
        let generation = self.generation + 1;
        let slot = Slot {
            shard: self.shard as u32,
            generation,
            checkpoint_lsn: run.lsn,
            next_node_id: self.next_node_id,
            root: root.node.map_or((0, 0, 0), |n| (n.id, n.offset, n.len)),
            root_level: root.level,
            keys: root.keys,
            free_offset: free_extent.offset,
            free_len,
            free_crc,
            page_unit: self.unit as u32,
            file_end: self.alloc.file_end(),
            nodes: run.nodes,
            log_seq: run.log_seq,
        };
        let file = self.slot_file()?;
        let mut buf = aligned(SLOT_BYTES, self.mem_align.max(512));
        buf.as_mut_slice()[..SLOT_BYTES].copy_from_slice(&slot.encode());
        let token = Token::new(TokenKind::Checkpoint, 0).encode();
        io.write(file, (generation % 2) * SLOT_BYTES as u64, buf, SLOT_BYTES, SyncMode::Dsync, token);
        run.in_flight += 1;
        Ok(())
    }

    /// The slot is durable: frees what only the previous version used, and counts the
    /// checkpoint.
    fn commit_checkpoint(&mut self, run: &mut CheckpointRun) {
        let (free_extent, _, _) = run.free_list.expect("the free list was written");
        let root = run.root.expect("the merge made a root");
        self.generation += 1;
        self.alloc.checkpoint_durable();
        self.free_extent = Some(free_extent);
        self.root = root;
        self.nodes = run.nodes;
        self.log_seq = run.log_seq;
        self.checkpoint_lsn = run.lsn;
        let us = run.started.elapsed().as_micros() as u64;
        self.counters.checkpoints += 1;
        self.counters.checkpoint_us_last = us;
        self.counters.checkpoint_us_max = self.counters.checkpoint_us_max.max(us);
        self.counters.checkpoint_bytes_last = run.bytes_written;
        self.counters.checkpoint_bytes_total += run.bytes_written;
    }

    /// The `CHECKPOINT` file's descriptor, creating the file (both slots zero, synced,
    /// its folder synced) before the first checkpoint.
    fn slot_file(&mut self) -> Result<RawFd> {
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
        Ok(self.slot_file.as_ref().expect("created above").fd())
    }
}

/// Nodes for the checkpoint's look-ups before the merge: the cache, the leaves read,
/// else a read of the data file on the shard thread (branches, mostly cached).
struct StoreNodes<'a> {
    store: &'a PageStore,
    cache: &'a PageCache,
    loaded: &'a HashMap<u64, Bytes>,
    /// Every node loaded, for the merge.
    seen: std::cell::RefCell<HashMap<u64, Bytes>>,
}

impl NodeSource for StoreNodes<'_> {
    fn load(&self, node: &NodeRef) -> std::result::Result<Bytes, LoadError> {
        let image = StoreReader {
            data: &self.store.data,
            data_path: &self.store.data_path,
            mem_align: self.store.mem_align,
            cache: Some(self.cache),
            loaded: self.loaded,
        }
        .load(node)?;
        self.seen.borrow_mut().insert(node.id, image.clone());
        Ok(image)
    }
}

/// See [`StoreNodes`]; borrows only what a read needs, so the merge may allocate meanwhile.
struct StoreReader<'a> {
    data: &'a FileRef,
    data_path: &'a Path,
    mem_align: usize,
    /// The cache, on the shard thread; none on a merge thread.
    cache: Option<&'a PageCache>,
    loaded: &'a HashMap<u64, Bytes>,
}

impl NodeSource for StoreReader<'_> {
    fn load(&self, node: &NodeRef) -> std::result::Result<Bytes, LoadError> {
        if let Some(image) = self.loaded.get(&node.id).cloned().or_else(|| self.cache.and_then(|c| c.peek(node.id))) {
            return Ok(image);
        }
        let mut buf = aligned(node.len as usize, self.mem_align);
        self.data
            .read_exact_at(&mut buf.as_mut_slice()[..node.len as usize], node.offset)
            .map_err(|e| Error::io("read tree node", self.data_path.to_path_buf(), e))?;
        let image = Bytes::from_owner(buf).slice(..node.len as usize);
        match check_node(&image) {
            Ok(info) if info.id == node.id => {
                if let Some(cache) = self.cache {
                    cache.insert(node.id, image.clone());
                }
                Ok(image)
            }
            Ok(info) => Err(LoadError::Gone {
                offset: node.offset,
                what: format!("node {} found where node {} should be", info.id, node.id),
            }),
            Err(what) => Err(LoadError::Gone { offset: node.offset, what: format!("node {}: {what}", node.id) }),
        }
    }
}

/// Places the merge's new nodes: a new id, a new extent (each right after the last one
/// where it can, so nodes written in key order lie in key order), a queued write.
struct StoreSink<'a> {
    alloc: &'a mut Allocator,
    next_node_id: &'a mut u64,
    writes: &'a mut Vec<PendingWrite>,
    /// End of the last node placed.
    run_end: Option<u64>,
}

impl NodeSink for StoreSink<'_> {
    fn allocate(&mut self, len: usize) -> NodeRef {
        let id = *self.next_node_id;
        *self.next_node_id += 1;
        let extent = self.alloc.allocate_run(len as u64, self.run_end);
        self.run_end = Some(extent.end());
        debug_assert_eq!(extent.len, len as u64, "nodes are sized in whole units");
        NodeRef { id, offset: extent.offset, len: u32::try_from(len).expect("nodes are far below 4 GiB") }
    }

    fn write(&mut self, node: NodeRef, image: AlignedBuf) {
        self.writes.push((Extent { offset: node.offset, len: u64::from(node.len) }, image, Some(node.id)));
    }
}

/// A written group: checked, and its nodes' images kept for the cache.
fn on_nodes_written(run: &mut CheckpointRun, i: usize, c: Completion, data_path: &Path) -> Result<()> {
    c.result.map_err(|e| Error::io("write tree node", data_path.to_path_buf(), e))?;
    let written = Bytes::from_owner(c.buf.expect("a write returns its buffer"));
    let parts = run.members[i].len();
    for &(node, at, len) in &run.members[i] {
        debug_assert!(at + len <= written.len(), "a part lies inside its write group");
        if let Some(id) = node {
            // A node of a group written as one gets a buffer of its own: a slice would
            // keep the whole group (up to 1 MiB) alive for as long as the cache keeps
            // this one node, far beyond what the cache counts.
            let image = if parts == 1 { written.slice(at..at + len) } else { own_copy(&written[at..at + len]) };
            run.images_out.push((id, image));
        }
    }
    Ok(())
}

/// `bytes` in a buffer of their own, aligned like every node image (so a typed record
/// in it can be read in place).
pub(crate) fn own_copy(bytes: &[u8]) -> Bytes {
    let mut buf = AlignedBuf::zeroed(bytes.len().next_multiple_of(512).max(512), 512);
    buf.as_mut_slice()[..bytes.len()].copy_from_slice(bytes);
    Bytes::from_owner(buf).slice(..bytes.len())
}

/// Where a running checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Reading the leaves it rewrites (and writing chunks).
    LoadLeaves,
    /// Merging the changes into the tree (on a thread of its own).
    Merge,
    /// Writing the new nodes and chunks.
    WriteNodes,
    /// Making the nodes and chunks durable.
    SyncNodes,
    /// Writing the free list.
    WriteFreeList,
    /// Making the free list durable.
    SyncFreeList,
    /// Writing the slot (with `RWF_DSYNC`).
    WriteSlot,
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
    /// The memtable's entries, in key order.
    changes: Vec<Change>,
    /// Leaves read from the disk, by operation number.
    missing: Vec<NodeRef>,
    /// Leaves read, by id.
    loaded: HashMap<u64, Bytes>,
    /// Writes not yet queued (chunks, then nodes).
    writes: Vec<PendingWrite>,
    /// The same, joined into writes of adjacent extents by the merge.
    grouped: Vec<Grouped>,
    /// Per write group: each part's node (none for a chunk), offset in the group, length.
    members: Vec<Vec<(Option<u64>, usize, usize)>>,
    /// Images of the nodes written, for the cache.
    images_out: Vec<(u64, Bytes)>,
    bytes_written: u64,
    /// The new version's root and node count.
    root: Option<TreeRoot>,
    nodes: u64,
    /// Nodes and chunks of the previous version the new one no longer uses.
    freed_nodes: Vec<u64>,
    freed_chunks: Vec<ChunkRef>,
    /// The free list written: extent, length, crc32.
    free_list: Option<(Extent, u32, u32)>,
    /// The merge thread's answer, while it runs.
    merging: Option<crossbeam_channel::Receiver<Merged>>,
    /// The log segment the records after `lsn` start in.
    log_seq: u64,
}

impl CheckpointRun {
    fn new(lsn: u64) -> CheckpointRun {
        CheckpointRun {
            lsn,
            started: Instant::now(),
            step: Step::LoadLeaves,
            in_flight: 0,
            error: None,
            changes: Vec::new(),
            missing: Vec::new(),
            loaded: HashMap::new(),
            writes: Vec::new(),
            grouped: Vec::new(),
            members: Vec::new(),
            images_out: Vec::new(),
            bytes_written: 0,
            root: None,
            nodes: 0,
            freed_nodes: Vec::new(),
            freed_chunks: Vec::new(),
            free_list: None,
            merging: None,
            log_seq: 0,
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

    /// Whether the merge thread's result waits to be taken.
    pub fn merge_ready(&self) -> bool {
        self.merging.as_ref().is_some_and(|rx| !rx.is_empty())
    }

    /// Once done: the new root, the new nodes' images to cache, and the ids of the
    /// nodes and the chunks freed (to drop from the cache).
    pub fn finish(self) -> Finished {
        Finished {
            root: self.root.expect("a finished checkpoint has a root"),
            images: self.images_out,
            freed_nodes: self.freed_nodes,
            freed_chunks: self.freed_chunks,
        }
    }
}

/// What a durable checkpoint hands the shard to publish.
pub(crate) struct Finished {
    pub root: TreeRoot,
    pub images: Vec<(u64, Bytes)>,
    pub freed_nodes: Vec<u64>,
    pub freed_chunks: Vec<ChunkRef>,
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
