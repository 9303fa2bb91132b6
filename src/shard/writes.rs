//! Plain writes (puts, deletes, batches) and applying what the log accepted.
//!
//! Under `Durability::Sync` a write is applied to the index once its batch is
//! durable ([`Shard::apply_flushed`]); under Periodic and None once it is in the
//! log's buffer. While transactions hold locks on its keys a plain write waits
//! behind them in arrival order (`TxState::hold_back`), so per key the log's
//! order is the order of application.

use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;

use super::{Pending, Shard, WriteRequest};
use crate::error::{Error, Result};
use crate::format::record::{KIND_OPS, OP_DELETE, OP_PUT, Op, decode_ops};
use crate::options::Durability;
use crate::stats::{OpKind, ShardCounters, record};
use crate::storage::index::{IndexWriter, Stored};

impl Shard {
    /// Whether writes are applied only once durable (`Durability::Sync`).
    pub(super) fn sync(&self) -> bool {
        self.options.durability == Durability::Sync
    }

    /// A plain write: appended now, or held back while a transaction locks one of its
    /// keys (or an earlier held-back write has one).
    pub(super) fn handle_plain_write(&mut self, w: WriteRequest) {
        // A running checkpoint reads the index: a write applied under it could be half in
        // the checkpoint's pages and half not.
        debug_assert!(!self.checkpoints.running(), "requests wait while a checkpoint runs");
        if !self.tx.engaged() {
            self.append_write(w, None);
            return;
        }
        let keys = match keys_of(&w.body, w.op_count) {
            Ok(keys) => keys,
            Err(e) => {
                let _ = w.reply.send(Err(e));
                return;
            }
        };
        if self.tx.must_hold_back(&keys) {
            self.tx.hold_back(w, keys);
            return;
        }
        self.append_write(w, Some(&keys));
    }

    /// Appends a plain write (or a one-step transaction's ops) and, under Sync, notes its
    /// keys unapplied until its batch is durable.
    pub(super) fn append_write(&mut self, w: WriteRequest, keys: Option<&[Bytes]>) {
        if self.sync() {
            self.append_sync_write(w, keys);
            return;
        }
        // Periodic and None: acknowledged and visible once in the log buffer.
        match self.wal.append(KIND_OPS, &w.body, w.body_crc, w.op_count, None) {
            Ok(lsn) => {
                debug_assert!(lsn > self.applied_lsn, "a new record's LSN is above every applied one");
                let ops = decode_ops(&w.body, w.op_count).expect("ops encoded by ringdb decode");
                apply_ops(&mut self.shared.index_writer(), &w.body, &ops, lsn);
                self.applied_lsn = self.applied_lsn.max(lsn);
                let mut latency = self.shared.write_latency();
                count_write(&self.shared.counters, &mut latency, w.kind, w.user_bytes, w.started);
                let _ = w.reply.send(Ok(()));
            }
            Err((e, _)) => {
                let _ = w.reply.send(Err(e));
            }
        }
    }

    /// Under Sync: appends the write with its reply, answered once its batch is durable.
    fn append_sync_write(&mut self, w: WriteRequest, keys: Option<&[Bytes]>) {
        let lsn = self.wal.last_lsn() + 1;
        debug_assert!(self.applied_lsn < lsn, "under Sync nothing is applied before it is appended");
        let pending = Pending {
            lsn,
            body: w.body.clone(),
            op_count: w.op_count,
            kind: w.kind,
            user_bytes: w.user_bytes,
            started: w.started,
            reply: w.reply,
        };
        match self.wal.append(KIND_OPS, &w.body, w.body_crc, w.op_count, Some(pending)) {
            Ok(appended) => {
                debug_assert_eq!(appended, lsn, "the log gives the next LSN to the next record");
                if self.tx.tracks(lsn) {
                    if let Some(keys) = keys {
                        self.tx.note_unapplied(keys);
                    } else {
                        let keys = keys_of(&w.body, w.op_count).expect("ops encoded by ringdb decode");
                        self.tx.note_unapplied(&keys);
                    }
                }
            }
            Err((e, pending)) => {
                let pending = pending.expect("append hands the item back on failure");
                let _ = pending.reply.send(Err(e));
            }
        }
    }

    /// Applies the writes of a flushed batch (Sync mode) to the index, in log order, and
    /// answers them.
    pub(super) fn apply_flushed(&mut self, items: Vec<Pending>, first_lsn: u64, last_lsn: u64) {
        if items.is_empty() {
            return;
        }
        let shared = std::sync::Arc::clone(&self.shared);
        let mut latency = shared.write_latency();
        let mut previous_lsn = 0;
        for p in items {
            assert!(p.lsn > previous_lsn, "a batch's writes are applied in log order");
            previous_lsn = p.lsn;
            debug_assert!((first_lsn..=last_lsn).contains(&p.lsn), "a write belongs to the batch that flushed it");
            let ops = decode_ops(&p.body, p.op_count).expect("ops encoded by ringdb decode");
            apply_ops(&mut shared.index_writer(), &p.body, &ops, p.lsn);
            // A commit marker applied out of order may be ahead already.
            self.applied_lsn = self.applied_lsn.max(p.lsn);
            self.note_applied(p.lsn, &p.body, p.op_count);
            count_write(&shared.counters, &mut latency, p.kind, p.user_bytes, p.started);
            let _ = p.reply.send(Ok(()));
        }
    }
}

/// The keys of the ops in `body`.
pub(super) fn keys_of(body: &Bytes, op_count: u32) -> Result<Vec<Bytes>> {
    let ops = decode_ops(body, op_count).map_err(|what| Error::InvalidArgument(format!("malformed ops: {what}")))?;
    Ok(ops.iter().map(|op| body.slice(op.key_offset..op.key_offset + op.key.len())).collect())
}

/// Counts an applied write and records its latency.
pub(super) fn count_write(
    c: &ShardCounters,
    latency: &mut [Histogram<u64>; 3],
    kind: OpKind,
    user_bytes: u64,
    started: Instant,
) {
    let (counter, slot) = match kind {
        OpKind::Put => (&c.puts, 0),
        OpKind::Delete => (&c.deletes, 1),
        _ => (&c.batches, 2),
    };
    ShardCounters::add(counter, 1);
    ShardCounters::add(&c.write_bytes, user_bytes);
    record(&mut latency[slot], started.elapsed());
}

/// Applies decoded ops of the record with `lsn` to the memtable. Keys and values are
/// slices of `body`. A delete leaves a tombstone, which hides the key in the tree
/// until a checkpoint removes it there.
pub(super) fn apply_ops(index: &mut IndexWriter, body: &Bytes, ops: &[Op<'_>], lsn: u64) {
    debug_assert!(lsn > 0, "LSNs start at 1");
    for op in ops {
        let key = body.slice(op.key_offset..op.key_offset + op.key.len());
        match op.kind {
            OP_PUT => {
                let value = body.slice(op.value_offset..op.value_offset + op.value.len());
                index.insert(key, Stored::Inline(value), lsn);
            }
            OP_DELETE => {
                index.insert(key, Stored::Tombstone, lsn);
            }
            other => unreachable!("op kind {other} passed decode_ops"),
        }
    }
}
