//! Opening a shard: the page store's newest checkpoint into the index, then the log
//! replayed after it, the in-doubt transactions decided with the other shards, and
//! the log writer continuing where replay left the log.
//!
//! [`Shard::open`] reads as the algorithm; each step is a function below.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::checkpoint::Checkpoints;
use super::handle::{OpenArgs, ShardShared};
use super::registry::ScanReport;
use super::writes::apply_ops;
use super::{Durable, Resolution, Shard, Stop, txn};
use crate::error::{Error, Result};
use crate::format::record::{KIND_ABORT, KIND_COMMIT, KIND_OPS, KIND_PREPARE, decode_ops, encode_tx_header};
use crate::io::fs::Fs;
use crate::io::{self, Io, SyncMode};
use crate::options::{Durability, Options, WalSync};
use crate::stats::ShardCounters;
use crate::storage::index::Index;
use crate::storage::page::disk::DiskReader;
use crate::storage::page::reader::{Published, View};
use crate::storage::page::store::{NODE_BYTES, PageConfig, PageStore};
use crate::storage::wal::recovery::{Recovered, Replayed, open_tail, recover};
use crate::storage::wal::segment::{PreparedSegment, first_segment_bytes, prepare_segment};
use crate::storage::wal::writer::{WalWriter, WriterConfig, WriterStart};

/// A prepare record found by replay whose transaction was not decided after it.
struct Stashed {
    body: Bytes,
    op_count: u32,
}

/// What replaying the log found.
struct Replay {
    /// LSN of the checkpoint the pages hold; records up to it are in the pages already.
    checkpoint_lsn: u64,
    /// Highest LSN applied to the index.
    applied_lsn: u64,
    /// First record after the checkpoint.
    first_after: Option<u64>,
    /// What the whole retained log says about transactions (for the decision of in-doubt
    /// ones across shards).
    report: ScanReport,
    /// Prepares after the checkpoint not yet decided, by transaction.
    undecided: HashMap<u64, Stashed>,
    /// (LSN, txid) of every prepare in the retained log.
    prepares: Vec<(u64, u64)>,
}

impl Shard {
    /// Opens the shard on its own thread; see the module docs.
    pub(super) fn open(args: OpenArgs) -> Result<Shard> {
        let OpenArgs { shared, shard_dir, options, rx, scanned, resolution } = args;
        let wal_dir = shard_dir.join("wal");
        let fs = options.fs();
        crate::storage::dir::create_dir(fs.as_ref(), &shard_dir)?;
        crate::storage::dir::create_dir(fs.as_ref(), &wal_dir)?;
        let started = Instant::now();
        let mut pages = open_pages(&shared, &fs, &shard_dir, &options)?;
        let waker = Arc::downgrade(&shared);
        pages.set_waker(Arc::new(move || {
            if let Some(shared) = waker.upgrade() {
                shared.wake();
            }
        }));
        let (mut replay, recovered) = replay_log(&shared, &pages, fs.as_ref(), &wal_dir)?;
        // Every shard's log is needed to decide the in-doubt transactions: report, and
        // wait for the decisions.
        scanned.send(std::mem::take(&mut replay.report)).map_err(|_| Error::Closed)?;
        let resolution = resolution.recv().map_err(|_| Error::Closed)?;
        check_log_continues(&wal_dir, replay.checkpoint_lsn, replay.first_after)?;
        if let Some(first) = recovered.first_seq.filter(|&f| pages.log_seq > 0 && f > pages.log_seq) {
            // Writes after the checkpoint went to segment `log_seq` first: it (and those
            // after it) must be here.
            return Err(Error::Corruption {
                file: wal_dir.join(format!("{:016x}.log", pages.log_seq)),
                offset: 0,
                what: format!(
                    "log segment missing: the log starts at segment {first}, but the writes after the \
                     checkpoint at LSN {} went to segment {} first",
                    replay.checkpoint_lsn, pages.log_seq
                ),
            });
        }
        if replay.checkpoint_lsn > 0 && recovered.tail_segment.is_none() {
            // A shard always keeps the segment it writes to; none at all after a
            // checkpoint means the log was deleted, with every write since that checkpoint.
            return Err(Error::Corruption {
                file: wal_dir,
                offset: 0,
                what: format!(
                    "no log segment, though a checkpoint at LSN {} exists: the log was deleted, and the \
                     writes after that checkpoint with it",
                    replay.checkpoint_lsn
                ),
            });
        }
        ShardCounters::add(&shared.counters.recovered_records, recovered.records);
        ShardCounters::add(&shared.counters.recovery_us, started.elapsed().as_micros() as u64);
        let (start, block) = writer_start(&fs, &wal_dir, shared.id, &options, recovered, replay.checkpoint_lsn)?;
        let io = open_io(&options, &shared)?;
        let wal = open_writer(&shared, &fs, wal_dir, &options, start, block);
        let durable = Durable { sync: durable_sync(&options), waiters: Vec::new(), persisted_lsn: wal.durable_lsn() };
        let mut shard = Shard {
            shared,
            options,
            rx,
            io,
            wal,
            durable,
            stop: Stop::Running,
            pages,
            applied_lsn: replay.applied_lsn,
            checkpoints: Checkpoints::new(),
            tx: txn::TxState::new(Arc::clone(&resolution.registry), replay.prepares),
        };
        assert!(shard.applied_lsn <= shard.wal.last_lsn(), "the log continues after everything applied");
        shard.resolve_in_doubt(replay.undecided, &resolution)?;
        shard.publish_page_stats();
        Ok(shard)
    }

    /// Applies the in-doubt transactions decided committed and logs a marker for each
    /// decision, so this shard's log decides them alone from now on. Nothing later in
    /// the log touched their keys (they were locked), so applying them last is right.
    fn resolve_in_doubt(&mut self, undecided: HashMap<u64, Stashed>, resolution: &Resolution) -> Result<()> {
        let mut undecided: Vec<(u64, Stashed)> = undecided.into_iter().collect();
        undecided.sort_by_key(|(txid, _)| *txid);
        let mut decided = false;
        for (txid, s) in undecided {
            let commit = resolution.decisions.get(&txid).copied().unwrap_or(false);
            let mut marker = Vec::with_capacity(16);
            encode_tx_header(&mut marker, txid, &[]);
            let kind = if commit { KIND_COMMIT } else { KIND_ABORT };
            let lsn = self.wal.append(kind, &marker, crc32fast::hash(&marker), 0, None).map_err(|(e, _)| e)?;
            assert!(lsn > self.applied_lsn, "a decision is logged after everything replayed");
            if commit {
                let ops = decode_ops(&s.body, s.op_count).expect("decoded once by replay");
                apply_ops(&mut self.shared.index_writer(), &s.body, &ops, lsn);
                self.tx.note_commit_marker(lsn, txid);
            }
            self.applied_lsn = lsn;
            ShardCounters::add(&self.shared.tx_in_doubt[usize::from(!commit)], 1);
            decided = true;
        }
        if decided {
            self.flush_during_open()?;
        }
        Ok(())
    }

    /// Makes everything appended so far durable before open returns, so that a failure
    /// writing the decisions of in-doubt transactions fails the open (with the I/O
    /// error) instead of leaving an opened database whose shard refuses writes.
    fn flush_during_open(&mut self) -> Result<()> {
        let target = self.wal.last_lsn();
        let mut completions = Vec::new();
        while self.wal.durable_lsn() < target {
            if let Some(cause) = self.wal.poisoned() {
                return Err(Error::io(
                    "write the decisions of in-doubt transactions to the log",
                    None,
                    std::io::Error::other(cause.to_string()),
                ));
            }
            if !self.wal.busy() && !self.wal.submit(self.io.as_mut(), self.durable.sync) {
                self.wal.sync_written(self.io.as_mut());
            }
            self.wait_or_poison(true, None, &mut completions);
            for completion in completions.drain(..) {
                self.on_completion(completion);
            }
        }
        debug_assert!(self.wal.durable_lsn() >= target, "open returns with every decision durable");
        Ok(())
    }
}

/// Opens the page store at its newest checkpoint and publishes its tree's root to
/// readers; nothing of the tree is read.
fn open_pages(shared: &ShardShared, fs: &Arc<dyn Fs>, shard_dir: &Path, options: &Options) -> Result<PageStore> {
    let page_config = PageConfig {
        records_max: options.page_records_max,
        chunk_threshold: options.page_chunk_bytes,
        node_bytes: NODE_BYTES,
        direct: options.direct_io,
        merge_inline: !fs.helper_threads(),
    };
    let pages = PageStore::open(fs, shard_dir, shared.id, page_config)?;
    let _ =
        shared.disk.set(DiskReader::new(Arc::clone(&pages.data), pages.data_path.clone(), pages.unit, pages.mem_align));
    shared.publish_view(View {
        active: Arc::new(Index::default()),
        frozen: None,
        root: Published { generation: pages.generation(), root: pages.root() },
    });
    Ok(pages)
}

/// Replays the log: records after the checkpoint go into the index; transaction
/// records anywhere in the retained log go into the report.
fn replay_log(shared: &ShardShared, pages: &PageStore, fs: &dyn Fs, wal_dir: &Path) -> Result<(Replay, Recovered)> {
    let checkpoint_lsn = pages.checkpoint_lsn;
    let mut replay = Replay {
        checkpoint_lsn,
        applied_lsn: checkpoint_lsn,
        first_after: None,
        report: ScanReport::default(),
        undecided: HashMap::new(),
        prepares: Vec::new(),
    };
    let recovered = recover(fs, wal_dir, shared.id, |r: Replayed<'_>| {
        replay.record(shared, &r);
        Ok(())
    })?;
    // Records applied past the checkpoint came from this log, so the writer's next LSN
    // (derived from it) lies above them and no LSN is handed out twice.
    debug_assert!(
        replay.applied_lsn == checkpoint_lsn || recovered.next_lsn > replay.applied_lsn,
        "replay applies only records the log holds, after the checkpoint's LSN"
    );
    let undecided = &replay.undecided;
    replay.report.in_doubt.retain(|(txid, _)| undecided.contains_key(txid));
    Ok((replay, recovered))
}

impl Replay {
    /// Takes one replayed record.
    fn record(&mut self, shared: &ShardShared, r: &Replayed<'_>) {
        assert!(r.lsn > self.applied_lsn || r.lsn <= self.checkpoint_lsn, "replay hands records in LSN order");
        let after = r.lsn > self.checkpoint_lsn;
        if r.tx.is_some() {
            self.transaction_record(shared, r, after);
        }
        // Records up to the checkpoint are in the pages already.
        if !after {
            return;
        }
        self.first_after.get_or_insert(r.lsn);
        if r.kind == KIND_OPS {
            let body = Bytes::copy_from_slice(r.body);
            apply_ops(&mut shared.index_writer(), &body, &r.ops, r.lsn);
        }
        self.applied_lsn = r.lsn;
    }

    /// Takes a prepare, commit or abort record.
    fn transaction_record(&mut self, shared: &ShardShared, r: &Replayed<'_>, after: bool) {
        let tx = r.tx.as_ref().expect("a transaction record has its header");
        self.report.max_txid = self.report.max_txid.max(tx.txid);
        let marks = self.report.marks.entry(tx.txid).or_default();
        match r.kind {
            KIND_PREPARE => {
                marks.prepare = true;
                self.prepares.push((r.lsn, tx.txid));
                if after {
                    debug_assert!(!self.undecided.contains_key(&tx.txid), "a transaction is prepared once per shard");
                    let body = Bytes::copy_from_slice(r.body);
                    let op_count = r.ops.len() as u32;
                    self.undecided.insert(tx.txid, Stashed { body, op_count });
                    self.report.in_doubt.push((tx.txid, tx.participants.clone()));
                }
            }
            KIND_COMMIT => {
                marks.commit = true;
                // A prepare before the checkpoint was applied before it (a checkpoint
                // never covers an undecided prepare): nothing to do.
                if let Some(s) = self.undecided.remove(&tx.txid).filter(|_| after) {
                    let ops = decode_ops(&s.body, s.op_count).expect("decoded once by replay");
                    apply_ops(&mut shared.index_writer(), &s.body, &ops, r.lsn);
                }
            }
            KIND_ABORT => {
                marks.abort = true;
                self.undecided.remove(&tx.txid);
            }
            other => unreachable!("record kind {other} passed decode_record"),
        }
    }
}

/// The log must continue right after the checkpoint: a gap means records are lost.
fn check_log_continues(wal_dir: &Path, checkpoint_lsn: u64, first_after: Option<u64>) -> Result<()> {
    match first_after.filter(|&f| f != checkpoint_lsn + 1) {
        // No checkpoint, and the log does not start at the first LSN: a checkpoint once
        // covered what came before, and its `CHECKPOINT` is gone or empty.
        Some(first) if checkpoint_lsn == 0 => Err(Error::Corruption {
            file: wal_dir.parent().unwrap_or(wal_dir).join("CHECKPOINT"),
            offset: 0,
            what: format!(
                "no valid checkpoint, and the log starts at LSN {first}: the checkpoint that held LSNs \
                 1 to {} is missing (the file deleted or emptied)",
                first - 1
            ),
        }),
        Some(first) => Err(Error::Corruption {
            file: wal_dir.to_path_buf(),
            offset: 0,
            what: format!(
                "the log resumes at LSN {first} after a checkpoint at LSN {checkpoint_lsn}: records are missing"
            ),
        }),
        None => Ok(()),
    }
}

/// The segment the writer continues, where in it, its tail bytes and the block size:
/// the tail segment replay found, or segment 1 of a new log.
fn tail_segment(
    fs: &Arc<dyn Fs>,
    wal_dir: &Path,
    id: usize,
    options: &Options,
    recovered: &mut Recovered,
) -> Result<(PreparedSegment, u64, Vec<u8>, usize)> {
    let direct = options.direct_io;
    if let Some((seq, path, segment_bytes, block)) = recovered.tail_segment.take() {
        let file = open_tail(fs.as_ref(), &path, direct)?;
        let block = block.max(io::fs::direct_io_block_bytes(file.as_ref()));
        let tail = std::mem::take(&mut recovered.tail);
        Ok((PreparedSegment { seq, file, path, segment_bytes }, recovered.end, tail, block))
    } else {
        debug_assert!(
            recovered.end == 0 && recovered.tail.is_empty() && recovered.sealed.is_empty(),
            "a log without a tail segment has no records"
        );
        // A new log: probe the block size on a scratch file, then create segment 1, small
        // (one write of header and zeros), so open does not wait for a long zero fill and
        // a new database takes little disk; later segments grow (`storage::wal::segment`).
        let probe_path = wal_dir.join("probe.tmp");
        let probe = io::fs::open_data_file(fs.as_ref(), &probe_path, true, direct)?;
        let block = io::fs::direct_io_block_bytes(probe.as_ref());
        drop(probe);
        let _ = fs.remove_file(&probe_path);
        let segment_bytes = first_segment_bytes(options.wal_segment_bytes.next_multiple_of(block as u64), block);
        debug_assert_eq!(segment_bytes % block as u64, 0, "a segment is whole blocks");
        let segment = prepare_segment(fs, wal_dir, id, 1, segment_bytes, block, direct)?;
        Ok((segment, block as u64, Vec::new(), block))
    }
}

/// Where the log writer starts, as replay left the log, and the log's block size.
fn writer_start(
    fs: &Arc<dyn Fs>,
    wal_dir: &Path,
    id: usize,
    options: &Options,
    mut recovered: Recovered,
    checkpoint_lsn: u64,
) -> Result<(WriterStart, usize)> {
    let (segment, end, tail, block) = tail_segment(fs, wal_dir, id, options, &mut recovered)?;
    if end % block as u64 != tail.len() as u64 % block as u64 {
        return Err(Error::Incompatible(format!(
            "log of shard {id} was written with a block size that does not divide this device's ({block})"
        )));
    }
    // If every record up to the checkpoint left the log (its segments were deleted),
    // the log continues after the checkpoint.
    let next_lsn = recovered.next_lsn.max(checkpoint_lsn + 1);
    debug_assert!(
        recovered.sealed.iter().all(|(seq, _, _)| *seq < segment.seq),
        "sealed segments precede the one the writer continues"
    );
    Ok((WriterStart { segment, end, tail, next_lsn, sealed: recovered.sealed }, block))
}

/// The log writer, continuing from `start`.
fn open_writer(
    shared: &ShardShared,
    fs: &Arc<dyn Fs>,
    wal_dir: PathBuf,
    options: &Options,
    start: WriterStart,
    block: usize,
) -> WalWriter<super::Pending> {
    let config = WriterConfig {
        shard: shared.id,
        wal_dir,
        block_bytes: block,
        direct: options.direct_io,
        segment_bytes: options.wal_segment_bytes.next_multiple_of(block as u64),
        batch_bytes_max: options.group_commit_bytes_max,
        batches_max: options.group_commit_batches_max,
        records_unsynced: options.durability == Durability::None,
        fs: Arc::clone(fs),
    };
    let wal = WalWriter::new(config, start);
    shared.body_bytes_max.store(wal.body_bytes_max(), std::sync::atomic::Ordering::Relaxed);
    wal
}

/// The shard's I/O backend, woken through the shard's eventfd.
fn open_io(options: &Options, shared: &ShardShared) -> Result<Box<dyn Io>> {
    options.io_backend.make_io(options.ring_entries, shared.wake_fd.raw_fd())
}

/// How a flush is made durable under `Options::wal_sync`.
fn durable_sync(options: &Options) -> SyncMode {
    match options.wal_sync {
        WalSync::Dsync => SyncMode::Dsync,
        WalSync::Fdatasync => SyncMode::Fdatasync,
    }
}
