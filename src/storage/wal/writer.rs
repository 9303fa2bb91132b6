//! The log writer of one shard: batches, group commit, segment rotation.
//!
//! Records are appended into the open batch, a block-aligned buffer that
//! mirrors the file from the block holding the log's end. One flush is in
//! flight at a time; while it is, new records gather in the next batch
//! (group commit). A batch is never held back to grow: it is submitted as
//! soon as the previous flush completes. A batch stops taking records at
//! `group_commit_bytes_max`; at most `group_commit_batches_max` batches wait.
//!
//! Each flush rewrites the partial block at the log's end with the bytes it
//! already held plus new ones. The old bytes are rewritten unchanged, so a
//! write torn at sector granularity cannot damage records already durable.
//!
//! Segments grow: each new one is larger than the one before, up to
//! `segment_bytes` (see `storage::wal::segment` for the sizes and why); a record
//! too large for the next segment gets one sized to hold it, so the largest
//! record the log accepts depends on the largest segment only.
//!
//! Invariants: `batches` are in log order; only the front may be in flight;
//! `end` is the offset of the next record in the current segment and
//! `tail` holds the current segment's bytes from `align_down(end)` to `end`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::format::record::{FLAG_UNSYNCED, HEADER_BYTES, encode_header, record_bytes, set_header_flags};
use crate::io::fs::{Ahead, FileRef, Fs, run_ahead};
use crate::io::token::{Token, TokenKind};
use crate::io::{AlignedBuf, Completion, Io, SyncMode};
use crate::storage::wal::segment::{PreparedSegment, next_segment_bytes, prepare_segment, segment_bytes_for};

/// Where the writer starts, as recovery left the log.
pub struct WriterStart {
    /// The segment to append to.
    pub segment: PreparedSegment,
    /// Offset of the next record in it.
    pub end: u64,
    /// The segment's bytes from `align_down(end)` to `end`.
    pub tail: Vec<u8>,
    /// LSN of the next record.
    pub next_lsn: u64,
    /// Older segments still on disk: (seq, path, LSN of their last record).
    pub sealed: Vec<(u64, PathBuf, u64)>,
}

/// Settings of a writer.
pub struct WriterConfig {
    /// Owning shard.
    pub shard: usize,
    /// The shard's log directory.
    pub wal_dir: PathBuf,
    /// O_DIRECT block size.
    pub block_bytes: usize,
    /// Open segments with O_DIRECT.
    pub direct: bool,
    /// Largest size of a segment (`Options::wal_segment_bytes`, whole blocks): new
    /// segments grow toward it.
    pub segment_bytes: u64,
    /// A batch takes no more records past this many bytes.
    pub batch_bytes_max: usize,
    /// Most batches queued.
    pub batches_max: usize,
    /// The file system the log lives on.
    pub fs: Arc<dyn Fs>,
    /// Records are written without waiting for durability (`Durability::None`): each is
    /// flagged `FLAG_UNSYNCED`, so recovery does not take it as proof that earlier
    /// flushes completed. Decided at append (not per flush) because a record's header is
    /// copied into the next batch with the partial block that holds it, and must be
    /// rewritten unchanged.
    pub records_unsynced: bool,
}

struct Batch<T> {
    file: FileRef,
    segment_seq: u64,
    /// File offset of `buf[0]` (block-aligned).
    offset: u64,
    buf: Option<AlignedBuf>,
    /// Bytes of `buf` that hold log data.
    len: usize,
    first_lsn: u64,
    last_lsn: u64,
    records: u64,
    items: Vec<T>,
    token: u64,
    in_flight: bool,
    sealed: bool,
    sync: SyncMode,
    opened_at: Instant,
}

enum Spare {
    None,
    Preparing(Ahead<Result<PreparedSegment>>),
}

/// A batch that reached the disk.
pub struct Flushed<T> {
    /// Items appended with its records, in log order.
    pub items: Vec<T>,
    /// First LSN written.
    pub first_lsn: u64,
    /// Last LSN written.
    pub last_lsn: u64,
    /// Records written.
    pub records: u64,
    /// Bytes written, padding included.
    pub bytes: usize,
    /// Whether the flush made the batch durable.
    pub durable: bool,
}

/// What a completion meant to the log.
pub enum Outcome<T> {
    /// A batch was written.
    Flushed(Flushed<T>),
    /// A standalone fdatasync finished; everything written is durable.
    Synced,
    /// The completion of I/O submitted before the log was poisoned; nothing to do.
    Discarded,
    /// The flush failed: the log is poisoned and these items were never made durable.
    Failed {
        /// What failed.
        cause: String,
        /// Items of every batch that will now never be written.
        items: Vec<T>,
    },
}

/// The log writer of one shard; see the module docs.
pub struct WalWriter<T> {
    config: WriterConfig,
    current: PreparedSegment,
    current_file: FileRef,
    spare: Spare,
    batches: VecDeque<Batch<T>>,
    next_lsn: u64,
    end: u64,
    tail: Vec<u8>,
    pool: Vec<AlignedBuf>,
    written_lsn: u64,
    durable_lsn: u64,
    sync_in_flight: bool,
    poisoned: Option<String>,
    next_token: u64,
    /// Segments created by this writer, for stats.
    pub segments_created: u64,
    /// Older segments still on disk, oldest first: (seq, path, LSN of their last record).
    sealed: VecDeque<(u64, PathBuf, u64)>,
    /// Record bytes appended since open.
    pub appended_bytes: u64,
    /// Unsynced writes (`SyncMode::None`) completed in the current segment: a rotation
    /// must sync it, since later syncs cover only the new current segment.
    current_unsynced: bool,
    /// The log was poisoned inside `append`; `take_failure` reports it.
    failure_pending: bool,
}

impl<T> WalWriter<T> {
    /// A writer continuing the log where recovery left it.
    pub fn new(config: WriterConfig, start: WriterStart) -> WalWriter<T> {
        assert!(start.next_lsn >= 1, "LSNs start at 1");
        assert!(config.block_bytes.is_power_of_two(), "the O_DIRECT block size is a power of two");
        assert_eq!(
            start.end % config.block_bytes as u64,
            start.tail.len() as u64 % config.block_bytes as u64,
            "the tail holds the bytes from the block holding the log's end"
        );
        let last_lsn = start.next_lsn - 1;
        let current_file = Arc::clone(&start.segment.file);
        let mut writer = WalWriter {
            config,
            current: start.segment,
            current_file,
            spare: Spare::None,
            batches: VecDeque::new(),
            next_lsn: start.next_lsn,
            end: start.end,
            tail: start.tail,
            pool: Vec::new(),
            written_lsn: last_lsn,
            durable_lsn: last_lsn,
            sync_in_flight: false,
            poisoned: None,
            next_token: 1,
            segments_created: 0,
            sealed: start.sealed.into(),
            appended_bytes: 0,
            current_unsynced: false,
            failure_pending: false,
        };
        writer.prepare_spare();
        writer
    }

    /// Largest record body the log accepts: what a segment of the largest size holds
    /// after its header block. A record larger than the next segment in the growth
    /// sequence gets a segment sized to hold it (see `rotate`), so the limit does not
    /// depend on the size segments have reached.
    pub fn body_bytes_max(&self) -> usize {
        let largest = usize::try_from(self.config.segment_bytes).expect("segments are at most 1 GiB");
        debug_assert!(
            largest > self.config.block_bytes + HEADER_BYTES,
            "a segment holds its header block and at least one record header"
        );
        (largest - self.config.block_bytes - HEADER_BYTES) & !7
    }

    /// The failure that poisoned the log, if any.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Whether another record may be appended now (back-pressure).
    pub fn can_accept(&self) -> bool {
        match self.batches.back() {
            None => true,
            Some(b) if !b.sealed && !b.in_flight => true,
            Some(_) => self.batches.len() < self.config.batches_max,
        }
    }

    /// Sequence number of the segment the next record goes to (or a later one).
    pub fn current_seq(&self) -> u64 {
        self.current.seq
    }

    /// LSN of the last record appended.
    pub fn last_lsn(&self) -> u64 {
        self.next_lsn - 1
    }

    /// LSN up to which the log is durable.
    pub fn durable_lsn(&self) -> u64 {
        self.durable_lsn
    }

    /// Whether a write or sync is in flight.
    pub fn busy(&self) -> bool {
        self.sync_in_flight || self.batches.front().is_some_and(|b| b.in_flight)
    }

    /// Records appended but not yet submitted, and their bytes, and the age of the oldest.
    pub fn pending(&self) -> (u64, usize, Option<Instant>) {
        debug_assert!(self.batches.iter().skip(1).all(|b| !b.in_flight), "only the front batch may be in flight");
        let mut records = 0;
        let mut bytes = 0;
        let mut oldest = None;
        for b in self.batches.iter().filter(|b| !b.in_flight) {
            records += b.records;
            bytes += b.len;
            oldest = oldest.or(Some(b.opened_at));
        }
        (records, bytes, oldest)
    }

    /// Whether more than one batch waits (a full batch should go out now).
    pub fn has_full_batch(&self) -> bool {
        self.batches.iter().filter(|b| !b.in_flight).count() > 1
    }

    /// Appends one record holding `body` (whose crc32 is `body_crc`), with `item` returned
    /// when its batch is flushed. Returns the record's LSN.
    /// On failure nothing was appended and `item` is handed back.
    pub fn append(
        &mut self,
        kind: u8,
        body: &[u8],
        body_crc: u32,
        op_count: u32,
        item: Option<T>,
    ) -> Result<u64, (Error, Option<T>)> {
        if let Some(cause) = &self.poisoned {
            return Err((Error::Poisoned { shard: self.config.shard, cause: cause.clone() }, item));
        }
        if body.len() > self.body_bytes_max() {
            let max = self.body_bytes_max();
            return Err((Error::BatchTooLarge { bytes: body.len(), max }, item));
        }
        let rec = record_bytes(body.len());
        if self.end + rec as u64 > self.current.segment_bytes {
            if let Err(e) = self.rotate(rec) {
                return Err((e, item));
            }
        }
        let block = self.config.block_bytes;
        let cap = self.config.batch_bytes_max;
        let need_new = match self.batches.back() {
            None => true,
            Some(b) => b.sealed || b.in_flight || b.segment_seq != self.current.seq || b.len + rec > cap.max(block),
        };
        if need_new {
            self.open_batch(rec);
        }
        // The size check and rotation above keep every record inside its segment, after
        // the header block: a record past the end would be cut off on disk.
        debug_assert!(
            self.end >= self.config.block_bytes as u64 && self.end + rec as u64 <= self.current.segment_bytes,
            "a record lies between the segment's header block and its end"
        );
        let lsn = self.next_lsn;
        let batch = self.batches.back_mut().expect("an open batch exists");
        debug_assert!(
            batch.records == 0 || batch.last_lsn + 1 == lsn,
            "the records of a batch have contiguous LSNs (recovery stops at a gap)"
        );
        if batch.records == 0 {
            batch.first_lsn = lsn;
            batch.opened_at = Instant::now();
        }
        let at = batch.len;
        let buf = batch.buf.as_mut().expect("an open batch owns its buffer");
        if at + rec > buf.capacity() {
            // A record larger than the pooled buffer: grow this batch's buffer.
            let mut bigger = AlignedBuf::zeroed((at + rec).next_multiple_of(block), block);
            bigger.as_mut_slice()[..at].copy_from_slice(&buf.as_slice()[..at]);
            *buf = bigger;
        }
        let out = &mut buf.as_mut_slice()[at..at + rec];
        let body_len = u32::try_from(body.len()).expect("body bounded by body_bytes_max");
        encode_header(out, kind, lsn, batch.first_lsn, op_count, body_len, body_crc);
        if self.config.records_unsynced {
            set_header_flags(out, FLAG_UNSYNCED);
        }
        out[HEADER_BYTES..HEADER_BYTES + body.len()].copy_from_slice(body);
        out[HEADER_BYTES + body.len()..].fill(0);
        batch.len += rec;
        batch.last_lsn = lsn;
        batch.records += 1;
        if let Some(item) = item {
            batch.items.push(item);
        }
        self.next_lsn += 1;
        self.end += rec as u64;
        self.appended_bytes += rec as u64;
        Ok(lsn)
    }

    /// Opens a new batch for a record of `rec` bytes: it starts at the block holding the
    /// log's end, with that block's bytes already written (`tail`) as its prefix.
    fn open_batch(&mut self, rec: usize) {
        let (block, cap) = (self.config.block_bytes, self.config.batch_bytes_max);
        debug_assert!(self.tail.len() < block, "the tail is the partial block at the log's end, never a whole one");
        self.seal_back();
        let offset = self.end - self.end % block as u64;
        let prefix = self.tail.len();
        assert_eq!(offset + prefix as u64, self.end, "the tail holds the log's end block up to its end");
        let capacity = (prefix + rec).max(cap + block).next_multiple_of(block);
        let mut buf = match self.pool.iter().position(|b| b.capacity() >= capacity) {
            Some(i) => self.pool.swap_remove(i),
            None => AlignedBuf::zeroed(capacity, block),
        };
        buf.as_mut_slice()[..prefix].copy_from_slice(&self.tail);
        let token = self.next_token;
        self.next_token += 1;
        self.batches.push_back(Batch {
            file: Arc::clone(&self.current_file),
            segment_seq: self.current.seq,
            offset,
            buf: Some(buf),
            len: prefix,
            first_lsn: 0,
            last_lsn: 0,
            records: 0,
            items: Vec::new(),
            token,
            in_flight: false,
            sealed: false,
            sync: SyncMode::None,
            opened_at: Instant::now(),
        });
    }

    /// Captures the open batch's partial last block into `tail` and closes it to records.
    fn seal_back(&mut self) {
        let block = self.config.block_bytes;
        if let Some(b) = self.batches.back_mut() {
            if !b.sealed {
                debug_assert!(!b.in_flight, "a batch is sealed before it is submitted");
                debug_assert_eq!(b.offset % block as u64, 0, "a batch starts on a block boundary (O_DIRECT)");
                b.sealed = true;
                if b.segment_seq == self.current.seq {
                    let end = b.offset + b.len as u64;
                    let tail_start = (end - end % block as u64 - b.offset) as usize;
                    let buf = b.buf.as_ref().expect("an unsubmitted batch owns its buffer");
                    self.tail.clear();
                    self.tail.extend_from_slice(&buf.as_slice()[tail_start..b.len]);
                }
            }
        }
    }

    /// Submits the oldest waiting batch if nothing is in flight. `sync` says how the flush
    /// is made durable. Returns whether a flush was started.
    pub fn submit(&mut self, io: &mut dyn Io, sync: SyncMode) -> bool {
        if self.busy() || self.poisoned.is_some() {
            return false;
        }
        let Some(front) = self.batches.front() else { return false };
        if front.records == 0 {
            return false;
        }
        if self.batches.len() == 1 {
            self.seal_back();
        }
        let block = self.config.block_bytes;
        let front = self.batches.front_mut().expect("checked above");
        assert!(front.sealed, "a batch stops taking records before it is written");
        let mut buf = front.buf.take().expect("a waiting batch owns its buffer");
        let write_len = front.len.next_multiple_of(block);
        debug_assert_eq!(front.offset % block as u64, 0, "a flush starts on a block boundary (O_DIRECT)");
        debug_assert!(write_len <= buf.capacity(), "a flush writes whole blocks of its own buffer");
        buf.as_mut_slice()[front.len..write_len].fill(0);
        front.in_flight = true;
        front.sync = sync;
        let token = Token::new(TokenKind::LogWrite, front.token).encode();
        io.write(front.file.fd(), front.offset, buf, write_len, sync, token);
        true
    }

    /// Makes everything written durable with a standalone fdatasync, when a flush is
    /// wanted but no batch is waiting (after writes with [`SyncMode::None`]).
    pub fn sync_written(&mut self, io: &mut dyn Io) -> bool {
        if self.busy() || self.poisoned.is_some() || self.durable_lsn >= self.written_lsn {
            return false;
        }
        debug_assert!(self.written_lsn < self.next_lsn, "only appended records are written");
        self.sync_in_flight = true;
        let token = Token::new(TokenKind::LogSync, self.next_token).encode();
        self.next_token += 1;
        io.fdatasync(self.current_file.fd(), token);
        true
    }

    /// Takes a completion of this log's I/O.
    pub fn complete(&mut self, completion: Completion) -> Outcome<T> {
        if self.poisoned.is_some() {
            // A flush or sync that was in flight when the log was poisoned from outside
            // (a failed checkpoint, a failed wait): its callers were already answered
            // with the error, and the kernel is done with its buffer.
            return Outcome::Discarded;
        }
        let token = Token::decode(completion.token).expect("the shard routes only log tokens here");
        if token.kind == TokenKind::LogSync {
            assert!(self.sync_in_flight, "a log sync completed that was never submitted");
            debug_assert!(self.durable_lsn <= self.written_lsn, "a sync makes durable only what was written");
            self.sync_in_flight = false;
            return match completion.result {
                Ok(_) => {
                    self.durable_lsn = self.written_lsn;
                    self.current_unsynced = false;
                    Outcome::Synced
                }
                Err(e) => self.fail(format!("fdatasync of the log failed: {e}")),
            };
        }
        assert_eq!(token.kind, TokenKind::LogWrite, "the shard routes only log tokens here");
        let front = self.batches.front_mut().expect("a completion belongs to the front batch");
        assert!(front.in_flight && front.token == token.payload, "log completion out of order");
        if let Some(buf) = completion.buf {
            if buf.capacity() == (self.config.batch_bytes_max + self.config.block_bytes).next_multiple_of(buf.align())
                && self.pool.len() < self.config.batches_max
            {
                self.pool.push(buf);
            }
        }
        if let Err(e) = completion.result {
            return self.fail(format!("log write failed: {e}"));
        }
        let batch = self.batches.pop_front().expect("front exists");
        // Batches reach the disk one at a time in log order: the written prefix of the
        // log grows without a gap, which is what `durable_lsn` promises to callers.
        assert_eq!(batch.first_lsn, self.written_lsn + 1, "a flushed batch continues the written log without a gap");
        self.written_lsn = batch.last_lsn;
        let durable = batch.sync != SyncMode::None;
        if durable {
            self.durable_lsn = batch.last_lsn;
            if batch.segment_seq == self.current.seq {
                self.current_unsynced = false;
            }
        } else if batch.segment_seq == self.current.seq {
            self.current_unsynced = true;
        } else {
            // The last unsynced write to a retired segment: make it durable now, since a
            // later fdatasync of the current segment will not cover it.
            if let Err(e) = batch.file.sync_data() {
                return self.fail(format!("fdatasync of a retired log segment failed: {e}"));
            }
        }
        Outcome::Flushed(Flushed {
            items: batch.items,
            first_lsn: batch.first_lsn,
            last_lsn: batch.last_lsn,
            records: batch.records,
            bytes: batch.len.next_multiple_of(self.config.block_bytes),
            durable,
        })
    }

    /// A failure that poisoned the log inside `append`, with the items it strands.
    pub fn take_failure(&mut self) -> Option<Outcome<T>> {
        if !std::mem::take(&mut self.failure_pending) {
            return None;
        }
        let cause = self.poisoned.clone().expect("a pending failure poisoned the log");
        Some(self.fail(cause))
    }

    /// Poisons the log from outside (the I/O backend failed); see [`Outcome::Failed`].
    pub fn poison(&mut self, cause: String) -> Outcome<T> {
        self.fail(cause)
    }

    fn fail(&mut self, cause: String) -> Outcome<T> {
        debug_assert!(self.durable_lsn <= self.written_lsn, "nothing is durable that was not written");
        self.poisoned = Some(cause.clone());
        let mut items = Vec::new();
        for b in self.batches.drain(..) {
            items.extend(b.items);
        }
        self.sync_in_flight = false;
        Outcome::Failed { cause, items }
    }

    fn prepare_spare(&mut self) {
        if !matches!(self.spare, Spare::None) {
            return;
        }
        debug_assert!(self.current.seq >= 1, "segments are numbered from 1");
        let dir = self.config.wal_dir.clone();
        let fs = Arc::clone(&self.config.fs);
        let (shard, seq, bytes, block, direct) =
            (self.config.shard, self.current.seq + 1, self.next_bytes(), self.config.block_bytes, self.config.direct);
        let spawned = run_ahead(self.config.fs.as_ref(), format!("ringdb-prep-{shard}"), move || {
            prepare_segment(&fs, &dir, shard, seq, bytes, block, direct)
        });
        // If no thread can be started, the segment is prepared when it is needed.
        if let Some(ahead) = spawned {
            self.spare = Spare::Preparing(ahead);
        }
    }

    /// Size of the segment after the current one, in the growth sequence.
    fn next_bytes(&self) -> u64 {
        next_segment_bytes(self.current.segment_bytes, self.config.segment_bytes, self.config.block_bytes)
    }

    /// The next segment, able to hold a record of `rec` bytes after its header block.
    fn take_spare(&mut self, rec: usize) -> Result<PreparedSegment> {
        let spare = match std::mem::replace(&mut self.spare, Spare::None) {
            Spare::Preparing(ahead) => match ahead.join() {
                Some(Ok(segment)) => Ok(segment),
                // A failed preparation (a full disk, say) is tried once more here, so the
                // error reaches the writer whose record needed the segment.
                Some(Err(_)) | None => self.prepare_now(self.next_bytes()),
            },
            Spare::None => self.prepare_now(self.next_bytes()),
        }?;
        let block = self.config.block_bytes;
        if spare.segment_bytes >= (block + rec) as u64 {
            return Ok(spare);
        }
        // The record is larger than the spare holds: replace the spare (empty, never
        // written to) by a segment of the same number sized for the record. A crash
        // between the removal and the creation leaves no segment after the current one,
        // which recovery takes as a log ending in the current segment.
        let PreparedSegment { file, path, .. } = spare;
        drop(file);
        self.config.fs.remove_file(&path).map_err(|e| Error::io("remove", path.clone(), e))?;
        let bytes = segment_bytes_for(rec, self.current.segment_bytes, self.config.segment_bytes, block);
        self.prepare_now(bytes)
    }

    /// Creates the segment after the current one, of `segment_bytes`, on this thread.
    fn prepare_now(&self, segment_bytes: u64) -> Result<PreparedSegment> {
        let c = &self.config;
        debug_assert!(
            segment_bytes % c.block_bytes as u64 == 0,
            "a segment is whole blocks, so O_DIRECT writes never cross its end"
        );
        prepare_segment(&c.fs, &c.wal_dir, c.shard, self.current.seq + 1, segment_bytes, c.block_bytes, c.direct)
    }

    /// Continues the log in the next segment, which holds a record of `rec` bytes.
    fn rotate(&mut self, rec: usize) -> Result<()> {
        if self.current_unsynced {
            if let Err(e) = self.current_file.sync_data() {
                let cause = format!("fdatasync of a full log segment failed: {e}");
                // Poisoned now; the waiting batches' callers are answered through
                // `take_failure`, which the shard calls after each request.
                self.poisoned = Some(cause.clone());
                self.failure_pending = true;
                return Err(Error::Poisoned { shard: self.config.shard, cause });
            }
            self.current_unsynced = false;
        }
        debug_assert!(
            self.sealed.back().is_none_or(|(seq, _, last)| *seq < self.current.seq && *last < self.next_lsn),
            "sealed segments are older than the current one and hold only appended records"
        );
        let next = self.take_spare(rec)?;
        assert_eq!(next.seq, self.current.seq + 1, "segments follow each other without a gap");
        assert!(
            next.segment_bytes >= (self.config.block_bytes + rec) as u64,
            "the new segment holds the record that did not fit the old one"
        );
        self.seal_back();
        self.sealed.push_back((self.current.seq, self.current.path.clone(), self.next_lsn - 1));
        self.current_file = Arc::clone(&next.file);
        self.current = next;
        self.end = self.config.block_bytes as u64;
        self.tail.clear();
        self.segments_created += 1;
        self.prepare_spare();
        Ok(())
    }

    /// Deletes the older segments whose records all have LSNs up to `lsn` (a checkpoint
    /// holds them) and whose sequence numbers are below `seq_below` (the segment the
    /// checkpoint names stays). The current segment is never deleted. Returns how many
    /// were.
    pub fn drop_segments_through(&mut self, lsn: u64, seq_below: u64) -> Result<usize> {
        debug_assert!(lsn <= self.durable_lsn, "segments go only once a checkpoint holds their records");
        let mut dropped = 0;
        while let Some((seq, path, last)) = self.sealed.front() {
            if *last > lsn || *seq >= seq_below {
                break;
            }
            self.config.fs.remove_file(path).map_err(|e| Error::io("remove", path.clone(), e))?;
            self.sealed.pop_front();
            dropped += 1;
        }
        if dropped > 0 {
            crate::io::fs::sync_dir(self.config.fs.as_ref(), &self.config.wal_dir)?;
        }
        Ok(dropped)
    }

    /// Log segments on disk.
    pub fn segments_on_disk(&self) -> usize {
        self.sealed.len() + 1
    }

    /// Waits for the spare segment's preparation, so no thread outlives the writer.
    pub fn finish(&mut self) {
        if let Spare::Preparing(ahead) = std::mem::replace(&mut self.spare, Spare::None) {
            let _ = ahead.join();
        }
    }
}

impl<T> Drop for WalWriter<T> {
    fn drop(&mut self) {
        self.finish();
    }
}
