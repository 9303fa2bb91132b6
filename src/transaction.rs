//! [`Transaction`]: serializable multi-key transactions across shards.
//!
//! Optimistic: reads go straight to the shards' indexes (no hop to a shard
//! thread) and record the version they saw, or that the key was absent; a scan
//! records the `(key, version)` list of each shard's part of its range. Writes
//! stay in the transaction until commit. At commit the client thread groups
//! everything by shard and runs the commit protocol (`engine/commit.rs`): one
//! step on a single shard, else prepare on every participant, then decide.
//!
//! `docs/ARCHITECTURE.md` ("Transactions") gives the protocol and why it is
//! serializable and crash-atomic.

use std::collections::BTreeMap;
use std::future::{Future, Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::batch::check_value;
use crate::engine::commit::{Part, Plan};
use crate::engine::table::TableShared;
use crate::engine::{Engine, block_on};
use crate::error::{Error, Result};
use crate::format::record::{OP_DELETE, OP_PUT};
use crate::key::{Key, KeyBounds, KeyRange, is_reserved};
use crate::value::Value;

pub use crate::engine::commit::CommitInfo;

/// Attempts [`Db::transact`](crate::Db::transact) makes before it gives up with the last [`Error::Conflict`].
pub const TRANSACT_ATTEMPTS_MAX: usize = 64;
/// Optimistic attempts [`Db::transact`](crate::Db::transact) makes before it runs the closure in locking mode
/// (the keys the last attempt only read are locked, shared, before the closure runs).
pub const TRANSACT_OPTIMISTIC_ATTEMPTS: usize = 2;
/// First backoff of [`Db::transact`](crate::Db::transact) after a conflict; it doubles per attempt (with
/// jitter) up to [`TRANSACT_BACKOFF_MAX`].
pub const TRANSACT_BACKOFF_FIRST: Duration = Duration::from_micros(20);
/// Longest backoff of [`Db::transact`](crate::Db::transact) between two attempts.
pub const TRANSACT_BACKOFF_MAX: Duration = Duration::from_millis(5);

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
    engine: Arc<Engine>,
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
    table_writes: BTreeMap<Bytes, (Arc<TableShared>, bool, bool)>,
    /// The first error one of its operations returned: the transaction has failed, and
    /// `commit` returns this and writes nothing.
    failed: Option<Error>,
    done: bool,
}

#[expect(
    clippy::missing_fields_in_debug,
    reason = "the read and write sets can be large: their sizes are shown, not their keys"
)]
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

impl Transaction {
    pub(crate) fn new(engine: Arc<Engine>) -> Transaction {
        let txid = engine.registry().next_txid();
        Transaction {
            engine,
            txid,
            reads: BTreeMap::new(),
            scans: Vec::new(),
            writes: BTreeMap::new(),
            write_bytes: 0,
            scanned_keys: 0,
            locked: Vec::new(),
            table_writes: BTreeMap::new(),
            failed: None,
            done: false,
        }
    }

    /// Notes `result`'s error, if any, as the one the transaction failed with (the first
    /// one counts), and passes `result` on.
    fn track<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            if !self.done {
                self.failed.get_or_insert_with(|| e.clone());
            }
        }
        result
    }

    /// The transaction's id.
    pub fn txid(&self) -> u64 {
        self.txid
    }

    fn check_keys(&self, more: usize) -> Result<()> {
        let keys = self.reads.len() + self.writes.len() + self.scanned_keys + more;
        let max = self.engine.limits().tx_keys_max;
        if keys > max {
            return Err(Error::TransactionTooLarge { what: "keys", len: keys, max });
        }
        Ok(())
    }

    fn check_usable(&self) -> Result<()> {
        if self.done {
            return Err(Error::InvalidArgument("the transaction was already committed or rolled back".into()));
        }
        self.engine.check_open()
    }

    /// The value of `key` as this transaction sees it: its own write if it made one, else
    /// the database's (the version seen is checked at commit). Reading a key again gives
    /// the same answer.
    pub fn get(&mut self, key: impl AsRef<[u8]>) -> Result<Option<Value>> {
        let key = Key::user(key.as_ref());
        let result = key.and_then(|key| self.get_key(key));
        self.track(result)
    }

    /// [`Transaction::get`] of a validated key (a caller's, or a typed table's own). A
    /// failure fails the transaction.
    pub(crate) fn get_key(&mut self, key: Key<'_>) -> Result<Option<Value>> {
        let result = self.get_key_inner(key);
        self.track(result)
    }

    fn get_key_inner(&mut self, key: Key<'_>) -> Result<Option<Value>> {
        self.check_usable()?;
        if let Some(w) = self.writes.get(&*key) {
            return Ok(w.clone().map(Value));
        }
        if let Some(r) = self.reads.get(&*key) {
            return Ok(r.value.clone());
        }
        self.check_keys(1)?;
        let read = self.engine.get_versioned(&key)?;
        let (version, value) = match read {
            Some((version, value)) => (Some(version), Some(Value(value))),
            None => (None, None),
        };
        self.reads.insert(Bytes::copy_from_slice(&key), Read { version, value: value.clone() });
        Ok(value)
    }

    /// [`Transaction::get`] as a future (it completes at once: reads do not wait on a
    /// shard thread).
    pub fn get_async(&mut self, key: impl AsRef<[u8]>) -> Ready<Result<Option<Value>>> {
        ready(self.get(key))
    }

    /// Notes that this transaction writes typed-table record `key` of `table`, which
    /// `existed` before (as read by the transaction) unless written by it already, and
    /// will be `present` after.
    pub(crate) fn note_table_write(&mut self, key: &[u8], table: &Arc<TableShared>, existed: bool, present: bool) {
        self.table_writes
            .entry(Bytes::copy_from_slice(key))
            .and_modify(|w| w.2 = present)
            .or_insert_with(|| (Arc::clone(table), existed, present));
    }

    /// Whether this transaction already wrote typed-table record `key`.
    pub(crate) fn wrote_table_record(&self, key: &[u8]) -> bool {
        self.table_writes.contains_key(key)
    }

    /// Writes (puts, or deletes with `None`) a validated key (a caller's, or a typed
    /// table's own) when the transaction commits. A failure fails the transaction.
    pub(crate) fn write_key(&mut self, key: Key<'_>, value: Option<&[u8]>) -> Result<()> {
        let result = self.write_key_inner(key, value);
        self.track(result)
    }

    fn write_key_inner(&mut self, key: Key<'_>, value: Option<&[u8]>) -> Result<()> {
        let key = key.as_bytes();
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
        let max = self.engine.limits().tx_bytes_max;
        if bytes > max {
            return Err(Error::TransactionTooLarge { what: "bytes", len: bytes, max });
        }
        self.write_bytes = bytes;
        self.writes.insert(Bytes::copy_from_slice(key), value.map(Bytes::copy_from_slice));
        Ok(())
    }

    /// Sets `key` to `value` when the transaction commits.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let key = Key::user(key.as_ref());
        let result = key.and_then(|key| self.write_key(key, Some(value.as_ref())));
        self.track(result)
    }

    /// Removes `key` when the transaction commits.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<()> {
        let key = Key::user(key.as_ref());
        let result = key.and_then(|key| self.write_key(key, None));
        self.track(result)
    }

    /// The entries with keys in `range`, in key order, with this transaction's own
    /// writes merged in. The whole range is read now (every key it holds counts against
    /// `Options::tx_keys_max`), and at commit each shard checks that its part of the
    /// range still holds the same keys at the same versions, so a key inserted into the
    /// range meanwhile (a phantom) is a conflict.
    pub fn scan(&mut self, range: impl KeyBounds) -> Result<Vec<(Value, Value)>> {
        let result = self.scan_inner(&range);
        self.track(result)
    }

    fn scan_inner(&mut self, range: &impl KeyBounds) -> Result<Vec<(Value, Value)>> {
        self.check_usable()?;
        let range = KeyRange::copied(range);
        let engine = Arc::clone(&self.engine);
        let mut seen = vec![Vec::new(); engine.shard_count()];
        let found = engine.scan_versioned(&range, |s, versions| {
            self.scanned_keys += versions.len();
            self.check_keys(0)?;
            seen[s].extend(versions);
            Ok(())
        })?;
        let mut entries: BTreeMap<Bytes, Bytes> = found.into_iter().collect();
        if !range.is_empty() {
            for (k, w) in self.writes.range::<Bytes, _>((range.start.clone(), range.end.clone())) {
                match w {
                    Some(v) => entries.insert(k.clone(), v.clone()),
                    None => entries.remove(k),
                };
            }
        }
        self.scans.push(ScanSet { range, seen });
        // Typed tables' records are validated like any key in the range, but not shown.
        Ok(entries.into_iter().filter(|(k, _)| !is_reserved(k)).map(|(k, v)| (Value(k), Value(v))).collect())
    }

    /// Takes shared locks on `keys` on each shard, in shard order, waiting until any
    /// writer holding one is done. While held, no one else can write them, so reads of
    /// them stay valid until commit. Used by [`Db::transact`](crate::Db::transact) after optimistic failures.
    fn lock_shared(&mut self, keys: &[Bytes]) -> Result<()> {
        self.engine.lock_shared(self.txid, keys, &mut self.locked)
    }

    /// Keys this transaction read and did not write.
    fn pure_read_keys(&self) -> Vec<Bytes> {
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
        self.engine.release(self.txid, &self.locked);
    }

    /// Commits: validates every read (and scan) and writes everything, on every shard
    /// involved, or nothing. A transaction one of whose operations returned an error
    /// has failed: its commit returns that error and writes nothing. Returns when the writes are visible to every reader and
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
        let failed = self.failed.take();
        let plan = if let Some(e) = failed {
            self.release();
            Err(e)
        } else {
            let plan = self.plan();
            self.done = true;
            plan
        };
        async move {
            let info = plan?.run(false).await?;
            for (_, (table, existed, present)) in table_writes {
                table.note_written(existed, present);
            }
            Ok(info)
        }
    }

    /// The transaction grouped by shard, ready to commit.
    fn plan(&mut self) -> Result<Plan> {
        self.check_usable()?;
        let engine = &self.engine;
        let mut parts: Vec<Part> = (0..engine.shard_count()).map(|_| Part::default()).collect();
        for (k, r) in std::mem::take(&mut self.reads) {
            parts[engine.shard_of(&k)].reads.push((k, r.version));
        }
        for scan in std::mem::take(&mut self.scans) {
            for (s, seen) in scan.seen.into_iter().enumerate() {
                parts[s].add_scan(scan.range.clone(), seen);
            }
        }
        let writes = self.writes.len();
        for (k, w) in std::mem::take(&mut self.writes) {
            let ops = &mut parts[engine.shard_of(&k)].writes;
            match &w {
                Some(v) => ops.push(OP_PUT, &k, v),
                None => ops.push(OP_DELETE, &k, &[]),
            }
        }
        for &s in &self.locked {
            parts[s].locked = true;
        }
        Plan::new(Arc::clone(engine), self.txid, parts, writes)
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.release();
    }
}

/// Runs `f` in a transaction and commits it, again on a conflict (see
/// [`Db::transact`](crate::Db::transact)).
pub(crate) fn transact<T>(engine: &Arc<Engine>, mut f: impl FnMut(&mut Transaction) -> Result<T>) -> Result<T> {
    let mut lock_keys: Vec<Bytes> = Vec::new();
    let mut last = None;
    let mut jitter = engine.registry().next_txid().wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for attempt in 0..TRANSACT_ATTEMPTS_MAX {
        let mut tx = Transaction::new(Arc::clone(engine));
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
