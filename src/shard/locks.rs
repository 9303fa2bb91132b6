//! A shard's lock table: what transactions hold on its keys, and which log
//! records are appended but not yet applied.
//!
//! Owned by the shard thread alone (no synchronisation). An entry exists only
//! while something is noted on its key, so the table stays as small as the
//! transactions in flight:
//! - `writer`: a prepared transaction that will write the key;
//! - `readers`: transactions holding a shared lock (prepared readers, and
//!   transactions in locking mode);
//! - `unapplied`: records in the log, not yet applied to the index (under
//!   `Durability::Sync` a write is applied when durable): the index's version of
//!   the key is about to change, so a reader validating now must fail;
//! - `deferred`: plain writes waiting for the key's locks, kept in arrival order.
//!
//! Range locks (shared) cover the ranges scanned by prepared transactions and by
//! transactions in locking mode: a write into one would be a phantom.

use bytes::Bytes;
use std::collections::BTreeMap;

#[derive(Debug, Default)]
struct KeyLock {
    writer: Option<u64>,
    readers: Vec<u64>,
    unapplied: u32,
    deferred: u32,
}

impl KeyLock {
    fn is_empty(&self) -> bool {
        self.writer.is_none() && self.readers.is_empty() && self.unapplied == 0 && self.deferred == 0
    }
}

/// A shared lock on a key range.
pub(crate) use crate::key::KeyRange;

/// The lock table; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct LockTable {
    keys: BTreeMap<Bytes, KeyLock>,
    ranges: Vec<(u64, KeyRange)>,
}

impl LockTable {
    fn tidy(&mut self, key: &[u8]) {
        if self.keys.get(key).is_some_and(KeyLock::is_empty) {
            self.keys.remove(key);
        }
    }

    fn in_range_of_other(&self, txid: Option<u64>, key: &[u8]) -> bool {
        self.ranges.iter().any(|(owner, r)| Some(*owner) != txid && r.contains(key))
    }

    /// Whether a transaction's lock (a writer, a reader, or a range) covers `key`: a plain
    /// write to it must wait.
    pub fn locked(&self, key: &[u8]) -> bool {
        self.keys.get(key).is_some_and(|l| l.writer.is_some() || !l.readers.is_empty())
            || self.in_range_of_other(None, key)
    }

    /// Whether a plain write to `key` must wait: it is locked, or an earlier plain write
    /// to it waits already (writes to one key keep their order).
    pub fn must_defer(&self, key: &[u8]) -> bool {
        self.locked(key) || self.keys.get(key).is_some_and(|l| l.deferred > 0)
    }

    /// Why `txid` may not read `key` as current now, if it may not.
    pub fn read_conflict(&self, txid: u64, key: &[u8]) -> Option<&'static str> {
        let l = self.keys.get(key)?;
        if l.writer.is_some_and(|w| w != txid) {
            return Some("a key read is locked by a prepared writer");
        }
        if l.unapplied > 0 {
            return Some("a key read has a write in flight");
        }
        None
    }

    /// Why `txid` may not write `key` now, if it may not.
    pub fn write_conflict(&self, txid: u64, key: &[u8]) -> Option<&'static str> {
        if let Some(l) = self.keys.get(key) {
            if l.writer.is_some_and(|w| w != txid) {
                return Some("a key written is locked by a prepared writer");
            }
            if l.readers.iter().any(|&r| r != txid) {
                return Some("a key written is locked by a reader");
            }
        }
        if self.in_range_of_other(Some(txid), key) {
            return Some("a key written is in a range another transaction scanned");
        }
        None
    }

    /// Why `txid`'s scan of `range` may not be taken as current now, if it may not.
    pub fn range_conflict(&self, txid: u64, range: &KeyRange) -> Option<&'static str> {
        if range.is_empty() {
            return None;
        }
        for (_, l) in self.keys.range::<[u8], _>(range.bounds()) {
            if l.writer.is_some_and(|w| w != txid) {
                return Some("a scanned range holds a key locked by a prepared writer");
            }
            if l.unapplied > 0 {
                return Some("a scanned range holds a write in flight");
            }
        }
        None
    }

    /// Takes shared locks on `reads` and `ranges` and the write lock on `writes` for
    /// `txid` (validated first by the caller).
    pub fn lock(&mut self, txid: u64, reads: &[Bytes], writes: &[Bytes], ranges: &[KeyRange]) {
        // A write lock next to another transaction's lock on the key would let both
        // commit as if alone: serializability rests on the caller's validation.
        debug_assert!(
            writes.iter().all(|k| self.write_conflict(txid, k).is_none()),
            "a write lock is taken only where validation found no other holder"
        );
        for key in reads {
            let l = self.keys.entry(key.clone()).or_default();
            if !l.readers.contains(&txid) {
                l.readers.push(txid);
            }
        }
        for key in writes {
            let l = self.keys.entry(key.clone()).or_default();
            debug_assert!(l.writer.is_none_or(|w| w == txid));
            l.writer = Some(txid);
        }
        for r in ranges {
            self.ranges.push((txid, r.clone()));
        }
    }

    /// Releases every lock `txid` holds on `keys` (reads and writes) and all its ranges.
    pub fn release(&mut self, txid: u64, keys: &[Bytes]) {
        for key in keys {
            if let Some(l) = self.keys.get_mut(key) {
                if l.writer == Some(txid) {
                    l.writer = None;
                }
                l.readers.retain(|&r| r != txid);
            }
            self.tidy(key);
        }
        self.ranges.retain(|(owner, _)| *owner != txid);
    }

    /// Whether `txid`'s shared locks on `keys` and `ranges` are granted: no other
    /// transaction's write lock and no unapplied write remains on them.
    pub fn shared_ready(&self, txid: u64, keys: &[Bytes], ranges: &[KeyRange]) -> bool {
        keys.iter().all(|k| self.read_conflict(txid, k).is_none())
            && ranges.iter().all(|r| self.range_conflict(txid, r).is_none())
    }

    /// A write to `key` was appended and will be applied later.
    pub fn add_unapplied(&mut self, key: &Bytes) {
        self.keys.entry(key.clone()).or_default().unapplied += 1;
    }

    /// A write to `key` noted by `add_unapplied` was applied.
    pub fn remove_unapplied(&mut self, key: &[u8]) {
        // A missing entry means the note was lost, so a reader could have validated
        // against a version about to change.
        debug_assert!(self.keys.contains_key(key), "an applied write was noted unapplied first");
        if let Some(l) = self.keys.get_mut(key) {
            debug_assert!(l.unapplied > 0);
            l.unapplied = l.unapplied.saturating_sub(1);
        }
        self.tidy(key);
    }

    /// A plain write to `key` starts (`true`) or stops (`false`) waiting.
    pub fn set_deferred(&mut self, key: &Bytes, waiting: bool) {
        if waiting {
            self.keys.entry(key.clone()).or_default().deferred += 1;
        } else {
            debug_assert!(
                self.keys.get(&key[..]).is_some_and(|l| l.deferred > 0),
                "a plain write stops waiting only after it started"
            );
            if let Some(l) = self.keys.get_mut(&key[..]) {
                l.deferred = l.deferred.saturating_sub(1);
            }
            self.tidy(key);
        }
    }

    /// Keys with something noted.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Bound;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn writers_readers_and_ranges() {
        let mut t = LockTable::default();
        let range = KeyRange { start: Bound::Included(b("m")), end: Bound::Excluded(b("p")) };
        t.lock(1, &[b("a")], &[b("b")], &[range]);
        assert!(t.read_conflict(2, b"a").is_none(), "shared locks share");
        assert!(t.write_conflict(2, b"a").is_some());
        assert!(t.write_conflict(1, b"a").is_none(), "a reader may upgrade alone");
        assert!(t.read_conflict(2, b"b").is_some());
        assert!(t.read_conflict(1, b"b").is_none());
        assert!(t.write_conflict(2, b"n").is_some(), "a phantom into a scanned range");
        assert!(t.write_conflict(1, b"n").is_none());
        assert!(t.write_conflict(2, b"p").is_none());
        assert!(t.must_defer(b"a") && t.must_defer(b"b") && t.must_defer(b"m") && !t.must_defer(b"z"));
        t.release(1, &[b("a"), b("b")]);
        assert!(!t.must_defer(b"a") && !t.must_defer(b"b") && !t.must_defer(b"m"));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn unapplied_and_deferred() {
        let mut t = LockTable::default();
        t.add_unapplied(&b("k"));
        assert!(t.read_conflict(1, b"k").is_some());
        let all = KeyRange { start: Bound::Unbounded, end: Bound::Unbounded };
        assert!(t.range_conflict(1, &all).is_some());
        assert!(!t.shared_ready(1, &[b("k")], &[]));
        assert!(!t.must_defer(b"k"), "an unapplied write does not hold plain writes back");
        t.remove_unapplied(b"k");
        assert!(t.shared_ready(1, &[b("k")], &[all]));
        t.set_deferred(&b("k"), true);
        assert!(t.must_defer(b"k") && !t.locked(b"k"));
        t.set_deferred(&b("k"), false);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn void_ranges() {
        let r = KeyRange { start: Bound::Included(b("b")), end: Bound::Excluded(b("a")) };
        assert!(r.is_empty());
        let r = KeyRange { start: Bound::Excluded(b("a")), end: Bound::Excluded(b("a")) };
        assert!(r.is_empty());
        let r = KeyRange { start: Bound::Included(b("a")), end: Bound::Included(b("a")) };
        assert!(!r.is_empty() && r.contains(b"a"));
        let t = LockTable::default();
        assert!(
            t.range_conflict(1, &KeyRange { start: Bound::Included(b("b")), end: Bound::Excluded(b("a")) }).is_none()
        );
    }
}
