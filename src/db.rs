//! [`Db`]: the key-value API, callable from any thread, sync or async.

use std::future::{Future, Ready, ready};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use std::collections::HashMap;
use std::ops::{Bound, RangeBounds};

use bytes::Bytes;

use crate::batch::{WriteBatch, check_key, check_user_key, check_value};
use crate::engine::registry::TxRegistry;
use crate::engine::scan::Scan;
use crate::error::{Error, Result};
use crate::format::record::{OP_DELETE, OP_HEADER_BYTES, OP_PUT, encode_op, op_bytes};
use crate::io::fs::{LockGuard, NodeKind};
use crate::options::Options;
use crate::shard::{self, Request, Resolution, ShardHandle, WriteRequest};
use crate::stats::{OpKind, Stats, Striped, new_histogram};
use crate::value::{Ack, Value};

/// An open database. Cheap to clone; every clone is a handle on the same shards.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let db = ringdb::Db::open(dir.path(), ringdb::Options::default())?;
/// db.put(b"hello", b"world")?;
/// assert_eq!(db.get(b"hello")?.as_deref(), Some(&b"world"[..]));
/// db.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    shards: Vec<ShardHandle>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
    get_latency: Striped,
    client_spin: std::time::Duration,
    /// The directory's lock, released by `shutdown` (not by the last handle's drop), so a
    /// closed database can be reopened at once even while clones of its handle live.
    lock: Mutex<Option<LockGuard>>,
    /// Committed transactions whose commit markers are not all durable, and txids.
    registry: Arc<TxRegistry>,
    tx_keys_max: usize,
    tx_bytes_max: usize,
    /// Typed tables opened in this `Db`, by name: every `Table` handle of one table shares
    /// its lock stripes and record count (see `table.rs`).
    tables: Mutex<HashMap<String, Arc<crate::table::TableShared>>>,
}

impl Db {
    /// Opens (creating if needed) the database in `dir`: takes its lock, reads or writes
    /// its manifest, starts one thread per shard and replays each shard's log.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        let dir = dir.as_ref();
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
        let mut shards = Vec::with_capacity(shard_count);
        let mut threads = Vec::with_capacity(shard_count);
        let mut failure = None;
        let mut starting = Vec::with_capacity(shard_count);
        for id in 0..shard_count {
            match shard::spawn(id, shard_count, crate::storage::dir::shard_dir(dir, id), &options, &cpus) {
                Ok(s) => starting.push(s),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // Every shard reads its log at once. In-doubt transactions (prepared, undecided)
        // are decided from all the shards' logs together; then every shard finishes.
        let mut reports = Vec::with_capacity(starting.len());
        if failure.is_none() {
            for s in &mut starting {
                match s.scan_report() {
                    Some(report) => reports.push(report),
                    None => break,
                }
            }
        }
        let registry = Arc::new(TxRegistry::new(reports.iter().map(|r| r.max_txid).max().unwrap_or(0)));
        if failure.is_none() && reports.len() == shard_count {
            let decisions = crate::engine::registry::decide(&reports);
            // A committed in-doubt transaction gets a commit marker on each shard that
            // lacked one; until those are durable, every prepare of it must stay.
            for (&txid, &commit) in &decisions {
                if commit {
                    let markers = reports.iter().filter(|r| r.in_doubt.iter().any(|(t, _)| *t == txid)).count();
                    registry.register(txid, markers);
                }
            }
            let resolution = Arc::new(Resolution { decisions, registry: Arc::clone(&registry) });
            for s in &mut starting {
                s.resolve(Arc::clone(&resolution));
            }
        }
        // Wait for all, keeping the first failure.
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
                        failure = Some(e);
                    }
                }
            }
        }
        let inner = Inner {
            dir: dir.to_path_buf(),
            shards,
            threads: Mutex::new(threads),
            closed: AtomicBool::new(false),
            get_latency: Striped::new(cpus.len().max(1) * 2),
            client_spin: options.client_spin,
            lock: Mutex::new(Some(lock)),
            registry,
            tx_keys_max: options.tx_keys_max,
            tx_bytes_max: options.tx_bytes_max,
            tables: Mutex::new(HashMap::new()),
        };
        if let Some(e) = failure {
            // Stop the shards that did start; `inner`'s drop shuts them down.
            drop(inner);
            return Err(e);
        }
        Ok(Db { inner: Arc::new(inner) })
    }

    /// The database's directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// The shard that owns `key`.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        crate::engine::router::shard_of(key, self.inner.shards.len())
    }

    pub(crate) fn shards(&self) -> &[ShardHandle] {
        &self.inner.shards
    }

    pub(crate) fn registry(&self) -> &TxRegistry {
        &self.inner.registry
    }

    pub(crate) fn tx_keys_max(&self) -> usize {
        self.inner.tx_keys_max
    }

    pub(crate) fn tx_bytes_max(&self) -> usize {
        self.inner.tx_bytes_max
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) { Err(Error::Closed) } else { Ok(()) }
    }

    fn send_write(
        &self,
        shard: usize,
        body: Bytes,
        op_count: u32,
        kind: OpKind,
        user_bytes: u64,
    ) -> Result<oneshot::Receiver<Result<()>>> {
        let (reply, rx) = oneshot::channel();
        let request = WriteRequest {
            body_crc: crc32fast::hash(&body),
            body,
            op_count,
            kind,
            user_bytes,
            started: Instant::now(),
            reply,
        };
        self.inner.shards[shard].send(Request::Write(request))?;
        Ok(rx)
    }

    fn single(&self, kind: u8, key: &[u8], value: &[u8], op: OpKind) -> Ack {
        match check_user_key(key) {
            Ok(()) => self.single_any(kind, key, value, op),
            Err(e) => Ack::failed(e),
        }
    }

    /// A put or delete of any key, the typed tables' reserved ones included.
    pub(crate) fn single_any(&self, kind: u8, key: &[u8], value: &[u8], op: OpKind) -> Ack {
        let checked = check_key(key).and_then(|()| check_value(value)).and_then(|()| self.check_open());
        if let Err(e) = checked {
            return Ack::failed(e);
        }
        // Leading slack so that the value starts 8-aligned in the buffer (allocations are
        // at least 8-aligned): the index keeps the value as a slice of this buffer until
        // the next checkpoint, and a typed table reads it in place when it is aligned.
        let pad = (8 - (OP_HEADER_BYTES + key.len()) % 8) % 8;
        let mut body = Vec::with_capacity(pad + op_bytes(key.len(), value.len()));
        body.resize(pad, 0);
        encode_op(&mut body, kind, key, value);
        let body = Bytes::from(body).slice(pad..);
        match self.send_write(self.shard_of(key), body, 1, op, (key.len() + value.len()) as u64) {
            Ok(rx) => Ack::new(vec![rx], self.inner.client_spin),
            Err(e) => Ack::failed(e),
        }
    }

    /// Sets `key` to `value`. Returns when the write is acknowledged under the
    /// database's [`crate::Durability`] (by default: on stable storage).
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_async(key, value).wait()
    }

    /// [`Db::put`], returning an [`Ack`] to await (or [`Ack::wait`] on) instead of blocking.
    /// The key and value are copied before this returns.
    pub fn put_async(&self, key: &[u8], value: &[u8]) -> Ack {
        self.single(OP_PUT, key, value, OpKind::Put)
    }

    /// Removes `key` (removing an absent key is not an error).
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        self.delete_async(key).wait()
    }

    /// [`Db::delete`], as an [`Ack`].
    pub fn delete_async(&self, key: &[u8]) -> Ack {
        self.single(OP_DELETE, key, &[], OpKind::Delete)
    }

    /// Applies every op of `batch` in order, all or nothing, also across shards and
    /// crashes (see [`WriteBatch`]).
    pub fn write_batch(&self, batch: WriteBatch) -> Result<()> {
        self.write_batch_async(batch).wait()
    }

    /// [`Db::write_batch`], as an [`Ack`].
    pub fn write_batch_async(&self, batch: WriteBatch) -> Ack {
        // The batch's own methods refused reserved keys as they were added.
        self.write_batch_any(batch)
    }

    /// [`Db::write_batch_async`] of a batch that may hold the typed tables' reserved keys.
    pub(crate) fn write_batch_any(&self, batch: WriteBatch) -> Ack {
        if let Err(e) = self.check_open() {
            return Ack::failed(e);
        }
        if batch.is_empty() {
            return Ack::done();
        }
        let n = self.inner.shards.len();
        let first = crate::engine::router::shard_of(&batch.data[batch.ops[0].1..batch.ops[0].1 + batch.ops[0].2], n);
        let spans = batch
            .ops
            .iter()
            .any(|&(_, ks, kl, _)| crate::engine::router::shard_of(&batch.data[ks..ks + kl], n) != first);
        if spans {
            // Several shards: through the transaction commit protocol, so the batch is
            // atomic across shards and crashes. It never fails on a conflict: after one
            // optimistic round it waits for the keys, shard by shard. It completes before
            // this returns: while it retries, its keys are free on some shards, and a write
            // the caller issues after this call must not land before the batch there
            // (writes of one caller keep their order, as on one shard).
            return match crate::transaction::Plan::for_batch(self.clone(), &batch) {
                Ok(plan) => match crate::transaction::block_on(plan.run(true)) {
                    Ok(_) => Ack::done(),
                    Err(e) => Ack::failed(e),
                },
                Err(e) => Ack::failed(e),
            };
        }
        let mut bodies: Vec<(Vec<u8>, u32, u64)> = vec![(Vec::new(), 0, 0); n];
        for &(start, key_start, key_len, end) in &batch.ops {
            let shard = crate::engine::router::shard_of(&batch.data[key_start..key_start + key_len], n);
            let (body, count, bytes) = &mut bodies[shard];
            body.extend_from_slice(&batch.data[start..end]);
            *count += 1;
            *bytes += (end - start - crate::format::record::OP_HEADER_BYTES) as u64;
        }
        // Refuse the whole batch before sending any part: an input error must write nothing.
        for (shard, (body, count, _)) in bodies.iter().enumerate() {
            let max = self.inner.shards[shard].body_bytes_max();
            if *count > 0 && body.len() > max {
                return Ack::failed(Error::BatchTooLarge { bytes: body.len(), max });
            }
        }
        let mut receivers = Vec::new();
        for (shard, (body, count, bytes)) in bodies.into_iter().enumerate() {
            if count == 0 {
                continue;
            }
            match self.send_write(shard, Bytes::from(body), count, OpKind::Batch, bytes) {
                Ok(rx) => receivers.push(rx),
                Err(e) => return Ack::failed(e),
            }
        }
        Ack::new(receivers, self.inner.client_spin)
    }

    /// The value of `key`, or `None`. Reads never wait for the shard thread: they see
    /// every acknowledged write.
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        check_user_key(key)?;
        self.check_open()?;
        let started = Instant::now();
        let value = crate::engine::read::get(&self.inner.shards[self.shard_of(key)], key)?;
        self.inner.get_latency.record(started.elapsed());
        Ok(value.map(Value))
    }

    /// The entries with keys in `range`, in key order, across all shards. Memory stays
    /// bounded whatever the range's size (see [`Scan`]).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let db = ringdb::Db::open(dir.path(), ringdb::Options::default())?;
    /// db.put(b"a", b"1")?;
    /// db.put(b"b", b"2")?;
    /// db.put(b"c", b"3")?;
    /// let keys: Vec<Vec<u8>> = db.scan(&b"a"[..]..&b"c"[..]).map(|e| e.map(|(k, _)| k.to_vec())).collect::<Result<_, _>>()?;
    /// assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn scan<'a>(&self, range: impl RangeBounds<&'a [u8]>) -> Scan {
        if let Err(e) = self.check_open() {
            return Scan::failed(e);
        }
        Scan::range(self.inner.shards.clone(), range).hiding_reserved()
    }

    /// The entries whose keys start with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Scan {
        if let Err(e) = self.check_open() {
            return Scan::failed(e);
        }
        let start = Bound::Included(Bytes::copy_from_slice(prefix));
        Scan::new(self.inner.shards.clone(), start, crate::engine::scan::prefix_end(prefix)).hiding_reserved()
    }

    /// Opens the typed table `name` of records `T`, creating it (with no capacity bound)
    /// if it does not exist. Opening an existing table checks that `T`'s layout is the
    /// one the table was created with: another layout is [`Error::SchemaMismatch`].
    /// See [`Table`](crate::Table).
    pub fn table<T: crate::Record>(&self, name: &str) -> Result<crate::Table<T>> {
        self.check_open()?;
        crate::table::open(self, name)
    }

    pub(crate) fn shard_handles(&self) -> &[ShardHandle] {
        &self.inner.shards
    }

    pub(crate) fn tables(&self) -> &Mutex<HashMap<String, Arc<crate::table::TableShared>>> {
        &self.inner.tables
    }

    /// [`Db::get`] as a future (it completes at once: reads do not wait on the shard).
    pub fn get_async(&self, key: &[u8]) -> Ready<Result<Option<Value>>> {
        ready(self.get(key))
    }

    /// The values of several keys, in the order given.
    ///
    /// Keys whose pages are not cached are read together: one request per shard, all
    /// shards at once, so the device sees them all in flight.
    pub fn multi_get<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Value>>> {
        self.check_open()?;
        let started = Instant::now();
        let mut routed = Vec::with_capacity(keys.len());
        for k in keys {
            let k = k.as_ref();
            check_user_key(k)?;
            routed.push((self.shard_of(k), k));
        }
        let values = crate::engine::read::get_many(&self.inner.shards, &routed)?;
        if !keys.is_empty() {
            let each = started.elapsed() / keys.len() as u32;
            for _ in 0..keys.len() {
                self.inner.get_latency.record(each);
            }
        }
        Ok(values.into_iter().map(|v| v.map(Value)).collect())
    }

    /// [`Db::multi_get`] as a future (it completes at once).
    pub fn multi_get_async<K: AsRef<[u8]>>(&self, keys: &[K]) -> Ready<Result<Vec<Option<Value>>>> {
        ready(self.multi_get(keys))
    }

    /// Returns when every write acknowledged before the call is on stable storage (a
    /// no-op wait under `Durability::Sync`; a log flush under `Periodic` and `None`).
    pub fn flush(&self) -> Result<()> {
        self.flush_async().wait()
    }

    /// [`Db::flush`], as an [`Ack`].
    pub fn flush_async(&self) -> Ack {
        if let Err(e) = self.check_open() {
            return Ack::failed(e);
        }
        let mut receivers = Vec::with_capacity(self.inner.shards.len());
        for shard in &self.inner.shards {
            let (reply, rx) = oneshot::channel();
            if let Err(e) = shard.send(Request::Flush(reply)) {
                return Ack::failed(e);
            }
            receivers.push(rx);
        }
        Ack::new(receivers, self.inner.client_spin)
    }

    /// Writes a checkpoint on every shard now: values written since the last one go to
    /// pages, and log segments the checkpoint covers are deleted. Returns when every
    /// shard's checkpoint is durable. Shards also checkpoint on their own (see
    /// `Options::checkpoint_wal_bytes` and `Options::checkpoint_interval`).
    pub fn checkpoint(&self) -> Result<()> {
        self.checkpoint_async().wait()
    }

    /// [`Db::checkpoint`], as an [`Ack`].
    pub fn checkpoint_async(&self) -> Ack {
        if let Err(e) = self.check_open() {
            return Ack::failed(e);
        }
        let mut receivers = Vec::with_capacity(self.inner.shards.len());
        for shard in &self.inner.shards {
            let (reply, rx) = oneshot::channel();
            if let Err(e) = shard.send(Request::Checkpoint(reply)) {
                return Ack::failed(e);
            }
            receivers.push(rx);
        }
        Ack::new(receivers, std::time::Duration::ZERO)
    }

    /// Makes everything durable and stops the shards. Other clones of this handle get
    /// [`Error::Closed`] afterwards. Dropping the last handle closes too, ignoring errors.
    pub fn close(self) -> Result<()> {
        self.inner.shutdown()
    }

    /// [`Db::close`] as a future: the shutdown runs on a helper thread, so awaiting it
    /// never blocks an executor thread.
    pub fn close_async(self) -> impl Future<Output = Result<()>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let inner = Arc::clone(&self.inner);
        let spawned = std::thread::Builder::new().name("ringdb-close".into()).spawn(move || {
            // `shutdown` releases the directory's lock before it returns.
            let _ = reply.send(inner.shutdown());
        });
        async move {
            spawned.map_err(|e| Error::io("spawn close thread", None, e))?;
            rx.await.unwrap_or(Err(Error::Closed))
        }
    }

    /// Counters and latency histograms since open.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            shards: self.inner.shards.len(),
            puts: 0,
            gets: 0,
            deletes: 0,
            batches: 0,
            write_bytes: 0,
            wal_batches: 0,
            wal_records: 0,
            wal_bytes: 0,
            fsyncs: 0,
            wakeups: 0,
            requests: 0,
            wal_segments_created: 0,
            recovered_records: 0,
            recovery_us: 0,
            keys: 0,
            index_bytes: 0,
            dirty_bytes: 0,
            cache_hits: 0,
            cache_misses: 0,
            cache_bytes: 0,
            pages: 0,
            pages_written: 0,
            pages_read: 0,
            chunks_read: 0,
            chunks_written: 0,
            bytes_padded: 0,
            heap_pages: 0,
            checkpoints: 0,
            checkpoint_us_last: 0,
            checkpoint_us_max: 0,
            checkpoint_bytes_last: 0,
            checkpoint_bytes_total: 0,
            data_file_bytes: 0,
            live_bytes: 0,
            page_bytes: 0,
            wal_segments: 0,
            tx_commits: 0,
            tx_conflicts: 0,
            tx_in_doubt_committed: 0,
            tx_in_doubt_aborted: 0,
            latency_ns: Vec::new(),
        };
        let mut writes = [new_histogram(), new_histogram(), new_histogram()];
        for shard in &self.inner.shards {
            let s = shard;
            let c = s.counters();
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            stats.puts += load(&c.puts);
            stats.deletes += load(&c.deletes);
            stats.batches += load(&c.batches);
            stats.write_bytes += load(&c.write_bytes);
            stats.wal_batches += load(&c.wal_flushes);
            stats.wal_records += load(&c.wal_records);
            stats.wal_bytes += load(&c.wal_bytes);
            stats.fsyncs += load(&c.fsyncs);
            stats.wakeups += load(&c.wakeups);
            stats.requests += load(&c.requests);
            stats.wal_segments_created += load(&c.segments);
            stats.recovered_records += load(&c.recovered_records);
            stats.recovery_us = stats.recovery_us.max(load(&c.recovery_us));
            stats.keys += s.index().len() as u64;
            stats.index_bytes += s.index().memory_bytes();
            stats.dirty_bytes += s.index().inline_bytes();
            stats.cache_hits += load(&s.cache().hits);
            stats.cache_misses += load(&s.cache().misses);
            stats.cache_bytes += s.cache().bytes();
            let p = s.page_stats();
            stats.pages += p.pages;
            stats.pages_written += p.counters.pages_written;
            stats.pages_read += load(&c.pages_read);
            stats.chunks_read += load(&c.chunks_read);
            stats.chunks_written += p.counters.chunks_written;
            stats.bytes_padded += p.counters.bytes_padded;
            stats.heap_pages += p.heap_pages;
            stats.checkpoints += p.counters.checkpoints;
            stats.checkpoint_us_last = stats.checkpoint_us_last.max(p.counters.checkpoint_us_last);
            stats.checkpoint_us_max = stats.checkpoint_us_max.max(p.counters.checkpoint_us_max);
            stats.checkpoint_bytes_last += p.counters.checkpoint_bytes_last;
            stats.checkpoint_bytes_total += p.counters.checkpoint_bytes_total;
            stats.data_file_bytes += p.file_bytes;
            stats.live_bytes += p.live_bytes;
            stats.page_bytes += p.footprint_bytes;
            stats.wal_segments += load(&c.wal_segments);
            stats.tx_commits += s.tx_commits();
            stats.tx_conflicts += s.tx_conflicts();
            stats.tx_in_doubt_committed += s.tx_in_doubt().0;
            stats.tx_in_doubt_aborted += s.tx_in_doubt().1;
            let latency = s.write_latency();
            for (total, h) in writes.iter_mut().zip(latency.iter()) {
                total.add(h).expect("same bounds");
            }
        }
        let gets = self.inner.get_latency.merged();
        stats.gets = gets.len();
        let [put, delete, batch] = writes;
        stats.latency_ns =
            vec![(OpKind::Put, put), (OpKind::Get, gets), (OpKind::Delete, delete), (OpKind::Batch, batch)];
        stats
    }
}

impl Inner {
    fn shutdown(&self) -> Result<()> {
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
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
        // Every shard thread has stopped and closed its files: the directory is free.
        drop(self.lock.lock().unwrap_or_else(|p| p.into_inner()).take());
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Acquire) {
            let _ = self.shutdown();
        }
    }
}
