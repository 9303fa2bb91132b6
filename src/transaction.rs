//! [`Transaction`]: serializable multi-key transactions across shards.
//!
//! Optimistic: reads go straight to the shards' indexes (no hop to a shard
//! thread) and record the version they saw, or that the key was absent; a scan
//! records the `(key, version)` list of each shard's part of its range. Writes
//! stay in the transaction until commit. At commit the client thread groups
//! everything by shard:
//! - one shard involved: that shard validates and appends the writes as one
//!   record in one step (`Request::TxCommitOne`);
//! - several: each participant validates, locks and appends a prepare record
//!   carrying its writes and the list of writing participants, and answers once
//!   it is durable; the transaction is committed when all have answered yes
//!   (the rule recovery applies too), and the client then sends the commit to
//!   each, which applies the writes and logs a marker. A participant that
//!   answers no makes the client abort the others.
//!
//! `docs/ARCHITECTURE.md` ("Transactions") gives the protocol and why it is
//! serializable and crash-atomic.

use std::collections::BTreeMap;
use std::future::{Future, Ready, ready};
use std::ops::{Bound, RangeBounds};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::batch::{check_key, check_user_key, check_value};
use crate::db::Db;
use crate::engine::scan::{SCAN_CHUNK, bound_ref};
use crate::error::{Error, Result};
use crate::format::record::{OP_DELETE, OP_HEADER_BYTES, OP_PUT, encode_op, encode_tx_header};
use crate::shard::{KeyRange, Request, ScanRead, ShardHandle, TxRequest};
use crate::storage::index::range_chunk;
use crate::value::Value;

/// Attempts [`Db::transact`] makes before it gives up with the last [`Error::Conflict`].
pub const TRANSACT_ATTEMPTS_MAX: usize = 64;
/// Optimistic attempts [`Db::transact`] makes before it runs the closure in locking mode
/// (the keys the last attempt only read are locked, shared, before the closure runs).
pub const TRANSACT_OPTIMISTIC_ATTEMPTS: usize = 2;
/// First backoff of [`Db::transact`] after a conflict; it doubles per attempt (with
/// jitter) up to [`TRANSACT_BACKOFF_MAX`].
pub const TRANSACT_BACKOFF_FIRST: Duration = Duration::from_micros(20);
/// Longest backoff of [`Db::transact`] between two attempts.
pub const TRANSACT_BACKOFF_MAX: Duration = Duration::from_millis(5);

/// What a committed transaction was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// The transaction's id (unique among the ids in the database's logs).
    pub txid: u64,
    /// Shards that took part (validated reads or wrote).
    pub shards: usize,
    /// Keys written (puts and deletes).
    pub writes: usize,
}

struct Read {
    version: Option<u64>,
    value: Option<Value>,
}

struct ScanSet {
    range: KeyRange,
    /// Per shard, the `(key, version)` list its part of the range held.
    seen: Vec<Vec<(Bytes, u64)>>,
}

/// A transaction: reads see its own writes; [`Transaction::commit`] makes all of its
/// writes durable at once, or none if it fails. Dropping it uncommitted rolls it back.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let db = ringdb::Db::open(dir.path(), ringdb::Options::default())?;
/// db.put(b"alice", b"10")?;
/// let mut tx = db.transaction();
/// let alice: u64 = std::str::from_utf8(&tx.get(b"alice")?.unwrap()).unwrap().parse().unwrap();
/// tx.put(b"alice", (alice - 3).to_string().as_bytes())?;
/// tx.put(b"bob", b"3")?;
/// assert_eq!(tx.get(b"bob")?.as_deref(), Some(&b"3"[..]));   // its own write
/// assert_eq!(db.get(b"bob")?, None);                          // not visible outside yet
/// tx.commit()?;
/// assert_eq!(db.get(b"alice")?.as_deref(), Some(&b"7"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Transaction {
    db: Db,
    txid: u64,
    reads: BTreeMap<Bytes, Read>,
    scans: Vec<ScanSet>,
    writes: BTreeMap<Bytes, Option<Bytes>>,
    write_bytes: usize,
    scanned_keys: usize,
    /// Shards where this transaction holds shared locks (locking mode).
    locked: Vec<usize>,
    /// Typed-table records this transaction writes: the table, whether the record existed
    /// before the transaction (a read it validates), and whether it will exist after; the
    /// tables' record counts follow once it commits.
    table_writes: BTreeMap<Bytes, (Arc<crate::table::TableShared>, bool, bool)>,
    done: bool,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("txid", &self.txid)
            .field("reads", &self.reads.len())
            .field("scans", &self.scans.len())
            .field("writes", &self.writes.len())
            .finish()
    }
}

fn owned(bound: Bound<&&[u8]>) -> Bound<Bytes> {
    match bound {
        Bound::Included(k) => Bound::Included(Bytes::copy_from_slice(k)),
        Bound::Excluded(k) => Bound::Excluded(Bytes::copy_from_slice(k)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl Transaction {
    pub(crate) fn new(db: Db) -> Transaction {
        let txid = db.registry().next_txid();
        Transaction {
            db,
            txid,
            reads: BTreeMap::new(),
            scans: Vec::new(),
            writes: BTreeMap::new(),
            write_bytes: 0,
            scanned_keys: 0,
            locked: Vec::new(),
            table_writes: BTreeMap::new(),
            done: false,
        }
    }

    /// The transaction's id.
    pub fn txid(&self) -> u64 {
        self.txid
    }

    fn check_keys(&self, more: usize) -> Result<()> {
        let keys = self.reads.len() + self.writes.len() + self.scanned_keys + more;
        let max = self.db.tx_keys_max();
        if keys > max {
            return Err(Error::TransactionTooLarge { what: "keys", len: keys, max });
        }
        Ok(())
    }

    fn check_usable(&self) -> Result<()> {
        if self.done {
            return Err(Error::InvalidArgument("the transaction was already committed or rolled back".into()));
        }
        self.db.check_open()
    }

    /// The value of `key` as this transaction sees it: its own write if it made one, else
    /// the database's (the version seen is checked at commit). Reading a key again gives
    /// the same answer.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Value>> {
        check_user_key(key)?;
        self.get_any(key)
    }

    /// [`Transaction::get`] of any key, a typed table's reserved ones included.
    pub(crate) fn get_any(&mut self, key: &[u8]) -> Result<Option<Value>> {
        check_key(key)?;
        self.check_usable()?;
        if let Some(w) = self.writes.get(key) {
            return Ok(w.clone().map(Value));
        }
        if let Some(r) = self.reads.get(key) {
            return Ok(r.value.clone());
        }
        self.check_keys(1)?;
        let shard = &self.db.shards()[self.db.shard_of(key)];
        let (version, value) = read_versioned(shard, key)?;
        self.reads.insert(Bytes::copy_from_slice(key), Read { version, value: value.clone() });
        Ok(value)
    }

    /// [`Transaction::get`] as a future (it completes at once: reads do not wait on a
    /// shard thread).
    pub fn get_async(&mut self, key: &[u8]) -> Ready<Result<Option<Value>>> {
        ready(self.get(key))
    }

    /// Notes that this transaction writes typed-table record `key` of `table`, which
    /// `existed` before (as read by the transaction) unless written by it already, and
    /// will be `present` after.
    pub(crate) fn note_table_write(
        &mut self,
        key: &[u8],
        table: &Arc<crate::table::TableShared>,
        existed: bool,
        present: bool,
    ) {
        self.table_writes
            .entry(Bytes::copy_from_slice(key))
            .and_modify(|w| w.2 = present)
            .or_insert_with(|| (Arc::clone(table), existed, present));
    }

    /// Whether this transaction already wrote typed-table record `key`.
    pub(crate) fn wrote_table_record(&self, key: &[u8]) -> bool {
        self.table_writes.contains_key(key)
    }

    /// Writes any key, a typed table's reserved ones included.
    pub(crate) fn write_any(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        self.write_checked(key, value)
    }

    fn write(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        check_user_key(key)?;
        self.write_checked(key, value)
    }

    fn write_checked(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        check_key(key)?;
        if let Some(v) = value {
            check_value(v)?;
        }
        self.check_usable()?;
        let size = key.len() + value.map_or(0, <[u8]>::len);
        let old = self.writes.get(key).map(|w| key.len() + w.as_ref().map_or(0, Bytes::len));
        if old.is_none() {
            self.check_keys(1)?;
        }
        let bytes = self.write_bytes - old.unwrap_or(0) + size;
        let max = self.db.tx_bytes_max();
        if bytes > max {
            return Err(Error::TransactionTooLarge { what: "bytes", len: bytes, max });
        }
        self.write_bytes = bytes;
        self.writes.insert(Bytes::copy_from_slice(key), value.map(Bytes::copy_from_slice));
        Ok(())
    }

    /// Sets `key` to `value` when the transaction commits.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.write(key, Some(value))
    }

    /// Removes `key` when the transaction commits.
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.write(key, None)
    }

    /// The entries with keys in `range`, in key order, with this transaction's own
    /// writes merged in. The whole range is read now (every key it holds counts against
    /// `Options::tx_keys_max`), and at commit each shard checks that its part of the
    /// range still holds the same keys at the same versions, so a key inserted into the
    /// range meanwhile (a phantom) is a conflict.
    pub fn scan<'a>(&mut self, range: impl RangeBounds<&'a [u8]>) -> Result<Vec<(Value, Value)>> {
        self.check_usable()?;
        let range = KeyRange { start: owned(range.start_bound()), end: owned(range.end_bound()) };
        let shards = self.db.shards();
        let mut seen = vec![Vec::new(); shards.len()];
        let mut entries: BTreeMap<Bytes, Bytes> = BTreeMap::new();
        if !range.is_void() {
            for (s, shard) in shards.iter().enumerate() {
                let mut start = range.start.clone();
                loop {
                    let mut chunk = Vec::with_capacity(SCAN_CHUNK);
                    range_chunk(shard.index(), bound_ref(&start), bound_ref(&range.end), SCAN_CHUNK, &mut chunk);
                    let exhausted = chunk.len() < SCAN_CHUNK;
                    start = match chunk.last() {
                        Some((last, _)) => Bound::Excluded(last.clone()),
                        None => Bound::Unbounded,
                    };
                    self.scanned_keys += chunk.len();
                    self.check_keys(0)?;
                    seen[s].extend(chunk.iter().map(|(k, v)| (k.clone(), v.version)));
                    for (k, v) in crate::engine::read::resolve_many(shard, chunk)? {
                        // A key deleted since its entry was taken changed version: the
                        // commit will fail, so leaving it out is as good as anything.
                        if let Some(v) = v {
                            entries.insert(k, v);
                        }
                    }
                    if exhausted {
                        break;
                    }
                }
            }
            let bounds = (range.start.clone(), range.end.clone());
            for (k, w) in self.writes.range::<Bytes, _>(bounds) {
                match w {
                    Some(v) => entries.insert(k.clone(), v.clone()),
                    None => entries.remove(k),
                };
            }
        }
        self.scans.push(ScanSet { range, seen });
        // Typed tables' records are validated like any key in the range, but not shown.
        Ok(entries
            .into_iter()
            .filter(|(k, _)| !crate::format::table::is_reserved(k))
            .map(|(k, v)| (Value(k), Value(v)))
            .collect())
    }

    /// Takes shared locks on `keys` on each shard, in shard order, waiting until any
    /// writer holding one is done. While held, no one else can write them, so reads of
    /// them stay valid until commit. Used by [`Db::transact`] after optimistic failures.
    pub(crate) fn lock_shared(&mut self, keys: &[Bytes]) -> Result<()> {
        let shards = self.db.shards();
        let mut by_shard: BTreeMap<usize, Vec<Bytes>> = BTreeMap::new();
        for k in keys {
            by_shard.entry(self.db.shard_of(k)).or_default().push(k.clone());
        }
        for (s, keys) in by_shard {
            let (reply, rx) = oneshot::channel();
            shards[s].send(Request::TxLock { txid: self.txid, keys, ranges: Vec::new(), reply })?;
            self.locked.push(s);
            rx.recv().map_err(|_| Error::Closed)??;
        }
        Ok(())
    }

    /// Keys this transaction read and did not write.
    pub(crate) fn pure_read_keys(&self) -> Vec<Bytes> {
        self.reads.keys().filter(|k| !self.writes.contains_key(*k)).cloned().collect()
    }

    /// Discards the transaction's writes and releases anything it holds. Dropping an
    /// uncommitted transaction does the same.
    pub fn rollback(mut self) {
        self.release();
    }

    fn release(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let shards = self.db.shards();
        for &s in &self.locked {
            let _ = shards[s].send(Request::TxRelease { txid: self.txid });
        }
    }

    /// Commits: validates every read (and scan) and writes everything, on every shard
    /// involved, or nothing. Returns when the writes are visible to every reader and
    /// durable: per the database's `Durability` for a transaction on one shard; always,
    /// for one across shards (its prepares must be durable before any part applies). Fails with [`Error::Conflict`] when
    /// something it read changed or is locked (nothing was written: run it again), or
    /// with another error (then, if the error came from I/O, the outcome is unknown
    /// until the database is reopened, as for a failed `put`).
    pub fn commit(self) -> Result<CommitInfo> {
        block_on(self.commit_async())
    }

    /// [`Transaction::commit`] as a future that needs no particular executor. Dropping
    /// it before it completes aborts the transaction if it was not decided yet.
    pub fn commit_async(mut self) -> impl Future<Output = Result<CommitInfo>> + Send + 'static {
        let table_writes = std::mem::take(&mut self.table_writes);
        let plan = self.plan();
        self.done = true;
        async move {
            let info = plan?.run(false).await?;
            for (_, (table, existed, present)) in table_writes {
                table.note_written(existed, present);
            }
            Ok(info)
        }
    }

    fn plan(&mut self) -> Result<Plan> {
        self.check_usable()?;
        let shards = self.db.shards();
        let n = shards.len();
        let mut parts: Vec<Part> = (0..n).map(|_| Part::default()).collect();
        for (k, r) in std::mem::take(&mut self.reads) {
            parts[self.db.shard_of(&k)].reads.push((k, r.version));
        }
        for scan in std::mem::take(&mut self.scans) {
            for (s, seen) in scan.seen.into_iter().enumerate() {
                parts[s].scans.push(ScanRead { range: scan.range.clone(), seen });
            }
        }
        let writes = self.writes.len();
        for (k, w) in std::mem::take(&mut self.writes) {
            let part = &mut parts[self.db.shard_of(&k)];
            part.first_key_len.get_or_insert(k.len());
            match &w {
                Some(v) => encode_op(&mut part.ops, OP_PUT, &k, v),
                None => encode_op(&mut part.ops, OP_DELETE, &k, &[]),
            }
            part.op_count += 1;
            part.user_bytes += (k.len() + w.as_ref().map_or(0, Bytes::len)) as u64;
        }
        for &s in &self.locked {
            parts[s].locked = true;
        }
        Plan::new(self.db.clone(), self.txid, parts, writes)
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.release();
    }
}

/// The current version and value of `key` on `shard`.
fn read_versioned(shard: &ShardHandle, key: &[u8]) -> Result<(Option<u64>, Option<Value>)> {
    for _ in 0..16 {
        let Some(entry) = shard.index().get(key) else { return Ok((None, None)) };
        // `None`: a checkpoint moved the value while it was read; look again.
        if let Some(value) = crate::engine::read::resolve(shard, key, &entry)? {
            return Ok((Some(entry.version), Some(Value(value))));
        }
    }
    Err(Error::InvalidArgument(format!("key {key:?} moved 16 times while being read (a ringdb bug)")))
}

/// One shard's part of a transaction.
#[derive(Default)]
struct Part {
    reads: Vec<(Bytes, Option<u64>)>,
    scans: Vec<ScanRead>,
    ops: Vec<u8>,
    op_count: u32,
    user_bytes: u64,
    locked: bool,
    /// Key length of the first op written by `plan` (for aligning its value).
    first_key_len: Option<usize>,
}

impl Part {
    /// The ops as a record body whose first value starts 8-aligned in memory: the index
    /// keeps values as slices of the body until the next checkpoint, and a typed table
    /// reads a record in place only where it is aligned (a one-key transaction, as
    /// `Table::set` is, thus never copies).
    fn aligned_ops(&self) -> Bytes {
        let pad = self.first_key_len.map_or(0, |k| (8 - (OP_HEADER_BYTES + k) % 8) % 8);
        let mut body = Vec::with_capacity(pad + self.ops.len());
        body.resize(pad, 0);
        body.extend_from_slice(&self.ops);
        Bytes::from(body).slice(pad..)
    }

    fn involved(&self) -> bool {
        !self.reads.is_empty() || !self.scans.is_empty() || self.op_count > 0 || self.locked
    }
}

/// A transaction ready to commit: its parts by shard.
pub(crate) struct Plan {
    db: Db,
    txid: u64,
    /// (shard, part) of every participant, in shard order.
    parts: Vec<(usize, Part)>,
    writes: usize,
}

impl Plan {
    fn new(db: Db, txid: u64, parts: Vec<Part>, writes: usize) -> Result<Plan> {
        let shards = db.shards();
        let parts: Vec<(usize, Part)> = parts.into_iter().enumerate().filter(|(_, p)| p.involved()).collect();
        // Refuse a part too large for one log record before anything is sent.
        let header = crate::format::record::TX_HEADER_BYTES + 2 * parts.len() + 8;
        for (s, p) in &parts {
            let max = shards[*s].body_bytes_max();
            if p.op_count > 0 && p.ops.len() + header > max {
                let locked: Vec<usize> = parts.iter().filter(|(_, p)| p.locked).map(|(s, _)| *s).collect();
                for s in locked {
                    let _ = shards[s].send(Request::TxRelease { txid });
                }
                return Err(Error::BatchTooLarge { bytes: p.ops.len() + header, max });
            }
        }
        Ok(Plan { db, txid, parts, writes })
    }

    /// A plan for a write batch: writes only, each op in order (a later op on the same
    /// key wins, as when the batch is applied in order).
    pub(crate) fn for_batch(db: Db, batch: &crate::batch::WriteBatch) -> Result<Plan> {
        let n = db.shard_count();
        let mut parts: Vec<Part> = (0..n).map(|_| Part::default()).collect();
        for &(start, key_start, key_len, end) in &batch.ops {
            let shard = crate::engine::router::shard_of(&batch.data[key_start..key_start + key_len], n);
            let part = &mut parts[shard];
            part.ops.extend_from_slice(&batch.data[start..end]);
            part.op_count += 1;
            part.user_bytes += (end - start - crate::format::record::OP_HEADER_BYTES) as u64;
        }
        let txid = db.registry().next_txid();
        Plan::new(db, txid, parts, batch.len())
    }

    fn info(&self) -> CommitInfo {
        CommitInfo { txid: self.txid, shards: self.parts.len(), writes: self.writes }
    }

    fn request(
        &self,
        part: &Part,
        body: Bytes,
        ops_at: usize,
        wait: bool,
    ) -> (TxRequest, oneshot::Receiver<Result<()>>) {
        let (reply, rx) = oneshot::channel();
        let request = TxRequest {
            txid: self.txid,
            reads: part.reads.clone(),
            scans: part.scans.iter().map(|s| ScanRead { range: s.range.clone(), seen: s.seen.clone() }).collect(),
            body_crc: crc32fast::hash(&body),
            body,
            ops_at,
            op_count: part.op_count,
            user_bytes: part.user_bytes,
            wait,
            started: Instant::now(),
            reply,
        };
        (request, rx)
    }

    /// Runs the commit protocol. `batch`: a write batch, which must not fail on a
    /// conflict: after one optimistic round it prepares shard by shard, in shard order,
    /// each shard holding the prepare back until the keys are free.
    pub(crate) async fn run(self, batch: bool) -> Result<CommitInfo> {
        let shards = self.db.shards().to_vec();
        match self.parts.len() {
            0 => return Ok(self.info()),
            1 => {
                // One shard: validated and written in one step, as one log record.
                let (s, part) = &self.parts[0];
                let (request, rx) = self.request(part, part.aligned_ops(), 0, false);
                shards[*s].send(Request::TxCommitOne(request))?;
                rx.await.unwrap_or(Err(Error::Closed))?;
                return Ok(self.info());
            }
            _ => {}
        }
        // The prepare body of each writing participant: header (with every writing
        // participant) then its ops.
        let writers: Vec<u16> = self
            .parts
            .iter()
            .filter(|(_, p)| p.op_count > 0)
            .map(|(s, _)| u16::try_from(*s).expect("at most 1024 shards"))
            .collect();
        let bodies: Vec<(Bytes, usize)> = self
            .parts
            .iter()
            .map(|(_, p)| {
                if p.op_count == 0 {
                    return (Bytes::new(), 0);
                }
                let mut body = Vec::with_capacity(p.ops.len() + 16 + 2 * writers.len());
                encode_tx_header(&mut body, self.txid, &writers);
                let at = body.len();
                body.extend_from_slice(&p.ops);
                (Bytes::from(body), at)
            })
            .collect();
        let mut guard = Undecided { shards: &shards, txid: self.txid, participants: Vec::new() };
        // Optimistic round: every prepare in flight at once.
        let mut receivers = Vec::with_capacity(self.parts.len());
        for ((s, part), (body, at)) in self.parts.iter().zip(&bodies) {
            let (request, rx) = self.request(part, body.clone(), *at, false);
            shards[*s].send(Request::TxPrepare(request))?;
            guard.participants.push(*s);
            receivers.push(rx);
        }
        let mut results = Vec::with_capacity(receivers.len());
        for rx in receivers {
            results.push(rx.await.unwrap_or(Err(Error::Closed)));
        }
        let conflicted = results.iter().any(|r| matches!(r, Err(e) if e.is_conflict()));
        if results.iter().all(Result::is_ok) {
            crate::failpoint::hit("tx-all-prepared");
            return self.commit_prepared(guard, writers.len()).await;
        }
        if !batch || !conflicted || results.iter().any(|r| matches!(r, Err(e) if !e.is_conflict())) {
            return Err(self.abort(guard, &results).await);
        }
        // A batch that met a conflict: abort this round, then prepare in shard order,
        // waiting at each shard for its keys.
        let first_error = self.abort(guard, &results).await;
        debug_assert!(first_error.is_conflict());
        let mut guard = Undecided { shards: &shards, txid: self.txid, participants: Vec::new() };
        let mut results = Vec::with_capacity(self.parts.len());
        for ((s, part), (body, at)) in self.parts.iter().zip(&bodies) {
            let (request, rx) = self.request(part, body.clone(), *at, true);
            shards[*s].send(Request::TxPrepare(request))?;
            guard.participants.push(*s);
            let result = rx.await.unwrap_or(Err(Error::Closed));
            let failed = result.is_err();
            results.push(result);
            if failed {
                return Err(self.abort(guard, &results).await);
            }
        }
        self.commit_prepared(guard, writers.len()).await
    }

    /// Every participant prepared: the transaction is committed. Registers it (so no
    /// participant deletes its prepare before every commit marker is durable), then
    /// tells each participant, and returns once all applied the writes.
    async fn commit_prepared(&self, guard: Undecided<'_>, writers: usize) -> Result<CommitInfo> {
        let shards = guard.shards;
        self.db.registry().register(self.txid, writers);
        let participants = guard.decided();
        let mut receivers = Vec::with_capacity(participants.len());
        for s in participants {
            let (reply, rx) = oneshot::channel();
            // A failed send means the database is closing; recovery commits the
            // transaction from the prepares, so it stands.
            if shards[s].send(Request::TxDecide { txid: self.txid, commit: true, durable: false, reply }).is_ok() {
                receivers.push(rx);
            }
            if receivers.len() == 1 {
                crate::failpoint::hit_after("tx-commit-sent-one", &receivers[0]);
            }
        }
        for rx in receivers {
            // The transaction is committed whatever a participant answers now.
            let _ = rx.await;
        }
        Ok(self.info())
    }

    /// Aborts the participants that may hold something, and returns the error to report:
    /// a non-conflict error over a conflict. The abort must be durable before locks are
    /// released unless some writing participant refused with a conflict (it then has no
    /// prepare, so recovery can never find the transaction committed). A conflict at a
    /// participant that only reads is not enough: every writer may have prepared.
    async fn abort(&self, guard: Undecided<'_>, results: &[Result<()>]) -> Error {
        let shards = guard.shards;
        let definitive = results
            .iter()
            .zip(&self.parts)
            .any(|(r, (_, part))| part.op_count > 0 && matches!(r, Err(e) if e.is_conflict()));
        let participants = guard.decided();
        crate::failpoint::hit("tx-aborting");
        let mut receivers = Vec::new();
        for (i, s) in participants.into_iter().enumerate() {
            if matches!(results.get(i), Some(Err(e)) if e.is_conflict()) {
                continue; // it released everything when it refused
            }
            let (reply, rx) = oneshot::channel();
            let request = Request::TxDecide { txid: self.txid, commit: false, durable: !definitive, reply };
            if shards[s].send(request).is_ok() {
                receivers.push(rx);
            }
        }
        for rx in receivers {
            let _ = rx.await;
        }
        let mut error = None;
        for r in results {
            if let Err(e) = r {
                if error.as_ref().is_none_or(|chosen: &Error| chosen.is_conflict() && !e.is_conflict()) {
                    error = Some(e.clone());
                }
            }
        }
        error.unwrap_or(Error::Closed)
    }
}

/// Prepares sent and no decision yet: if dropped so (a commit future dropped half way),
/// aborts every participant, durably, since some may have prepared.
struct Undecided<'a> {
    shards: &'a [ShardHandle],
    txid: u64,
    participants: Vec<usize>,
}

impl Undecided<'_> {
    fn decided(mut self) -> Vec<usize> {
        std::mem::take(&mut self.participants)
    }
}

impl Drop for Undecided<'_> {
    fn drop(&mut self) {
        for &s in &self.participants {
            let (reply, _) = oneshot::channel();
            let _ = self.shards[s].send(Request::TxDecide { txid: self.txid, commit: false, durable: true, reply });
        }
    }
}

impl Db {
    /// Starts a transaction; see [`Transaction`].
    pub fn transaction(&self) -> Transaction {
        Transaction::new(self.clone())
    }

    /// Runs `f` in a transaction and commits it, running it again on a conflict, with
    /// a backoff from [`TRANSACT_BACKOFF_FIRST`] doubling up to [`TRANSACT_BACKOFF_MAX`]
    /// (with jitter), at most [`TRANSACT_ATTEMPTS_MAX`] times; returns `f`'s value from
    /// the attempt that committed. An error from `f` other than a conflict rolls back
    /// and is returned at once.
    ///
    /// After [`TRANSACT_OPTIMISTIC_ATTEMPTS`] conflicts, each attempt first locks
    /// (shared, waiting for writers) the keys the previous attempt read without writing
    /// them, so a large read-mostly transaction finishes even under constant writes:
    /// those keys cannot change before it commits. So the closure must not itself write
    /// such a key with a plain `put`/`delete`/`write_batch`: that write would wait for the
    /// transaction, which waits for the closure.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let db = ringdb::Db::open(dir.path(), ringdb::Options::default())?;
    /// let n = db.transact(|tx| {
    ///     let n = tx.get(b"counter")?.map_or(0, |v| v[0]) + 1;
    ///     tx.put(b"counter", &[n])?;
    ///     Ok(n)
    /// })?;
    /// assert_eq!(n, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn transact<T>(&self, mut f: impl FnMut(&mut Transaction) -> Result<T>) -> Result<T> {
        let mut lock_keys: Vec<Bytes> = Vec::new();
        let mut last = None;
        let mut jitter = self.registry().next_txid().wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for attempt in 0..TRANSACT_ATTEMPTS_MAX {
            let mut tx = self.transaction();
            if !lock_keys.is_empty() {
                tx.lock_shared(&lock_keys)?;
            }
            let outcome = f(&mut tx);
            let reads = if attempt + 1 >= TRANSACT_OPTIMISTIC_ATTEMPTS { tx.pure_read_keys() } else { Vec::new() };
            let error = match outcome {
                Ok(value) => match tx.commit() {
                    Ok(_) => return Ok(value),
                    Err(e) => e,
                },
                Err(e) => {
                    tx.rollback();
                    e
                }
            };
            if !error.is_conflict() {
                return Err(error);
            }
            last = Some(error);
            lock_keys = reads;
            // Exponential backoff with jitter (xorshift), so clashing attempts spread out.
            jitter ^= jitter << 13;
            jitter ^= jitter >> 7;
            jitter ^= jitter << 17;
            let cap = TRANSACT_BACKOFF_FIRST.saturating_mul(1 << attempt.min(16)).min(TRANSACT_BACKOFF_MAX);
            let nanos = cap.as_nanos() as u64;
            std::thread::sleep(Duration::from_nanos(nanos / 2 + jitter % (nanos / 2 + 1)));
        }
        Err(last.expect("at least one attempt"))
    }
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
