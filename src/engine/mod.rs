//! The engine core: what `Db`, `Transaction` and `Table` share, below the API
//! and above the shards.
//!
//! [`Engine`] holds the shard handles, the transaction registry, the limits and
//! the closed flag, and the typed tables opened so far. The API types are thin
//! handles on one `Arc<Engine>`; the engine never reaches up to them, and they
//! never reach past it: the shard handles are private to the engine, and the API
//! reads, scans, writes, locks and commits through its methods.
//!
//! - `router`: which shard owns a key.
//! - `ops`: one shard's encoded ops, and a batch split by shard (the one split, used
//!   by plain batches and by transaction commits).
//! - `write`: a write sent to its shard.
//! - `commit`: the transaction commit protocol (one shard, or prepare and decide).
//! - `read`: turning an index entry into its value on the caller's thread.
//! - `scan`: ordered scans merged across shards.
//! - `table`: the typed tables' shared state and their keys.
//! - `stats`: the shards' counters gathered into one `Stats`.

#![forbid(unsafe_code)]

pub mod commit;
pub mod ops;
pub mod read;
pub mod router;
pub mod scan;
pub mod stats;
pub mod table;
pub mod write;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::io::fs::{LockGuard, NodeKind};
use crate::options::Options;
use crate::shard::registry::{self, TxRegistry};
use crate::shard::{self, Request, Resolution, ShardHandle, Starting};
use crate::stats::Striped;

/// Limits the engine enforces on callers' transactions, and how clients wait.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Keys a transaction may read, write and scan, together.
    pub tx_keys_max: usize,
    /// Key and value bytes a transaction may write.
    pub tx_bytes_max: usize,
    /// How long a client polls for an acknowledgement before it sleeps.
    pub client_spin: Duration,
}

/// See the module docs.
pub(crate) struct Engine {
    dir: PathBuf,
    shards: Vec<ShardHandle>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
    /// Latencies of reads, which run on client threads.
    get_latency: Striped,
    limits: Limits,
    /// The directory's lock, released by `shutdown` (not by the last handle's drop), so a
    /// closed database can be reopened at once even while clones of its handle live.
    lock: Mutex<Option<LockGuard>>,
    /// Committed transactions whose commit markers are not all durable, and txids.
    registry: Arc<TxRegistry>,
    /// Typed tables opened in this database, by name: every `Table` handle of one table
    /// shares its lock stripes and record count.
    tables: Mutex<HashMap<String, Arc<table::TableShared>>>,
}

impl Engine {
    /// Opens (creating if needed) the database in `dir`: takes its lock, reads or writes
    /// its manifest, starts one thread per shard and replays each shard's log.
    pub fn open(dir: &Path, options: &Options) -> Result<Engine> {
        options.validate()?;
        if dir.as_os_str().is_empty() {
            return Err(Error::InvalidArgument("the database path is empty".into()));
        }
        let fs = options.fs();
        let fs = fs.as_ref();
        if fs.kind(dir).map_err(|e| Error::io("stat", dir.to_path_buf(), e))? == Some(NodeKind::File) {
            return Err(Error::InvalidArgument(format!("{} exists and is not a directory", dir.display())));
        }
        crate::storage::dir::create_dir_all(fs, dir)?;
        let lock = crate::storage::dir::lock(fs, dir)?;
        let cpus = shard::allowed_cpus();
        let shard_count = crate::storage::dir::open_manifest(fs, dir, options.shards, cpus.len())?;
        let mut failure = None;
        let mut starting = Vec::with_capacity(shard_count);
        for id in 0..shard_count {
            match shard::spawn(id, shard_count, crate::storage::dir::shard_dir(dir, id), options, &cpus) {
                Ok(s) => starting.push(s),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let registry = resolve_in_doubt(&mut starting, shard_count, failure.is_none());
        let (shards, threads) = wait_ready(starting, &mut failure);
        let engine = Engine {
            dir: dir.to_path_buf(),
            shards,
            threads: Mutex::new(threads),
            closed: AtomicBool::new(false),
            get_latency: Striped::new(cpus.len().max(1) * 2),
            limits: Limits {
                tx_keys_max: options.tx_keys_max,
                tx_bytes_max: options.tx_bytes_max,
                client_spin: options.client_spin,
            },
            lock: Mutex::new(Some(lock)),
            registry,
            tables: Mutex::new(HashMap::new()),
        };
        if let Some(e) = failure {
            // Stop the shards that did start: the engine's drop shuts them down.
            return Err(e);
        }
        assert_eq!(engine.shards.len(), shard_count, "an engine opens with every shard of its manifest");
        Ok(engine)
    }

    /// The database's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The shards, in id order. Private to the engine: the API reaches a shard only
    /// through the engine's methods.
    fn shards(&self) -> &[ShardHandle] {
        &self.shards
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard that owns `key`.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        router::shard_of(key, self.shards.len())
    }

    /// The handle of the shard that owns `key` (private to the engine, like `shards`).
    fn shard_for(&self, key: &[u8]) -> &ShardHandle {
        &self.shards[self.shard_of(key)]
    }

    pub fn registry(&self) -> &TxRegistry {
        &self.registry
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Records the latency of one read of a caller's.
    pub fn record_get(&self, elapsed: Duration) {
        self.get_latency.record(elapsed);
    }

    /// `Err(Closed)` once the database is closed.
    pub fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) { Err(Error::Closed) } else { Ok(()) }
    }

    /// Makes everything durable, stops the shards and releases the directory. A second
    /// call answers `Closed`.
    pub fn shutdown(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        let mut receivers = Vec::new();
        for shard in &self.shards {
            let (reply, rx) = oneshot::channel();
            if shard.send(Request::Shutdown(reply)).is_ok() {
                receivers.push(rx);
            }
        }
        let mut first_error = None;
        for rx in receivers {
            if let Ok(Err(e)) = rx.recv() {
                first_error.get_or_insert(e);
            }
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for thread in threads {
            let _ = thread.join();
        }
        // Every shard thread has stopped and closed its files: the directory is free.
        drop(self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Acquire) {
            let _ = self.shutdown();
        }
    }
}

/// Every shard reads its log at once; in-doubt transactions (prepared, undecided) are
/// decided from all the shards' logs together, and each shard is given the decisions so
/// it can finish opening. Returns the registry the shards share.
fn resolve_in_doubt(starting: &mut [Starting], shard_count: usize, all_started: bool) -> Arc<TxRegistry> {
    let mut reports = Vec::with_capacity(starting.len());
    if all_started {
        for s in starting.iter_mut() {
            match s.scan_report() {
                Some(report) => reports.push(report),
                None => break,
            }
        }
    }
    let registry = Arc::new(TxRegistry::new(reports.iter().map(|r| r.max_txid).max().unwrap_or(0)));
    if !all_started || reports.len() != shard_count {
        return registry;
    }
    let decisions = registry::decide(&reports);
    // A committed in-doubt transaction gets a commit marker on each shard that lacked
    // one; until those are durable, every prepare of it must stay.
    for (&txid, &commit) in &decisions {
        if commit {
            let markers = reports.iter().filter(|r| r.in_doubt.iter().any(|(t, _)| *t == txid)).count();
            registry.register(txid, markers);
        }
    }
    let resolution = Arc::new(Resolution { decisions, registry: Arc::clone(&registry) });
    for s in starting.iter_mut() {
        s.resolve(Arc::clone(&resolution));
    }
    registry
}

/// Waits for every starting shard, keeping the first failure in `failure`.
fn wait_ready(starting: Vec<Starting>, failure: &mut Option<Error>) -> (Vec<ShardHandle>, Vec<JoinHandle<()>>) {
    let mut shards = Vec::with_capacity(starting.len());
    let mut threads = Vec::with_capacity(starting.len());
    for s in starting {
        match s.wait() {
            Ok((handle, thread)) => {
                shards.push(handle);
                threads.push(thread);
            }
            // A shard that gave up because another failed says `Closed`: report the
            // other's error.
            Err(e) => {
                if failure.as_ref().is_none_or(|f| matches!(f, Error::Closed)) {
                    *failure = Some(e);
                }
            }
        }
    }
    (shards, threads)
}

/// Runs a future to completion on this thread (no executor needed: the futures here are
/// completed by shard threads through oneshot channels, which wake this thread).
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
