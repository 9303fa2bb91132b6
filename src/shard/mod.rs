//! A shard: one pinned thread that owns one slice of the keys, its log and its ring.
//!
//! Clients put requests on the shard's bounded queue and wake it through its
//! eventfd only when it sleeps (`sleeping` is set just before it enters the
//! kernel to wait, and the queue is checked again after setting it, so a
//! request is never left unseen). Each wake-up drains many requests, appends
//! their records to the log and submits the flush in the same
//! `io_uring_enter` that waits for completions.
//!
//! The index is a concurrent hash map that only the shard thread writes and
//! any thread reads: a `get` never hops to the shard thread. Under
//! `Durability::Sync` a write is applied to the index only once its batch is
//! durable, so a reader never sees data a crash could take back.

mod locks;
mod txn;

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use hdrhistogram::Histogram;

use crate::engine::registry::{ScanReport, TxRegistry};
use crate::error::{Error, Result};
use crate::format::record::{KIND_ABORT, KIND_COMMIT, KIND_OPS, KIND_PREPARE, OP_DELETE, OP_PUT, Op, decode_ops};
use crate::io::{self, AlignedBuf, Io, SyncMode};
use crate::options::{Durability, Options, PersistEvent, WalSync};
use crate::stats::{OpKind, ShardCounters, new_histogram, record};
use crate::storage::wal::recovery::{Replayed, open_tail, recover};
use crate::storage::wal::segment::{PreparedSegment, prepare_segment};
use crate::storage::wal::writer::{Outcome, WalWriter, WriterConfig, WriterStart};

pub(crate) use crate::storage::index::Index;
use crate::storage::index::{IndexWriter, Stored};
use crate::storage::page::cache::PageCache;
use crate::storage::page::disk::DiskReader;
use crate::storage::page::store::{CHECKPOINT_TOKEN_BIT, PageConfig, PageCounters, PageStore};
pub(crate) use locks::KeyRange;
pub(crate) use txn::{ScanRead, TxRequest};

/// Tokens of reads for callers carry this bit (log tokens are small numbers, or carry
/// bit 63; checkpoint tokens carry bit 61).
const READ_TOKEN_BIT: u64 = 1 << 62;
/// With `READ_TOKEN_BIT`: the read is of a chunk, not a page.
const READ_CHUNK_BIT: u64 = 1 << 60;
/// Bits of a read token that index the page or chunk within its request.
const READ_INDEX_BITS: u32 = 24;
/// With at least this many reads in flight a completion wakes the shard within a few
/// microseconds anyway, so callers are not asked to wake it through the eventfd.
const READS_IN_FLIGHT_NO_WAKE: usize = 4;

/// Requests taken off the queue per loop turn at most, so completions are never starved.
const DRAIN_MAX: usize = 4096;

/// What a client asks of a shard.
pub(crate) enum Request {
    /// Append a record and answer when it is acknowledged.
    Write(WriteRequest),
    /// Answer when everything appended so far is durable.
    Flush(oneshot::Sender<Result<()>>),
    /// Make everything durable, stop, and answer.
    Shutdown(oneshot::Sender<Result<()>>),
    /// Read pages (answered with their images, `None` for a page that no longer exists)
    /// and chunks (answered with their raw bytes, checked by the caller) not in the cache.
    Read { pages: Vec<u64>, chunks: Vec<(u64, u32)>, reply: oneshot::Sender<Result<ReadReply>> },
    /// Write a checkpoint now and answer when it is durable.
    Checkpoint(oneshot::Sender<Result<()>>),
    /// Validate a transaction that lives on this shard alone and write it in one record.
    TxCommitOne(TxRequest),
    /// Validate, lock and prepare a transaction's part on this shard.
    TxPrepare(TxRequest),
    /// Commit or abort a prepared transaction's part (answered once applied, or, for an
    /// abort with `durable`, once its marker is durable).
    TxDecide { txid: u64, commit: bool, durable: bool, reply: oneshot::Sender<Result<()>> },
    /// Take shared locks for a transaction in locking mode; answered once granted.
    TxLock { txid: u64, keys: Vec<Bytes>, ranges: Vec<KeyRange>, reply: oneshot::Sender<Result<()>> },
    /// Release what a transaction that is not prepared holds here.
    TxRelease { txid: u64 },
}

/// The answer to [`Request::Read`].
pub(crate) struct ReadReply {
    pub pages: Vec<Option<Bytes>>,
    pub chunks: Vec<Bytes>,
}

/// A read request whose I/O is in flight.
struct ReadJob {
    reply: oneshot::Sender<Result<ReadReply>>,
    answer: ReadReply,
    page_ids: Vec<u64>,
    chunks: Vec<(u64, u32)>,
    remaining: usize,
    error: Option<Error>,
}

/// One record to append: ops encoded by the client (see `format::record`).
pub(crate) struct WriteRequest {
    pub body: Bytes,
    pub body_crc: u32,
    pub op_count: u32,
    pub kind: OpKind,
    pub user_bytes: u64,
    pub started: Instant,
    pub reply: oneshot::Sender<Result<()>>,
}

/// State a shard shares with clients.
pub(crate) struct ShardShared {
    pub id: usize,
    pub index: Index,
    pub sleeping: AtomicBool,
    pub eventfd: OwnedFd,
    pub counters: ShardCounters,
    /// Largest record body the shard's log accepts now (see `WalWriter::body_bytes_max`),
    /// so clients can refuse a batch whole before any part of it is sent.
    pub body_bytes_max: AtomicUsize,
    /// Write latencies (put, delete, batch), recorded by the shard thread.
    pub write_latency: Mutex<[Histogram<u64>; 3]>,
    /// The page cache, read by callers.
    pub cache: PageCache,
    /// The data file, for error reports.
    pub data_path: Mutex<PathBuf>,
    /// Callers' reads of uncached pages and chunks; set once the store is open.
    pub disk: OnceLock<DiskReader>,
    /// Page-store figures, refreshed by the shard thread.
    pub page_stats: Mutex<PageStats>,
    /// Transaction parts committed on this shard.
    pub tx_commits: std::sync::atomic::AtomicU64,
    /// Transaction parts refused here with a conflict.
    pub tx_conflicts: std::sync::atomic::AtomicU64,
    /// In-doubt transactions decided at open: (committed, aborted).
    pub tx_in_doubt: [std::sync::atomic::AtomicU64; 2],
}

/// Page-store figures of one shard.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PageStats {
    pub counters: PageCounters,
    pub pages: u64,
    pub heap_pages: u64,
    pub file_bytes: u64,
    pub live_bytes: u64,
    pub footprint_bytes: u64,
}

impl ShardShared {
    fn new(id: usize, cache_bytes: u64) -> Result<ShardShared> {
        // SAFETY: plain system call; the returned fd is checked and then owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Error::io("eventfd", None, std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh eventfd that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(ShardShared {
            id,
            index: Index::default(),
            sleeping: AtomicBool::new(false),
            eventfd,
            counters: ShardCounters::default(),
            body_bytes_max: AtomicUsize::new(usize::MAX),
            write_latency: Mutex::new([new_histogram(), new_histogram(), new_histogram()]),
            cache: PageCache::new(cache_bytes),
            data_path: Mutex::new(PathBuf::new()),
            disk: OnceLock::new(),
            page_stats: Mutex::new(PageStats::default()),
            tx_commits: std::sync::atomic::AtomicU64::new(0),
            tx_conflicts: std::sync::atomic::AtomicU64::new(0),
            tx_in_doubt: Default::default(),
        })
    }

    /// Wakes the shard thread if it sleeps.
    pub fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writing 8 bytes from a valid buffer to our eventfd. A failure can only
            // be EAGAIN (counter full), which means a wake-up is already pending.
            let _ = unsafe { libc::write(self.eventfd.as_raw_fd(), one.as_ptr().cast(), 8) };
        }
    }
}

/// A client's handle on a shard.
#[derive(Clone)]
pub(crate) struct ShardHandle {
    pub tx: Sender<Request>,
    pub shared: Arc<ShardShared>,
}

impl ShardHandle {
    pub fn send(&self, request: Request) -> Result<()> {
        self.tx.send(request).map_err(|_| Error::Closed)?;
        self.shared.wake();
        Ok(())
    }
}

/// Starts shard `id` and waits until it has replayed its log and is ready.
/// A shard thread opening (replaying its checkpoint and log); see [`Starting::wait`].
pub(crate) struct Starting {
    id: usize,
    handle: ShardHandle,
    thread: std::thread::JoinHandle<()>,
    ready: oneshot::Receiver<Result<()>>,
    scanned: Option<oneshot::Receiver<ScanReport>>,
    resolution: Option<oneshot::Sender<Arc<Resolution>>>,
}

/// What the database decided at open about every in-doubt transaction, given to each
/// shard with the registry it shares.
pub(crate) struct Resolution {
    /// In-doubt transaction → committed.
    pub decisions: HashMap<u64, bool>,
    pub registry: Arc<TxRegistry>,
}

impl Starting {
    /// Waits until the shard has read its whole log, and returns what it found about
    /// transactions (`None` if it failed: [`Starting::wait`] then says why).
    pub fn scan_report(&mut self) -> Option<ScanReport> {
        self.scanned.take()?.recv().ok()
    }

    /// Gives the shard the decisions of in-doubt transactions; it then finishes opening.
    /// Without this (the `Starting` dropped or waited on first), the shard gives up.
    pub fn resolve(&mut self, resolution: Arc<Resolution>) {
        if let Some(tx) = self.resolution.take() {
            let _ = tx.send(resolution);
        }
    }

    /// Waits until the shard is ready (or failed to open).
    pub fn wait(mut self) -> Result<(ShardHandle, std::thread::JoinHandle<()>)> {
        // A shard never given its resolution stops opening.
        drop(self.resolution.take());
        match self.ready.recv() {
            Ok(Ok(())) => Ok((self.handle, self.thread)),
            Ok(Err(e)) => {
                let _ = self.thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = self.thread.join();
                Err(Error::InvalidArgument(format!("shard {} thread died while opening", self.id)))
            }
        }
    }
}

/// Starts shard `id` of `shard_count`; it opens on its own thread, so all shards of a
/// database recover at once.
pub(crate) fn spawn(
    id: usize,
    shard_count: usize,
    shard_dir: PathBuf,
    options: &Options,
    cpus: &[usize],
) -> Result<Starting> {
    let shared = Arc::new(ShardShared::new(id, (options.cache_bytes / shard_count.max(1) as u64).max(64 << 10))?);
    let (tx, rx) = crossbeam_channel::bounded(options.queue_depth);
    let (ready_tx, ready_rx) = oneshot::channel();
    let (scanned_tx, scanned_rx) = oneshot::channel();
    let (resolution_tx, resolution_rx) = oneshot::channel();
    let thread_shared = Arc::clone(&shared);
    let options = options.clone();
    let cpu = if options.pin_threads && !cpus.is_empty() { Some(cpus[id % cpus.len()]) } else { None };
    let handle = std::thread::Builder::new()
        .name(format!("ringdb-shard-{id}"))
        .spawn(move || {
            if let Some(cpu) = cpu {
                pin_to_cpu(cpu);
            }
            match Shard::open(thread_shared, shard_dir, options, rx, scanned_tx, resolution_rx) {
                Ok(shard) => {
                    let _ = ready_tx.send(Ok(()));
                    shard.run();
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })
        .map_err(|e| Error::io("spawn shard thread", None, e))?;
    Ok(Starting {
        id,
        handle: ShardHandle { tx, shared },
        thread: handle,
        ready: ready_rx,
        scanned: Some(scanned_rx),
        resolution: Some(resolution_tx),
    })
}

fn pin_to_cpu(cpu: usize) {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    // Pinning is a performance choice: where the CPU is not allowed, run unpinned.
    if set.set(cpu).is_ok() {
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

/// CPUs this process may run on, in order.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    use nix::sched::{CpuSet, sched_getaffinity};
    use nix::unistd::Pid;
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect(),
        Err(_) => Vec::new(),
    }
}

/// A write waiting for its batch to become durable (Sync mode).
struct Pending {
    /// LSN of the write's record.
    lsn: u64,
    body: Bytes,
    op_count: u32,
    kind: OpKind,
    user_bytes: u64,
    started: Instant,
    reply: oneshot::Sender<Result<()>>,
}

struct Shard {
    shared: Arc<ShardShared>,
    options: Options,
    rx: Receiver<Request>,
    io: Box<dyn Io>,
    wal: WalWriter<Pending>,
    durable_sync: SyncMode,
    flush_waiters: Vec<(u64, oneshot::Sender<Result<()>>)>,
    shutdown: Option<Option<oneshot::Sender<Result<()>>>>,
    /// Last LSN reported to `on_persist`.
    persisted_lsn: u64,
    /// The index's key order (see `index`).
    pages: PageStore,
    /// Highest LSN applied to the index.
    applied_lsn: u64,
    read_jobs: slab::Slab<ReadJob>,
    /// Reads for callers submitted and not yet completed.
    reads_in_flight: usize,
    /// Completions that arrived while a checkpoint waited for its own.
    stash: Vec<crate::io::Completion>,
    checkpoint_waiters: Vec<oneshot::Sender<Result<()>>>,
    last_checkpoint: Instant,
    /// `WalWriter::appended_bytes` when the last checkpoint started.
    appended_at_checkpoint: u64,
    /// Transactions on this shard: locks, prepared writes, held-back writes.
    tx: txn::TxState,
}

/// A prepare record found by replay whose transaction was not decided after it.
struct Stashed {
    body: Bytes,
    op_count: u32,
}

impl Shard {
    fn open(
        shared: Arc<ShardShared>,
        shard_dir: PathBuf,
        options: Options,
        rx: Receiver<Request>,
        scanned: oneshot::Sender<ScanReport>,
        resolution: oneshot::Receiver<Arc<Resolution>>,
    ) -> Result<Shard> {
        let id = shared.id;
        let wal_dir = shard_dir.join("wal");
        let fs = options.fs();
        crate::storage::dir::create_dir(fs.as_ref(), &shard_dir)?;
        crate::storage::dir::create_dir(fs.as_ref(), &wal_dir)?;
        let started = Instant::now();
        let page_config = PageConfig {
            records_max: options.page_records_max,
            free_space_factor: options.page_free_space_factor,
            chunk_threshold: options.page_chunk_bytes,
            direct: options.direct_io,
        };
        let opened = PageStore::open(Arc::clone(&fs), &shard_dir, id, page_config)?;
        let mut pages = opened.store;
        *shared.data_path.lock().unwrap_or_else(|p| p.into_inner()) = pages.data_path.clone();
        let _ = shared.disk.set(DiskReader::new(
            Arc::clone(&pages.data),
            pages.data_path.clone(),
            pages.unit,
            pages.mem_align,
            pages.locations.clone(),
        ));
        {
            let mut writer = IndexWriter { index: &shared.index };
            for (key, stored, version) in opened.entries {
                writer.insert(key, stored, version);
            }
        }
        let checkpoint_lsn = pages.checkpoint_lsn;
        let mut applied_lsn = checkpoint_lsn;
        let mut first_after: Option<u64> = None;
        // Transactions: what the whole retained log says (for the decision of in-doubt
        // ones across shards), and prepares after the checkpoint not yet decided.
        let mut report = ScanReport::default();
        let mut stash: HashMap<u64, Stashed> = HashMap::new();
        let mut prepares: Vec<(u64, u64)> = Vec::new();
        let mut max_txid = 0u64;
        let recovered = recover(fs.as_ref(), &wal_dir, id, |r: Replayed<'_>| {
            debug_assert!(r.lsn > 0);
            let after = r.lsn > checkpoint_lsn;
            if let Some(tx) = &r.tx {
                max_txid = max_txid.max(tx.txid);
                let marks = report.marks.entry(tx.txid).or_default();
                match r.kind {
                    KIND_PREPARE => {
                        marks.prepare = true;
                        prepares.push((r.lsn, tx.txid));
                        if after {
                            let body = Bytes::copy_from_slice(r.body);
                            let op_count = r.ops.len() as u32;
                            stash.insert(tx.txid, Stashed { body, op_count });
                            report.in_doubt.push((tx.txid, tx.participants.clone()));
                        }
                    }
                    KIND_COMMIT => {
                        marks.commit = true;
                        // A prepare before the checkpoint was applied before it (a
                        // checkpoint never covers an undecided prepare): nothing to do.
                        if let Some(s) = stash.remove(&tx.txid).filter(|_| after) {
                            let ops = decode_ops(&s.body, s.op_count).expect("decoded once by replay");
                            let mut writer = IndexWriter { index: &shared.index };
                            apply_ops(&mut writer, &mut pages, &s.body, &ops, r.lsn);
                        }
                    }
                    KIND_ABORT => {
                        marks.abort = true;
                        stash.remove(&tx.txid);
                    }
                    other => unreachable!("record kind {other} passed decode_record"),
                }
            }
            // Records up to the checkpoint are in the pages already.
            if !after {
                return Ok(());
            }
            first_after.get_or_insert(r.lsn);
            if r.kind == KIND_OPS {
                let body = Bytes::copy_from_slice(r.body);
                let mut writer = IndexWriter { index: &shared.index };
                apply_ops(&mut writer, &mut pages, &body, &r.ops, r.lsn);
            }
            applied_lsn = r.lsn;
            Ok(())
        })?;
        report.in_doubt.retain(|(txid, _)| stash.contains_key(txid));
        report.max_txid = max_txid;
        // Every shard's log is needed to decide the in-doubt transactions: report, and
        // wait for the decisions.
        if scanned.send(report).is_err() {
            return Err(Error::Closed);
        }
        let resolution = resolution.recv().map_err(|_| Error::Closed)?;
        // The log must continue right after the checkpoint: a gap means records are lost.
        if let Some(first) = first_after.filter(|&f| checkpoint_lsn > 0 && f != checkpoint_lsn + 1) {
            return Err(Error::Corruption {
                file: wal_dir.clone(),
                offset: 0,
                what: format!(
                    "the log resumes at LSN {first} after a checkpoint at LSN {checkpoint_lsn}: records are missing"
                ),
            });
        }
        let recovery_us = started.elapsed().as_micros() as u64;
        ShardCounters::add(&shared.counters.recovered_records, recovered.records);
        ShardCounters::add(&shared.counters.recovery_us, recovery_us);
        let direct = options.direct_io;
        let (segment, end, tail, block) = match recovered.tail_segment {
            Some((seq, path, segment_bytes, block)) => {
                let file = open_tail(fs.as_ref(), &path, direct)?;
                let block = block.max(io::fs::direct_io_block_bytes(file.as_ref()));
                (PreparedSegment { seq, file, path, segment_bytes }, recovered.end, recovered.tail, block)
            }
            None => {
                // A new log: probe the block size on a scratch file, then create segment 1.
                let probe_path = wal_dir.join("probe.tmp");
                let probe = io::fs::open_data_file(fs.as_ref(), &probe_path, true, direct)?;
                let block = io::fs::direct_io_block_bytes(probe.as_ref());
                drop(probe);
                let _ = fs.remove_file(&probe_path);
                let segment_bytes = options.wal_segment_bytes.next_multiple_of(block as u64);
                let segment = prepare_segment(&fs, &wal_dir, id, 1, segment_bytes, block, direct)?;
                (segment, block as u64, Vec::new(), block)
            }
        };
        if end % block as u64 != tail.len() as u64 % block as u64 {
            return Err(Error::Incompatible(format!(
                "log of shard {id} was written with a block size that does not divide this device's ({block})"
            )));
        }
        let io = options.io_backend.make_io(options.ring_entries, shared.eventfd.as_raw_fd())?;
        let durable_sync = match options.wal_sync {
            WalSync::Dsync => SyncMode::Dsync,
            WalSync::Fdatasync => SyncMode::Fdatasync,
        };
        let config = WriterConfig {
            shard: id,
            wal_dir,
            block_bytes: block,
            direct,
            segment_bytes: options.wal_segment_bytes.next_multiple_of(block as u64),
            batch_bytes_max: options.group_commit_bytes_max,
            batches_max: options.group_commit_batches_max,
            records_unsynced: options.durability == Durability::None,
            fs,
        };
        // If every record up to the checkpoint left the log (its segments were deleted),
        // the log continues after the checkpoint.
        let next_lsn = recovered.next_lsn.max(checkpoint_lsn + 1);
        let wal = WalWriter::new(config, WriterStart { segment, end, tail, next_lsn, sealed: recovered.sealed });
        shared.body_bytes_max.store(wal.body_bytes_max(), Ordering::Relaxed);
        let persisted_lsn = wal.durable_lsn();
        Ok(Shard {
            shared,
            options,
            rx,
            io,
            wal,
            durable_sync,
            flush_waiters: Vec::new(),
            shutdown: None,
            persisted_lsn,
            pages,
            applied_lsn,
            read_jobs: slab::Slab::new(),
            reads_in_flight: 0,
            stash: Vec::new(),
            checkpoint_waiters: Vec::new(),
            last_checkpoint: Instant::now(),
            appended_at_checkpoint: 0,
            tx: txn::TxState::new(Arc::clone(&resolution.registry), prepares),
        })
        .and_then(|mut shard| {
            shard.resolve_in_doubt(stash, &resolution)?;
            shard.publish_page_stats();
            Ok(shard)
        })
    }

    /// Applies the in-doubt transactions decided committed and logs a marker for each
    /// decision, so this shard's log decides them alone from now on. Nothing later in
    /// the log touched their keys (they were locked), so applying them last is right.
    fn resolve_in_doubt(&mut self, stash: HashMap<u64, Stashed>, resolution: &Resolution) -> Result<()> {
        let mut stash: Vec<(u64, Stashed)> = stash.into_iter().collect();
        stash.sort_by_key(|(txid, _)| *txid);
        let mut decided = false;
        for (txid, s) in stash {
            let commit = resolution.decisions.get(&txid).copied().unwrap_or(false);
            let mut marker = Vec::with_capacity(16);
            crate::format::record::encode_tx_header(&mut marker, txid, &[]);
            let kind = if commit { KIND_COMMIT } else { KIND_ABORT };
            let lsn = self.wal.append(kind, &marker, crc32fast::hash(&marker), 0, None).map_err(|(e, _)| e)?;
            if commit {
                let ops = decode_ops(&s.body, s.op_count).expect("decoded once by replay");
                let mut writer = IndexWriter { index: &self.shared.index };
                apply_ops(&mut writer, &mut self.pages, &s.body, &ops, lsn);
                self.tx.note_commit_marker(lsn, txid);
            }
            self.applied_lsn = lsn;
            ShardCounters::add(&self.shared.tx_in_doubt[usize::from(!commit)], 1);
            decided = true;
        }
        if decided {
            self.flush_during_open()?;
        }
        Ok(())
    }

    /// Makes everything appended so far durable before open returns, so that a failure
    /// writing the decisions of in-doubt transactions fails the open (with the I/O
    /// error) instead of leaving an opened database whose shard refuses writes.
    fn flush_during_open(&mut self) -> Result<()> {
        let target = self.wal.last_lsn();
        let mut completions = Vec::new();
        while self.wal.durable_lsn() < target {
            if let Some(cause) = self.wal.poisoned() {
                return Err(Error::io(
                    "write the decisions of in-doubt transactions to the log",
                    None,
                    std::io::Error::other(cause.to_string()),
                ));
            }
            if !self.wal.busy() && !self.wal.submit(self.io.as_mut(), self.durable_sync) {
                self.wal.sync_written(self.io.as_mut());
            }
            self.wait(true, None, &mut completions);
            for completion in completions.drain(..) {
                self.on_completion(completion);
            }
        }
        Ok(())
    }

    fn publish_page_stats(&self) {
        let stats = PageStats {
            counters: self.pages.counters,
            pages: self.pages.pages.len() as u64,
            heap_pages: self.pages.heap_pages() as u64,
            file_bytes: self.pages.file_bytes(),
            live_bytes: self.pages.live_bytes(),
            footprint_bytes: self.pages.footprint_bytes(),
        };
        *self.shared.page_stats.lock().unwrap_or_else(|p| p.into_inner()) = stats;
    }

    fn run(mut self) {
        let mut completions = Vec::with_capacity(64);
        loop {
            let took = self.take_requests();
            self.submit();
            if self.shutdown.is_some() && !self.wal.busy() && self.nothing_pending() {
                break;
            }
            let idle = took == 0 && self.wal.can_accept();
            let woken = if idle { self.sleep(&mut completions) } else { self.poll(&mut completions) };
            if woken {
                ShardCounters::add(&self.shared.counters.wakeups, 1);
            }
            for completion in completions.drain(..) {
                self.on_completion(completion);
            }
            self.answer_flush_waiters();
            self.tx_progress();
            self.maybe_checkpoint();
            self.shared.counters.segments.store(self.wal.segments_created, Ordering::Relaxed);
            self.shared.counters.wal_segments.store(self.wal.segments_on_disk() as u64, Ordering::Relaxed);
            // A rotation into a segment of the configured size may raise the limit.
            self.shared.body_bytes_max.store(self.wal.body_bytes_max(), Ordering::Relaxed);
        }
        self.wal.finish();
        self.tx.fail_waiting(&Error::Closed);
        if let Some(Some(reply)) = self.shutdown.take() {
            let result = match self.wal.poisoned() {
                Some(cause) => Err(Error::Poisoned { shard: self.shared.id, cause: cause.to_string() }),
                None => Ok(()),
            };
            let _ = reply.send(result);
        }
    }

    fn on_completion(&mut self, completion: crate::io::Completion) {
        if completion.token & READ_TOKEN_BIT != 0 {
            self.on_read(completion);
        } else if completion.token & CHECKPOINT_TOKEN_BIT != 0 {
            // Left over from a checkpoint that failed: its buffer is simply dropped.
        } else {
            let outcome = self.wal.complete(completion);
            self.on_outcome(outcome);
        }
    }

    fn checkpoint_due(&self) -> bool {
        let appended = self.wal.appended_bytes - self.appended_at_checkpoint;
        appended >= self.options.checkpoint_wal_bytes
            || (self.pages.dirty_keys() > 0 && self.last_checkpoint.elapsed() >= self.options.checkpoint_interval)
    }

    /// Writes a checkpoint when one is due or asked for and the log allows it: nothing in
    /// flight, and everything applied also durable in the log (so the log never misses
    /// a record the pages hold).
    fn maybe_checkpoint(&mut self) {
        if let Some(cause) = self.wal.poisoned() {
            let err = Error::Poisoned { shard: self.shared.id, cause: cause.to_string() };
            for reply in self.checkpoint_waiters.drain(..) {
                let _ = reply.send(Err(err.clone()));
            }
            return;
        }
        if self.shutdown.is_some() || (self.checkpoint_waiters.is_empty() && !self.checkpoint_due()) {
            return;
        }
        // Everything applied must be durable in the log, or a crash could leave pages
        // holding a write the log lost, with older durable versions already dropped.
        // Under Sync that always holds (a write is applied only once durable), so the
        // checkpoint may run while a flush is in flight: its completion waits in `stash`.
        // Otherwise `take_requests` pauses new writes and `submit` flushes until it holds.
        if self.wal.durable_lsn() < self.applied_lsn {
            return;
        }
        self.appended_at_checkpoint = self.wal.appended_bytes;
        self.last_checkpoint = Instant::now();
        // The checkpoint holds everything applied, but claims to cover the log only up to
        // just before the oldest prepare this shard has not decided: that record must be
        // replayed after a crash (its writes are not in the index yet). Replaying records
        // the pages already hold is harmless: each key ends at its last write.
        let lsn = self.applied_lsn.min(self.tx.oldest_undecided_prepare().map_or(u64::MAX, |p| p - 1));
        let mut writer = IndexWriter { index: &self.shared.index };
        let result = self.pages.checkpoint(self.io.as_mut(), &mut writer, &self.shared.cache, lsn, &mut self.stash);
        // Segments holding the prepare of a transaction some participant of which may lack
        // its durable commit marker stay, so recovery can still find every prepare.
        let keep = self.tx.retained_limit();
        let result = result.and_then(|()| self.wal.drop_segments_through(lsn.min(keep)).map(|_| ()));
        crate::failpoint::hit("checkpoint-extents-freed");
        if let Err(e) = &result {
            self.pages.abandon_checkpoint();
            // The pages may now disagree with the index: refuse writes until reopened,
            // which recovers from the last durable checkpoint and the log.
            let outcome = self.wal.poison(format!("checkpoint failed: {e}"));
            self.on_outcome(outcome);
        }
        for reply in self.checkpoint_waiters.drain(..) {
            let _ = reply.send(result.clone());
        }
        // Completions that arrived during the checkpoint (a log flush among them, which
        // the log still counts as in flight) are handled now, before the loop may sleep
        // waiting for them.
        for completion in std::mem::take(&mut self.stash) {
            self.on_completion(completion);
        }
        self.answer_flush_waiters();
        self.publish_page_stats();
    }

    fn handle_read(&mut self, pages: Vec<u64>, chunks: Vec<(u64, u32)>, reply: oneshot::Sender<Result<ReadReply>>) {
        if pages.len() + chunks.len() >= 1 << READ_INDEX_BITS {
            let _ = reply.send(Err(Error::InvalidArgument(format!(
                "a read of {} pages and chunks; at most {} at once",
                pages.len() + chunks.len(),
                (1 << READ_INDEX_BITS) - 1
            ))));
            return;
        }
        let job = self.read_jobs.vacant_key() as u64;
        let fd = self.pages.data.fd();
        let mut answer = ReadReply { pages: vec![None; pages.len()], chunks: vec![Bytes::new(); chunks.len()] };
        let mut remaining = 0;
        for (i, &page_id) in pages.iter().enumerate() {
            if let Some(image) = self.shared.cache.peek(page_id) {
                answer.pages[i] = Some(image);
            } else if let Some(meta) = self.pages.pages.get(&page_id) {
                let len = meta.extent.len as usize;
                let align = self.pages.mem_align;
                let buf = AlignedBuf::zeroed(len.next_multiple_of(align), align);
                let token = READ_TOKEN_BIT | (job << READ_INDEX_BITS) | i as u64;
                self.io.read(fd, meta.extent.offset, buf, len, token);
                remaining += 1;
                self.reads_in_flight += 1;
            }
        }
        for (j, &(offset, len)) in chunks.iter().enumerate() {
            if self.pages.live_chunks.get(&offset).is_none_or(|&(live_len, _)| live_len != len) {
                // Not a chunk the index references now (the caller's entry is stale and
                // the extent may hold anything): an empty answer fails the caller's
                // check, and the caller looks the key up again.
                continue;
            }
            let (live_len, crc32) = self.pages.live_chunks[&offset];
            if let Some(value) =
                self.shared.cache.peek_chunk(&crate::format::page::ChunkRef { offset, len: live_len, crc32 })
            {
                answer.chunks[j] = value;
                continue;
            }
            let bytes = crate::format::page::chunk_bytes(len as usize, self.pages.unit);
            let align = self.pages.mem_align;
            let buf = AlignedBuf::zeroed(bytes.next_multiple_of(align), align);
            let token = READ_TOKEN_BIT | READ_CHUNK_BIT | (job << READ_INDEX_BITS) | j as u64;
            self.io.read(fd, offset, buf, bytes, token);
            remaining += 1;
            self.reads_in_flight += 1;
        }
        let job = ReadJob { reply, answer, page_ids: pages, chunks, remaining, error: None };
        if remaining == 0 {
            let _ = job.reply.send(Ok(job.answer));
        } else {
            self.read_jobs.insert(job);
        }
    }

    fn on_read(&mut self, c: crate::io::Completion) {
        let token = c.token & !READ_TOKEN_BIT;
        let is_chunk = token & READ_CHUNK_BIT != 0;
        let token = token & !READ_CHUNK_BIT;
        let job_key = (token >> READ_INDEX_BITS) as usize;
        let i = (token & ((1 << READ_INDEX_BITS) - 1)) as usize;
        let data_path = self.pages.data_path.clone();
        self.reads_in_flight -= 1;
        let Some(job) = self.read_jobs.get_mut(job_key) else { return };
        job.remaining -= 1;
        match c.result {
            Err(e) => {
                job.error.get_or_insert(Error::io("read", data_path, e));
            }
            Ok(len) => {
                let buf = c.buf.expect("a read returns its buffer");
                if is_chunk {
                    let raw = Bytes::from_owner(buf).slice(..len);
                    ShardCounters::add(&self.shared.counters.chunks_read, 1);
                    let (offset, len) = job.chunks[i];
                    // Cache only the chunk the index references now, checked: a superseded
                    // one may have been freed and its extent reused while this read waited.
                    if let Some(&(live_len, crc32)) = self.pages.live_chunks.get(&offset) {
                        let chunk = crate::format::page::ChunkRef { offset, len: live_len, crc32 };
                        if live_len == len && crate::format::page::decode_chunk(&raw, &chunk).is_ok() {
                            self.shared.cache.insert_chunk(&chunk, raw.clone());
                        }
                    }
                    job.answer.chunks[i] = raw;
                } else {
                    let page_id = job.page_ids[i];
                    match self.pages.pages.get(&page_id) {
                        // The page was replaced by a checkpoint while the read was in flight.
                        None => job.answer.pages[i] = None,
                        Some(meta) => {
                            let offset = meta.extent.offset;
                            let image = Bytes::from_owner(buf).slice(..meta.capacity as usize);
                            match crate::format::page::decode_page(&image) {
                                Ok(page) if page.page_id == page_id => {
                                    self.pages.counters.pages_read += 1;
                                    ShardCounters::add(&self.shared.counters.pages_read, 1);
                                    self.shared.cache.insert(page_id, image.clone());
                                    job.answer.pages[i] = Some(image);
                                }
                                Ok(page) => {
                                    job.error.get_or_insert(Error::Corruption {
                                        file: data_path,
                                        offset,
                                        what: format!("page {} found where page {page_id} belongs", page.page_id),
                                    });
                                }
                                Err(what) => {
                                    job.error.get_or_insert(Error::Corruption { file: data_path, offset, what });
                                }
                            }
                        }
                    }
                }
            }
        }
        let job = &self.read_jobs[job_key];
        if job.remaining == 0 {
            let job = self.read_jobs.remove(job_key);
            let _ = job.reply.send(match job.error {
                Some(e) => Err(e),
                None => Ok(job.answer),
            });
        }
    }

    fn nothing_pending(&self) -> bool {
        self.wal.poisoned().is_some() || (self.wal.pending().0 == 0 && self.wal.durable_lsn() >= self.wal.last_lsn())
    }

    /// Takes up to `DRAIN_MAX` requests while the log accepts records.
    /// Whether new requests wait until a due checkpoint has run (under Periodic and None,
    /// so that what is applied stops outrunning what is durable; see `maybe_checkpoint`).
    fn paused_for_checkpoint(&self) -> bool {
        self.options.durability != Durability::Sync
            && self.wal.poisoned().is_none()
            && self.wal.durable_lsn() < self.applied_lsn
            && (!self.checkpoint_waiters.is_empty() || self.checkpoint_due())
    }

    fn take_requests(&mut self) -> usize {
        let mut took = 0;
        while took < DRAIN_MAX && self.shutdown.is_none() && self.wal.can_accept() && !self.paused_for_checkpoint() {
            match self.rx.try_recv() {
                Ok(request) => {
                    took += 1;
                    self.handle(request);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.shutdown = Some(None);
                    break;
                }
            }
        }
        ShardCounters::add(&self.shared.counters.requests, took as u64);
        took
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Write(w) => {
                self.handle_plain_write(w);
                if let Some(outcome) = self.wal.take_failure() {
                    self.on_outcome(outcome);
                }
            }
            Request::Flush(reply) => {
                if let Some(cause) = self.wal.poisoned() {
                    let _ = reply.send(Err(Error::Poisoned { shard: self.shared.id, cause: cause.to_string() }));
                } else {
                    self.flush_waiters.push((self.wal.last_lsn(), reply));
                }
            }
            Request::Shutdown(reply) => self.shutdown = Some(Some(reply)),
            Request::Read { pages, chunks, reply } => self.handle_read(pages, chunks, reply),
            Request::Checkpoint(reply) => self.checkpoint_waiters.push(reply),
            Request::TxCommitOne(r) => {
                self.handle_tx_commit_one(r);
                if let Some(outcome) = self.wal.take_failure() {
                    self.on_outcome(outcome);
                }
            }
            Request::TxPrepare(r) => {
                self.handle_tx_prepare(r);
                if let Some(outcome) = self.wal.take_failure() {
                    self.on_outcome(outcome);
                }
            }
            Request::TxDecide { txid, commit, durable, reply } => {
                self.handle_tx_decide(txid, commit, durable, reply);
                if let Some(outcome) = self.wal.take_failure() {
                    self.on_outcome(outcome);
                }
            }
            Request::TxLock { txid, keys, ranges, reply } => self.handle_tx_lock(txid, keys, ranges, reply),
            Request::TxRelease { txid } => self.handle_tx_release(txid),
        }
    }

    fn submit(&mut self) {
        if self.wal.busy() || self.wal.poisoned().is_some() {
            return;
        }
        let checkpoint_waits = !self.checkpoint_waiters.is_empty() || self.checkpoint_due();
        let want_durable =
            !self.flush_waiters.is_empty() || self.shutdown.is_some() || checkpoint_waits || self.tx.wants_durable();
        let (records, bytes, oldest) = self.wal.pending();
        let started = match self.options.durability {
            Durability::Sync => self.wal.submit(self.io.as_mut(), self.durable_sync),
            Durability::None if !want_durable => self.wal.submit(self.io.as_mut(), SyncMode::None),
            Durability::Periodic { bytes: bytes_max, items, interval } if !want_durable => {
                let due = records >= items
                    || bytes as u64 >= bytes_max
                    || oldest.is_some_and(|t| t.elapsed() >= interval)
                    || self.wal.has_full_batch();
                due && self.wal.submit(self.io.as_mut(), self.durable_sync)
            }
            // Earlier writes of `None` went out unsynced, possibly through the page cache
            // (direct_io off): only a whole-file fdatasync covers them, not RWF_DSYNC,
            // which syncs just the range it writes.
            Durability::None => self.wal.submit(self.io.as_mut(), SyncMode::Fdatasync),
            _ => self.wal.submit(self.io.as_mut(), self.durable_sync),
        };
        if !started && want_durable {
            self.wal.sync_written(self.io.as_mut());
        }
    }

    /// Sleeps in the kernel until a completion, a client's wake-up or a timer.
    fn sleep(&mut self, completions: &mut Vec<crate::io::Completion>) -> bool {
        // With nothing in flight, a client that was just answered often sends its next
        // request within microseconds: spin briefly for it instead of paying a wake-up
        // through the eventfd (bounded by Options::spin_us; 0 disables).
        if self.shutdown.is_none() && !self.wal.busy() && self.reads_in_flight == 0 && !self.options.spin.is_zero() {
            let deadline = Instant::now() + self.options.spin;
            let mut turns = 0u32;
            while self.rx.is_empty() && Instant::now() < deadline {
                turns += 1;
                if turns % 64 == 0 {
                    // A client runnable on this CPU (often the very one about to send the
                    // next request) must not wait for the spin to end.
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            if !self.rx.is_empty() {
                return false;
            }
        }
        // Under Sync, a request that arrives while a flush is in flight cannot be answered
        // before the next flush anyway: don't ask clients to wake the shard for it. The
        // completion wakes the shard, which then takes everything queued in one go.
        // Likewise while many reads are in flight: a completion is never far off, and the
        // shard takes every queued request when it comes.
        let announce = !(self.options.durability == Durability::Sync && self.wal.busy())
            && self.reads_in_flight < READS_IN_FLIGHT_NO_WAKE;
        if announce {
            self.shared.sleeping.store(true, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            // After a shutdown request the queue is no longer read: don't let what waits
            // in it keep the thread from sleeping.
            if self.shutdown.is_none() && !self.paused_for_checkpoint() && !self.rx.is_empty() {
                self.shared.sleeping.store(false, Ordering::Relaxed);
                return self.poll(completions);
            }
        }
        let timeout = match self.options.durability {
            Durability::Periodic { interval, .. } => self
                .wal
                .pending()
                .2
                .map(|t| interval.saturating_sub(t.elapsed()).max(std::time::Duration::from_micros(50))),
            _ => None,
        };
        let woken = self.wait(true, timeout, completions);
        self.shared.sleeping.store(false, Ordering::Relaxed);
        woken
    }

    fn poll(&mut self, completions: &mut Vec<crate::io::Completion>) -> bool {
        // With writes in flight and the log full, block for a completion; else just reap.
        let block = !self.wal.can_accept() && self.wal.busy();
        self.wait(block, None, completions)
    }

    fn wait(
        &mut self,
        block: bool,
        timeout: Option<std::time::Duration>,
        completions: &mut Vec<crate::io::Completion>,
    ) -> bool {
        match self.io.wait(block, timeout, completions) {
            Ok(woken) => woken,
            Err(e) => {
                // The ring itself failed: nothing more can be written safely.
                let outcome = self.wal_fail(format!("I/O wait failed: {e}"));
                self.on_outcome(outcome);
                false
            }
        }
    }

    fn wal_fail(&mut self, cause: String) -> Outcome<Pending> {
        self.wal.poison(cause)
    }

    fn on_outcome(&mut self, outcome: Outcome<Pending>) {
        let shared = Arc::clone(&self.shared);
        let c = &shared.counters;
        match outcome {
            Outcome::Flushed(f) => {
                ShardCounters::add(&c.wal_flushes, 1);
                ShardCounters::add(&c.wal_records, f.records);
                ShardCounters::add(&c.wal_bytes, f.bytes as u64);
                if f.durable {
                    ShardCounters::add(&c.fsyncs, 1);
                }
                if !f.items.is_empty() {
                    let shared = Arc::clone(&self.shared);
                    let mut latency = shared.write_latency.lock().unwrap_or_else(|p| p.into_inner());
                    for p in f.items {
                        let ops = decode_ops(&p.body, p.op_count).expect("ops encoded by ringdb decode");
                        debug_assert!((f.first_lsn..=f.last_lsn).contains(&p.lsn));
                        let mut writer = IndexWriter { index: &shared.index };
                        apply_ops(&mut writer, &mut self.pages, &p.body, &ops, p.lsn);
                        // A commit marker applied out of order may be ahead already.
                        self.applied_lsn = self.applied_lsn.max(p.lsn);
                        self.note_applied(p.lsn, &p.body, p.op_count);
                        count_write(&shared.counters, &mut latency, p.kind, p.user_bytes, p.started);
                        let _ = p.reply.send(Ok(()));
                    }
                }
                if f.durable {
                    debug_assert!(f.first_lsn > self.persisted_lsn, "a durable batch reported twice");
                    self.persisted(f.last_lsn);
                }
            }
            Outcome::Discarded => {}
            Outcome::Synced => {
                ShardCounters::add(&c.fsyncs, 1);
                // The sync made everything written durable, not only one batch.
                self.persisted(self.wal.durable_lsn());
            }
            Outcome::Failed { cause, items } => {
                let err = Error::Poisoned { shard: self.shared.id, cause };
                for p in items {
                    let _ = p.reply.send(Err(err.clone()));
                }
                for (_, reply) in self.flush_waiters.drain(..) {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// Reports LSNs up to `last_lsn` durable: everything since the last report, since a
    /// whole-file sync (`Durability::None`) also covers earlier unsynced batches.
    fn persisted(&mut self, last_lsn: u64) {
        if last_lsn <= self.persisted_lsn {
            return;
        }
        let first_lsn = self.persisted_lsn + 1;
        self.persisted_lsn = last_lsn;
        if let Some(callback) = &self.options.on_persist {
            callback(PersistEvent { shard: self.shared.id, first_lsn, last_lsn, timestamp: SystemTime::now() });
        }
    }

    fn answer_flush_waiters(&mut self) {
        let durable = self.wal.durable_lsn();
        let mut i = 0;
        while i < self.flush_waiters.len() {
            if self.flush_waiters[i].0 <= durable {
                let (_, reply) = self.flush_waiters.swap_remove(i);
                let _ = reply.send(Ok(()));
            } else {
                i += 1;
            }
        }
    }
}

fn count_write(c: &ShardCounters, latency: &mut [Histogram<u64>; 3], kind: OpKind, user_bytes: u64, started: Instant) {
    let (counter, slot) = match kind {
        OpKind::Put => (&c.puts, 0),
        OpKind::Delete => (&c.deletes, 1),
        _ => (&c.batches, 2),
    };
    ShardCounters::add(counter, 1);
    ShardCounters::add(&c.write_bytes, user_bytes);
    record(&mut latency[slot], started.elapsed());
}

/// Applies decoded ops of the record with `lsn` to the index. Keys and values are
/// slices of `body`.
fn apply_ops(index: &mut IndexWriter<'_>, pages: &mut PageStore, body: &Bytes, ops: &[Op<'_>], lsn: u64) {
    for op in ops {
        let key = body.slice(op.key_offset..op.key_offset + op.key.len());
        match op.kind {
            OP_PUT => {
                let value = body.slice(op.value_offset..op.value_offset + op.value.len());
                let old = index.insert(key.clone(), Stored::Inline(value), lsn);
                pages.note_write(&key, old.as_ref());
            }
            OP_DELETE => {
                if let Some(old) = index.remove(&key) {
                    pages.note_write(&key, Some(&old));
                }
            }
            other => unreachable!("op kind {other} passed decode_ops"),
        }
    }
}
