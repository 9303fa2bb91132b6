//! Verification of one shard's log segments (`wal/*.log`), the rules of
//! `docs/FORMAT.md` ("How the log is read back") applied without changing anything.
//!
//! Segments are read in sequence order, each whole. A position that is not a valid
//! record (a checksum, a field out of range, an LSN other than the next one, a zero
//! header followed by data) is damage when a later synced flush follows it in its
//! segment, or when a later segment holds records; otherwise it is a torn tail, which
//! the next open moves to a quarantine file. Where recovery would stop at damage, this
//! check goes on to the next segment (LSN continuity restarts there), so one run lists
//! every damaged segment.

use std::path::{Path, PathBuf};

use super::{FileKind, Meter, Report, Severity, VerifiedFile, list_dir, read_file};
use crate::error::Result;
use crate::format::record::{
    Decoded, FLAG_UNSYNCED, HEADER_BYTES, KIND_OPS, KIND_PREPARE, RECORD_ALIGN, RecordHeader, decode_ops,
    decode_record, decode_tx_header, record_bytes,
};
use crate::format::segment::{SegmentHeader, parse_file_name};

/// A bad position in a segment that is a torn tail unless a later segment holds records.
struct Pending {
    path: PathBuf,
    offset: u64,
    /// One past the last non-zero byte of the segment.
    dirty_end: u64,
    what: String,
}

/// What the check carries from one segment to the next.
struct LogState {
    shard: u32,
    checkpoint_lsn: u64,
    /// LSN the next record must have (`None` at the start and after damage).
    expected_lsn: Option<u64>,
    /// The first record past the checkpoint: its LSN, file and offset.
    first_after: Option<(u64, PathBuf, u64)>,
    pending: Option<Pending>,
    /// Damage was found in this log (a gap after it would only repeat it).
    damaged: bool,
}

impl LogState {
    fn damage(&mut self, report: &mut Report, path: &Path, offset: u64, what: impl Into<String>) {
        self.damaged = true;
        self.expected_lsn = None;
        report.add(Severity::Damage, path, offset, what);
    }
}

/// Checks the log in `wal_dir` of shard `shard`, whose newest checkpoint covers LSNs up
/// to `checkpoint_lsn` (0: no checkpoint).
pub(super) fn check_log(
    wal_dir: &Path,
    shard: u32,
    checkpoint_lsn: u64,
    report: &mut Report,
    meter: &mut Meter<'_>,
) -> Result<()> {
    let mut segments = Vec::new();
    for (name, path) in list_dir(wal_dir)? {
        if let Some(seq) = parse_file_name(&name) {
            segments.push((seq, path));
        } else if name.ends_with(".log.tmp") || name == "probe.tmp" {
            report.add(
                Severity::Note,
                &path,
                0,
                "a temporary file of an interrupted segment creation (open removes it)",
            );
        } else if name.starts_with("quarantine-") {
            report.add(Severity::Note, &path, 0, "bytes an earlier open cut from a torn log tail (kept, never read)");
        } else {
            report.add(Severity::Note, &path, 0, "a file this version does not know (not read)");
        }
    }
    segments.sort();
    let mut state =
        LogState { shard, checkpoint_lsn, expected_lsn: None, first_after: None, pending: None, damaged: false };
    for (seq, path) in &segments {
        let data = read_file(path)?;
        meter.advance(path, data.len() as u64);
        let records = check_segment(*seq, path, &data, &mut state, report);
        report.verified.push(VerifiedFile {
            path: path.clone(),
            kind: FileKind::LogSegment,
            bytes: data.len() as u64,
            records,
        });
    }
    if let Some(torn) = state.pending.take() {
        let what = format!(
            "torn tail ({}): {} bytes up to offset {}; the next open moves them to a quarantine file",
            torn.what,
            torn.dirty_end - torn.offset,
            torn.dirty_end
        );
        report.add(Severity::Torn, &torn.path, torn.offset, what);
    }
    // Recovery's own rule: after a checkpoint the log must resume at the next LSN.
    let gap = state.first_after.filter(|(f, ..)| !state.damaged && checkpoint_lsn > 0 && *f != checkpoint_lsn + 1);
    if let Some((first, path, offset)) = gap {
        let what =
            format!("the log resumes at LSN {first} after a checkpoint at LSN {checkpoint_lsn}: records are missing");
        report.add(Severity::Damage, &path, offset, what);
    }
    Ok(())
}

/// Checks one segment; returns the valid records found in it.
fn check_segment(seq: u64, path: &Path, data: &[u8], state: &mut LogState, report: &mut Report) -> u64 {
    let header = match SegmentHeader::decode(data) {
        Ok(h) => h,
        Err(why) => {
            state.damage(report, path, 0, why);
            return 0;
        }
    };
    if header.segment_seq != seq {
        let what = format!("the header names segment {}, the file name {seq}", header.segment_seq);
        state.damage(report, path, 16, what);
    }
    if header.shard != state.shard {
        let what = format!("the header names shard {}, not {}", header.shard, state.shard);
        state.damage(report, path, 12, what);
    }
    if header.segment_bytes != data.len() as u64 {
        let what = format!("the header gives {} bytes, the file has {}", header.segment_bytes, data.len());
        state.damage(report, path, 24, what);
    }
    let block = header.block_bytes as usize;
    if data.len() <= block {
        state.expected_lsn = None;
        return 0;
    }
    if data[block..].iter().any(|&b| b != 0) {
        if let Some(earlier) = state.pending.take() {
            let what = format!("{}, before the log's tail segment (a later segment holds records)", earlier.what);
            state.damage(report, &earlier.path, earlier.offset, what);
        }
    }
    scan_records(path, data, block, state, report)
}

/// Checks the records of a segment from offset `block`; returns how many are valid.
fn scan_records(path: &Path, data: &[u8], block: usize, state: &mut LogState, report: &mut Report) -> u64 {
    let mut at = block;
    let mut records = 0;
    let bad = loop {
        debug_assert_eq!(at % RECORD_ALIGN, 0, "records are read only at record boundaries");
        if at >= data.len() {
            return records;
        }
        let h = match decode_record(&data[at..], data.len()) {
            Decoded::Record(h) if state.expected_lsn.is_none_or(|e| e == h.lsn) => h,
            Decoded::Record(h) => {
                break format!("record LSN {} where {} was expected", h.lsn, state.expected_lsn.unwrap_or(0));
            }
            Decoded::End if data[at..].iter().all(|&b| b == 0) => return records,
            Decoded::End => break "zeroed record header followed by data".to_string(),
            Decoded::Invalid(why) => break why,
        };
        if let Err(why) = check_body(&data[at..], &h) {
            // The checksums pass, so this is no tear: the record was written this way.
            state.damage(report, path, at as u64, format!("record {}: {why}", h.lsn));
            return records;
        }
        if h.lsn > state.checkpoint_lsn && state.first_after.is_none() {
            state.first_after = Some((h.lsn, path.to_path_buf(), at as u64));
        }
        state.expected_lsn = Some(h.lsn + 1);
        records += 1;
        at += record_bytes(h.body_len as usize);
    };
    let lsn_here = state.expected_lsn.unwrap_or(1);
    if let Some(later) = later_flush(data, at, lsn_here) {
        let what = format!("{bad}; a later flush follows at offset {later}, so this is not a torn tail");
        state.damage(report, path, at as u64, what);
    } else {
        let dirty_end = data.iter().rposition(|&b| b != 0).map_or(at, |p| p + 1).max(at);
        state.pending =
            Some(Pending { path: path.to_path_buf(), offset: at as u64, dirty_end: dirty_end as u64, what: bad });
    }
    state.expected_lsn = None;
    records
}

/// Checks the body of a record whose checksums pass: its transaction header and ops.
fn check_body(record: &[u8], h: &RecordHeader) -> std::result::Result<(), String> {
    let body = &record[HEADER_BYTES..HEADER_BYTES + h.body_len as usize];
    let ops = if h.kind == KIND_OPS {
        body
    } else {
        let tx = decode_tx_header(body)?;
        if h.kind != KIND_PREPARE && (h.op_count != 0 || tx.len != body.len()) {
            return Err("a commit or abort record carries ops".into());
        }
        &body[tx.len..]
    };
    decode_ops(ops, h.op_count).map(|_| ())
}

/// Offset of a valid record after `at` that a later, synced flush wrote than the one that
/// would have written LSN `lsn_here` (see `storage::wal::recovery`), if there is one.
fn later_flush(data: &[u8], at: usize, lsn_here: u64) -> Option<usize> {
    let mut pos = at + RECORD_ALIGN;
    while pos + HEADER_BYTES <= data.len() {
        if let Decoded::Record(h) = decode_record(&data[pos..], data.len()) {
            if h.group_lsn > lsn_here && h.flags & FLAG_UNSYNCED == 0 {
                return Some(pos);
            }
        }
        pos += RECORD_ALIGN;
    }
    None
}
