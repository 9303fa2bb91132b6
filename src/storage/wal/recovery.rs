//! Replay of a shard's log on open.
//!
//! Segments are read in sequence order. Every segment before the tail segment
//! (the last one holding any record bytes) must be whole: a record that fails
//! its checksum there is corruption, reported with file and offset. In the
//! tail segment, the first position that is not a valid record is either the
//! clean end (zeros to the end of the segment) or damage. Damage is a torn
//! tail, the remains of the last flush, unless a valid record written by a
//! *later*, synced flush follows it (its `group_lsn` is past the damaged
//! position's LSN): only one flush is in flight at a time, so a later flush
//! proves the damaged one had completed, and the damage is corruption, not a
//! tear. Records written unsynced (under `Durability::None`, flagged
//! `FLAG_UNSYNCED`) prove nothing: a crash may keep a later unsynced write and
//! lose an earlier one, so damage followed only by them is a torn tail too,
//! and the later records are cut with it.
//!
//! A torn tail is cut: its bytes are copied to `quarantine-<seq>-<offset>.bin`
//! beside the segments (made durable first), then zeroed in the segment, so no
//! stale record can ever be read after the new end. Segments after the tail
//! segment are empty spares and are removed, as are temporary files of an
//! interrupted segment preparation.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::record::{
    Decoded, FLAG_UNSYNCED, HEADER_BYTES, KIND_OPS, KIND_PREPARE, RECORD_ALIGN, TxHeader, decode_ops, decode_record,
    decode_tx_header, record_bytes,
};
use crate::format::segment::{SegmentHeader, parse_file_name};
use crate::io::fs::{FileRef, Fs, sync_dir};
use crate::storage::segment::{Erase, TornTail};

/// One record found by replay.
pub struct Replayed<'a> {
    /// Its LSN.
    pub lsn: u64,
    /// Its kind (`format::record::KIND_*`).
    pub kind: u8,
    /// The transaction header of a prepare, commit or abort record.
    pub tx: Option<TxHeader>,
    /// Its ops' bytes (the body after any transaction header).
    pub body: &'a [u8],
    /// Its ops, decoded from `body`.
    pub ops: Vec<crate::format::record::Op<'a>>,
}

/// Where replay left the log.
#[derive(Debug)]
pub struct Recovered {
    /// The tail segment to continue, if any segment exists: (seq, path, size, block).
    pub tail_segment: Option<(u64, PathBuf, u64, usize)>,
    /// The oldest segment on disk, if any.
    pub first_seq: Option<u64>,
    /// Offset of the next record in the tail segment.
    pub end: u64,
    /// Bytes of the tail segment from `align_down(end, block)` to `end`.
    pub tail: Vec<u8>,
    /// LSN of the next record.
    pub next_lsn: u64,
    /// Records replayed.
    pub records: u64,
    /// Log bytes replayed.
    pub bytes: u64,
    /// Quarantine file written for a torn tail, if there was one.
    pub quarantined: Option<PathBuf>,
    /// Segments before the tail segment: (seq, path, LSN of their last record, 0 if none).
    pub sealed: Vec<(u64, PathBuf, u64)>,
}

fn corruption(file: &Path, offset: u64, what: impl Into<String>) -> Error {
    Error::Corruption { file: file.to_path_buf(), offset, what: what.into() }
}

/// Lists the segments of a log directory in order, removing leftover temporary files.
fn list_segments(fs: &dyn Fs, wal_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    crate::storage::segment::list_segments(fs, wal_dir, parse_file_name, ".log.tmp", true)
}

fn read_segment(fs: &dyn Fs, path: &Path, buf: &mut Vec<u8>) -> Result<()> {
    *buf = fs.read_file(path).map_err(|e| Error::io("read", path.to_path_buf(), e))?;
    Ok(())
}

/// Whether a segment holds any record bytes (past its header block).
fn has_records(bytes: &[u8], block: usize) -> bool {
    bytes.get(block..).is_some_and(|rest| rest.iter().any(|&b| b != 0))
}

/// Replays the log in `wal_dir`, calling `apply` for every valid record in order.
pub fn recover(
    fs: &dyn Fs,
    wal_dir: &Path,
    shard: usize,
    mut apply: impl FnMut(Replayed<'_>) -> Result<()>,
) -> Result<Recovered> {
    let segments = list_segments(fs, wal_dir)?;
    let first_seq = segments.first().map(|(seq, _)| *seq);
    let (headers, keep) = read_headers(fs, &segments, shard)?;
    // Segments after the tail segment hold nothing: spares that were prepared ahead.
    // Keep the first one (it becomes the tail when the log is empty), remove the rest.
    remove_spares(fs, wal_dir, segments.get(keep + 1..).unwrap_or(&[]))?;
    let mut out = Recovered {
        tail_segment: None,
        end: 0,
        tail: Vec::new(),
        next_lsn: 1,
        records: 0,
        bytes: 0,
        quarantined: None,
        sealed: Vec::new(),
        first_seq,
    };
    let mut expected_lsn: Option<u64> = None;
    let mut data = Vec::new();
    for (i, (seq, path)) in segments.iter().enumerate().take(keep + 1) {
        let header = headers[i];
        let block = header.block_bytes as usize;
        read_segment(fs, path, &mut data)?;
        let segment = Segment { seq: *seq, path, data: &data, block, is_tail: i == keep };
        let at = replay_segment(fs, wal_dir, &segment, &mut expected_lsn, &mut out, &mut apply)?;
        if !segment.is_tail {
            out.sealed.push((*seq, path.clone(), expected_lsn.map_or(0, |e| e - 1)));
        }
        if segment.is_tail {
            let end = at.min(data.len());
            let tail_start = end - end % block;
            out.tail = data[tail_start..end].to_vec();
            assert!(out.tail.len() < block, "the tail is the partial block the writer rewrites whole");
            out.end = end as u64;
            out.tail_segment = Some((*seq, path.clone(), header.segment_bytes, block));
        }
    }
    out.next_lsn = expected_lsn.unwrap_or(1);
    Ok(out)
}

/// Reads and checks every segment's header; returns them and the index of the tail
/// segment (the last one holding any record bytes; 0 if none does).
fn read_headers(fs: &dyn Fs, segments: &[(u64, PathBuf)], shard: usize) -> Result<(Vec<SegmentHeader>, usize)> {
    let mut data = Vec::new();
    let mut headers = Vec::with_capacity(segments.len());
    let mut tail_index = None;
    for (i, (seq, path)) in segments.iter().enumerate() {
        read_segment(fs, path, &mut data)?;
        let header = SegmentHeader::decode(&data).map_err(|what| corruption(path, 0, what))?;
        if header.segment_seq != *seq || header.shard as usize != shard || header.segment_bytes != data.len() as u64 {
            return Err(corruption(path, 0, "segment header does not match its name, shard or size"));
        }
        if has_records(&data, header.block_bytes as usize) {
            tail_index = Some(i);
        }
        headers.push(header);
    }
    debug_assert!(headers.windows(2).all(|w| w[0].segment_seq < w[1].segment_seq), "segments are replayed in order");
    Ok((headers, tail_index.unwrap_or(0)))
}

/// Removes the empty spare segments after the tail segment.
fn remove_spares(fs: &dyn Fs, wal_dir: &Path, spares: &[(u64, PathBuf)]) -> Result<()> {
    debug_assert!(spares.windows(2).all(|w| w[0].0 < w[1].0), "spares are removed in sequence order");
    for (_, path) in spares {
        fs.remove_file(path).map_err(|e| Error::io("remove", path.clone(), e))?;
    }
    if !spares.is_empty() {
        sync_dir(fs, wal_dir)?;
    }
    Ok(())
}

/// One segment being replayed.
struct Segment<'a> {
    seq: u64,
    path: &'a Path,
    data: &'a [u8],
    block: usize,
    /// The last segment holding records: damage in it may be a torn tail.
    is_tail: bool,
}

/// Replays the records of one segment; returns the offset where its log ends.
fn replay_segment(
    fs: &dyn Fs,
    wal_dir: &Path,
    segment: &Segment<'_>,
    expected_lsn: &mut Option<u64>,
    out: &mut Recovered,
    apply: &mut impl FnMut(Replayed<'_>) -> Result<()>,
) -> Result<usize> {
    let (data, path) = (segment.data, segment.path);
    let body_max = data.len();
    let mut at = segment.block;
    let bad = loop {
        // Headers and record sizes are multiples of RECORD_ALIGN, so a misaligned position
        // means the replay lost its place and would decode garbage as records.
        debug_assert_eq!(at % RECORD_ALIGN, 0, "replay reads records only at record boundaries");
        let bad = match decode_record(&data[at..], body_max) {
            Decoded::Record(h) if expected_lsn.is_none_or(|e| e == h.lsn) => {
                replay_record(path, at, data, &h, apply)?;
                *expected_lsn = Some(h.lsn + 1);
                out.records += 1;
                let len = record_bytes(h.body_len as usize);
                out.bytes += len as u64;
                at += len;
                if at >= data.len() {
                    return Ok(at);
                }
                continue;
            }
            Decoded::Record(h) => format!("record lsn {} where {} was expected", h.lsn, expected_lsn.unwrap_or(0)),
            Decoded::End if data[at..].iter().all(|&b| b == 0) => return Ok(at),
            Decoded::End => "zeroed record header followed by data".to_string(),
            Decoded::Invalid(why) => why,
        };
        break bad;
    };
    if !segment.is_tail {
        return Err(corruption(path, at as u64, format!("{bad}, before the log's tail segment")));
    }
    let lsn_here = expected_lsn.unwrap_or(1);
    if let Some(later) = later_flush(data, at, lsn_here, body_max) {
        return Err(corruption(
            path,
            at as u64,
            format!("{bad}; a later flush follows at offset {later}, so this is not a torn tail"),
        ));
    }
    out.quarantined = Some(cut_torn_tail(fs, wal_dir, path, segment.seq, data, at)?);
    Ok(at)
}

/// Decodes the record with header `h` at `at` and hands it to `apply`.
fn replay_record(
    path: &Path,
    at: usize,
    data: &[u8],
    h: &crate::format::record::RecordHeader,
    apply: &mut impl FnMut(Replayed<'_>) -> Result<()>,
) -> Result<()> {
    let start = at + HEADER_BYTES;
    debug_assert!(
        at + record_bytes(h.body_len as usize) <= data.len(),
        "decode_record accepts only a record that lies inside its segment"
    );
    let body = &data[start..start + h.body_len as usize];
    let bad = |what: String| corruption(path, at as u64, format!("record {}: {what}", h.lsn));
    let (tx, body) = if h.kind == KIND_OPS {
        (None, body)
    } else {
        let tx = decode_tx_header(body).map_err(bad)?;
        if h.kind != KIND_PREPARE && (h.op_count != 0 || tx.len != body.len()) {
            return Err(bad("a commit or abort record carries ops".into()));
        }
        let ops_at = tx.len;
        (Some(tx), &body[ops_at..])
    };
    let ops = decode_ops(body, h.op_count).map_err(bad)?;
    apply(Replayed { lsn: h.lsn, kind: h.kind, tx, body, ops })
}

/// Offset of a valid record after `at` written by a flush later than the one that
/// would have written LSN `lsn_here`, and made durable by it, if there is one. A record
/// written unsynced (`FLAG_UNSYNCED`, under `Durability::None`) proves nothing: the disk
/// may keep it and lose the earlier flush.
fn later_flush(data: &[u8], at: usize, lsn_here: u64, body_max: usize) -> Option<usize> {
    debug_assert_eq!(at % RECORD_ALIGN, 0, "the search for a later flush starts at a record boundary");
    let mut pos = at + RECORD_ALIGN;
    while pos + HEADER_BYTES <= data.len() {
        if let Decoded::Record(h) = decode_record(&data[pos..], body_max) {
            if h.group_lsn > lsn_here && h.flags & FLAG_UNSYNCED == 0 {
                return Some(pos);
            }
        }
        pos += RECORD_ALIGN;
    }
    None
}

/// Moves the torn bytes from `at` on into a quarantine file, then zeroes them in the segment.
fn cut_torn_tail(fs: &dyn Fs, wal_dir: &Path, path: &Path, seq: u64, data: &[u8], at: usize) -> Result<PathBuf> {
    debug_assert!(at <= data.len(), "a torn tail starts inside its segment");
    let last_nonzero = data.iter().rposition(|&b| b != 0).map_or(at, |p| p + 1).max(at);
    let tail = TornTail {
        path,
        segment_hex: format!("{seq:016x}"),
        from: at as u64,
        to: last_nonzero as u64,
        erase: Erase::Zeros,
    };
    crate::storage::segment::cut_torn_tail(fs, wal_dir, &tail)
}

/// Opens a recovered tail segment for writing.
pub fn open_tail(fs: &dyn Fs, path: &Path, direct: bool) -> Result<FileRef> {
    crate::io::fs::open_data_file(fs, path, false, direct)
}
