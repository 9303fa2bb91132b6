//! The shard's side of transactions: validation, locks, the prepare, commit and
//! abort records, and what a checkpoint and the log's truncation must keep for
//! recovery to decide every transaction. Plain writes are in `writes`; they come
//! here only to wait behind locks (`TxState::hold_back`).
//!
//! Everything here runs on the shard thread, so validation, locking and the
//! append of a transaction's record happen at one point of the shard's history
//! (`docs/ARCHITECTURE.md`, "Transactions", says why that makes the protocol
//! serializable).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::locks::{KeyRange, LockTable};
use super::registry::TxRegistry;
use super::writes::{apply_ops, count_write, keys_of};
use super::{Shard, WriteRequest};
use crate::error::{Error, Result};
use crate::format::record::{KIND_ABORT, KIND_COMMIT, KIND_PREPARE, decode_ops, encode_tx_header};
use crate::stats::{OpKind, ShardCounters};

/// A range a transaction scanned on this shard, with the `(key, version)` list it saw.
pub(crate) struct ScanRead {
    pub range: KeyRange,
    pub seen: Vec<(Bytes, u64)>,
}

/// A transaction's part on one shard, to validate and then commit in one step
/// (`Request::TxCommitOne`) or to prepare (`Request::TxPrepare`).
pub(crate) struct TxRequest {
    pub txid: u64,
    /// Keys read with the version seen (`None`: absent).
    pub reads: Vec<(Bytes, Option<u64>)>,
    pub scans: Vec<ScanRead>,
    /// The record body: ops for a one-step commit; transaction header then ops for a
    /// prepare (the ops start at `ops_at`).
    pub body: Bytes,
    pub body_crc: u32,
    pub ops_at: usize,
    pub op_count: u32,
    pub user_bytes: u64,
    /// A prepare of a write batch (no reads): wait for the keys' locks instead of
    /// failing with a conflict. Sent in shard order, so waits never form a cycle.
    pub wait: bool,
    pub started: Instant,
    pub reply: oneshot::Sender<Result<()>>,
}

/// A prepared transaction's writes on this shard, applied when it commits.
struct Prepared {
    lsn: u64,
    body: Bytes,
    op_count: u32,
    user_bytes: u64,
    started: Instant,
}

/// What one transaction holds on this shard.
#[derive(Default)]
struct ShardTx {
    /// Keys it holds locks on (read and written).
    keys: Vec<Bytes>,
    prepared: Option<Prepared>,
}

/// A request for shared locks (locking mode), granted once no writer and no
/// unapplied write remains on its keys and ranges.
struct LockWait {
    txid: u64,
    keys: Vec<Bytes>,
    ranges: Vec<KeyRange>,
    reply: oneshot::Sender<Result<()>>,
}

/// The shard's transaction state; see the module docs.
pub(crate) struct TxState {
    locks: LockTable,
    txs: HashMap<u64, ShardTx>,
    /// Plain writes waiting for locks, in arrival order, with their keys.
    deferred: VecDeque<(WriteRequest, Vec<Bytes>)>,
    /// Batch prepares waiting for locks (see `TxRequest::wait`), with their write keys.
    waiting_prepares: VecDeque<(TxRequest, Vec<Bytes>)>,
    lock_waiters: Vec<LockWait>,
    /// (LSN, txid) of every prepare record in the retained log, in LSN order.
    retained: VecDeque<(u64, u64)>,
    /// (LSN, txid) of commit markers not yet known durable.
    commit_markers: VecDeque<(u64, u64)>,
    /// Aborts that release their locks when their marker is durable: (LSN, txid, reply).
    aborting: Vec<(u64, u64, oneshot::Sender<Result<()>>)>,
    registry: Arc<TxRegistry>,
    /// Under `Durability::Sync`, writes appended from this LSN on are tracked as
    /// unapplied in `locks` (0: no transaction seen yet, nothing tracked). Until every
    /// write before it is applied, a read cannot be validated.
    tracking_from: u64,
    /// Whether a transaction was seen: plain writes then check the locks.
    engaged: bool,
    /// Locks were released or writes applied since the waiting lists were last tried.
    changed: bool,
}

impl TxState {
    pub fn new(registry: Arc<TxRegistry>, retained: Vec<(u64, u64)>) -> TxState {
        TxState {
            locks: LockTable::default(),
            txs: HashMap::new(),
            deferred: VecDeque::new(),
            waiting_prepares: VecDeque::new(),
            lock_waiters: Vec::new(),
            retained: retained.into(),
            commit_markers: VecDeque::new(),
            aborting: Vec::new(),
            registry,
            tracking_from: 0,
            engaged: false,
            changed: false,
        }
    }

    /// A commit marker appended at `lsn`, reported to the registry once durable.
    pub fn note_commit_marker(&mut self, lsn: u64, txid: u64) {
        debug_assert!(
            self.commit_markers.back().is_none_or(|&(last, _)| last < lsn),
            "commit markers are noted in log order, so the front is the next to become durable"
        );
        self.commit_markers.push_back((lsn, txid));
    }

    /// Whether unapplied writes appended at `lsn` are tracked.
    pub fn tracks(&self, lsn: u64) -> bool {
        self.tracking_from > 0 && lsn >= self.tracking_from
    }

    /// Whether a transaction was seen: plain writes then check the locks.
    pub fn engaged(&self) -> bool {
        self.engaged
    }

    /// Whether a plain write to `keys` must wait: a transaction locks one of them, or
    /// an earlier held-back write has one.
    pub fn must_hold_back(&self, keys: &[Bytes]) -> bool {
        debug_assert!(self.engaged, "writes are held back only once transactions are in use");
        keys.iter().any(|k| self.locks.must_defer(k))
    }

    /// Holds a plain write back until its keys are free; `Shard::tx_progress` lets it go
    /// in arrival order.
    pub fn hold_back(&mut self, w: WriteRequest, keys: Vec<Bytes>) {
        debug_assert!(self.engaged, "writes are held back only once transactions are in use");
        for k in &keys {
            self.locks.set_deferred(k, true);
        }
        self.deferred.push_back((w, keys));
    }

    /// Notes the keys of a write just appended (at a tracked LSN) unapplied until its
    /// batch is durable.
    pub fn note_unapplied(&mut self, keys: &[Bytes]) {
        debug_assert!(self.tracking_from > 0, "unapplied writes are noted only while tracking");
        for k in keys {
            self.locks.add_unapplied(k);
        }
    }

    /// An abort waits for its marker to be durable (flushes must go on meanwhile).
    pub fn wants_durable(&self) -> bool {
        !self.aborting.is_empty()
    }

    /// Answers everything still waiting with `err` (the shard stops).
    pub fn fail_waiting(&mut self, err: &Error) {
        for (w, _) in self.deferred.drain(..) {
            let _ = w.reply.send(Err(err.clone()));
        }
        for (r, _) in self.waiting_prepares.drain(..) {
            let _ = r.reply.send(Err(err.clone()));
        }
        for w in self.lock_waiters.drain(..) {
            let _ = w.reply.send(Err(err.clone()));
        }
        for (_, _, reply) in self.aborting.drain(..) {
            let _ = reply.send(Err(err.clone()));
        }
    }

    fn release(&mut self, txid: u64) {
        if let Some(t) = self.txs.remove(&txid) {
            debug_assert!(t.prepared.is_none(), "a prepared transaction is released only when decided");
            self.locks.release(txid, &t.keys);
        } else {
            self.locks.release(txid, &[]);
        }
        self.changed = true;
    }

    /// Oldest prepare record whose transaction this shard has not decided: a checkpoint
    /// must not cover it (its writes are not in the index yet).
    pub fn oldest_undecided_prepare(&self) -> Option<u64> {
        // The log's truncation keeps what `retained` lists: a prepare missing there could
        // lose its record while its transaction is still undecided.
        debug_assert!(
            self.txs.iter().all(|(txid, t)| {
                t.prepared.as_ref().is_none_or(|p| self.retained.iter().any(|&(l, r)| l == p.lsn && r == *txid))
            }),
            "every undecided prepare is retained in the log"
        );
        let prepared = self.txs.values().filter_map(|t| t.prepared.as_ref().map(|p| p.lsn));
        let aborting = self.aborting.iter().map(|&(_, txid, _)| txid);
        let aborting_prepares = self.retained.iter().filter(|(_, t)| aborting.clone().any(|a| a == *t)).map(|p| p.0);
        prepared.chain(aborting_prepares).min()
    }

    /// The highest LSN through which log segments may be deleted as far as transactions
    /// are concerned: below the oldest prepare record of a transaction that is undecided
    /// here or registered (committed, some participant's commit marker not durable).
    pub fn retained_limit(&mut self) -> u64 {
        debug_assert!(
            self.retained.iter().zip(self.retained.iter().skip(1)).all(|(a, b)| a.0 < b.0),
            "prepares are retained in log order, so the oldest bounds what may go"
        );
        while let Some(&(lsn, txid)) = self.retained.front() {
            let undecided = self.txs.get(&txid).is_some_and(|t| t.prepared.is_some())
                || self.aborting.iter().any(|&(_, t, _)| t == txid);
            if undecided || self.registry.holds(txid) {
                return lsn - 1;
            }
            self.retained.pop_front();
        }
        u64::MAX
    }
}

impl Shard {
    /// Notes that transactions are in use: from now on plain writes check locks and,
    /// under Sync, appended writes are tracked until applied.
    fn engage(&mut self) {
        if !self.tx.engaged {
            self.tx.engaged = true;
            if self.sync() {
                self.tx.tracking_from = self.wal.last_lsn() + 1;
            }
        }
    }

    /// Whether every write appended before tracking started is applied.
    fn tracking_warm(&self) -> bool {
        !self.sync() || self.wal.durable_lsn() + 1 >= self.tx.tracking_from
    }

    /// Checks that what `txid` read is still current and that it may write `writes`.
    fn validate(
        &self,
        txid: u64,
        reads: &[(Bytes, Option<u64>)],
        scans: &[ScanRead],
        writes: &[Bytes],
    ) -> std::result::Result<(), &'static str> {
        debug_assert!(
            scans.iter().all(|s| s.seen.windows(2).all(|w| w[0].0 < w[1].0)),
            "a scan's keys are in key order, as the index's order gives them"
        );
        if (!reads.is_empty() || !scans.is_empty()) && !self.tracking_warm() {
            return Err("writes from before the first transaction are still in flight");
        }
        let locks = &self.tx.locks;
        // A failed read of the tree refuses the transaction; the caller's next read of
        // that key meets the same failure as an error.
        let data = self.shared.data().map_err(|_| "the shard's data is not open")?;
        for (key, seen) in reads {
            if let Some(why) = locks.read_conflict(txid, key) {
                return Err(why);
            }
            let now = data.entry(key).map_err(|_| "reading the key's current version failed")?;
            if now.map(|v| v.version) != *seen {
                return Err("a key read was written since");
            }
        }
        let mut now = Vec::new();
        for scan in scans {
            if let Some(why) = locks.range_conflict(txid, &scan.range) {
                return Err(why);
            }
            now.clear();
            let (start, end) = scan.range.bounds();
            data.range(start, end, scan.seen.len() + 1, &mut now)
                .map_err(|_| "reading the scanned range's current keys failed")?;
            let same = now.len() == scan.seen.len()
                && now.iter().zip(&scan.seen).all(|((k, v), (sk, sv))| k == sk && v.version == *sv);
            if !same {
                return Err("a scanned range changed (a phantom)");
            }
        }
        for key in writes {
            if let Some(why) = locks.write_conflict(txid, key) {
                return Err(why);
            }
        }
        Ok(())
    }

    fn conflict(&mut self, what: &'static str) -> Error {
        ShardCounters::add(&self.shared.tx_conflicts, 1);
        Error::Conflict { shard: self.shared.id, what }
    }

    /// Validates a transaction that lives on this shard alone and appends its writes as
    /// one record: no prepare, no commit marker.
    pub(super) fn handle_tx_commit_one(&mut self, r: TxRequest) {
        debug_assert!(
            self.tx.txs.get(&r.txid).is_none_or(|t| t.prepared.is_none()),
            "a transaction committed in one step is never prepared"
        );
        self.engage();
        let keys = match keys_of(&r.body, r.op_count) {
            Ok(keys) => keys,
            Err(e) => return self.refuse_tx(r, e),
        };
        if let Err(what) = self.validate(r.txid, &r.reads, &r.scans, &keys) {
            let e = self.conflict(what);
            return self.refuse_tx(r, e);
        }
        ShardCounters::add(&self.shared.tx_commits, 1);
        if keys.is_empty() {
            self.tx.release(r.txid);
            let _ = r.reply.send(Ok(()));
            return;
        }
        let w = WriteRequest {
            body: r.body,
            body_crc: r.body_crc,
            op_count: r.op_count,
            kind: OpKind::Batch,
            user_bytes: r.user_bytes,
            started: r.started,
            reply: r.reply,
        };
        self.append_write(w, Some(&keys));
        // Locks taken in locking mode are no longer needed: the record's place in the log
        // is the transaction's point in this shard's history.
        self.tx.release(r.txid);
    }

    /// Validates and locks a transaction's part on this shard and, if it writes here,
    /// appends its prepare record; answers once that is durable (in every mode).
    pub(super) fn handle_tx_prepare(&mut self, r: TxRequest) {
        self.engage();
        let ops_body = r.body.slice(r.ops_at..);
        let keys = match keys_of(&ops_body, r.op_count) {
            Ok(keys) => keys,
            Err(e) => return self.refuse_tx(r, e),
        };
        if let Err(what) = self.validate(r.txid, &r.reads, &r.scans, &keys) {
            if r.wait && r.reads.is_empty() && r.scans.is_empty() {
                // A batch waits its turn; later plain writes to its keys queue behind it.
                for k in &keys {
                    self.tx.locks.set_deferred(k, true);
                }
                self.tx.waiting_prepares.push_back((r, keys));
                return;
            }
            let e = self.conflict(what);
            return self.refuse_tx(r, e);
        }
        self.prepare_validated(r, ops_body, &keys);
    }

    /// Answers a transaction's commit or prepare with `e` (its keys did not decode, or it
    /// conflicts) and releases what it holds on this shard.
    fn refuse_tx(&mut self, r: TxRequest, e: Error) {
        // A prepared part is decided by its coordinator; refusing it here would leave
        // the prepare record in the log with no answer recorded.
        debug_assert!(
            self.tx.txs.get(&r.txid).is_none_or(|t| t.prepared.is_none()),
            "only a transaction not yet prepared on this shard is refused"
        );
        self.tx.release(r.txid);
        let _ = r.reply.send(Err(e));
    }

    fn prepare_validated(&mut self, r: TxRequest, ops_body: Bytes, keys: &[Bytes]) {
        let txid = r.txid;
        debug_assert!(
            self.tx.txs.get(&txid).is_none_or(|t| t.prepared.is_none()),
            "a transaction prepares at most once on a shard"
        );
        let read_keys: Vec<Bytes> = r.reads.iter().map(|(k, _)| k.clone()).collect();
        let ranges: Vec<KeyRange> = r.scans.into_iter().map(|s| s.range).collect();
        self.tx.locks.lock(txid, &read_keys, keys, &ranges);
        let entry = self.tx.txs.entry(txid).or_default();
        entry.keys.extend(read_keys);
        entry.keys.extend(keys.iter().cloned());
        if keys.is_empty() {
            let _ = r.reply.send(Ok(()));
            return;
        }
        match self.wal.append(KIND_PREPARE, &r.body, r.body_crc, r.op_count, None) {
            Ok(lsn) => {
                let prepared = Prepared {
                    lsn,
                    body: ops_body,
                    op_count: r.op_count,
                    user_bytes: r.user_bytes,
                    started: r.started,
                };
                self.tx.txs.get_mut(&txid).expect("entry made above").prepared = Some(prepared);
                self.tx.retained.push_back((lsn, txid));
                // Answered once durable, whatever the durability mode: replay applies a
                // commit record's part at once, which is right only if every other
                // participant's prepare is durable too (a flush waiter forces the sync
                // under Periodic and None).
                self.durable.waiters.push((lsn, r.reply));
            }
            Err((e, _)) => {
                self.tx.release(txid);
                let _ = r.reply.send(Err(e));
            }
        }
    }

    /// Commits (applies the prepared writes, appends the commit marker) or aborts
    /// `txid`'s part here, and releases its locks. `durable`: an abort's locks stay
    /// until its marker is durable (the client could not tell whether every participant
    /// prepared, so recovery must find the marker).
    pub(super) fn handle_tx_decide(
        &mut self,
        txid: u64,
        commit: bool,
        durable: bool,
        reply: oneshot::Sender<Result<()>>,
    ) {
        let prepared = self.tx.txs.get_mut(&txid).and_then(|t| t.prepared.take());
        let Some(p) = prepared else {
            self.tx.release(txid);
            let _ = reply.send(Ok(()));
            return;
        };
        debug_assert!(
            self.tx.retained.iter().any(|&(lsn, t)| lsn == p.lsn && t == txid),
            "a prepare's record is retained until its transaction is decided"
        );
        let mut marker = Vec::with_capacity(16);
        encode_tx_header(&mut marker, txid, &[]);
        let crc = crc32fast::hash(&marker);
        if commit {
            let lsn = match self.wal.append(KIND_COMMIT, &marker, crc, 0, None) {
                Ok(lsn) => {
                    self.tx.commit_markers.push_back((lsn, txid));
                    lsn
                }
                // The log is poisoned: the transaction is committed all the same (every
                // prepare is durable), so the index shows it; recovery will decide it so.
                Err(_) => self.wal.last_lsn().max(self.applied_lsn) + 1,
            };
            debug_assert!(lsn > p.lsn, "a commit follows its prepare in the log");
            let ops = decode_ops(&p.body, p.op_count).expect("ops checked at prepare");
            apply_ops(&mut self.shared.index_writer(), &p.body, &ops, lsn);
            self.applied_lsn = self.applied_lsn.max(lsn);
            let mut latency = self.shared.write_latency();
            count_write(&self.shared.counters, &mut latency, OpKind::Batch, p.user_bytes, p.started);
            drop(latency);
            ShardCounters::add(&self.shared.tx_commits, 1);
            self.tx.release(txid);
            let _ = reply.send(Ok(()));
            return;
        }
        match self.wal.append(KIND_ABORT, &marker, crc, 0, None) {
            Ok(lsn) if durable => {
                // Locks stay until the marker is durable; `tx_progress` releases them.
                self.tx.aborting.push((lsn, txid, reply));
            }
            Ok(_) => {
                self.tx.release(txid);
                let _ = reply.send(Ok(()));
            }
            Err((e, _)) if durable => {
                // Recovery might find every prepare and commit this transaction: keep its
                // keys locked until the database is reopened, so nothing reads them as
                // if it had aborted.
                let _ = reply.send(Err(e));
            }
            Err(_) => {
                self.tx.release(txid);
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Shared locks for a transaction in locking mode: taken at once (new writers to
    /// these keys conflict, plain writes wait), answered once no writer and no unapplied
    /// write remains on them.
    pub(super) fn handle_tx_lock(
        &mut self,
        txid: u64,
        keys: Vec<Bytes>,
        ranges: Vec<KeyRange>,
        reply: oneshot::Sender<Result<()>>,
    ) {
        debug_assert!(
            self.tx.txs.get(&txid).is_none_or(|t| t.prepared.is_none()),
            "shared locks are asked for before the transaction prepares"
        );
        self.engage();
        self.tx.locks.lock(txid, &keys, &[], &ranges);
        self.tx.txs.entry(txid).or_default().keys.extend(keys.iter().cloned());
        if self.tracking_warm() && self.tx.locks.shared_ready(txid, &keys, &ranges) {
            let _ = reply.send(Ok(()));
        } else {
            self.tx.lock_waiters.push(LockWait { txid, keys, ranges, reply });
        }
    }

    /// Releases the locks of a transaction that will not commit here (rolled back).
    pub(super) fn handle_tx_release(&mut self, txid: u64) {
        if self.tx.txs.get(&txid).is_some_and(|t| t.prepared.is_some()) {
            return; // prepared: only a decision releases it
        }
        self.tx.lock_waiters.retain(|w| w.txid != txid);
        self.tx.release(txid);
    }

    /// Marks the flushed write `keys` (appended at `lsn`) applied.
    pub(super) fn note_applied(&mut self, lsn: u64, body: &Bytes, op_count: u32) {
        debug_assert!(lsn <= self.applied_lsn, "a write is marked applied only once it is");
        if self.tx.tracks(lsn) {
            for k in keys_of(body, op_count).expect("ops encoded by ringdb decode") {
                self.tx.locks.remove_unapplied(&k);
            }
            self.tx.changed = true;
        }
    }

    /// After I/O completions: reports durable commit markers, ends durable aborts,
    /// grants lock requests and lets held-back writes go once their keys are free.
    pub(super) fn tx_progress(&mut self) {
        if let Some(cause) = self.wal.poisoned() {
            // Nothing can be appended or become durable any more: writes and prepares held
            // back for locks, lock requests and aborts waiting for their marker fail now,
            // like the writes in flight (they would otherwise wait forever: a key whose
            // abort could not be logged stays locked until the database is reopened).
            let err = Error::Poisoned { shard: self.shared.id, cause: cause.to_string() };
            self.tx.fail_waiting(&err);
            return;
        }
        self.end_durable_decisions();
        self.grant_shared_locks();
        if !std::mem::take(&mut self.tx.changed) {
            return;
        }
        self.retry_waiting_prepares();
        self.release_held_back_writes();
    }

    /// Reports commit markers that became durable, and ends aborts whose marker did.
    fn end_durable_decisions(&mut self) {
        let durable = self.wal.durable_lsn();
        debug_assert!(
            self.tx.commit_markers.iter().zip(self.tx.commit_markers.iter().skip(1)).all(|(a, b)| a.0 < b.0),
            "commit markers are reported durable in log order"
        );
        while let Some(&(lsn, txid)) = self.tx.commit_markers.front() {
            if lsn > durable {
                break;
            }
            self.tx.registry.commit_durable(txid);
            self.tx.commit_markers.pop_front();
        }
        let mut i = 0;
        while i < self.tx.aborting.len() {
            if self.tx.aborting[i].0 <= durable {
                let (_, txid, reply) = self.tx.aborting.swap_remove(i);
                self.tx.release(txid);
                let _ = reply.send(Ok(()));
            } else {
                i += 1;
            }
        }
    }

    /// Answers the requests for shared locks that are now granted.
    fn grant_shared_locks(&mut self) {
        if self.tx.lock_waiters.is_empty() || !self.tracking_warm() {
            return;
        }
        debug_assert!(
            self.tx.lock_waiters.iter().all(|w| self.tx.txs.contains_key(&w.txid)),
            "a waiting lock request's transaction holds its locks here"
        );
        let mut i = 0;
        while i < self.tx.lock_waiters.len() {
            let w = &self.tx.lock_waiters[i];
            if self.tx.locks.shared_ready(w.txid, &w.keys, &w.ranges) {
                let w = self.tx.lock_waiters.swap_remove(i);
                let _ = w.reply.send(Ok(()));
            } else {
                i += 1;
            }
        }
    }

    /// Prepares the batches waiting for locks whose keys are now free.
    fn retry_waiting_prepares(&mut self) {
        for (r, keys) in std::mem::take(&mut self.tx.waiting_prepares) {
            debug_assert!(r.wait && r.reads.is_empty() && r.scans.is_empty(), "only batch prepares wait for locks");
            let free = keys.iter().all(|k| self.tx.locks.write_conflict(r.txid, k).is_none());
            if free && self.wal.can_accept() {
                for k in &keys {
                    self.tx.locks.set_deferred(k, false);
                }
                let ops_body = r.body.slice(r.ops_at..);
                self.prepare_validated(r, ops_body, &keys);
            } else {
                self.tx.waiting_prepares.push_back((r, keys));
            }
        }
    }

    /// Appends the held-back plain writes whose keys are free, in arrival order per key.
    fn release_held_back_writes(&mut self) {
        if self.tx.deferred.is_empty() {
            return;
        }
        // Keys of batches still waiting hold later plain writes back (order per key).
        let mut held: HashSet<Bytes> =
            self.tx.waiting_prepares.iter().flat_map(|(_, keys)| keys.iter().cloned()).collect();
        for (w, keys) in std::mem::take(&mut self.tx.deferred) {
            debug_assert!(
                keys.iter().all(|k| self.tx.locks.must_defer(k)),
                "a held-back write's keys are marked, so later writes queue behind it"
            );
            let blocked = keys.iter().any(|k| self.tx.locks.locked(k) || held.contains(k));
            if blocked || !self.wal.can_accept() {
                held.extend(keys.iter().cloned());
                self.tx.deferred.push_back((w, keys));
                continue;
            }
            for k in &keys {
                self.tx.locks.set_deferred(k, false);
            }
            self.append_write(w, Some(&keys));
        }
        if !self.wal.can_accept() && !self.tx.deferred.is_empty() {
            // Try again once the log takes records.
            self.tx.changed = true;
        }
    }
}
