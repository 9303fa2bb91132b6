//! The blob log: an append-only store of byte blobs addressed by [`Location`].
//!
//! Blobs are appended to numbered segment files in a directory; `append`
//! returns where the blob went, and the caller keeps that location elsewhere
//! (in a key-value store, say) to read the blob back. Segments rotate at
//! `max_segment_bytes`; old ones can be dropped whole or trimmed from either
//! side, and locations outside the trimmed bytes stay valid.
//!
//! ```text
//! <dir>/LOCK                          flock(LOCK_EX) held by the one writer process
//! <dir>/SEGMENTS                      the manifest: segments that must exist, their durable ends
//! <dir>/%08x.blob                     segments (format::blob), the last one open
//! <dir>/%08x.dropped                  tombstone of a dropped segment, until the manifest forgets it
//! <dir>/quarantine-<seg>-<offset>.bin torn tails cut on open
//! ```
//!
//! A [`Location`] never names two blobs: segment numbers are never reused (the
//! manifest keeps the next one), and after a crash or a cut tail appends go to a
//! new segment (see `startup`). Nothing acknowledged disappears without an error:
//! a missing or shortened segment is [`Error::Corruption`] on open and on read.
//!
//! Threads: one writer thread (`ringdb-blob-N`) owns the open segment's end and
//! its own io_uring (see `writer`); reads run on the calling thread (see
//! `reader`). `Db::blob_log` opens a named log in `<db dir>/blobs/<name>/`.

#![forbid(unsafe_code)]

mod location;
mod manifest;
mod reader;
mod recovery;
mod segment;
mod startup;
mod writer;

use std::fmt;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::SystemTime;

use crossbeam_channel::Sender;
use nix::sys::eventfd::{EfdFlags, EventFd};

pub use location::Location;

use crate::error::{Error, Result};
use crate::format::blob::encode_blob;
use crate::format::blob::{FRAME_SHIFT_MAX, FRAME_SHIFT_MIN};
use crate::io::fs::{Fs, LockGuard, NodeKind, OpenFlags, direct_io_block_bytes};
use crate::options::{Durability, IoBackend};
use crate::value::Value;
use reader::Reader;
use segment::{list_segments, open_segment, read_meta, segment_path};
use writer::{AdminOp, Request, Writer};

/// A range of blobs that reached stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobPersistEvent {
    /// First blob made durable by this flush.
    pub first: Location,
    /// Last blob made durable by this flush (inclusive; same segment as `first`).
    pub last: Location,
    /// When the flush completed.
    pub timestamp: SystemTime,
}

/// A segment was sealed (made immutable) and the next one started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRotateEvent {
    /// The segment sealed.
    pub sealed: u32,
    /// Where its records end.
    pub sealed_end: u64,
    /// The segment now written.
    pub next: u32,
    /// When it happened.
    pub timestamp: SystemTime,
}

/// A segment was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobDropEvent {
    /// The segment deleted.
    pub segment: u32,
    /// When it happened.
    pub timestamp: SystemTime,
}

type Callback<T> = Arc<dyn Fn(T) + Send + Sync>;

/// One segment of a blob log, as [`BlobLog::segments`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Segment number.
    pub segment: u32,
    /// First live byte (after the header block, or where a left trim stopped).
    pub data_start: u64,
    /// End of the records (where a right trim stopped, for trimmed segments).
    pub end: u64,
    /// Whether this is the segment being written (it cannot be dropped).
    pub current: bool,
}

impl SegmentInfo {
    /// Bytes of live records.
    pub fn live_bytes(&self) -> u64 {
        self.end - self.data_start
    }
}

/// Smallest accepted segment, in bytes.
pub const BLOB_SEGMENT_BYTES_MIN: u64 = 1 << 20;
/// Largest accepted segment, in bytes (one write covers at most a segment).
pub const BLOB_SEGMENT_BYTES_MAX: u64 = 2 << 30;

/// Configuration of a [`BlobLog`]. Every setter documents its default, unit and range;
/// the values are checked when the log opens ([`Error::InvalidArgument`] names the
/// setter).
///
/// ```
/// use ringdb::{BlobLog, BlobOptions, Error};
///
/// let dir = tempfile::tempdir()?;
/// let options = BlobOptions::default().max_segment_bytes(16 << 20).compression(Some(3));
/// let log = BlobLog::open(dir.path().join("blobs"), options.clone())?;
/// let at = log.append(&[7u8; 100_000])?;
/// assert_eq!(log.read(at)?.len(), 100_000);
/// log.close()?;
///
/// let err = BlobLog::open(dir.path().join("other"), options.max_segment_bytes(1)).err().expect("too small");
/// assert!(matches!(&err, Error::InvalidArgument(what) if what.contains("max_segment_bytes")), "{err}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct BlobOptions {
    durability: Durability,
    max_segment_bytes: u64,
    frame_bytes: usize,
    compression_level: Option<i32>,
    direct_io: bool,
    zero_fill: bool,
    io_backend: IoBackend,
    group_commit_bytes_max: usize,
    queue_depth: usize,
    allow_overwrite: bool,
    accept_lost_blobs: bool,
    on_persist: Option<Callback<BlobPersistEvent>>,
    on_rotate: Option<Callback<BlobRotateEvent>>,
    on_drop: Option<Callback<BlobDropEvent>>,
}

impl Default for BlobOptions {
    fn default() -> BlobOptions {
        BlobOptions {
            durability: Durability::Sync,
            max_segment_bytes: 256 << 20,
            frame_bytes: 64 << 10,
            compression_level: None,
            direct_io: true,
            zero_fill: false,
            io_backend: IoBackend::Uring,
            group_commit_bytes_max: 4 << 20,
            queue_depth: 1024,
            allow_overwrite: false,
            accept_lost_blobs: false,
            on_persist: None,
            on_rotate: None,
            on_drop: None,
        }
    }
}

impl fmt::Debug for BlobOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobOptions")
            .field("durability", &self.durability)
            .field("max_segment_bytes", &self.max_segment_bytes)
            .field("frame_bytes", &self.frame_bytes)
            .field("compression_level", &self.compression_level)
            .field("direct_io", &self.direct_io)
            .field("zero_fill", &self.zero_fill)
            .field("io_backend", &self.io_backend)
            .field("group_commit_bytes_max", &self.group_commit_bytes_max)
            .field("queue_depth", &self.queue_depth)
            .field("allow_overwrite", &self.allow_overwrite)
            .field("accept_lost_blobs", &self.accept_lost_blobs)
            .finish_non_exhaustive()
    }
}

impl BlobOptions {
    /// When an append is acknowledged. Default [`Durability::Sync`]: `append` returns once
    /// the blob is on stable storage; concurrent appends share one write and one flush.
    /// `Periodic` flushes by pending bytes, blobs or age; `None` writes when a batch fills
    /// and flushes only on [`BlobLog::sync`] and close. With either, an acknowledged blob
    /// is readable at once (from memory until written).
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> BlobOptions {
        self.durability = durability;
        self
    }

    /// Size at which segments rotate, in bytes. Default 256 MiB; range 1 MiB..=2 GiB. Each
    /// segment is reserved at this size and shrunk to its records when sealed. A blob (or a
    /// transaction) must fit in one segment.
    #[must_use]
    pub fn max_segment_bytes(mut self, bytes: u64) -> BlobOptions {
        self.max_segment_bytes = bytes;
        self
    }

    /// Size of the frames a blob is cut into, in bytes: the unit of checksums, compression
    /// and range reads. Default 64 KiB; a power of two in 4 KiB..=16 MiB.
    #[must_use]
    pub fn frame_bytes(mut self, bytes: usize) -> BlobOptions {
        self.frame_bytes = bytes;
        self
    }

    /// Compress each frame with zstd at this level (`None`: no compression, the default).
    /// Range -7..=22; 1 to 3 suit most data. A blob whose frames do not shrink is stored
    /// as is. Reads of either kind work whatever this is set to.
    #[must_use]
    pub fn compression(mut self, level: Option<i32>) -> BlobOptions {
        self.compression_level = level;
        self
    }

    /// Open segments with O_DIRECT. Default `true`. Turn off for filesystems that refuse it.
    #[must_use]
    pub fn direct_io(mut self, direct_io: bool) -> BlobOptions {
        self.direct_io = direct_io;
        self
    }

    /// Fill each new segment with written zeros when it is created. Default `false`.
    /// Segments are always reserved with `fallocate`; the reserved extents are
    /// "unwritten", so each `Sync` flush into them also commits an extent conversion to
    /// the filesystem journal. Zero filling removes that (small `Sync` appends measured
    /// about 1.8x faster here) at the price of writing every segment twice and a pause at
    /// each rotation while the next segment is filled; leave it off for large blobs.
    #[must_use]
    pub fn zero_fill(mut self, zero_fill: bool) -> BlobOptions {
        self.zero_fill = zero_fill;
        self
    }

    /// The writer thread's I/O backend. Default [`IoBackend::Uring`]; a kernel that
    /// refuses io_uring gives [`Error::IoUringUnavailable`] at open.
    #[must_use]
    pub fn io_backend(mut self, io_backend: IoBackend) -> BlobOptions {
        self.io_backend = io_backend;
        self
    }

    /// Bytes after which a batch is written without waiting for more, and the size of a
    /// batch buffer. Default 4 MiB; range 4 KiB..=256 MiB. A larger blob or transaction
    /// is written alone.
    #[must_use]
    pub fn group_commit_bytes_max(mut self, bytes: usize) -> BlobOptions {
        self.group_commit_bytes_max = bytes;
        self
    }

    /// Requests that may wait for the writer thread before callers block. Default 1024;
    /// range 1..=1,048,576.
    #[must_use]
    pub fn queue_depth(mut self, depth: usize) -> BlobOptions {
        self.queue_depth = depth;
        self
    }

    /// Whether [`BlobLog::rtrim`], [`BlobLog::ltrim`] and [`BlobLog::drop_segment`] are
    /// allowed when the log opens. Default `false`; switch at run time with
    /// [`BlobLog::set_allow_overwrite`].
    #[must_use]
    pub fn allow_overwrite(mut self, allow: bool) -> BlobOptions {
        self.allow_overwrite = allow;
        self
    }

    /// Whether [`BlobLog::open`] opens a log that lost blobs: a segment deleted, a segment
    /// cut short (truncated, or its records damaged where they were durable), or its
    /// manifest deleted. Default `false`: such a log fails to open with
    /// [`Error::Corruption`] naming the file and what is lost. With `true` it opens: the
    /// lost blobs read as [`Error::Corruption`] (never as other bytes), every other blob
    /// as before, and appends continue in a new segment. A lost segment stays listed
    /// until [`BlobLog::drop_segment`] drops it. Damage followed by later records in the
    /// open segment still fails to open.
    pub fn accept_lost_blobs(mut self, accept: bool) -> BlobOptions {
        self.accept_lost_blobs = accept;
        self
    }

    /// Called on the writer thread after each flush reaches stable storage, with the
    /// blobs it made durable. Keep it short and do not call the log from it (the writer
    /// thread would wait for itself); send to a channel to handle events elsewhere.
    #[must_use]
    pub fn on_persist(mut self, callback: impl Fn(BlobPersistEvent) + Send + Sync + 'static) -> BlobOptions {
        self.on_persist = Some(Arc::new(callback));
        self
    }

    /// Called on the writer thread when a segment is sealed and the next one started
    /// (same rules as [`BlobOptions::on_persist`]).
    #[must_use]
    pub fn on_rotate(mut self, callback: impl Fn(BlobRotateEvent) + Send + Sync + 'static) -> BlobOptions {
        self.on_rotate = Some(Arc::new(callback));
        self
    }

    /// Called on the writer thread when a segment is dropped (same rules as
    /// [`BlobOptions::on_persist`]).
    #[must_use]
    pub fn on_drop(mut self, callback: impl Fn(BlobDropEvent) + Send + Sync + 'static) -> BlobOptions {
        self.on_drop = Some(Arc::new(callback));
        self
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        if !(BLOB_SEGMENT_BYTES_MIN..=BLOB_SEGMENT_BYTES_MAX).contains(&self.max_segment_bytes) {
            return bad(format!(
                "BlobOptions::max_segment_bytes({}) is outside {BLOB_SEGMENT_BYTES_MIN}..={BLOB_SEGMENT_BYTES_MAX}",
                self.max_segment_bytes
            ));
        }
        if !self.frame_bytes.is_power_of_two()
            || !((1 << FRAME_SHIFT_MIN)..=(1 << FRAME_SHIFT_MAX)).contains(&self.frame_bytes)
        {
            return bad(format!(
                "BlobOptions::frame_bytes({}) must be a power of two in 4096..=16777216",
                self.frame_bytes
            ));
        }
        if let Some(level) = self.compression_level {
            if !(-7..=22).contains(&level) {
                return bad(format!("BlobOptions::compression(Some({level})) is outside -7..=22"));
            }
        }
        if !((4 << 10)..=(256 << 20)).contains(&self.group_commit_bytes_max) {
            return bad(format!(
                "BlobOptions::group_commit_bytes_max({}) is outside 4096..=268435456",
                self.group_commit_bytes_max
            ));
        }
        if !(1..=1 << 20).contains(&self.queue_depth) {
            return bad(format!("BlobOptions::queue_depth({}) is outside 1..=1048576", self.queue_depth));
        }
        if let Durability::Periodic { bytes, items, interval } = self.durability {
            if bytes == 0 || items == 0 || interval.is_zero() {
                return bad("Durability::Periodic needs non-zero bytes, items and interval".to_string());
            }
        }
        Ok(())
    }
}

/// Numbers the writer threads of this process (`ringdb-blob-N`).
static WRITER_THREADS: AtomicUsize = AtomicUsize::new(0);

struct Shared {
    dir: PathBuf,
    reader: Arc<Reader>,
    frame_shift: u8,
    compression_level: Option<i32>,
    tx: Option<Sender<Request>>,
    eventfd: Option<EventFd>,
    thread: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
    allow_overwrite: AtomicBool,
    current_segment: Arc<AtomicU32>,
    /// Held while the writer is open; released on close.
    lock: Mutex<Option<LockGuard>>,
}

impl Shared {
    fn wake(&self) {
        if let Some(efd) = &self.eventfd {
            // A failed wake-up can only be a full counter, which wakes the writer anyway.
            let _ = efd.write(1);
        }
    }

    fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request) -> Result<T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.send(make)
    }

    fn send<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request) -> Result<T> {
        let Some(tx) = &self.tx else {
            return Err(Error::InvalidArgument(format!(
                "the blob log in {} was opened read-only (BlobLog::open_read_only); \
                 only the writer handle (BlobLog::open) changes it",
                self.dir.display()
            )));
        };
        let (reply, rx) = oneshot::channel();
        tx.send(make(reply)).map_err(|_| Error::Closed)?;
        self.wake();
        rx.recv().map_err(|_| Error::Closed)?
    }

    fn shut_down(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let result = if self.tx.is_some() { self.send(Request::Close) } else { Ok(()) };
        if let Some(handle) = self.thread.lock().expect("thread handle lock").take() {
            let _ = handle.join();
        }
        self.lock.lock().expect("lock file lock").take();
        result
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

/// An append-only log of blobs; see the module docs of `ringdb::blob` in the source and
/// `docs/ARCHITECTURE.md`. Cheap to clone; every clone is the same log.
///
/// ```
/// use ringdb::{BlobLog, BlobOptions};
///
/// let dir = tempfile::tempdir()?;
/// let log = BlobLog::open(dir.path(), BlobOptions::default())?;
/// let loc = log.append(b"hello, blobs")?;
/// assert_eq!(&*log.read(loc)?, b"hello, blobs");
/// assert_eq!(&*log.read_range(loc, 7..12)?, b"blobs");
/// let mut txn = log.transaction();
/// txn.append(b"one")?;
/// txn.append(b"two")?;
/// let locs = txn.commit()?;
/// assert_eq!(&*log.read(locs[1])?, b"two");
/// log.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct BlobLog {
    shared: Arc<Shared>,
}

// A handle is shared between threads by cloning it; keep that true at compile time.
const _: () = {
    const fn assert_handle<T: Clone + Send + Sync>() {}
    assert_handle::<BlobLog>();
};

impl fmt::Debug for BlobLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobLog")
            .field("dir", &self.shared.dir)
            .field("read_only", &self.shared.tx.is_none())
            .finish_non_exhaustive()
    }
}

impl BlobLog {
    /// Opens (creating if needed) the blob log in `dir` for writing: takes its lock
    /// ([`Error::Locked`] if another process or handle writes it), checks that every
    /// segment its manifest lists is there and holds its durable records
    /// ([`Error::Corruption`] naming the file if not), cuts a torn tail into a quarantine
    /// file, and starts the writer thread. After a crash or a cut, appends continue in a
    /// new segment. `dir` must be a directory (or not exist): a file is
    /// [`Error::InvalidArgument`].
    #[expect(
        clippy::needless_pass_by_value,
        reason = "the options are handed over as built, like every builder; taking them by reference would change the public API"
    )]
    pub fn open(dir: impl AsRef<Path>, options: BlobOptions) -> Result<BlobLog> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        if dir.as_os_str().is_empty() {
            return Err(Error::InvalidArgument("the blob log directory path is empty".into()));
        }
        let fs = options.io_backend.fs();
        match fs.kind(&dir) {
            Ok(Some(NodeKind::File)) => {
                return Err(Error::InvalidArgument(format!(
                    "{} is a file, not a directory: a blob log lives in a directory of its own",
                    dir.display()
                )));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(Error::InvalidArgument(format!(
                    "{} cannot be a directory: a folder on its path is a file",
                    dir.display()
                )));
            }
            Err(e) => return Err(Error::io("stat", dir, e)),
            Ok(_) => {}
        }
        crate::storage::dir::create_dir_all(fs.as_ref(), &dir)?;
        let lock = crate::storage::dir::lock(fs.as_ref(), &dir)?;
        let probe_block = probe_block_bytes(fs.as_ref(), &dir.join("LOCK"))?;
        // The writer thread reads the options themselves, the segment size rounded to
        // whole blocks of this directory.
        let config = Arc::new(BlobOptions {
            max_segment_bytes: options.max_segment_bytes.next_multiple_of(probe_block as u64),
            ..options.clone()
        });
        let start = startup::recover(fs.as_ref(), &dir, &config, probe_block)?;
        let current_segment = Arc::new(AtomicU32::new(start.current));
        let reader = Arc::new(Reader::new(fs, dir.clone(), options.direct_io, Arc::clone(&current_segment)));
        reader.set_current(start.current, start.segments[&start.current].end);
        reader.insert_file(start.current, Arc::clone(&start.file));
        let eventfd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| Error::io("eventfd", None, e.into()))?;
        let efd_raw = eventfd.as_raw_fd();
        let (tx, rx) = crossbeam_channel::bounded(options.queue_depth);
        let (started_tx, started_rx) = oneshot::channel::<Result<()>>();
        let n = WRITER_THREADS.fetch_add(1, Ordering::Relaxed);
        let backend = options.io_backend.clone();
        let (w_config, w_reader) = (Arc::clone(&config), Arc::clone(&reader));
        let thread = std::thread::Builder::new()
            .name(format!("ringdb-blob-{n}"))
            .spawn(move || {
                // The ring is made on the thread that submits to it (SINGLE_ISSUER).
                match backend.make_io(64, efd_raw) {
                    Ok(io) => {
                        let _ = started_tx.send(Ok(()));
                        Writer::new(w_config, io, rx, w_reader, start).run();
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| Error::io("spawn blob writer thread", None, e))?;
        let started = started_rx.recv().unwrap_or(Err(Error::Closed));
        if let Err(e) = started {
            let _ = thread.join();
            return Err(e);
        }
        Ok(BlobLog {
            shared: Arc::new(Shared {
                dir,
                reader,
                frame_shift: options.frame_bytes.trailing_zeros() as u8,
                compression_level: options.compression_level,
                tx: Some(tx),
                eventfd: Some(eventfd),
                thread: Mutex::new(Some(thread)),
                closed: AtomicBool::new(false),
                allow_overwrite: AtomicBool::new(options.allow_overwrite),
                current_segment,
                lock: Mutex::new(Some(lock)),
            }),
        })
    }

    /// Opens the blob log in `dir` for reading only, beside a writer in another process
    /// (or none): it reads every sealed segment and whatever the writer has persisted in
    /// the open one. Takes no lock and changes nothing; writes answer
    /// [`Error::InvalidArgument`]. Only `direct_io` of `options` matters.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "the same shape as `BlobLog::open`, whose options are handed over as built"
    )]
    pub fn open_read_only(dir: impl AsRef<Path>, options: BlobOptions) -> Result<BlobLog> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let fs = options.io_backend.fs();
        if !matches!(fs.kind(&dir), Ok(Some(NodeKind::Dir))) {
            return Err(Error::InvalidArgument(format!("{} is not a blob log directory", dir.display())));
        }
        let last = list_segments(fs.as_ref(), &dir, false)?.last().copied().unwrap_or(0);
        let current_segment = Arc::new(AtomicU32::new(last));
        let reader = Arc::new(Reader::new(fs, dir.clone(), options.direct_io, Arc::clone(&current_segment)));
        Ok(BlobLog {
            shared: Arc::new(Shared {
                dir,
                reader,
                frame_shift: options.frame_bytes.trailing_zeros() as u8,
                compression_level: options.compression_level,
                tx: None,
                eventfd: None,
                thread: Mutex::new(None),
                closed: AtomicBool::new(false),
                allow_overwrite: AtomicBool::new(false),
                current_segment,
                lock: Mutex::new(None),
            }),
        })
    }

    /// The log's directory.
    pub fn path(&self) -> &Path {
        &self.shared.dir
    }

    /// The segment being written (for a read-only handle: the last one when it opened).
    pub fn current_segment(&self) -> u32 {
        self.shared.current_segment.load(Ordering::Acquire)
    }

    /// Appends one blob; returns where it is. Durable on return with
    /// [`Durability::Sync`]; readable on return with every durability.
    pub fn append(&self, blob: &[u8]) -> Result<Location> {
        let record = encode_blob(blob, self.shared.frame_shift, self.shared.compression_level)?;
        let records = vec![(record, blob.len() as u64)];
        let locs = self.shared.call(|reply| Request::Append { records, reply })?;
        Ok(locs[0])
    }

    /// The blob at `loc`. Its crc32s are checked: a mismatch is [`Error::Corruption`]
    /// with the file and offset, and so is a blob whose bytes are gone (its segment
    /// deleted or cut short, or lost in a crash). A location never written, trimmed, or
    /// in a dropped segment is [`Error::InvalidArgument`].
    pub fn read(&self, loc: Location) -> Result<Value> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.shared.reader.read(loc)
    }

    /// Bytes `range` of the blob at `loc`, reading (and decompressing) only the frames
    /// that hold them.
    pub fn read_range(&self, loc: Location, range: Range<u64>) -> Result<Value> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.shared.reader.read_range(loc, range)
    }

    /// A transaction: blobs appended to it become durable and readable all together on
    /// [`BlobTransaction::commit`], or not at all (also across a crash).
    pub fn transaction(&self) -> BlobTransaction {
        BlobTransaction { log: self.clone(), records: Vec::new() }
    }

    /// Same as [`BlobLog::transaction`].
    pub fn batch(&self) -> BlobTransaction {
        self.transaction()
    }

    /// Makes every blob appended so far durable (whatever the durability mode).
    pub fn sync(&self) -> Result<()> {
        self.shared.call(Request::Sync)
    }

    /// The segments, oldest first, with their live byte ranges.
    pub fn segments(&self) -> Result<Vec<SegmentInfo>> {
        if self.shared.tx.is_some() {
            return self.shared.call(Request::Segments);
        }
        read_only_segments(self.shared.reader.fs(), &self.shared.dir)
    }

    /// Allows or forbids [`BlobLog::rtrim`], [`BlobLog::ltrim`] and
    /// [`BlobLog::drop_segment`] from now on (for every clone of this handle).
    pub fn set_allow_overwrite(&self, allow: bool) {
        self.shared.allow_overwrite.store(allow, Ordering::Release);
    }

    fn admin(&self, op: AdminOp, what: &str) -> Result<()> {
        if !self.shared.allow_overwrite.load(Ordering::Acquire) {
            return Err(Error::InvalidArgument(format!(
                "{what} removes data and is refused while overwrite is off: \
                 call BlobLog::set_allow_overwrite(true) (or BlobOptions::allow_overwrite) first"
            )));
        }
        self.shared.call(|reply| Request::Admin(op, reply))
    }

    /// Deletes segment `segment` whole. Only an immutable segment can be dropped: the
    /// newest one (being written, or waiting for its successor on a full disk) gives
    /// [`Error::InvalidArgument`]. Writes no data, so it works on a full disk. Needs
    /// overwrite allowed.
    pub fn drop_segment(&self, segment: u32) -> Result<()> {
        self.admin(AdminOp::Drop(segment), "drop_segment")
    }

    /// Removes the blobs of `segment` from `from_offset` (the start of a blob, or the
    /// segment's end) to its end. Blobs before it stay valid. In the segment being
    /// written, the next appends reuse the space (so a trimmed blob's location may then
    /// name a new blob: the one case where a location is reused, on request); in a
    /// sealed one it is punched out (`fallocate(PUNCH_HOLE)`), so the disk space comes
    /// back. Needs overwrite allowed.
    pub fn rtrim(&self, segment: u32, from_offset: u64) -> Result<()> {
        self.admin(AdminOp::Rtrim(segment, from_offset), "rtrim")
    }

    /// Removes the blobs of `segment` from its start up to `to_offset` (the start of a
    /// blob, or the segment's end). Blobs from `to_offset` on keep their locations; the
    /// space is punched out. Needs overwrite allowed.
    pub fn ltrim(&self, segment: u32, to_offset: u64) -> Result<()> {
        self.admin(AdminOp::Ltrim(segment, to_offset), "ltrim")
    }

    /// Writes and syncs everything appended, stops the writer thread and releases the
    /// lock. Every clone of this handle is closed; later calls answer [`Error::Closed`].
    pub fn close(self) -> Result<()> {
        self.shared.shut_down()
    }
}

/// Blobs appended together: see [`BlobLog::transaction`]. Nothing reaches the log
/// before [`BlobTransaction::commit`]; dropping the transaction discards it.
pub struct BlobTransaction {
    log: BlobLog,
    records: Vec<(Vec<u8>, u64)>,
}

#[expect(
    clippy::missing_fields_in_debug,
    reason = "the pending records are encoded blobs: their count is what a reader can use"
)]
impl fmt::Debug for BlobTransaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobTransaction").field("blobs", &self.records.len()).finish()
    }
}

impl BlobTransaction {
    /// Adds a blob (encoded, and compressed if configured, on this thread).
    pub fn append(&mut self, blob: &[u8]) -> Result<&mut BlobTransaction> {
        let shared = &self.log.shared;
        let record = encode_blob(blob, shared.frame_shift, shared.compression_level)?;
        self.records.push((record, blob.len() as u64));
        Ok(self)
    }

    /// Blobs added so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Appends every blob at once; returns their locations in order. The blobs share one
    /// write: after a crash all of them are there or none.
    pub fn commit(self) -> Result<Vec<Location>> {
        if self.records.is_empty() {
            return Ok(Vec::new());
        }
        let records = self.records;
        self.log.shared.call(|reply| Request::Append { records, reply })
    }
}

/// The O_DIRECT block size of the file system holding the file `path` (the lock file).
fn probe_block_bytes(fs: &dyn Fs, path: &Path) -> Result<usize> {
    let probe = fs.open(path, OpenFlags::READ_ONLY).map_err(|e| Error::io("open", path.to_path_buf(), e))?;
    Ok(direct_io_block_bytes(probe.as_ref()))
}

/// Segments as a read-only handle sees them: sealed ones from their header, the open
/// one by a scan that changes nothing.
fn read_only_segments(fs: &dyn Fs, dir: &Path) -> Result<Vec<SegmentInfo>> {
    let numbers = list_segments(fs, dir, false)?;
    let mut out = Vec::with_capacity(numbers.len());
    for (i, &n) in numbers.iter().enumerate() {
        let path = segment_path(dir, n);
        let file = open_segment(fs, &path, true, false)?;
        let meta = read_meta(file.as_ref(), &path, 4096)?;
        let end = if meta.state.sealed_end != 0 {
            meta.state.sealed_end
        } else {
            recovery::scan_segment(fs, &path, meta.state.data_start)?.end
        };
        out.push(SegmentInfo { segment: n, data_start: meta.state.data_start, end, current: i + 1 == numbers.len() });
    }
    Ok(out)
}
