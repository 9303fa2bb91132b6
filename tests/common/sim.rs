//! The model the simulated-disk tests check a database against.
//!
//! Writes are kept in the order each shard's log holds them. `base` is the state known
//! durable (acknowledged under `Durability::Sync`, or flushed); `tail` holds the writes
//! after it whose fate a crash decides: writes in flight when the disk stopped (never
//! acknowledged) and, under `Periodic`, acknowledged writes not yet known durable. After
//! a crash and reopen, each shard must hold `base` plus a prefix of its part of `tail`:
//! a batch's part on one shard is all there or not at all, nothing acknowledged and
//! durable is missing, and nothing is half there.
//!
//! One exception to "a prefix": a write batch spanning shards commits through prepare
//! and commit records, and when it fails (its `Ack` answered an error, or was dropped
//! before it completed) it is aborted on every shard, with an abort record, while the
//! shards go on taking later writes. Such a batch (marked with `Model::unacknowledged`)
//! may therefore be missing from every shard while later writes are there; it is still
//! all there or nowhere.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use ringdb::{Db, Error};

/// One key's change: a value, or `None` for a delete.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// An operation of the workload, as the log sees it.
#[derive(Debug, Clone)]
pub struct Op {
    /// What it was (for reports).
    pub label: &'static str,
    /// Its writes, in order.
    pub writes: Vec<Write>,
}

/// See the module docs.
#[derive(Debug, Default, Clone)]
pub struct Model {
    pub base: BTreeMap<Vec<u8>, Vec<u8>>,
    pub tail: Vec<Op>,
    /// Every value ever written to each key, for the at-rest corruption check.
    pub history: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>>,
    /// Indexes in `tail` of operations whose acknowledgement failed or was dropped (a
    /// batch among them that spans shards may have been aborted whole).
    pub unacknowledged: BTreeSet<usize>,
}

fn apply(state: &mut BTreeMap<Vec<u8>, Vec<u8>>, writes: &[&Write]) {
    for (k, v) in writes {
        match v {
            Some(v) => state.insert(k.clone(), v.clone()),
            None => state.remove(k),
        };
    }
}

impl Model {
    /// Notes an operation issued to the database (its fate unknown yet).
    pub fn issue(&mut self, op: Op) {
        for (k, v) in &op.writes {
            if let Some(v) = v {
                self.history.entry(k.clone()).or_default().insert(v.clone());
            }
        }
        self.tail.push(op);
    }

    /// The last `n` operations issued were not acknowledged: their `Ack` failed or was
    /// dropped unawaited.
    pub fn unacknowledged(&mut self, n: usize) {
        let len = self.tail.len();
        self.unacknowledged.extend(len.saturating_sub(n)..len);
    }

    /// The first `n` operations of the tail are durable (acknowledged under Sync).
    pub fn durable_prefix(&mut self, n: usize) {
        self.unacknowledged = self.unacknowledged.iter().filter(|&&i| i >= n).map(|&i| i - n).collect();
        let done: Vec<Op> = self.tail.drain(..n).collect();
        for op in &done {
            apply(&mut self.base, &op.writes.iter().collect::<Vec<_>>());
        }
    }

    /// The state the model expects if every issued operation took effect.
    pub fn latest(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut state = self.base.clone();
        for op in &self.tail {
            apply(&mut state, &op.writes.iter().collect::<Vec<_>>());
        }
        state
    }

    /// Checks `actual` (the whole database after a reopen) against the model, shard by
    /// shard, and makes the matching state the new base. Returns a description of the
    /// mismatch, if any.
    pub fn settle(
        &mut self,
        actual: &BTreeMap<Vec<u8>, Vec<u8>>,
        shard_of: impl Fn(&[u8]) -> usize,
        shards: usize,
    ) -> Result<(), String> {
        // Unacknowledged batches spanning shards: each may have been aborted whole.
        let spanning: Vec<usize> = self
            .unacknowledged
            .iter()
            .copied()
            .filter(|&i| {
                let op = &self.tail[i];
                op.label == "batch" && op.writes.iter().any(|(k, _)| shard_of(k) != shard_of(&op.writes[0].0))
            })
            .collect();
        assert!(spanning.len() < 16, "too many unacknowledged batches to try each subset");
        let mut first_error = None;
        for aborted in 0..1u32 << spanning.len() {
            let skip: BTreeSet<usize> =
                spanning.iter().enumerate().filter(|(b, _)| aborted & (1 << b) != 0).map(|(_, &i)| i).collect();
            match self.settle_without(actual, &shard_of, shards, &skip) {
                Ok(settled) => {
                    self.base = settled;
                    self.tail.clear();
                    self.unacknowledged.clear();
                    return Ok(());
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.expect("at least one subset tried"))
    }

    /// `settle` with the operations at `skip` (in `tail`) taken as aborted: returns the
    /// settled state, or the mismatch.
    fn settle_without(
        &self,
        actual: &BTreeMap<Vec<u8>, Vec<u8>>,
        shard_of: &impl Fn(&[u8]) -> usize,
        shards: usize,
        skip: &BTreeSet<usize>,
    ) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, String> {
        let mut settled = BTreeMap::new();
        for s in 0..shards {
            let on = |k: &[u8]| shard_of(k) == s;
            let mut state: BTreeMap<Vec<u8>, Vec<u8>> =
                self.base.iter().filter(|(k, _)| on(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
            let want: BTreeMap<Vec<u8>, Vec<u8>> =
                actual.iter().filter(|(k, _)| on(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
            let parts: Vec<(&Op, Vec<&Write>)> = self
                .tail
                .iter()
                .enumerate()
                .filter(|(i, _)| !skip.contains(i))
                .map(|(_, op)| (op, op.writes.iter().filter(|(k, _)| on(k)).collect::<Vec<_>>()))
                .filter(|(_, w)| !w.is_empty())
                .collect();
            let mut matched = state == want;
            let mut kept = 0;
            for (i, (_, writes)) in parts.iter().enumerate() {
                if matched {
                    break;
                }
                apply(&mut state, writes);
                if state == want {
                    matched = true;
                    kept = i + 1;
                }
            }
            if !matched {
                let base: BTreeMap<_, _> = self.base.iter().filter(|(k, _)| on(k)).collect();
                return Err(format!(
                    "shard {s}: the database matches no prefix of the {} unsettled operations \
                     ({:?}).\n  durable base: {}\n  found:        {}",
                    parts.len(),
                    parts.iter().map(|(op, _)| op.label).collect::<Vec<_>>(),
                    show(base.iter().map(|(k, v)| (*k, *v))),
                    show(want.iter()),
                ));
            }
            let _ = kept;
            settled.extend(want);
        }
        Ok(settled)
    }
}

fn short(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(24)]).into_owned();
    if b.len() > 24 { format!("{s}..({} bytes)", b.len()) } else { s }
}

fn show<'a>(entries: impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)>) -> String {
    entries.map(|(k, v)| format!("{}={}", short(k), short(v))).collect::<Vec<_>>().join(" ")
}

/// Everything in the database, read twice: by a scan, and key by key with `get` (so
/// page and chunk reads of both paths are checked). An error is returned as is.
pub fn read_all(db: &Db, also_get: &[Vec<u8>]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, Error> {
    let mut out = BTreeMap::new();
    for entry in db.scan(..) {
        let (k, v) = entry?;
        out.insert(k.to_vec(), v.to_vec());
    }
    for k in also_get {
        let got = db.get(k)?.map(|v| v.to_vec());
        if got.as_ref() != out.get(k) {
            return Err(Error::InvalidArgument(format!(
                "get({}) = {:?} disagrees with the scan's {:?}",
                short(k),
                got.as_deref().map(short),
                out.get(k).map(|v| short(v))
            )));
        }
    }
    Ok(out)
}
