//! A client's handle on a shard, what the shard shares with clients, and the start of
//! a shard's thread.
//!
//! Clients see a shard only through [`ShardHandle`]: its queue, a wake-up, and read
//! access to the index, the page cache and the figures the shard publishes. Only the
//! shard thread writes any of them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crossbeam_channel::Sender;
use hdrhistogram::Histogram;

use super::registry::{ScanReport, TxRegistry};
use super::{Request, Shard};
use crate::error::{Error, Result};
use crate::io::eventfd::WakeFd;
use crate::options::Options;
use crate::stats::{ShardCounters, new_histogram};
use crate::storage::index::IndexWriter;
use crate::storage::page::cache::PageCache;
use crate::storage::page::disk::DiskReader;
use crate::storage::page::reader::{ShardData, View, Views};
use crate::storage::page::store::PageCounters;

/// State a shard shares with clients. Only the shard module reaches its fields;
/// clients go through [`ShardHandle`]'s methods.
pub(crate) struct ShardShared {
    pub(super) id: usize,
    /// What readers read: the memtable (keys written since the last checkpoint began),
    /// the frozen one a running checkpoint merges, and the newest durable tree.
    pub(super) views: Views,
    /// Memory the memtable may take before a checkpoint is due.
    pub(super) memtable_bytes_max: u64,
    /// Set by the shard just before it sleeps in the kernel; see [`ShardShared::wake`].
    pub(super) sleeping: AtomicBool,
    pub(super) wake_fd: WakeFd,
    pub(super) counters: ShardCounters,
    /// Largest record body the shard's log accepts now (see `WalWriter::body_bytes_max`),
    /// so clients can refuse a batch whole before any part of it is sent.
    pub(super) body_bytes_max: AtomicUsize,
    /// Write latencies (put, delete, batch), recorded by the shard thread.
    pub(super) write_latency: Mutex<[Histogram<u64>; 3]>,
    /// The page cache, read by callers.
    pub(super) cache: PageCache,
    /// Callers' reads of uncached pages and chunks; set once the store is open.
    pub(super) disk: OnceLock<DiskReader>,
    /// Page-store figures, refreshed by the shard thread.
    pub(super) page_stats: Mutex<PageStats>,
    /// Transaction parts committed on this shard.
    pub(super) tx_commits: AtomicU64,
    /// Transaction parts refused here with a conflict.
    pub(super) tx_conflicts: AtomicU64,
    /// In-doubt transactions decided at open: (committed, aborted).
    pub(super) tx_in_doubt: [AtomicU64; 2],
}

/// Page-store figures of one shard.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PageStats {
    pub counters: PageCounters,
    /// Nodes in the tree.
    pub pages: u64,
    pub file_bytes: u64,
    pub live_bytes: u64,
}

impl ShardShared {
    fn new(id: usize, cache_bytes: u64, memtable_bytes_max: u64) -> Result<ShardShared> {
        Ok(ShardShared {
            id,
            views: Views::from_pointee(View::default()),
            memtable_bytes_max,
            sleeping: AtomicBool::new(false),
            wake_fd: WakeFd::new()?,
            counters: ShardCounters::default(),
            body_bytes_max: AtomicUsize::new(usize::MAX),
            write_latency: Mutex::new([new_histogram(), new_histogram(), new_histogram()]),
            cache: PageCache::new(cache_bytes),
            disk: OnceLock::new(),
            page_stats: Mutex::new(PageStats::default()),
            tx_commits: AtomicU64::new(0),
            tx_conflicts: AtomicU64::new(0),
            tx_in_doubt: Default::default(),
        })
    }

    /// The shard's data for reads: the memtable, then the tree. The store is open once
    /// a handle exists; before that there is nothing to read.
    pub(super) fn data(&self) -> Result<ShardData<'_>> {
        let disk = self.disk.get().ok_or(Error::Closed)?;
        Ok(ShardData {
            views: &self.views,
            cache: &self.cache,
            disk,
            nodes_read: &self.counters.pages_read,
            chunks_read: &self.counters.chunks_read,
        })
    }

    /// Wakes the shard thread if it sleeps.
    pub(super) fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            self.wake_fd.wake();
        }
    }

    /// The index's writing handle. Only the shard thread, which alone changes the index,
    /// calls this.
    pub(super) fn index_writer(&self) -> IndexWriter {
        // The index has one writer: a second thread writing would race the shard's
        // inserts and break the key order's agreement with the map.
        debug_assert!(
            std::thread::current().name().and_then(|n| n.strip_prefix("ringdb-shard-")).and_then(|n| n.parse().ok())
                == Some(self.id),
            "only shard {}'s own thread writes its index",
            self.id
        );
        IndexWriter::new(Arc::clone(&self.views.load().active))
    }

    /// The view readers read now.
    pub(super) fn view(&self) -> arc_swap::Guard<Arc<View>> {
        self.views.load()
    }

    /// Replaces the view readers read (the shard thread alone does).
    pub(super) fn publish_view(&self, view: View) {
        self.views.store(Arc::new(view));
    }

    /// The write latency histograms, locked.
    pub(super) fn write_latency(&self) -> MutexGuard<'_, [Histogram<u64>; 3]> {
        self.write_latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A client's handle on a shard.
#[derive(Clone)]
pub(crate) struct ShardHandle {
    tx: Sender<Request>,
    shared: Arc<ShardShared>,
}

impl ShardHandle {
    /// Queues `request` and wakes the shard if it sleeps.
    pub fn send(&self, request: Request) -> Result<()> {
        self.tx.send(request).map_err(|_| Error::Closed)?;
        self.shared.wake();
        Ok(())
    }

    /// The shard's view (memtables and tree root), for reads from any thread.
    pub fn view(&self) -> arc_swap::Guard<Arc<View>> {
        self.shared.view()
    }

    /// The shard's page cache.
    pub fn cache(&self) -> &PageCache {
        &self.shared.cache
    }

    /// The shard's counters.
    pub fn counters(&self) -> &ShardCounters {
        &self.shared.counters
    }

    /// The shard's data for reads from any thread: the memtable, then the tree.
    pub fn data(&self) -> Result<ShardData<'_>> {
        self.shared.data()
    }

    /// Largest record body the shard's log accepts now.
    pub fn body_bytes_max(&self) -> usize {
        self.shared.body_bytes_max.load(Ordering::Relaxed)
    }

    /// The page-store figures last published by the shard.
    pub fn page_stats(&self) -> PageStats {
        *self.shared.page_stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The write latency histograms (put, delete, batch), locked.
    pub fn write_latency(&self) -> MutexGuard<'_, [Histogram<u64>; 3]> {
        self.shared.write_latency()
    }

    /// Transaction parts committed on this shard.
    pub fn tx_commits(&self) -> u64 {
        self.shared.tx_commits.load(Ordering::Relaxed)
    }

    /// Transaction parts refused on this shard with a conflict.
    pub fn tx_conflicts(&self) -> u64 {
        self.shared.tx_conflicts.load(Ordering::Relaxed)
    }

    /// In-doubt transactions this shard decided at open: (committed, aborted).
    pub fn tx_in_doubt(&self) -> (u64, u64) {
        (self.shared.tx_in_doubt[0].load(Ordering::Relaxed), self.shared.tx_in_doubt[1].load(Ordering::Relaxed))
    }
}

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

/// What a shard thread needs to open: given to [`Shard::open`] on that thread.
pub(super) struct OpenArgs {
    pub shared: Arc<ShardShared>,
    pub shard_dir: PathBuf,
    pub options: Options,
    pub rx: crossbeam_channel::Receiver<Request>,
    pub scanned: oneshot::Sender<ScanReport>,
    pub resolution: oneshot::Receiver<Arc<Resolution>>,
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
    assert!(id < shard_count, "a shard's id is below the shard count");
    // One budget, `Options::cache_bytes`, split evenly among the shards; each shard's
    // share goes three quarters to its page cache and a quarter to its memtable (a
    // checkpoint is due once the memtable fills it).
    let share = options.cache_bytes / shard_count.max(1) as u64;
    let shared = Arc::new(ShardShared::new(id, (share / 4 * 3).max(64 << 10), (share / 4).max(1 << 20))?);
    let (tx, rx) = crossbeam_channel::bounded(options.queue_depth);
    let (ready_tx, ready_rx) = oneshot::channel();
    let (scanned, scanned_rx) = oneshot::channel();
    let (resolution_tx, resolution) = oneshot::channel();
    let args = OpenArgs { shared: Arc::clone(&shared), shard_dir, options: options.clone(), rx, scanned, resolution };
    let cpu = if options.pin_threads && !cpus.is_empty() { Some(cpus[id % cpus.len()]) } else { None };
    let thread = std::thread::Builder::new()
        .name(format!("ringdb-shard-{id}"))
        .spawn(move || {
            if let Some(cpu) = cpu {
                pin_to_cpu(cpu);
            }
            match Shard::open(args) {
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
        thread,
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
