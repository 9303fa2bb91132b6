//! The commit protocol of transactions and of write batches across shards.
//!
//! A [`Plan`] is a transaction grouped by shard (a [`Part`] per participant):
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

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::Engine;
use super::ops::ShardOps;
use crate::error::{Error, Result};
use crate::format::record::encode_tx_header;
use crate::key::KeyRange;
use crate::shard::{Request, ScanRead, ShardHandle, TxRequest};

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

/// One shard's part of a transaction.
#[derive(Default)]
pub(crate) struct Part {
    /// Keys read, with the version seen (`None`: absent).
    pub reads: Vec<(Bytes, Option<u64>)>,
    scans: Vec<ScanRead>,
    pub writes: ShardOps,
    /// Whether the transaction holds shared locks on this shard.
    pub locked: bool,
}

impl Part {
    /// Notes a scan of `range` whose part on this shard held the `(key, version)` list
    /// `seen`, for the shard to check at commit.
    pub fn add_scan(&mut self, range: KeyRange, seen: Vec<(Bytes, u64)>) {
        debug_assert!(seen.iter().all(|(k, _)| range.contains(k)), "a scan saw keys of its range only");
        self.scans.push(ScanRead { range, seen });
    }

    fn involved(&self) -> bool {
        !self.reads.is_empty() || !self.scans.is_empty() || !self.writes.is_empty() || self.locked
    }
}

/// A transaction ready to commit: its parts by shard.
pub(crate) struct Plan {
    engine: Arc<Engine>,
    txid: u64,
    /// (shard, part) of every participant, in shard order.
    parts: Vec<(usize, Part)>,
    writes: usize,
}

impl Plan {
    /// The plan of transaction `txid` whose parts (one per shard, in shard order) are
    /// `parts`, writing `writes` keys. Refuses a part too large for one log record before
    /// anything is sent (releasing the locks the transaction holds).
    pub fn new(engine: Arc<Engine>, txid: u64, parts: Vec<Part>, writes: usize) -> Result<Plan> {
        assert_eq!(parts.len(), engine.shards().len(), "a plan has one part per shard");
        let shards = engine.shards();
        let parts: Vec<(usize, Part)> = parts.into_iter().enumerate().filter(|(_, p)| p.involved()).collect();
        let header = crate::format::record::TX_HEADER_BYTES + 2 * parts.len() + 8;
        for (s, p) in &parts {
            let max = shards[*s].body_bytes_max();
            if !p.writes.is_empty() && p.writes.ops.len() + header > max {
                for (s, _) in parts.iter().filter(|(_, p)| p.locked) {
                    let _ = shards[*s].send(Request::TxRelease { txid });
                }
                return Err(Error::BatchTooLarge { bytes: p.writes.ops.len() + header, max });
            }
        }
        Ok(Plan { engine, txid, parts, writes })
    }

    /// A plan for a write batch split by shard: writes only, each op in order (a later
    /// op on the same key wins, as when the batch is applied in order).
    pub fn for_batch(engine: Arc<Engine>, split: Vec<ShardOps>, writes: usize) -> Result<Plan> {
        let parts = split.into_iter().map(|writes| Part { writes, ..Part::default() }).collect();
        let txid = engine.registry().next_txid();
        Plan::new(engine, txid, parts, writes)
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
            op_count: part.writes.op_count,
            user_bytes: part.writes.user_bytes,
            wait,
            started: Instant::now(),
            reply,
        };
        (request, rx)
    }

    /// Runs the commit protocol. `batch`: a write batch, which must not fail on a
    /// conflict: after one optimistic round it prepares shard by shard, in shard order,
    /// each shard holding the prepare back until the keys are free.
    pub async fn run(self, batch: bool) -> Result<CommitInfo> {
        let shards = self.engine.shards().to_vec();
        match self.parts.len() {
            0 => return Ok(self.info()),
            1 => {
                // One shard: validated and written in one step, as one log record.
                let (s, part) = &self.parts[0];
                let (request, rx) = self.request(part, part.writes.aligned(), 0, false);
                shards[*s].send(Request::TxCommitOne(request))?;
                rx.await.unwrap_or(Err(Error::Closed))?;
                return Ok(self.info());
            }
            _ => {}
        }
        let (writers, bodies) = self.prepare_bodies();
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
            return self.commit_prepared(guard, writers).await;
        }
        if !batch || !conflicted || results.iter().any(|r| matches!(r, Err(e) if !e.is_conflict())) {
            return Err(self.abort(guard, &results).await);
        }
        // A batch that met a conflict: abort this round, then prepare in shard order,
        // waiting at each shard for its keys.
        let first_error = self.abort(guard, &results).await;
        debug_assert!(first_error.is_conflict());
        self.prepare_in_order(&shards, &bodies, writers).await
    }

    /// The prepare body of each participant (header naming every writing participant,
    /// then its ops; empty for one that only reads) with where its ops start, and the
    /// number of writing participants.
    fn prepare_bodies(&self) -> (usize, Vec<(Bytes, usize)>) {
        let writers: Vec<u16> = self
            .parts
            .iter()
            .filter(|(_, p)| !p.writes.is_empty())
            .map(|(s, _)| u16::try_from(*s).expect("at most 1024 shards"))
            .collect();
        let bodies = self
            .parts
            .iter()
            .map(|(_, p)| {
                if p.writes.is_empty() {
                    return (Bytes::new(), 0);
                }
                let mut body = Vec::with_capacity(p.writes.ops.len() + 16 + 2 * writers.len());
                encode_tx_header(&mut body, self.txid, &writers);
                let at = body.len();
                body.extend_from_slice(&p.writes.ops);
                (Bytes::from(body), at)
            })
            .collect();
        (writers.len(), bodies)
    }

    /// Prepares on each participant in turn, each holding the prepare back until its keys
    /// are free, then commits; a failure aborts those prepared.
    async fn prepare_in_order(
        &self,
        shards: &[ShardHandle],
        bodies: &[(Bytes, usize)],
        writers: usize,
    ) -> Result<CommitInfo> {
        let mut guard = Undecided { shards, txid: self.txid, participants: Vec::new() };
        let mut results = Vec::with_capacity(self.parts.len());
        for ((s, part), (body, at)) in self.parts.iter().zip(bodies) {
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
        self.commit_prepared(guard, writers).await
    }

    /// Every participant prepared: the transaction is committed. Registers it (so no
    /// participant deletes its prepare before every commit marker is durable), then
    /// tells each participant, and returns once all applied the writes.
    async fn commit_prepared(&self, guard: Undecided<'_>, writers: usize) -> Result<CommitInfo> {
        let shards = guard.shards;
        self.engine.registry().register(self.txid, writers);
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
            .any(|(r, (_, part))| !part.writes.is_empty() && matches!(r, Err(e) if e.is_conflict()));
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

/// The shared locks of a transaction in locking mode (see `Db::transact`).
impl Engine {
    /// Takes shared locks for transaction `txid` on `keys` on each shard, in shard order,
    /// waiting until any writer holding one is done. Each shard asked is pushed on
    /// `locked` before its answer is awaited, so that a failure still releases it.
    pub fn lock_shared(&self, txid: u64, keys: &[Bytes], locked: &mut Vec<usize>) -> Result<()> {
        let mut by_shard: std::collections::BTreeMap<usize, Vec<Bytes>> = std::collections::BTreeMap::new();
        for k in keys {
            by_shard.entry(self.shard_of(k)).or_default().push(k.clone());
        }
        for (s, keys) in by_shard {
            debug_assert!(!locked.contains(&s), "a transaction locks on a shard once");
            let (reply, rx) = oneshot::channel();
            self.shards()[s].send(Request::TxLock { txid, keys, ranges: Vec::new(), reply })?;
            locked.push(s);
            rx.recv().map_err(|_| Error::Closed)??;
        }
        Ok(())
    }

    /// Releases what transaction `txid` holds on each of the shards `locked` (a closed
    /// shard holds nothing any more, so a failed send is fine).
    pub fn release(&self, txid: u64, locked: &[usize]) {
        for &s in locked {
            let _ = self.shards()[s].send(Request::TxRelease { txid });
        }
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
