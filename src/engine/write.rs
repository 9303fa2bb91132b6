//! Writes: a record body sent to the shard that owns its keys.
//!
//! A plain batch on one shard sends its part (see `ops.rs`) as one record, and a
//! batch across shards, like a transaction, commits its parts through the commit
//! protocol (`commit.rs`).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::Engine;
use super::commit::Plan;
use super::ops::{ShardOps, split_batch};
use crate::batch::{WriteBatch, check_value};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::shard::{Request, WriteRequest};
use crate::stats::OpKind;
use crate::value::Ack;

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

    /// Acknowledged when every write acknowledged before the call is on stable storage.
    pub fn flush(&self) -> Ack {
        self.broadcast(Request::Flush, true)
    }

    /// Acknowledged when every shard has written a checkpoint begun after the call.
    pub fn checkpoint(&self) -> Ack {
        self.broadcast(Request::Checkpoint, false)
    }

    /// Sends every shard the request `make` builds around a reply channel, and returns
    /// the acknowledgement of all (a flush or a checkpoint).
    fn broadcast(&self, make: impl Fn(oneshot::Sender<Result<()>>) -> Request, spin: bool) -> Ack {
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
