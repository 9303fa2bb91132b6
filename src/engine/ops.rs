//! One shard's part of a set of writes, and the one place a batch is split by shard.
//!
//! [`ShardOps`] is one shard's part of a set of writes, encoded as log ops (see
//! `format::record`). [`split_batch`] splits a batch by the shard that owns each key;
//! plain batches (`write.rs`) and transaction commits (`commit.rs`) both build on it,
//! so it sits below both.

use bytes::Bytes;

use crate::batch::WriteBatch;
use crate::format::record::{OP_HEADER_BYTES, encode_op};

/// One shard's part of a set of writes: ops encoded back to back.
#[derive(Debug, Default, Clone)]
pub(crate) struct ShardOps {
    pub ops: Vec<u8>,
    pub op_count: u32,
    /// Key and value bytes of the ops (what callers wrote).
    pub user_bytes: u64,
    /// Key length of the first op (for aligning its value).
    first_key_len: Option<usize>,
}

impl ShardOps {
    /// Appends an op of `kind` (put or delete).
    pub fn push(&mut self, kind: u8, key: &[u8], value: &[u8]) {
        let start = self.ops.len();
        encode_op(&mut self.ops, kind, key, value);
        self.note(key.len(), self.ops.len() - start);
    }

    /// Appends an op already encoded, whose key is `key_len` bytes.
    pub fn push_encoded(&mut self, op: &[u8], key_len: usize) {
        self.ops.extend_from_slice(op);
        self.note(key_len, op.len());
    }

    fn note(&mut self, key_len: usize, op_len: usize) {
        debug_assert!(op_len >= OP_HEADER_BYTES + key_len, "an op holds its header and its key");
        self.first_key_len.get_or_insert(key_len);
        self.op_count += 1;
        self.user_bytes += (op_len - OP_HEADER_BYTES) as u64;
    }

    pub fn is_empty(&self) -> bool {
        self.op_count == 0
    }

    /// The ops as a record body whose first value starts 8-aligned in memory: the index
    /// keeps values as slices of the body until the next checkpoint, and a typed table
    /// reads a record in place only where it is aligned (allocations are at least
    /// 8-aligned, so leading slack does it).
    pub fn aligned(&self) -> Bytes {
        let pad = self.first_key_len.map_or(0, |k| (8 - (OP_HEADER_BYTES + k) % 8) % 8);
        let mut body = Vec::with_capacity(pad + self.ops.len());
        body.resize(pad, 0);
        body.extend_from_slice(&self.ops);
        Bytes::from(body).slice(pad..)
    }
}

/// `batch`'s ops split by the shard that owns each key (of `shard_count`), in order.
pub(crate) fn split_batch(batch: &WriteBatch, shard_count: usize) -> Vec<ShardOps> {
    let mut parts = vec![ShardOps::default(); shard_count];
    for (op, key) in batch.ops() {
        parts[super::router::shard_of(key, shard_count)].push_encoded(op, key.len());
    }
    debug_assert_eq!(parts.iter().map(|p| p.op_count as usize).sum::<usize>(), batch.len(), "every op goes once");
    parts
}
