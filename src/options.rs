//! Options for [`crate::Db::open`].
//!
//! Every setter documents its default, unit and range. `Options::default()`
//! is what a service should start with: durable (`Sync`) writes, O_DIRECT,
//! io_uring, one shard per online CPU.

use std::fmt;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::io::Io;

/// When an acknowledged write is on stable storage.
///
/// ```
/// use std::time::Duration;
/// use ringdb::{Db, Durability, Options};
///
/// let dir = tempfile::tempdir()?;
/// // Acknowledge writes once buffered; make them durable at 1 MiB, 4096 records or 10 ms.
/// let periodic = Durability::Periodic { bytes: 1 << 20, items: 4096, interval: Duration::from_millis(10) };
/// let db = Db::open(dir.path(), Options::default().durability(periodic))?;
/// db.put("k", "v")?; // visible to readers now, durable within 10 ms
/// db.flush()?; // durable now
/// assert_eq!(db.get("k")?.as_deref(), Some(&b"v"[..]));
/// db.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A write returns after its log batch is on stable storage (write and device flush).
    /// Concurrent writers share one flush (group commit). The default.
    Sync,
    /// A write returns once it is in the shard's log buffer and visible to readers; the log
    /// is made durable when `bytes` bytes or `items` records are pending, or `interval` has
    /// passed since the oldest pending record, whichever comes first. A crash may lose the
    /// records of at most that window. [`Options::on_persist`] reports each durable range.
    Periodic {
        /// Pending log bytes that start a flush.
        bytes: u64,
        /// Pending log records that start a flush.
        items: u64,
        /// Longest time a record waits for its flush.
        interval: Duration,
    },
    /// Writes return at once; the log is written when a batch fills, on
    /// [`crate::Db::flush`] and on close, and never flushed from the device's cache
    /// except by `flush`/`close`. For data that can be rebuilt.
    None,
}

/// How the shards do their I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoBackend {
    /// One io_uring per shard (the default).
    Uring,
    /// Blocking `pread`/`pwrite`/`fdatasync` on the shard thread, for kernels and
    /// sandboxes that refuse io_uring.
    Portable,
    /// Every file on a simulated, fault-injecting disk in memory (see
    /// [`crate::SimDisk`]), for crash and fault tests: the key-value store's, and a blob
    /// log's opened with these [`crate::BlobOptions`]. The path given to
    /// [`crate::Db::open`] or [`crate::BlobLog::open`] names a folder on that disk.
    /// Compiled with the `sim` cargo feature only.
    #[cfg(feature = "sim")]
    Sim(crate::io::sim::SimDisk),
}

impl IoBackend {
    /// The file system this backend works on.
    pub(crate) fn fs(&self) -> Arc<dyn crate::io::fs::Fs> {
        match self {
            IoBackend::Uring | IoBackend::Portable => Arc::new(crate::io::fs::RealFs),
            #[cfg(feature = "sim")]
            IoBackend::Sim(disk) => Arc::new(disk.clone()),
        }
    }

    /// A thread's I/O backend, woken through `eventfd` (which must outlive it); a ring
    /// gets `ring_entries` entries. Call it on the thread that will submit: a ring is
    /// made single-issuer.
    pub(crate) fn make_io(&self, ring_entries: u32, eventfd: RawFd) -> Result<Box<dyn Io>> {
        Ok(match self {
            IoBackend::Uring => Box::new(crate::io::uring::UringIo::new(ring_entries, eventfd)?),
            IoBackend::Portable => Box::new(crate::io::portable::PortableIo::new(eventfd)),
            #[cfg(feature = "sim")]
            IoBackend::Sim(disk) => Box::new(crate::io::sim::SimIo::new(disk.clone(), eventfd)),
        })
    }
}

/// How a log batch is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalSync {
    /// One write with `RWF_DSYNC` (the kernel writes, then flushes the device cache or uses
    /// FUA). One operation per batch. The default: measured here to be no slower than
    /// the alternative and it needs one submission-queue entry per batch.
    Dsync,
    /// A write linked to an `fdatasync` in the ring (two operations per batch).
    Fdatasync,
}

/// A range of one shard's log that reached stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistEvent {
    /// The shard whose log was flushed.
    pub shard: usize,
    /// First log sequence number made durable by this flush.
    pub first_lsn: u64,
    /// Last log sequence number made durable by this flush (inclusive).
    pub last_lsn: u64,
    /// When the flush completed.
    pub timestamp: SystemTime,
}

/// Callback told of each durable log range; runs on the shard thread, so keep it short.
pub type PersistCallback = Arc<dyn Fn(PersistEvent) + Send + Sync>;

/// Configuration for [`crate::Db::open`]: start from `Options::default()` and chain the
/// setters, each of which documents its default, unit and range. The values are checked
/// when the database opens: one out of its range is [`Error::InvalidArgument`], naming
/// the setter.
///
/// ```
/// use std::time::Duration;
/// use ringdb::{Db, Durability, Error, Options};
///
/// let dir = tempfile::tempdir()?;
/// let options = Options::default()
///     .shards(2)
///     .cache_bytes(64 << 20)
///     .checkpoint_interval(Duration::from_secs(5));
/// let db = Db::open(dir.path(), options.clone())?;
/// assert_eq!(db.shard_count(), 2);
/// db.close()?;
///
/// let err = Db::open(dir.path(), options.cache_bytes(1)).err().expect("a 1-byte cache is refused");
/// assert!(matches!(&err, Error::InvalidArgument(what) if what.contains("cache_bytes")), "{err}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Options {
    pub(crate) shards: usize,
    pub(crate) durability: Durability,
    pub(crate) direct_io: bool,
    pub(crate) io_backend: IoBackend,
    pub(crate) wal_sync: WalSync,
    pub(crate) wal_segment_bytes: u64,
    pub(crate) group_commit_bytes_max: usize,
    pub(crate) group_commit_batches_max: usize,
    pub(crate) pin_threads: bool,
    pub(crate) ring_entries: u32,
    pub(crate) queue_depth: usize,
    pub(crate) on_persist: Option<PersistCallback>,
    pub(crate) spin: Duration,
    pub(crate) client_spin: Duration,
    pub(crate) cache_bytes: u64,
    pub(crate) page_records_max: usize,
    pub(crate) page_chunk_bytes: usize,
    pub(crate) checkpoint_wal_bytes: u64,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) tx_keys_max: usize,
    pub(crate) tx_bytes_max: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            shards: 0,
            durability: Durability::Sync,
            direct_io: true,
            io_backend: IoBackend::Uring,
            wal_sync: WalSync::Dsync,
            wal_segment_bytes: 64 << 20,
            group_commit_bytes_max: 1 << 20,
            group_commit_batches_max: 4,
            pin_threads: true,
            ring_entries: 256,
            queue_depth: 4096,
            on_persist: None,
            spin: Duration::from_micros(50),
            client_spin: Duration::from_micros(100),
            cache_bytes: 256 << 20,
            page_records_max: 32,
            page_chunk_bytes: 2048,
            checkpoint_wal_bytes: 64 << 20,
            checkpoint_interval: Duration::from_secs(60),
            tx_keys_max: 100_000,
            tx_bytes_max: 16 << 20,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("shards", &self.shards)
            .field("durability", &self.durability)
            .field("direct_io", &self.direct_io)
            .field("io_backend", &self.io_backend)
            .field("wal_sync", &self.wal_sync)
            .field("wal_segment_bytes", &self.wal_segment_bytes)
            .field("group_commit_bytes_max", &self.group_commit_bytes_max)
            .field("group_commit_batches_max", &self.group_commit_batches_max)
            .field("pin_threads", &self.pin_threads)
            .field("ring_entries", &self.ring_entries)
            .field("queue_depth", &self.queue_depth)
            .field("on_persist", &self.on_persist.is_some())
            .field("spin", &self.spin)
            .field("client_spin", &self.client_spin)
            .field("cache_bytes", &self.cache_bytes)
            .field("page_records_max", &self.page_records_max)
            .field("page_chunk_bytes", &self.page_chunk_bytes)
            .field("checkpoint_wal_bytes", &self.checkpoint_wal_bytes)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("tx_keys_max", &self.tx_keys_max)
            .field("tx_bytes_max", &self.tx_bytes_max)
            .finish()
    }
}

/// Smallest accepted log segment, in bytes.
pub const WAL_SEGMENT_BYTES_MIN: u64 = 64 << 10;
/// Largest accepted log segment, in bytes.
pub const WAL_SEGMENT_BYTES_MAX: u64 = 1 << 30;

impl Options {
    /// Number of shards (threads, rings, logs). Default 0: one per CPU this process may
    /// run on. Fixed when the directory is created; reopening with another non-zero
    /// count is [`Error::Incompatible`], and 0 takes the recorded count. Range 0..=1024.
    #[must_use]
    pub fn shards(mut self, shards: usize) -> Options {
        self.shards = shards;
        self
    }

    /// When writes are durable. Default [`Durability::Sync`].
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Options {
        self.durability = durability;
        self
    }

    /// Open log files with O_DIRECT (bypassing the kernel page cache). Default `true`.
    /// Turn off for filesystems that refuse it (ramfs, tmpfs before Linux 6.6, some FUSE
    /// filesystems); durability is unchanged.
    #[must_use]
    pub fn direct_io(mut self, direct_io: bool) -> Options {
        self.direct_io = direct_io;
        self
    }

    /// The I/O backend. Default [`IoBackend::Uring`].
    #[must_use]
    pub fn io_backend(mut self, io_backend: IoBackend) -> Options {
        self.io_backend = io_backend;
        self
    }

    /// How a log batch is made durable. Default [`WalSync::Dsync`].
    #[must_use]
    pub fn wal_sync(mut self, wal_sync: WalSync) -> Options {
        self.wal_sync = wal_sync;
        self
    }

    /// Size of the largest preallocated log segment file, in bytes. Default 64 MiB; range
    /// 64 KiB..=1 GiB, rounded up to the block size. A new log starts with a 64 KiB
    /// segment and each next one is four times larger, up to this size, so a new database
    /// takes little disk and a busy log soon writes segments of this size. One log record
    /// (a put, or a whole write batch) must fit in a segment of this size
    /// ([`Error::BatchTooLarge`] otherwise).
    #[must_use]
    pub fn wal_segment_bytes(mut self, bytes: u64) -> Options {
        self.wal_segment_bytes = bytes;
        self
    }

    /// Largest log batch one flush writes, in bytes. Default 1 MiB; range 4 KiB..=64 MiB.
    /// A single record larger than this is written alone. Group commit never waits to
    /// fill a batch: it flushes whatever is pending as soon as the previous flush is done.
    #[must_use]
    pub fn group_commit_bytes_max(mut self, bytes: usize) -> Options {
        self.group_commit_bytes_max = bytes;
        self
    }

    /// Most log batches a shard keeps queued (one in flight, the rest filling) before it
    /// stops taking requests off its queue (back-pressure). Default 4; range 2..=64.
    #[must_use]
    pub fn group_commit_batches_max(mut self, batches: usize) -> Options {
        self.group_commit_batches_max = batches;
        self
    }

    /// Pin each shard thread to one CPU. Default `true`.
    #[must_use]
    pub fn pin_threads(mut self, pin: bool) -> Options {
        self.pin_threads = pin;
        self
    }

    /// Submission-queue entries of each shard's io_uring. Default 256; range 8..=4096,
    /// a power of two.
    #[must_use]
    pub fn ring_entries(mut self, entries: u32) -> Options {
        self.ring_entries = entries;
        self
    }

    /// Requests that may wait in each shard's queue before callers block. Default 4096;
    /// range 1..=1,048,576.
    #[must_use]
    pub fn queue_depth(mut self, depth: usize) -> Options {
        self.queue_depth = depth;
        self
    }

    /// Called on the shard thread after each log flush reaches stable storage, with the
    /// range of log sequence numbers it made durable (useful with
    /// [`Durability::Periodic`]). Default: none.
    #[must_use]
    pub fn on_persist(mut self, callback: impl Fn(PersistEvent) + Send + Sync + 'static) -> Options {
        self.on_persist = Some(Arc::new(callback));
        self
    }

    /// How long an idle shard thread with no I/O in flight polls its queue before it
    /// sleeps, in microseconds. Default 50; range 0..=10,000; 0 disables. Polling spares
    /// the next request a wake-up (a few to tens of microseconds) at the cost of CPU time
    /// after each burst of work.
    #[must_use]
    pub fn spin_us(mut self, us: u64) -> Options {
        self.spin = Duration::from_micros(us);
        self
    }

    /// How long a thread blocked in [`crate::Ack::wait`] (so in `put`, `delete`,
    /// `write_batch`, `flush`) polls for its answer before it sleeps, in microseconds, when
    /// fewer than half the CPUs' worth of threads are polling already. Default 100; range
    /// 0..=10,000; 0 disables. Awaiting an `Ack` as a future never polls.
    #[must_use]
    pub fn client_spin_us(mut self, us: u64) -> Options {
        self.client_spin = Duration::from_micros(us);
        self
    }

    /// Memory budget for the whole database's data, split evenly among the shards, in
    /// bytes: three quarters of each shard's share is its page cache (tree nodes and
    /// chunks), a quarter its memtable (the values written since the last checkpoint;
    /// a checkpoint is due once it fills that quarter, at least 1 MiB). Default 256 MiB;
    /// range 64 KiB..=1 TiB.
    #[must_use]
    pub fn cache_bytes(mut self, bytes: u64) -> Options {
        self.cache_bytes = bytes;
        self
    }

    /// Most records in one leaf of a shard's tree (N, besides the 4 KiB a node is filled
    /// to). Default 32; range 1..=4096. Fewer records make smaller leaves that are
    /// cheaper to rewrite.
    #[must_use]
    pub fn page_records_max(mut self, records: usize) -> Options {
        self.page_records_max = records;
        self
    }

    /// Values longer than this many bytes get a chunk of their own instead of a place in
    /// a leaf. Default 2048; range 64..=1 MiB.
    #[must_use]
    pub fn page_chunk_bytes(mut self, bytes: usize) -> Options {
        self.page_chunk_bytes = bytes;
        self
    }

    /// A shard checkpoints once this many log bytes were appended since its last
    /// checkpoint. Default 64 MiB; range 64 KiB..=64 GiB. It bounds the log replayed at
    /// open and the memory held by values written since the last checkpoint.
    #[must_use]
    pub fn checkpoint_wal_bytes(mut self, bytes: u64) -> Options {
        self.checkpoint_wal_bytes = bytes;
        self
    }

    /// A shard with writes since its last checkpoint checkpoints at least this often.
    /// Default 60 s; range 10 ms..=1 day.
    #[must_use]
    pub fn checkpoint_interval(mut self, interval: Duration) -> Options {
        self.checkpoint_interval = interval;
        self
    }

    /// The file system the backend works on.
    pub(crate) fn fs(&self) -> Arc<dyn crate::io::fs::Fs> {
        self.io_backend.fs()
    }

    /// Most keys one transaction may read, scan and write together (each counted once
    /// per kind of access; every key a scan returns counts). Default 100,000; range
    /// 1..=10,000,000. Past it, the operation fails with [`Error::TransactionTooLarge`]
    /// and the transaction must be rolled back. The read set lives in memory until commit
    /// and is validated key by key on the shard threads, which this bounds.
    #[must_use]
    pub fn tx_keys_max(mut self, keys: usize) -> Options {
        self.tx_keys_max = keys;
        self
    }

    /// Most bytes (keys plus values) one transaction may write. Default 16 MiB; range
    /// 1 KiB..=1 GiB. Past it, the write fails with [`Error::TransactionTooLarge`].
    /// Independently, one shard's part of a transaction must fit in one log record
    /// ([`Error::BatchTooLarge`] at commit otherwise), as for a write batch.
    #[must_use]
    pub fn tx_bytes_max(mut self, bytes: usize) -> Options {
        self.tx_bytes_max = bytes;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let check = |ok: bool, what: String| if ok { Ok(()) } else { Err(Error::InvalidArgument(what)) };
        check(
            (64 << 10..=1 << 40).contains(&self.cache_bytes),
            format!("Options::cache_bytes({}) is outside 64 KiB..=1 TiB", self.cache_bytes),
        )?;
        check(
            (1..=4096).contains(&self.page_records_max),
            format!("Options::page_records_max({}) is outside 1..=4096", self.page_records_max),
        )?;
        check(
            (64..=1 << 20).contains(&self.page_chunk_bytes),
            format!("Options::page_chunk_bytes({}) is outside 64..=1048576", self.page_chunk_bytes),
        )?;
        check(
            (64 << 10..=64 << 30).contains(&self.checkpoint_wal_bytes),
            format!("Options::checkpoint_wal_bytes({}) is outside 64 KiB..=64 GiB", self.checkpoint_wal_bytes),
        )?;
        check(
            (Duration::from_millis(10)..=Duration::from_secs(86_400)).contains(&self.checkpoint_interval),
            format!("Options::checkpoint_interval({:?}) is outside 10 ms..=1 day", self.checkpoint_interval),
        )?;
        if self.client_spin > Duration::from_millis(10) {
            return Err(Error::InvalidArgument(format!(
                "Options::client_spin_us({}) is above 10000",
                self.client_spin.as_micros()
            )));
        }
        if self.spin > Duration::from_millis(10) {
            return Err(Error::InvalidArgument(format!("Options::spin_us({}) is above 10000", self.spin.as_micros())));
        }
        check(
            (1..=10_000_000).contains(&self.tx_keys_max),
            format!("Options::tx_keys_max({}) is outside 1..=10000000", self.tx_keys_max),
        )?;
        check(
            (1 << 10..=1 << 30).contains(&self.tx_bytes_max),
            format!("Options::tx_bytes_max({}) is outside 1 KiB..=1 GiB", self.tx_bytes_max),
        )?;
        let bad = |what: String| Err(Error::InvalidArgument(what));
        if self.shards > 1024 {
            return bad(format!("Options::shards({}) is above 1024", self.shards));
        }
        if !(WAL_SEGMENT_BYTES_MIN..=WAL_SEGMENT_BYTES_MAX).contains(&self.wal_segment_bytes) {
            return bad(format!(
                "Options::wal_segment_bytes({}) is outside {WAL_SEGMENT_BYTES_MIN}..={WAL_SEGMENT_BYTES_MAX}",
                self.wal_segment_bytes
            ));
        }
        if !((4 << 10)..=(64 << 20)).contains(&self.group_commit_bytes_max) {
            return bad(format!(
                "Options::group_commit_bytes_max({}) is outside 4096..=67108864",
                self.group_commit_bytes_max
            ));
        }
        if !(2..=64).contains(&self.group_commit_batches_max) {
            return bad(format!(
                "Options::group_commit_batches_max({}) is outside 2..=64",
                self.group_commit_batches_max
            ));
        }
        if !(8..=4096).contains(&self.ring_entries) || !self.ring_entries.is_power_of_two() {
            return bad(format!("Options::ring_entries({}) must be a power of two in 8..=4096", self.ring_entries));
        }
        if !(1..=1 << 20).contains(&self.queue_depth) {
            return bad(format!("Options::queue_depth({}) is outside 1..=1048576", self.queue_depth));
        }
        if let Durability::Periodic { bytes, items, interval } = self.durability {
            if bytes == 0 || items == 0 || interval.is_zero() {
                return bad("Durability::Periodic needs non-zero bytes, items and interval".to_string());
            }
        }
        Ok(())
    }
}
