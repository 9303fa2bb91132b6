//! ringdb: an embedded storage engine for Linux, one io_uring per core.
//!
//! One thread per shard owns a slice of the keys, its own io_uring and its
//! own write-ahead log, written with O_DIRECT in group-committed batches.
//! Clients call from any thread, blocking or async: writes travel to the
//! owning shard over a channel; reads go straight to the shard's concurrent
//! index and never wait for the shard thread.
//!
//! ```
//! use ringdb::{Db, Options, WriteBatch};
//!
//! let dir = tempfile::tempdir()?;
//! let db = Db::open(dir.path(), Options::default())?;
//! db.put(b"apple", b"red")?;
//! let mut batch = WriteBatch::new();
//! batch.put(b"banana", b"yellow")?.delete(b"apple")?;
//! db.write_batch(batch)?;
//! assert_eq!(db.get(b"apple")?, None);
//! assert_eq!(db.get(b"banana")?.as_deref(), Some(&b"yellow"[..]));
//! db.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Typed tables ([`Table`]) hold fixed-layout records (`bytemuck::Pod` types
//! declared with [`record!`](crate::record!)) addressed by a `u64` index, read in place with no
//! deserialization, in the same shards.
//!
//! Layers, top to bottom, each using only those below it: the API (`db`,
//! `transaction`, `table`, `batch`, `value`, `options`, `error`, `stats`; keys
//! validated once, into `key`'s types) → `engine` (what the API types share:
//! shards, registry, limits; writes, commits, reads, scans, typed tables) →
//! `shard` (thread, queue, locks) → `storage` (index, pages, log) → `io`
//! (io_uring or portable backend) and `format` (pure encoders and decoders).

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod batch;
mod blob;
mod db;
mod engine;
mod error;
mod failpoint;
pub mod format;
mod io;
mod key;
mod options;
mod shard;
mod stats;
mod storage;
mod table;
mod transaction;
mod value;

pub use batch::WriteBatch;
pub use blob::{
    BLOB_SEGMENT_BYTES_MAX, BLOB_SEGMENT_BYTES_MIN, BlobDropEvent, BlobLog, BlobOptions, BlobPersistEvent,
    BlobRotateEvent, BlobTransaction, Location, SegmentInfo,
};
pub use db::Db;
pub use engine::scan::{SCAN_CHUNK, Scan};
pub use error::{Error, Result};
#[cfg(feature = "sim")]
pub use io::sim::{CrashMode, SECTOR_BYTES, SimDisk, SimFaults, SimStats};
pub use key::KEY_BYTES_MAX;
pub use options::{
    Durability, IoBackend, Options, PersistCallback, PersistEvent, WAL_SEGMENT_BYTES_MAX, WAL_SEGMENT_BYTES_MIN,
    WalSync,
};
pub use stats::{OpKind, Stats};
#[doc(hidden)]
pub use table::field_size;
pub use table::{Field, Record, Schema, Table, TableScan};
pub use transaction::{
    CommitInfo, TRANSACT_ATTEMPTS_MAX, TRANSACT_BACKOFF_FIRST, TRANSACT_BACKOFF_MAX, TRANSACT_OPTIMISTIC_ATTEMPTS,
    Transaction,
};
pub use value::{Ack, Value};

/// Longest value accepted, in bytes.
pub const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;
