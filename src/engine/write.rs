//! Writes: a record body sent to the shard that owns its keys.
//!
//! [`ShardOps`] is one shard's part of a set of writes, encoded as log ops
//! (see `format::record`). [`split_batch`] is the one place a batch is split
//! by shard: a plain batch on one shard sends its part as one record, and a
//! batch across shards, like a transaction, commits its parts through the
//! commit protocol (`commit.rs`).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::Engine;
use super::commit::Plan;
use crate::batch::{WriteBatch, check_value};
use crate::error::{Error, Result};
use crate::format::record::{OP_HEADER_BYTES, encode_op};
use crate::key::Key;
use crate::shard::{Request, WriteRequest};
use crate::stats::OpKind;
use crate::value::Ack;

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

impl Engine {
    /// Sends a record body to `shard`; the receiver answers once it is acknowledged.
    fn send_write(
        &self,
        shard: usize,
        body: Bytes,
        (op_count, user_bytes): (u32, u64),
        kind: OpKind,
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
        self.shards()[shard].send(Request::Write(request))?;
        Ok(rx)
    }

    /// A put or delete of one key.
    pub fn write_one(&self, kind: u8, key: Key<'_>, value: &[u8], op: OpKind) -> Ack {
        if let Err(e) = check_value(value).and_then(|()| self.check_open()) {
            return Ack::failed(e);
        }
        let mut ops = ShardOps::default();
        ops.push(kind, &key, value);
        match self.send_write(self.shard_of(&key), ops.aligned(), (ops.op_count, ops.user_bytes), op) {
            Ok(rx) => Ack::new(vec![rx], self.limits.client_spin),
            Err(e) => Ack::failed(e),
        }
    }

    /// Applies every op of `batch` in order, all or nothing, also across shards.
    pub fn write_batch(self: &Arc<Self>, batch: &WriteBatch) -> Ack {
        if let Err(e) = self.check_open() {
            return Ack::failed(e);
        }
        if batch.is_empty() {
            return Ack::done();
        }
        let parts = split_batch(batch, self.shards().len());
        if parts.iter().filter(|p| !p.is_empty()).count() > 1 {
            // Several shards: through the transaction commit protocol, so the batch is
            // atomic across shards and crashes. It never fails on a conflict: after one
            // optimistic round it waits for the keys, shard by shard. It completes before
            // this returns: while it retries, its keys are free on some shards, and a write
            // the caller issues after this call must not land before the batch there
            // (writes of one caller keep their order, as on one shard).
            let outcome =
                Plan::for_batch(Arc::clone(self), parts, batch.len()).and_then(|plan| super::block_on(plan.run(true)));
            return match outcome {
                Ok(_) => Ack::done(),
                Err(e) => Ack::failed(e),
            };
        }
        let (shard, ops) = parts.into_iter().enumerate().find(|(_, p)| !p.is_empty()).expect("a batch has an op");
        // Refuse the whole batch before sending it: an input error must write nothing.
        let max = self.shards()[shard].body_bytes_max();
        if ops.ops.len() > max {
            return Ack::failed(Error::BatchTooLarge { bytes: ops.ops.len(), max });
        }
        let counts = (ops.op_count, ops.user_bytes);
        match self.send_write(shard, Bytes::from(ops.ops), counts, OpKind::Batch) {
            Ok(rx) => Ack::new(vec![rx], self.limits.client_spin),
            Err(e) => Ack::failed(e),
        }
    }

    /// Sends every shard the request `make` builds around a reply channel, and returns
    /// the acknowledgement of all (a flush or a checkpoint).
    pub fn broadcast(&self, make: impl Fn(oneshot::Sender<Result<()>>) -> Request, spin: bool) -> Ack {
        if let Err(e) = self.check_open() {
            return Ack::failed(e);
        }
        let mut receivers = Vec::with_capacity(self.shards().len());
        for shard in self.shards() {
            let (reply, rx) = oneshot::channel();
            if let Err(e) = shard.send(make(reply)) {
                return Ack::failed(e);
            }
            receivers.push(rx);
        }
        let spin = if spin { self.limits.client_spin } else { std::time::Duration::ZERO };
        Ack::new(receivers, spin)
    }
}
