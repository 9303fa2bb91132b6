//! The writer thread of a blob log (`ringdb-blob-N`): batches, group commit,
//! rotation, trims and drops.
//!
//! Callers encode their records (crc32, compression) on their own threads and
//! send them here. The thread owns the current segment's end and one io_uring
//! (or the portable backend) through the [`Io`] trait. Records gather in the
//! open batch, a block-aligned buffer mirroring the file from the block that
//! holds the log's end; one flush is in flight at a time, and when it completes
//! the next batch goes out at once (group commit: every append that arrived
//! meanwhile shares one write and one device flush). A transaction's records
//! always go into one batch, so they reach the file in one write.
//!
//! Each flush rewrites the partial block at the end with the bytes it already
//! held plus new ones; the old bytes are unchanged, so a torn write cannot harm
//! records already durable.
//!
//! Acknowledgement per durability: `Sync` answers when the flush carrying the
//! records completed with `RWF_DSYNC`; `Periodic` and `None` answer at once and
//! make the records readable from memory until their write completes. Operations
//! that change the layout (rotation, trims, drops) wait until nothing is in
//! flight and nothing is buffered, and run on this thread, in request order.
//!
//! A failed write or sync poisons the log: it answers every later write with
//! the failure (an [`Error::Io`] naming the blob log, the segment and the OS error)
//! until reopened, and never retries as if data were safe. A segment that cannot
//! be created (a full disk) poisons nothing: the append that needed it gets the
//! error, and the next append tries again.
//!
//! The manifest (`manifest`) is updated before anything is appended to a new
//! segment, when a segment is sealed or cut short, and on close; drops leave a
//! tombstone instead, so they need no space.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use crossbeam_channel::{Receiver, TryRecvError};

use super::location::Location;
use super::manifest::{self, ManifestFile};
use super::reader::{Reader, SegmentFile};
use super::recovery::is_record_start;
use super::segment::{create_segment, open_segment, punch_hole, segment_path, write_state};
use super::{BlobDropEvent, BlobOptions, BlobPersistEvent, BlobRotateEvent, SegmentInfo};
use crate::error::{Error, Result};
use crate::format::blob::{ManifestEntry, RECORD_FLAG_UNSYNCED, SegmentState, stamp_record};
use crate::io::fs::{OpenFlags, direct_io_block_bytes, sync_dir};
use crate::io::token::{Token, TokenKind};
use crate::io::{AlignedBuf, Completion, Io, SyncMode};
use crate::options::Durability;

/// Answer to an append: the locations of its blobs.
pub type AppendReply = oneshot::Sender<Result<Vec<Location>>>;

/// What a handle asks of the writer thread.
pub enum Request {
    /// Append encoded records (with their blob lengths) as one all-or-nothing group.
    Append {
        /// Encoded records and the length of the blob each holds.
        records: Vec<(Vec<u8>, u64)>,
        /// Where the locations go.
        reply: AppendReply,
    },
    /// Make everything appended so far durable.
    Sync(oneshot::Sender<Result<()>>),
    /// Change the layout (needs nothing in flight).
    Admin(AdminOp, oneshot::Sender<Result<()>>),
    /// List the segments.
    Segments(oneshot::Sender<Result<Vec<SegmentInfo>>>),
    /// Flush, sync and stop.
    Close(oneshot::Sender<Result<()>>),
}

/// A layout change.
#[derive(Debug, Clone, Copy)]
pub enum AdminOp {
    /// Delete an immutable segment.
    Drop(u32),
    /// Remove everything from an offset to the end of a segment.
    Rtrim(u32, u64),
    /// Remove everything from the start of a segment to an offset.
    Ltrim(u32, u64),
}

/// What the writer knows of one segment.
#[derive(Debug, Clone, Copy)]
pub struct SegState {
    /// Newest state slot written.
    pub generation: u64,
    /// First live byte.
    pub data_start: u64,
    /// End of the records.
    pub end: u64,
    /// Immutable: nothing more is appended.
    pub sealed: bool,
    /// Sealed by recovery in memory only (its state write failed on a full disk): the
    /// next rotation writes it first.
    pub seal_pending: bool,
}

/// Where recovery left the log.
pub struct WriterStart {
    /// The open segment.
    pub current: u32,
    /// Its file.
    pub file: Arc<SegmentFile>,
    /// Bytes of the open segment from `align_down(end)` to `end`.
    pub tail: Vec<u8>,
    /// Number of the next flush.
    pub next_flush_seq: u32,
    /// Every segment, the open one included. The current one is sealed when recovery
    /// could not start a new segment (a full disk): the first append starts it.
    pub segments: BTreeMap<u32, SegState>,
    /// The manifest as written at open.
    pub manifest: ManifestFile,
}

struct Batch {
    file: Arc<SegmentFile>,
    /// File offset of `buf[0]` (block-aligned).
    offset: u64,
    buf: Option<AlignedBuf>,
    /// Bytes of `buf` holding log data.
    len: usize,
    flush_seq: u32,
    first: Option<Location>,
    last: Option<Location>,
    records: u64,
    new_bytes: u64,
    /// Replies deferred until the batch is durable (`Sync`).
    acks: Vec<(AppendReply, Vec<Location>)>,
    /// Records readable from memory until this batch is written.
    pending: Vec<Location>,
    opened_at: Instant,
    dsync: bool,
}

enum Fit {
    Done,
    NeedRoom,
    NeedRotate,
}

/// The writer thread's state; see the module docs.
pub struct Writer {
    config: Arc<BlobOptions>,
    io: Box<dyn Io>,
    rx: Receiver<Request>,
    reader: Arc<Reader>,
    block: usize,
    current: u32,
    current_file: Arc<SegmentFile>,
    tail: Vec<u8>,
    segments: BTreeMap<u32, SegState>,
    open: Option<Batch>,
    in_flight: Option<Batch>,
    syncing: bool,
    /// Written without a device flush: (first, last).
    unsynced: Option<(Location, Location)>,
    held: Option<Request>,
    sync_waiters: Vec<oneshot::Sender<Result<()>>>,
    next_flush_seq: u32,
    manifest: ManifestFile,
    /// Segments dropped since the manifest was last written (their tombstones stay).
    buried: Vec<u32>,
    poisoned: Option<Error>,
    closing: Option<oneshot::Sender<Result<()>>>,
    disconnected: bool,
    pool: Vec<AlignedBuf>,
}

impl Writer {
    /// A writer continuing where recovery left the log.
    pub fn new(
        config: Arc<BlobOptions>,
        io: Box<dyn Io>,
        rx: Receiver<Request>,
        reader: Arc<Reader>,
        start: WriterStart,
    ) -> Writer {
        let block = start.file.block_bytes;
        Writer {
            config,
            io,
            rx,
            reader,
            block,
            current: start.current,
            current_file: start.file,
            tail: start.tail,
            segments: start.segments,
            open: None,
            in_flight: None,
            syncing: false,
            unsynced: None,
            held: None,
            sync_waiters: Vec::new(),
            next_flush_seq: start.next_flush_seq,
            manifest: start.manifest,
            buried: Vec::new(),
            poisoned: None,
            closing: None,
            disconnected: false,
            pool: Vec::new(),
        }
    }

    fn end(&self) -> u64 {
        self.segments[&self.current].end
    }

    fn quiescent(&self) -> bool {
        self.in_flight.is_none() && !self.syncing && self.open.as_ref().is_none_or(|b| b.records == 0)
    }

    /// Runs until closed (or every handle is gone).
    pub fn run(mut self) {
        let mut completions = Vec::new();
        loop {
            while self.held.is_none() && self.closing.is_none() && !self.disconnected {
                match self.rx.try_recv() {
                    Ok(req) => self.take(req),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => self.disconnected = true,
                }
            }
            self.progress();
            let stopping = self.closing.is_some() || self.disconnected;
            if stopping && self.quiescent() && self.held.is_none() && self.sync_waiters.is_empty() {
                let result = self.finish();
                if let Some(reply) = self.closing.take() {
                    let _ = reply.send(result);
                }
                return;
            }
            let busy = self.in_flight.is_some() || self.syncing;
            let timeout = self.periodic_wait();
            // Everything that could be done now was done by `progress`: sleep until a
            // completion, a client's wake-up, or a Periodic batch's deadline.
            let timeout = if busy { None } else { timeout };
            if let Err(e) = self.io.wait(true, timeout, &mut completions) {
                let path = self.current_file.path.clone();
                let e = match e {
                    Error::Io { op, path: None, source } => Error::Io { op, path: Some(path), source },
                    other => other,
                };
                self.fail(rename_op(e, "the blob log's I/O backend failed, so the log refuses writes until reopened"));
            }
            for c in completions.drain(..) {
                self.complete(c);
            }
        }
    }

    /// How long until a `Periodic` batch is due by age, if one waits.
    fn periodic_wait(&self) -> Option<Duration> {
        let Durability::Periodic { interval, .. } = self.config.durability else { return None };
        let b = self.open.as_ref().filter(|b| b.records > 0)?;
        Some(interval.saturating_sub(b.opened_at.elapsed()).max(Duration::from_micros(100)))
    }

    fn take(&mut self, req: Request) {
        match req {
            Request::Append { records, reply } => {
                if let Some(e) = &self.poisoned {
                    let _ = reply.send(Err(e.clone()));
                    return;
                }
                let total: u64 = records.iter().map(|(r, _)| r.len() as u64).sum();
                let room = self.config.max_segment_bytes - self.block as u64;
                if total > room {
                    let _ = reply.send(Err(Error::InvalidArgument(format!(
                        "{} blob(s) encode to {total} bytes, more than the {room} bytes a segment holds \
                         (raise BlobOptions::max_segment_bytes)",
                        records.len()
                    ))));
                    return;
                }
                let req = Request::Append { records, reply };
                self.held = Some(req);
                self.retry_held_append();
            }
            Request::Sync(reply) => {
                if let Some(e) = &self.poisoned {
                    let _ = reply.send(Err(e.clone()));
                } else {
                    self.sync_waiters.push(reply);
                }
            }
            Request::Segments(reply) => {
                let list = self
                    .segments
                    .iter()
                    .map(|(&segment, s)| SegmentInfo {
                        segment,
                        data_start: s.data_start,
                        end: s.end,
                        current: segment == self.current,
                    })
                    .collect();
                let _ = reply.send(Ok(list));
            }
            Request::Admin(..) => self.held = Some(req),
            Request::Close(reply) => self.closing = Some(reply),
        }
    }

    /// Tries the held append, if there is one and it can go now.
    fn retry_held_append(&mut self) {
        let Some(Request::Append { records, .. }) = &self.held else { return };
        let total: u64 = records.iter().map(|(r, _)| r.len() as u64).sum();
        let fit = self.fit(total);
        let fit = match fit {
            Fit::NeedRotate if self.quiescent() => match self.rotate() {
                Ok(()) => self.fit(total),
                Err(e) => {
                    let Some(Request::Append { reply, .. }) = self.held.take() else { unreachable!() };
                    let _ = reply.send(Err(e));
                    return;
                }
            },
            other => other,
        };
        if let Fit::Done = fit {
            let Some(Request::Append { records, reply }) = self.held.take() else { unreachable!() };
            self.append(records, reply);
        }
    }

    fn fit(&self, total: u64) -> Fit {
        if self.segments[&self.current].sealed {
            return Fit::NeedRotate;
        }
        let end = self.end();
        let allocated = self.config.max_segment_bytes;
        if end + total > allocated {
            return Fit::NeedRotate;
        }
        match &self.open {
            None => Fit::Done,
            Some(b) => {
                let cap = b.buf.as_ref().map_or(0, AlignedBuf::capacity);
                if b.len as u64 + total <= cap as u64 || b.records == 0 { Fit::Done } else { Fit::NeedRoom }
            }
        }
    }

    fn new_batch(&mut self, total: u64) -> Batch {
        let block = self.block;
        let end = self.end();
        let offset = end - end % block as u64;
        let prefix = self.tail.len();
        debug_assert_eq!(offset + prefix as u64, end);
        let standard = (self.config.group_commit_bytes_max + block).next_multiple_of(block);
        let need = (prefix + total as usize).next_multiple_of(block);
        let mut buf = if need <= standard {
            self.pool.pop().unwrap_or_else(|| AlignedBuf::zeroed(standard, block))
        } else {
            AlignedBuf::zeroed(need, block)
        };
        buf.as_mut_slice()[..prefix].copy_from_slice(&self.tail);
        let flush_seq = self.next_flush_seq;
        self.next_flush_seq = self.next_flush_seq.wrapping_add(1);
        Batch {
            file: Arc::clone(&self.current_file),
            offset,
            buf: Some(buf),
            len: prefix,
            flush_seq,
            first: None,
            last: None,
            records: 0,
            new_bytes: 0,
            acks: Vec::new(),
            pending: Vec::new(),
            opened_at: Instant::now(),
            dsync: false,
        }
    }

    fn append(&mut self, records: Vec<(Vec<u8>, u64)>, reply: AppendReply) {
        let total: u64 = records.iter().map(|(r, _)| r.len() as u64).sum();
        let mut batch = match self.open.take() {
            Some(b) if b.records > 0 => b,
            Some(empty) => {
                if let Some(buf) = empty.buf {
                    self.pool.push(buf);
                }
                self.next_flush_seq = empty.flush_seq;
                self.new_batch(total)
            }
            None => self.new_batch(total),
        };
        if batch.records == 0 {
            // An empty batch may be too small for a large group: size it for this one.
            let cap = batch.buf.as_ref().map_or(0, AlignedBuf::capacity);
            if batch.len + total as usize > cap {
                let mut bigger =
                    AlignedBuf::zeroed((batch.len + total as usize).next_multiple_of(self.block), self.block);
                let old = batch.buf.take().expect("an open batch owns its buffer");
                bigger.as_mut_slice()[..batch.len].copy_from_slice(&old.as_slice()[..batch.len]);
                batch.buf = Some(bigger);
            }
        }
        let count = records.len();
        let mut locs = Vec::with_capacity(count);
        let mut end = self.end();
        // Under `None` a flush does not wait for stable storage, so a crash may keep a
        // later flush and lose an earlier one: recovery must not take that for damage.
        let flags = if self.config.durability == Durability::None { RECORD_FLAG_UNSYNCED } else { 0 };
        let buf = batch.buf.as_mut().expect("an open batch owns its buffer");
        for (i, (mut rec, blob_len)) in records.into_iter().enumerate() {
            let left = u32::try_from(count - 1 - i).expect("a transaction holds fewer than 2^32 blobs");
            stamp_record(&mut rec, flags, left, batch.flush_seq);
            buf.as_mut_slice()[batch.len..batch.len + rec.len()].copy_from_slice(&rec);
            let loc = Location { segment: self.current, offset: end, len: blob_len };
            batch.len += rec.len();
            batch.new_bytes += rec.len() as u64;
            end += rec.len() as u64;
            batch.records += 1;
            batch.first.get_or_insert(loc);
            batch.last = Some(loc);
            if self.config.durability != Durability::Sync {
                self.reader.add_pending(loc, Bytes::from(rec));
                batch.pending.push(loc);
            }
            locs.push(loc);
        }
        if batch.records == count as u64 {
            batch.opened_at = Instant::now();
        }
        self.segments.get_mut(&self.current).expect("the current segment is listed").end = end;
        self.reader.set_current(self.current, end);
        if self.config.durability == Durability::Sync {
            batch.acks.push((reply, locs));
        } else {
            let _ = reply.send(Ok(locs));
        }
        self.open = Some(batch);
    }

    /// Whether the open batch should be written now.
    fn flush_due(&self) -> bool {
        let Some(b) = self.open.as_ref().filter(|b| b.records > 0) else { return false };
        if self.held.is_some() || !self.sync_waiters.is_empty() || self.closing.is_some() || self.disconnected {
            return true;
        }
        if b.len >= self.config.group_commit_bytes_max {
            return true;
        }
        match self.config.durability {
            Durability::Sync => true,
            Durability::Periodic { bytes, items, interval } => {
                b.new_bytes >= bytes || b.records >= items || b.opened_at.elapsed() >= interval
            }
            Durability::None => false,
        }
    }

    fn progress(&mut self) {
        loop {
            if self.poisoned.is_some() {
                self.refuse_all();
                return;
            }
            if self.in_flight.is_none() && !self.syncing && self.flush_due() {
                self.submit();
            }
            if matches!(self.held, Some(Request::Append { .. })) {
                self.retry_held_append();
                if self.held.is_none() {
                    continue;
                }
            }
            if !self.quiescent() {
                return;
            }
            if let Some(Request::Admin(op, reply)) = self.held.take() {
                let result = self.admin(op);
                let _ = reply.send(result);
                continue;
            }
            if self.held.is_some() {
                return;
            }
            let want_sync = !self.sync_waiters.is_empty() || self.closing.is_some() || self.disconnected;
            if want_sync && self.unsynced.is_some() {
                self.syncing = true;
                self.io.fdatasync(self.current_file.file.fd(), Token::new(TokenKind::BlobSync, 0).encode());
                return;
            }
            for w in self.sync_waiters.drain(..) {
                let _ = w.send(Ok(()));
            }
            return;
        }
    }

    fn submit(&mut self) {
        let mut batch = self.open.take().expect("a due batch exists");
        let block = self.block;
        // Keep the partial last block: the next batch starts by rewriting it.
        let end = batch.offset + batch.len as u64;
        let tail_start = (end - end % block as u64 - batch.offset) as usize;
        let buf = batch.buf.as_mut().expect("an unsubmitted batch owns its buffer");
        self.tail.clear();
        self.tail.extend_from_slice(&buf.as_slice()[tail_start..batch.len]);
        let write_len = batch.len.next_multiple_of(block);
        buf.as_mut_slice()[batch.len..write_len].fill(0);
        let want_sync = !self.sync_waiters.is_empty() || self.closing.is_some() || self.disconnected;
        batch.dsync = self.config.durability != Durability::None || want_sync;
        let sync = if batch.dsync { SyncMode::Dsync } else { SyncMode::None };
        let buf = batch.buf.take().expect("checked above");
        let fd: RawFd = batch.file.file.fd();
        let token = Token::new(TokenKind::BlobWrite, u64::from(batch.flush_seq)).encode();
        self.io.write(fd, batch.offset, buf, write_len, sync, token);
        self.in_flight = Some(batch);
    }

    fn complete(&mut self, c: Completion) {
        let token = Token::decode(c.token).expect("every completion of the blob log's ring carries a token");
        if token.kind == TokenKind::BlobSync {
            // One sync at a time: a sync completion with none outstanding means a lost request.
            assert!(self.syncing, "a blob sync completion arrives only while a sync is in flight");
            self.syncing = false;
            match c.result {
                Ok(_) => {
                    if let Some((first, last)) = self.unsynced.take() {
                        self.persisted(first, last);
                    }
                }
                Err(e) => {
                    let path = self.current_file.path.clone();
                    self.fail(Error::io(
                        "blob log fdatasync failed, so the log refuses writes until reopened",
                        path,
                        e,
                    ));
                }
            }
            return;
        }
        assert_eq!(token.kind, TokenKind::BlobWrite, "the blob log's ring carries only blob tokens");
        let mut batch = self.in_flight.take().expect("a batch completion has a batch in flight");
        // One flush in flight at a time: the completion must be that flush's.
        assert_eq!(token.payload, u64::from(batch.flush_seq), "a blob write completion matches the batch in flight");
        if let Some(buf) = c.buf {
            let standard = (self.config.group_commit_bytes_max + self.block).next_multiple_of(self.block);
            if buf.capacity() == standard && self.pool.len() < 2 {
                self.pool.push(buf);
            }
        }
        if let Err(e) = c.result {
            let error = Error::io(
                "blob log write failed, so the log refuses writes until reopened",
                batch.file.path.clone(),
                e,
            );
            for (reply, _) in batch.acks.drain(..) {
                let _ = reply.send(Err(error.clone()));
            }
            self.fail(error);
            return;
        }
        self.reader.remove_pending(&batch.pending);
        let (first, last) = (batch.first.expect("a written batch has records"), batch.last.expect("and a last"));
        if batch.dsync {
            for (reply, locs) in batch.acks.drain(..) {
                let _ = reply.send(Ok(locs));
            }
            self.persisted(first, last);
        } else {
            self.unsynced = Some(match self.unsynced {
                Some((f, _)) => (f, last),
                None => (first, last),
            });
        }
    }

    fn persisted(&self, first: Location, last: Location) {
        if let Some(cb) = &self.config.on_persist {
            cb(BlobPersistEvent { first, last, timestamp: SystemTime::now() });
        }
    }

    fn fail(&mut self, error: Error) {
        if self.poisoned.is_none() {
            self.poisoned = Some(error);
        }
        self.refuse_all();
    }

    /// Answers everything waiting with the poisoning error.
    fn refuse_all(&mut self) {
        let error = self.poisoned.clone().expect("called when poisoned");
        if let Some(mut b) = self.open.take() {
            for (reply, _) in b.acks.drain(..) {
                let _ = reply.send(Err(error.clone()));
            }
        }
        for w in self.sync_waiters.drain(..) {
            let _ = w.send(Err(error.clone()));
        }
        match self.held.take() {
            Some(Request::Append { reply, .. }) => {
                let _ = reply.send(Err(error));
            }
            Some(Request::Admin(_, reply)) => {
                let _ = reply.send(Err(error));
            }
            _ => {}
        }
    }

    /// Final flush on close: everything written is made durable, and the manifest
    /// records the open segment's end as closed cleanly.
    fn finish(&mut self) -> Result<()> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        if let Some((first, last)) = self.unsynced.take() {
            self.current_file
                .file
                .sync_data()
                .map_err(|e| Error::io("fdatasync", self.current_file.path.clone(), e))?;
            self.persisted(first, last);
        }
        let (current, end) = (self.current, self.end());
        if !self.segments[&current].sealed {
            self.set_entry(current, |e| {
                e.end = end;
                e.closed = true;
            });
        }
        match self.store_manifest() {
            // On a full disk the clean close is not recorded: the next open treats the
            // log as crashed and starts a new segment, which loses nothing.
            Err(e) if e.io_kind() == Some(std::io::ErrorKind::StorageFull) => Ok(()),
            other => other,
        }
    }

    /// Changes the manifest entry of `segment` in memory (written by `store_manifest`).
    fn set_entry(&mut self, segment: u32, change: impl FnOnce(&mut ManifestEntry)) {
        let entries = &mut self.manifest.manifest.entries;
        match entries.binary_search_by_key(&segment, |e| e.segment) {
            Ok(i) => change(&mut entries[i]),
            Err(i) => {
                let mut entry =
                    ManifestEntry { segment, sealed: false, closed: false, lost: false, end: 0, cut_end: 0 };
                change(&mut entry);
                entries.insert(i, entry);
            }
        }
    }

    /// Writes the manifest, then removes the tombstones of segments it no longer lists.
    fn store_manifest(&mut self) -> Result<()> {
        manifest::store(self.reader.fs(), self.reader.dir(), &mut self.manifest)?;
        let buried = std::mem::take(&mut self.buried);
        manifest::remove_tombstones(self.reader.fs(), self.reader.dir(), &buried)
    }

    fn write_seg_state(&mut self, segment: u32, file: &SegmentFile, data_start: u64, sealed_end: u64) -> Result<()> {
        let s = self.segments.get_mut(&segment).expect("a listed segment");
        let state = SegmentState { generation: s.generation + 1, data_start, sealed_end };
        write_state(file.file.as_ref(), &file.path, file.block_bytes, state)?;
        s.generation = state.generation;
        s.data_start = data_start;
        Ok(())
    }

    /// Seals the current segment (unless it is sealed already) and starts the next one.
    /// Needs quiescence. A segment that cannot be created leaves the current one sealed
    /// and poisons nothing: the next append tries again.
    fn rotate(&mut self) -> Result<()> {
        debug_assert!(self.quiescent());
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        let sealed = self.current;
        let end = self.end();
        let state = self.segments[&sealed];
        let next = self.manifest.manifest.next_segment.max(sealed.saturating_add(1));
        if !state.sealed || state.seal_pending {
            if let Err(e) = self.seal_current(end) {
                if e.io_kind() == Some(std::io::ErrorKind::StorageFull) {
                    return Err(cannot_start_segment(e, next));
                }
                // A failed sync may have lost written blobs: never go on as if they were safe.
                let e = rename_op(e, "sealing a blob segment failed, so the log refuses writes until reopened");
                self.poisoned = Some(e.clone());
                return Err(e);
            }
        }
        if next == u32::MAX {
            return Err(Error::InvalidArgument("blob segment numbers ran out".into()));
        }
        let created = create_segment(
            self.reader.fs(),
            self.reader.dir(),
            next,
            self.config.max_segment_bytes,
            self.block,
            self.config.direct_io,
            self.config.zero_fill,
        )
        .map_err(|e| cannot_start_segment(e, next))?;
        // Listed before anything is appended to it, so it can never go missing unnoticed.
        let listed = self.manifest.manifest.clone();
        self.set_entry(sealed, |e| {
            e.sealed = true;
            e.end = end;
        });
        let block = self.block as u64;
        self.set_entry(next, |e| e.end = block);
        self.manifest.manifest.next_segment = next + 1;
        if let Err(e) = self.store_manifest() {
            // The next try creates the segment again (replacing this one) and lists it.
            self.manifest.manifest = listed;
            return Err(cannot_start_segment(e, next));
        }
        let block_bytes = direct_io_block_bytes(created.as_ref()).max(self.block);
        let seg_file =
            Arc::new(SegmentFile { file: created, path: segment_path(self.reader.dir(), next), block_bytes });
        self.reader.insert_file(next, Arc::clone(&seg_file));
        self.segments.insert(
            next,
            SegState { generation: 1, data_start: block, end: block, sealed: false, seal_pending: false },
        );
        self.current = next;
        self.current_file = seg_file;
        self.tail.clear();
        self.reader.set_current(next, block);
        if let Some(cb) = &self.config.on_rotate {
            cb(BlobRotateEvent { sealed, sealed_end: end, next, timestamp: SystemTime::now() });
        }
        Ok(())
    }

    /// Writes the sealed state of the current segment and gives back its unused space.
    fn seal_current(&mut self, end: u64) -> Result<()> {
        let sealed = self.current;
        let file = Arc::clone(&self.current_file);
        let data_start = self.segments[&sealed].data_start;
        // The state write's fdatasync also makes any unsynced data of the segment durable.
        self.write_seg_state(sealed, &file, data_start, end)?;
        if let Some((first, last)) = self.unsynced.take() {
            self.persisted(first, last);
        }
        let state = self.segments.get_mut(&sealed).expect("listed");
        state.sealed = true;
        state.seal_pending = false;
        // Give back the unused reserved space (the end is in the header already, so a
        // crash here leaves a longer file, never a shorter one).
        file.file
            .set_len(end.next_multiple_of(self.block as u64))
            .and_then(|()| file.file.sync_all())
            .map_err(|e| Error::io("truncate sealed segment", file.path.clone(), e))
    }

    fn admin(&mut self, op: AdminOp) -> Result<()> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        let segment = match op {
            AdminOp::Drop(s) | AdminOp::Rtrim(s, _) | AdminOp::Ltrim(s, _) => s,
        };
        if let (AdminOp::Drop(_), Some(lost)) = (op, self.manifest.manifest.entry(segment).filter(|e| e.lost)) {
            // Its file is gone already: dropping it forgets it, so its blobs read as dropped.
            debug_assert!(lost.segment != self.current, "a lost segment is never the current one");
            self.manifest.manifest.entries.retain(|e| e.segment != segment);
            self.store_manifest()?;
            if let Some(cb) = &self.config.on_drop {
                cb(BlobDropEvent { segment, timestamp: SystemTime::now() });
            }
            return Ok(());
        }
        let Some(state) = self.segments.get(&segment).copied() else {
            return Err(Error::InvalidArgument(format!("blob segment {segment} does not exist (dropped?)")));
        };
        if let AdminOp::Drop(_) = op {
            return self.drop_segment(segment);
        }
        let file = if segment == self.current {
            Arc::clone(&self.current_file)
        } else {
            // Trims write to the file: open it for writing (readers' descriptors are read-only).
            let path = segment_path(self.reader.dir(), segment);
            let file = open_segment(self.reader.fs(), &path, false, self.config.direct_io)?;
            Arc::new(SegmentFile { file, path, block_bytes: self.block })
        };
        let check_boundary = |at: u64, what: &str| -> Result<()> {
            if at < state.data_start || at > state.end {
                return Err(Error::InvalidArgument(format!(
                    "{what} offset {at} is outside the live bytes {}..{} of blob segment {segment}",
                    state.data_start, state.end
                )));
            }
            if at != state.end && !is_record_start(self.reader.fs(), &file.path, at)? {
                return Err(Error::InvalidArgument(format!(
                    "{what} offset {at} of blob segment {segment} is not the start of a blob"
                )));
            }
            Ok(())
        };
        match op {
            AdminOp::Drop(_) => unreachable!("handled above"),
            AdminOp::Rtrim(_, from) => {
                check_boundary(from, "rtrim")?;
                self.rtrim(segment, &file, state, from)?;
            }
            AdminOp::Ltrim(_, to) => {
                check_boundary(to, "ltrim")?;
                punch_hole(self.reader.fs(), file.file.as_ref(), &file.path, state.data_start, to)?;
                let sealed_end = if state.sealed && !state.seal_pending { state.end } else { 0 };
                self.write_seg_state(segment, &file, to, sealed_end)?;
            }
        }
        Ok(())
    }

    /// Deletes an immutable segment: tombstone first (see `manifest`), then the file.
    fn drop_segment(&mut self, segment: u32) -> Result<()> {
        if segment == self.current {
            return Err(Error::InvalidArgument(format!(
                "blob segment {segment} is the newest one (the one being written, or sealed and \
                 waiting for its successor); only older segments can be dropped"
            )));
        }
        let fs = self.reader.fs();
        manifest::bury(fs, self.reader.dir(), segment)?;
        // Unlink first, then forget the descriptor (see `Reader::file`).
        let path = segment_path(self.reader.dir(), segment);
        fs.remove_file(&path).map_err(|e| Error::io("remove", path.clone(), e))?;
        self.reader.remove_file(segment);
        sync_dir(fs, self.reader.dir())?;
        self.segments.remove(&segment);
        self.manifest.manifest.entries.retain(|e| e.segment != segment);
        self.buried.push(segment);
        if let Some(cb) = &self.config.on_drop {
            cb(BlobDropEvent { segment, timestamp: SystemTime::now() });
        }
        Ok(())
    }

    /// Cuts `segment` from `from` on. The manifest's end comes down first, so no open
    /// sees the segment shorter than the manifest says.
    fn rtrim(&mut self, segment: u32, file: &SegmentFile, state: SegState, from: u64) -> Result<()> {
        let listed = self.manifest.manifest.entry(segment).map_or((0, 0), |e| (e.end, e.cut_end));
        if listed.0 > from || listed.1 != 0 {
            // Past `from` everything is trimmed now, blobs a crash lost included.
            self.set_entry(segment, |e| {
                e.end = e.end.min(from);
                e.cut_end = 0;
            });
            self.store_manifest()?;
        }
        punch_hole(self.reader.fs(), file.file.as_ref(), &file.path, from, state.end)?;
        if segment == self.current && !state.sealed {
            // The space is reused: the next append lands at `from`.
            let start = from - from % self.block as u64;
            let mut tail = vec![0u8; (from - start) as usize];
            // A buffered descriptor: `file` may be O_DIRECT, and this read is unaligned.
            let plain = self
                .reader
                .fs()
                .open(&file.path, OpenFlags::READ_ONLY)
                .map_err(|e| Error::io("open", file.path.clone(), e))?;
            plain.read_at(&mut tail, start).map_err(|e| Error::io("read", file.path.clone(), e))?;
            self.tail = tail;
            self.reader.set_current(segment, from);
        } else {
            self.write_seg_state(segment, file, state.data_start, from)?;
            self.segments.get_mut(&segment).expect("listed").seal_pending = false;
        }
        self.segments.get_mut(&segment).expect("listed").end = from;
        Ok(())
    }
}

/// The error of an append whose new segment could not be started.
fn cannot_start_segment(e: Error, segment: u32) -> Error {
    let e = rename_op(e, "the blob log could not start its next segment (free disk space, then append again)");
    match e {
        Error::Io { op, path: None, source } => {
            Error::Io { op, path: Some(format!("segment {segment}").into()), source }
        }
        other => other,
    }
}

/// `e` with what the blob log was doing in its own words, when it is an I/O error.
fn rename_op(e: Error, op: &'static str) -> Error {
    match e {
        Error::Io { path, source, .. } => Error::Io { op, path, source },
        other => other,
    }
}
