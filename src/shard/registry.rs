//! What the shards of one process share about cross-shard transactions: the
//! registry of committed transactions whose commit markers are not all durable
//! yet, the transaction id counter, and the decision of in-doubt transactions at
//! open.
//!
//! The commit rule (see `docs/ARCHITECTURE.md`, "Transactions"): a cross-shard
//! transaction is committed iff every participant (every shard it writes) holds
//! its prepare record (or its commit marker) and none holds its abort marker.
//! Recovery can only apply that rule if a participant's prepare record is still
//! in its log whenever another participant lacks a durable commit marker. The
//! registry is how a shard knows: a committed transaction is registered before
//! the first commit request is sent, with the number of participants, and each
//! participant reports when its commit marker is durable. A shard never deletes
//! a log segment holding the prepare record of a registered transaction.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The registry; one per open database, shared by its shards and clients.
#[derive(Default)]
pub(crate) struct TxRegistry {
    /// Committed transactions → participants whose commit marker is not durable yet.
    pending: Mutex<HashMap<u64, usize>>,
    /// The next transaction id.
    next_txid: AtomicU64,
}

impl TxRegistry {
    /// A registry whose transaction ids start above every id in the logs (`max_seen`).
    pub fn new(max_seen: u64) -> TxRegistry {
        TxRegistry { pending: Mutex::new(HashMap::new()), next_txid: AtomicU64::new(max_seen + 1) }
    }

    /// A fresh transaction id, unique among every id any retained log holds.
    pub fn next_txid(&self) -> u64 {
        self.next_txid.fetch_add(1, Ordering::Relaxed)
    }

    /// Notes that `txid` committed and that `participants` shards will each report a
    /// durable commit marker.
    pub fn register(&self, txid: u64, participants: usize) {
        if participants == 0 {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = pending.insert(txid, participants);
        debug_assert!(old.is_none(), "transaction {txid} registered twice");
    }

    /// A participant's commit marker of `txid` is durable.
    pub fn commit_durable(&self, txid: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(left) = pending.get_mut(&txid) {
            *left -= 1;
            if *left == 0 {
                pending.remove(&txid);
            }
        }
    }

    /// Whether some participant of `txid` may still lack a durable commit marker (its
    /// prepare records must then stay in every participant's log).
    pub fn holds(&self, txid: u64) -> bool {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains_key(&txid)
    }
}

/// What one shard's log says about one transaction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marks {
    pub prepare: bool,
    pub commit: bool,
    pub abort: bool,
}

/// What a shard found in its whole retained log (records before its checkpoint
/// included), for the decision of in-doubt transactions.
#[derive(Debug, Default)]
pub(crate) struct ScanReport {
    /// Every transaction the log mentions.
    pub marks: HashMap<u64, Marks>,
    /// Transactions prepared after the checkpoint with neither commit nor abort marker,
    /// with their participants.
    pub in_doubt: Vec<(u64, Vec<u16>)>,
    /// The largest transaction id the log mentions.
    pub max_txid: u64,
}

/// Decides every in-doubt transaction of every shard: `true` to commit. `reports` is
/// indexed by shard.
pub(crate) fn decide(reports: &[ScanReport]) -> HashMap<u64, bool> {
    let mut decisions = HashMap::new();
    for report in reports {
        for (txid, participants) in &report.in_doubt {
            if decisions.contains_key(txid) {
                continue;
            }
            let marks = |shard: usize| reports.get(shard).and_then(|r| r.marks.get(txid)).copied().unwrap_or_default();
            let aborted = reports.iter().any(|r| r.marks.get(txid).is_some_and(|m| m.abort));
            let all_prepared = !participants.is_empty()
                && participants.iter().all(|&p| {
                    let m = marks(p as usize);
                    m.prepare || m.commit
                });
            decisions.insert(*txid, !aborted && all_prepared);
        }
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(marks: &[(u64, Marks)], in_doubt: &[(u64, &[u16])]) -> ScanReport {
        ScanReport {
            marks: marks.iter().copied().collect(),
            in_doubt: in_doubt.iter().map(|(t, p)| (*t, p.to_vec())).collect(),
            max_txid: 0,
        }
    }

    const P: Marks = Marks { prepare: true, commit: false, abort: false };
    const PC: Marks = Marks { prepare: true, commit: true, abort: false };
    const PA: Marks = Marks { prepare: true, commit: false, abort: true };
    const C: Marks = Marks { prepare: false, commit: true, abort: false };

    #[test]
    fn committed_iff_every_participant_prepared_and_none_aborted() {
        // T1: both shards prepared, neither decided: commit.
        // T2: shard 1 never prepared: abort.
        // T3: shard 1 aborted: abort.
        // T4: shard 1's prepare left its log after its durable commit marker: commit.
        let r0 = report(&[(1, P), (2, P), (3, P), (4, P)], &[(1, &[0, 1]), (2, &[0, 1]), (3, &[0, 1]), (4, &[0, 1])]);
        let r1 = report(&[(1, P), (3, PA), (4, C)], &[(1, &[0, 1])]);
        let d = decide(&[r0, r1]);
        assert!(d[&1]);
        assert!(!d[&2]);
        assert!(!d[&3]);
        assert!(d[&4]);
        assert_eq!(d.len(), 4);
        // A participant beyond the shards (a damaged header) never commits.
        let d = decide(&[report(&[(9, PC)], &[(9, &[0, 5])])]);
        assert!(!d[&9]);
    }

    #[test]
    fn registry_counts_markers() {
        let r = TxRegistry::new(41);
        assert_eq!(r.next_txid(), 42);
        r.register(7, 2);
        assert!(r.holds(7));
        r.commit_durable(7);
        assert!(r.holds(7));
        r.commit_durable(7);
        assert!(!r.holds(7));
        r.commit_durable(7);
        assert!(!r.holds(7));
    }
}
