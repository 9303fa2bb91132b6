//! A shard: one pinned thread that owns one slice of the keys, its log and its ring.
//!
//! Clients put requests on the shard's bounded queue and wake it through its
//! eventfd only when it sleeps (`sleeping` is set just before it enters the
//! kernel to wait, and the queue is checked again after setting it, so a
//! request is never left unseen). Each wake-up drains many requests, appends
//! their records to the log and submits the flush in the same
//! `io_uring_enter` that waits for completions.
//!
//! The index is a concurrent hash map that only the shard thread writes and
//! any thread reads: a `get` never hops to the shard thread. Under
//! `Durability::Sync` a write is applied to the index only once its batch is
//! durable, so a reader never sees data a crash could take back.
//!
//! The shard's parts, one file each:
//! - `handle`: what clients hold ([`ShardHandle`]) and the start of the thread;
//! - `event_loop`: the loop, the only place that waits for I/O completions, which
//!   it routes by their token's kind (log, checkpoint, read);
//! - `writes`: plain puts, deletes and batches, and applying what the log made
//!   durable;
//! - `recovery`: opening, replaying the checkpoint and the log;
//! - `checkpoint`: when a checkpoint runs, and driving its steps from the loop;
//! - `stats`: figures published for `Db::stats`;
//! - `txn` and `locks`: transactions;
//! - `registry`: what the shards share about cross-shard transactions (held by the
//!   engine, read by every shard).

#![forbid(unsafe_code)]

mod checkpoint;
mod event_loop;
mod handle;
mod locks;
mod recovery;
pub(crate) mod registry;
mod stats;
mod txn;
mod writes;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::Receiver;

use crate::error::Result;
use crate::io::{Io, SyncMode};
use crate::options::Options;
use crate::stats::OpKind;
use crate::storage::page::store::PageStore;
use crate::storage::wal::writer::WalWriter;

use handle::ShardShared;
pub(crate) use handle::{Resolution, ShardHandle, Starting, allowed_cpus, spawn};
pub(crate) use locks::KeyRange;
pub(crate) use txn::{ScanRead, TxRequest};

/// What a client asks of a shard.
pub(crate) enum Request {
    /// Append a record and answer when it is acknowledged.
    Write(WriteRequest),
    /// Answer when everything appended so far is durable.
    Flush(oneshot::Sender<Result<()>>),
    /// Make everything durable, stop, and answer.
    Shutdown(oneshot::Sender<Result<()>>),
    /// Write a checkpoint now and answer when it is durable.
    Checkpoint(oneshot::Sender<Result<()>>),
    /// Validate a transaction that lives on this shard alone and write it in one record.
    TxCommitOne(TxRequest),
    /// Validate, lock and prepare a transaction's part on this shard.
    TxPrepare(TxRequest),
    /// Commit or abort a prepared transaction's part (answered once applied, or, for an
    /// abort with `durable`, once its marker is durable).
    TxDecide { txid: u64, commit: bool, durable: bool, reply: oneshot::Sender<Result<()>> },
    /// Take shared locks for a transaction in locking mode; answered once granted.
    TxLock { txid: u64, keys: Vec<Bytes>, ranges: Vec<KeyRange>, reply: oneshot::Sender<Result<()>> },
    /// Release what a transaction that is not prepared holds here.
    TxRelease { txid: u64 },
}

/// One record to append: ops encoded by the client (see `format::record`).
pub(crate) struct WriteRequest {
    pub body: Bytes,
    pub body_crc: u32,
    pub op_count: u32,
    pub kind: OpKind,
    pub user_bytes: u64,
    pub started: Instant,
    pub reply: oneshot::Sender<Result<()>>,
}

/// A write waiting for its batch to become durable (Sync mode).
struct Pending {
    /// LSN of the write's record.
    lsn: u64,
    body: Bytes,
    op_count: u32,
    kind: OpKind,
    user_bytes: u64,
    started: Instant,
    reply: oneshot::Sender<Result<()>>,
}

/// Whether the shard is stopping, and who to tell when it has.
enum Stop {
    /// Serving requests.
    Running,
    /// A client asked to stop: make everything durable, stop, answer it.
    Requested(oneshot::Sender<Result<()>>),
    /// Every handle is gone: make everything durable and stop, with nobody to answer.
    Abandoned,
}

impl Stop {
    fn stopping(&self) -> bool {
        !matches!(self, Stop::Running)
    }
}

/// Waiting for the log to become durable: who waits, and how far it was reported.
struct Durable {
    /// How a flush is made durable (`Options::wal_sync`).
    sync: SyncMode,
    /// Callers waiting for an LSN to be durable.
    waiters: Vec<(u64, oneshot::Sender<Result<()>>)>,
    /// Last LSN reported to `on_persist`.
    persisted_lsn: u64,
}

/// One shard's state, owned by its thread; see the module docs.
struct Shard {
    shared: Arc<ShardShared>,
    options: Options,
    rx: Receiver<Request>,
    io: Box<dyn Io>,
    wal: WalWriter<Pending>,
    durable: Durable,
    stop: Stop,
    /// The tree on disk, and checkpoints into it.
    pages: PageStore,
    /// Highest LSN applied to the memtable.
    applied_lsn: u64,
    checkpoints: checkpoint::Checkpoints,
    /// Transactions on this shard: locks, prepared writes, held-back writes.
    tx: txn::TxState,
}
