//! Verification of a blob log's segments (`*.blob`), the rules of `docs/FORMAT.md`
//! ("How a blob log is read back") applied without changing anything, and more
//! thoroughly: sealed segments, which the blob log trusts on open, are read whole too.
//!
//! Every segment's header block must decode (identity slot and a valid state slot). A
//! sealed segment must hold valid records from its `data_start` exactly to its
//! `sealed_end`. The open segment (the last) holds valid records up to a zero header;
//! bytes after that are a torn tail, unless a record of a later flush follows (damage),
//! and a transaction missing its last record is a torn tail too. A record is valid when
//! its header and frame index pass their crc, every frame its own, and every zstd frame
//! decompresses to exactly its share of the blob.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{FileKind, Meter, Report, Severity, VerifiedFile, file_bytes, list_dir};
use crate::error::{Error, Result};
use crate::format::blob::{
    BlobSegmentHeader, Decoded, FRAME_SHIFT_MAX, FRAME_SHIFT_MIN, KIND_PLAIN, KIND_ZSTD, RECORD_ALIGN,
    RECORD_HEADER_BYTES, SLOT_BYTES, STATE_SLOT_OFFSETS, SegmentState, check_meta, decode_header, frame_entry,
    parse_file_name,
};
use crate::format::compression::decompress_frame;

/// Bytes read from a segment at a time (more when one frame is larger).
const WINDOW_BYTES: usize = 1 << 20;

/// Whether `dir` holds blob segments.
pub(super) fn holds_segments(dir: &Path) -> Result<bool> {
    Ok(list_dir(dir)?.iter().any(|(name, _)| parse_file_name(name).is_some()))
}

/// Bytes of the segments of the blob log in `dir`.
pub(super) fn log_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    if dir.is_dir() {
        for (name, path) in list_dir(dir)? {
            if parse_file_name(&name).is_some() {
                total += file_bytes(&path)?;
            }
        }
    }
    Ok(total)
}

/// Checks every segment of the blob log in `dir`.
pub(super) fn check_log(dir: &Path, report: &mut Report, meter: &mut Meter<'_>) -> Result<()> {
    let mut segments = Vec::new();
    for (name, path) in list_dir(dir)? {
        if let Some(number) = parse_file_name(&name) {
            segments.push((number, path));
        } else if name.ends_with(".blob.tmp") {
            report.add(Severity::Note, &path, 0, "a segment whose creation was interrupted (open removes it)");
        } else if name.starts_with("quarantine-") {
            report.add(Severity::Note, &path, 0, "bytes an earlier open cut from a torn blob tail (kept, never read)");
        } else if name != "LOCK" {
            report.add(Severity::Note, &path, 0, "a file this version does not know (not read)");
        }
    }
    segments.sort();
    let last = segments.len().saturating_sub(1);
    for (i, (number, path)) in segments.iter().enumerate() {
        let file = File::open(path).map_err(|e| Error::io("open", path.clone(), e))?;
        let len = file.metadata().map_err(|e| Error::io("stat", path.clone(), e))?.len();
        let mut window = Window { file: &file, path, len, buf: Vec::new(), start: 0, read_end: 0, meter };
        let records =
            check_segment(&mut window, *number, i == last, report).map_err(|e| Error::io("read", path.clone(), e))?;
        let unread = len.saturating_sub(window.read_end);
        meter.advance(path, unread);
        report.verified.push(VerifiedFile { path: path.clone(), kind: FileKind::BlobSegment, bytes: len, records });
    }
    Ok(())
}

/// Checks one segment; returns the valid records found in it.
fn check_segment(
    win: &mut Window<'_, '_, '_>,
    number: u32,
    is_last: bool,
    report: &mut Report,
) -> std::io::Result<u64> {
    let path = win.path;
    let head = win.get(0, SLOT_BYTES)?.to_vec();
    let header = match BlobSegmentHeader::decode(&head) {
        Ok(h) => h,
        Err(why) => {
            report.add(Severity::Damage, path, 0, why);
            return Ok(0);
        }
    };
    if header.segment != number {
        report.add(
            Severity::Damage,
            path,
            12,
            format!("the header names segment {}, the file name {number}", header.segment),
        );
    }
    let block = win.get(0, header.block_bytes as usize)?.to_vec();
    let Some(state) = SegmentState::newest(&block) else {
        report.add(Severity::Damage, path, STATE_SLOT_OFFSETS[0] as u64, "no valid state slot");
        return Ok(0);
    };
    for at in STATE_SLOT_OFFSETS {
        let slot = block.get(at..at + SLOT_BYTES).unwrap_or_default();
        if slot.iter().any(|&b| b != 0) && SegmentState::decode(slot).is_none() {
            report.add(Severity::Torn, path, at as u64, "state slot is not valid; the other slot is used");
        }
    }
    let limit = if state.sealed_end == 0 { win.len } else { state.sealed_end };
    let misplaced = state.data_start < u64::from(header.block_bytes) || state.data_start % RECORD_ALIGN as u64 != 0;
    if misplaced || state.data_start > limit || limit > win.len {
        let what = format!(
            "state gives data_start {} and sealed_end {} in a file of {} bytes",
            state.data_start, state.sealed_end, win.len
        );
        report.add(Severity::Damage, path, state.slot_offset() as u64, what);
        return Ok(0);
    }
    let scan = scan_records(win, state.data_start, limit)?;
    if state.sealed_end != 0 {
        if let Some((at, what)) =
            scan.bad.or_else(|| (scan.stop != limit).then(|| (scan.stop, "records end before sealed_end".into())))
        {
            report.add(Severity::Damage, path, at, format!("{what}, in a sealed segment"));
        }
        return Ok(scan.records);
    }
    judge_open_tail(win, &scan, is_last, report)?;
    Ok(scan.records)
}

/// What a scan of a segment's records found.
struct Scan {
    records: u64,
    /// Where the valid records end.
    stop: u64,
    /// Where the last transaction whose last record is present ends (the end recovery keeps).
    whole_end: u64,
    /// Flush number of the last valid record.
    last_flush_seq: Option<u32>,
    /// The first record that failed its checks: offset and why.
    bad: Option<(u64, String)>,
    /// Flush number of that record, if its header and frame index are intact.
    bad_flush_seq: Option<u32>,
}

/// Checks records from `from` until a zero header, a bad record or `limit`.
fn scan_records(win: &mut Window<'_, '_, '_>, from: u64, limit: u64) -> std::io::Result<Scan> {
    let mut scan =
        Scan { records: 0, stop: from, whole_end: from, last_flush_seq: None, bad: None, bad_flush_seq: None };
    let mut at = from;
    while at < limit {
        debug_assert_eq!(at % RECORD_ALIGN as u64, 0, "records are read only at record boundaries");
        match check_record(win, at, limit)? {
            Checked::End => break,
            Checked::Bad { what, flush_seq } => {
                scan.bad = Some((at, what));
                scan.bad_flush_seq = flush_seq;
                break;
            }
            Checked::Valid { bytes, batch_left, flush_seq } => {
                scan.records += 1;
                scan.last_flush_seq = Some(flush_seq);
                at += bytes;
                if batch_left == 0 {
                    scan.whole_end = at;
                }
            }
        }
    }
    scan.stop = at.min(limit);
    Ok(scan)
}

/// Reports what follows the records of an open segment: zeros, a torn tail or damage.
fn judge_open_tail(
    win: &mut Window<'_, '_, '_>,
    scan: &Scan,
    is_last: bool,
    report: &mut Report,
) -> std::io::Result<()> {
    let path = win.path;
    let (dirty_end, later) = look_past(win, scan)?;
    let why = match &scan.bad {
        Some((_, what)) => Some(what.clone()),
        None if dirty_end > scan.stop => Some("zeroed record header followed by data".to_string()),
        None if scan.whole_end < scan.stop => Some("a transaction's last record is missing".to_string()),
        None => None,
    };
    let Some(why) = why else {
        if !is_last {
            report.add(Severity::Note, path, 0, "an open segment that is not the last (the next open seals it)");
        }
        return Ok(());
    };
    // Recovery reports damage where the valid records stop, and cuts a torn tail from
    // the end of the last whole transaction.
    if let Some(later) = later {
        let what = format!("{why}; a record of a later flush follows at offset {later}, so this is not a torn tail");
        report.add(Severity::Damage, path, scan.stop, what);
    } else if !is_last {
        report.add(Severity::Damage, path, scan.stop, format!("{why}, in an open segment that is not the last"));
    } else {
        let end = dirty_end.max(scan.stop);
        let what =
            format!("torn tail ({why}): bytes up to offset {end}; the next open moves them to a quarantine file");
        report.add(Severity::Torn, path, scan.whole_end, what);
    }
    Ok(())
}

/// The end of the non-zero bytes after the scan's stop (0 if all are zero), and the
/// offset of a valid record of a later flush than the damaged one, if one follows.
fn look_past(win: &mut Window<'_, '_, '_>, scan: &Scan) -> std::io::Result<(u64, Option<u64>)> {
    let mut dirty_end = 0;
    let mut pos = scan.stop;
    while pos < win.len {
        let chunk = win.get(pos, WINDOW_BYTES)?.to_vec();
        if chunk.is_empty() {
            break;
        }
        if let Some(last) = chunk.iter().rposition(|&b| b != 0) {
            dirty_end = pos + last as u64 + 1;
        }
        let mut off = 0;
        while off + 2 <= chunk.len() {
            let (kind, shift) = (chunk[off], chunk[off + 1]);
            if (kind == KIND_PLAIN || kind == KIND_ZSTD) && (FRAME_SHIFT_MIN..=FRAME_SHIFT_MAX).contains(&shift) {
                let cand = pos + off as u64;
                if let Some(seq) = intact_flush_seq(win, cand)? {
                    // The damaged flush is the damaged record's own, or else at most one
                    // past the last valid record's.
                    let later = match (scan.bad_flush_seq, scan.last_flush_seq) {
                        (Some(f), _) => (1..1 << 31).contains(&seq.wrapping_sub(f)),
                        (None, Some(base)) => (2..1 << 31).contains(&seq.wrapping_sub(base)),
                        (None, None) => false,
                    };
                    if later {
                        return Ok((dirty_end, Some(cand)));
                    }
                }
            }
            off += RECORD_ALIGN;
        }
        pos += chunk.len() as u64;
    }
    Ok((dirty_end, None))
}

/// The flush number of a record at `at` whose header and frame index are intact.
fn intact_flush_seq(win: &mut Window<'_, '_, '_>, at: u64) -> std::io::Result<Option<u32>> {
    let head = win.get(at, RECORD_HEADER_BYTES)?.to_vec();
    let Decoded::Header(h) = decode_header(&head, win.len - at) else { return Ok(None) };
    let meta = win.get(at, h.meta_bytes() as usize)?.to_vec();
    Ok(check_meta(&h, &meta).ok().map(|()| h.flush_seq))
}

/// What is at a record position.
enum Checked {
    End,
    Valid { bytes: u64, batch_left: u32, flush_seq: u32 },
    Bad { what: String, flush_seq: Option<u32> },
}

/// Checks the record at `at`, which must end by `limit`.
fn check_record(win: &mut Window<'_, '_, '_>, at: u64, limit: u64) -> std::io::Result<Checked> {
    let head = win.get(at, RECORD_HEADER_BYTES)?.to_vec();
    let h = match decode_header(&head, limit - at) {
        Decoded::End => return Ok(Checked::End),
        Decoded::Invalid(what) => return Ok(Checked::Bad { what, flush_seq: None }),
        Decoded::Header(h) => h,
    };
    let meta = win.get(at, h.meta_bytes() as usize)?.to_vec();
    if let Err(what) = check_meta(&h, &meta) {
        return Ok(Checked::Bad { what, flush_seq: None });
    }
    let bad = |what: String| Ok(Checked::Bad { what, flush_seq: Some(h.flush_seq) });
    let mut frame_at = at + h.meta_bytes();
    let mut scratch = Vec::new();
    for i in 0..h.frames() {
        let entry = frame_entry(&meta, i as usize);
        let stored = win.get(frame_at, entry.stored_len as usize)?;
        if stored.len() != entry.stored_len as usize || crc32fast::hash(stored) != entry.crc {
            return bad(format!("frame {i} of the record at {at} fails its checksum"));
        }
        let frame_start = i << h.frame_shift;
        let expected = ((frame_start + (1 << h.frame_shift)).min(h.blob_bytes) - frame_start) as usize;
        if h.kind == KIND_PLAIN && stored.len() != expected {
            return bad(format!("plain frame {i} of the record at {at} holds {} bytes, not {expected}", stored.len()));
        }
        if h.kind == KIND_ZSTD {
            scratch.clear();
            if decompress_frame(stored, expected, &mut scratch).is_none() {
                return bad(format!("frame {i} of the record at {at} does not decompress to {expected} bytes"));
            }
        }
        frame_at += u64::from(entry.stored_len);
    }
    if frame_at != at + h.meta_bytes() + h.stored_bytes {
        return bad(format!("frame sizes of the record at {at} do not add up to its stored size"));
    }
    Ok(Checked::Valid { bytes: h.record_bytes(), batch_left: h.batch_left, flush_seq: h.flush_seq })
}

/// A read-ahead window over a segment, counting bytes read for progress.
struct Window<'a, 'm, 'f> {
    file: &'a File,
    path: &'a Path,
    len: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: u64,
    /// Furthest offset read so far (what progress has counted).
    read_end: u64,
    meter: &'m mut Meter<'f>,
}

impl Window<'_, '_, '_> {
    /// Bytes `[at, at + len)`, fewer if the file ends first.
    fn get(&mut self, at: u64, len: usize) -> std::io::Result<&[u8]> {
        let len = len.min(self.len.saturating_sub(at) as usize);
        let end = at + len as u64;
        if at < self.start || end > self.start + self.buf.len() as u64 {
            let want = len.max(WINDOW_BYTES).min(self.len.saturating_sub(at) as usize);
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, at)?;
            self.start = at;
            let new_end = at + want as u64;
            if new_end > self.read_end {
                self.meter.advance(self.path, new_end - self.read_end.max(at));
                self.read_end = new_end;
            }
        }
        let from = (at - self.start) as usize;
        debug_assert!(from + len <= self.buf.len(), "the window holds what was asked");
        Ok(&self.buf[from..from + len])
    }
}
