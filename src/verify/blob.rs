//! Verification of a blob log (`SEGMENTS` and `*.blob`), the rules of `docs/FORMAT.md`
//! ("How a blob log is read back") applied without changing anything, and more
//! thoroughly: sealed segments, which the blob log trusts on open, are read whole too.
//!
//! What must exist comes first, as on open:
//!
//! - a segment with a tombstone (`%08x.dropped`) was dropped: open finishes the drop, so it
//!   is not read, and its manifest entry no longer counts;
//! - the manifest (`SEGMENTS`) must have a valid slot (a bad slot beside a valid one is a
//!   torn write, which the next write of the manifest replaces); without a manifest, a
//!   segment carrying the manifest mark proves it was lost (damage), and segments without
//!   the mark are a log older than the manifest;
//! - every segment the manifest lists must exist, and every segment below its next number
//!   must be listed (a segment at or past it was created just before a crash, and open
//!   adopts it).
//!
//! Then each segment: its header block must decode (identity slot and a valid state slot)
//! and name the segment its file name does. A sealed segment's file must reach its
//! `sealed_end`, which must reach the end the manifest knows durable, and it must hold
//! valid records from its `data_start` exactly to its `sealed_end`. The open segment (the
//! last) holds valid records up to a zero header; bytes after that are a torn tail, unless
//! a record of a later flush follows (damage), and a transaction missing its last record
//! is a torn tail too. But its records must reach the end the manifest knows durable, and
//! its file must not be shorter than it was created unless its records end at a zero
//! header before the cut: what open refuses (without `BlobOptions::accept_lost_blobs`) is
//! damage. A record is valid when its header and frame index pass their crc, every frame
//! its own, and every zstd frame decompresses to exactly its share of the blob.
//!
//! Losses the manifest records are reported too: a segment listed as lost (its file gone,
//! the log opened with `accept_lost_blobs`) is damage, though the log opens, since its
//! blobs read as corruption; a range `cut_end` past a segment's end (blobs a crash took
//! before they were durable, a cut torn tail, or a loss accepted) is a note.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{FileKind, Meter, Report, Severity, VerifiedFile, file_bytes, list_dir, torn_slots};
use crate::error::{Error, Result};
use crate::format::blob::{
    BlobManifest, BlobSegmentHeader, Decoded, FRAME_SHIFT_MAX, FRAME_SHIFT_MIN, KIND_PLAIN, KIND_ZSTD, MANIFEST_MARK,
    MANIFEST_MARK_OFFSET, ManifestEntry, RECORD_ALIGN, RECORD_FLAG_UNSYNCED, RECORD_HEADER_BYTES, SLOT_BYTES,
    STATE_SLOT_OFFSETS, SegmentState, check_meta, decode_header, file_name, frame_entry, parse_file_name,
};
use crate::format::compression::decompress_frame;

/// Bytes read from a segment at a time (more when one frame is larger).
const WINDOW_BYTES: usize = 1 << 20;

/// File name of a blob log's manifest (`docs/FORMAT.md`, "Blob log segment").
const MANIFEST_NAME: &str = "SEGMENTS";

/// Largest manifest open reads (a billion segments would be 24 GB).
const MANIFEST_BYTES_MAX: u64 = 1 << 30;

/// Segment number of a tombstone's file name (`%08x.dropped`), if it is one.
fn parse_tombstone(name: &str) -> Option<u32> {
    let hex = name.strip_suffix(".dropped")?;
    if hex.len() != 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// Whether `dir` holds a blob log: segments, or a manifest.
pub(super) fn is_log(dir: &Path) -> Result<bool> {
    Ok(list_dir(dir)?.iter().any(|(name, _)| name == MANIFEST_NAME || parse_file_name(name).is_some()))
}

/// Bytes a check of the blob log in `dir` reads: its manifest and segments.
pub(super) fn log_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    if dir.is_dir() {
        for (name, path) in list_dir(dir)? {
            if name == MANIFEST_NAME || parse_file_name(&name).is_some() {
                total += file_bytes(&path)?;
            }
        }
    }
    Ok(total)
}

/// A log's segment files: number and path, ascending.
type Segments = Vec<(u32, PathBuf)>;

/// What the manifest of a log says, as far as it could be read.
enum Listed {
    /// No `SEGMENTS` file.
    Absent,
    /// A `SEGMENTS` file without a valid slot (reported).
    Unreadable,
    /// The newest valid slot.
    Manifest(BlobManifest),
}

/// What a check of one segment found that the log's checks need.
#[derive(Default)]
struct Checked {
    records: u64,
    /// Whether its header block carries the manifest mark.
    marked: bool,
}

/// Checks the blob log in `dir`.
pub(super) fn check_log(dir: &Path, report: &mut Report, meter: &mut Meter<'_>) -> Result<()> {
    let (mut segments, tombstones) = list_log(dir, report)?;
    // A drop a crash interrupted: open removes the segment, and forgets it.
    for &n in &tombstones {
        let path = dir.join(file_name(n));
        if let Some(i) = segments.iter().position(|(s, _)| *s == n) {
            meter.advance(&path, file_bytes(&path)?);
            segments.remove(i);
            let what = "a segment that was dropped (its tombstone is there): open removes it (not read)";
            report.add(Severity::Note, &path, 0, what);
        }
    }
    let manifest_path = dir.join(MANIFEST_NAME);
    let mut listed =
        if manifest_path.exists() { check_manifest(&manifest_path, report, meter)? } else { Listed::Absent };
    if let Listed::Manifest(m) = &mut listed {
        m.entries.retain(|e| !tombstones.contains(&e.segment));
        check_listed(dir, m, &segments, report);
    }
    let manifest = match &listed {
        Listed::Manifest(m) => Some(m),
        _ => None,
    };
    let last = segments.len().saturating_sub(1);
    let mut marked = None;
    for (i, (number, path)) in segments.iter().enumerate() {
        let file = File::open(path).map_err(|e| Error::io("open", path.clone(), e))?;
        let len = file.metadata().map_err(|e| Error::io("stat", path.clone(), e))?.len();
        let mut window = Window { file: &file, path, len, buf: Vec::new(), start: 0, read_end: 0, meter };
        let place = Place { number: *number, is_last: i == last, entry: manifest.and_then(|m| m.entry(*number)) };
        let found = check_segment(&mut window, &place, report).map_err(|e| Error::io("read", path.clone(), e))?;
        let unread = len.saturating_sub(window.read_end);
        meter.advance(path, unread);
        report.verified.push(VerifiedFile {
            path: path.clone(),
            kind: FileKind::BlobSegment,
            bytes: len,
            records: found.records,
        });
        if found.marked && marked.is_none() {
            marked = Some(*number);
        }
    }
    if let (Listed::Absent, Some(n)) = (&listed, marked) {
        let what = format!(
            "the blob log's manifest is missing, though segment {n} was written with one: which segments must \
             exist is unknown"
        );
        report.add(Severity::Damage, &manifest_path, 0, what);
    }
    Ok(())
}

/// Lists the log's segments (ascending) and tombstones, noting every other file.
fn list_log(dir: &Path, report: &mut Report) -> Result<(Segments, Vec<u32>)> {
    let mut segments = Vec::new();
    let mut tombstones = Vec::new();
    for (name, path) in list_dir(dir)? {
        if let Some(number) = parse_file_name(&name) {
            segments.push((number, path));
        } else if let Some(number) = parse_tombstone(&name) {
            tombstones.push(number);
            if !dir.join(file_name(number)).exists() {
                let what = "the tombstone of a dropped segment (the next write of the manifest removes it)";
                report.add(Severity::Note, &path, 0, what);
            }
        } else if name.ends_with(".blob.tmp") {
            report.add(Severity::Note, &path, 0, "a segment whose creation was interrupted (open removes it)");
        } else if name == format!("{MANIFEST_NAME}.tmp") {
            report.add(Severity::Note, &path, 0, "a manifest whose rewrite was interrupted (open removes it)");
        } else if name.starts_with("quarantine-") {
            report.add(Severity::Note, &path, 0, "bytes an earlier open cut from a torn blob tail (kept, never read)");
        } else if name != "LOCK" && name != MANIFEST_NAME {
            report.add(Severity::Note, &path, 0, "a file this version does not know (not read)");
        }
    }
    segments.sort_unstable();
    tombstones.sort_unstable();
    Ok((segments, tombstones))
}

/// Reads and checks the manifest (`SEGMENTS`) with the decoders open uses.
fn check_manifest(path: &Path, report: &mut Report, meter: &mut Meter<'_>) -> Result<Listed> {
    let len = file_bytes(path)?;
    if len > MANIFEST_BYTES_MAX {
        meter.advance(path, len);
        report.verified.push(VerifiedFile {
            path: path.to_path_buf(),
            kind: FileKind::BlobManifest,
            bytes: len,
            records: 0,
        });
        let what = format!("blob log manifest of {len} bytes is larger than any log needs (not read)");
        report.add(Severity::Damage, path, 0, what);
        return Ok(Listed::Unreadable);
    }
    let bytes = super::read_file(path)?;
    meter.advance(path, bytes.len() as u64);
    report.verified.push(VerifiedFile {
        path: path.to_path_buf(),
        kind: FileKind::BlobManifest,
        bytes: bytes.len() as u64,
        records: 0,
    });
    let manifest = match BlobManifest::newest(&bytes) {
        Ok(m) => m,
        Err(why) => {
            report.add(Severity::Damage, path, 0, why);
            return Ok(Listed::Unreadable);
        }
    };
    torn_slots(path, &bytes, bytes.len() / 2, |slot| BlobManifest::decode(slot).err(), report);
    Ok(Listed::Manifest(manifest))
}

/// Every segment the manifest lists exists (or is listed as lost), and every segment below
/// its next number is listed; notes the ranges it records as lost.
fn check_listed(dir: &Path, manifest: &BlobManifest, segments: &[(u32, PathBuf)], report: &mut Report) {
    let exists = |n: u32| segments.iter().any(|(s, _)| *s == n);
    for e in &manifest.entries {
        let path = dir.join(file_name(e.segment));
        if !exists(e.segment) {
            let what = if e.lost {
                format!(
                    "blob segment {} is listed as lost (its file is gone; the log was opened with \
                     accept_lost_blobs): its blobs read as corruption until the segment is dropped",
                    e.segment
                )
            } else {
                format!(
                    "blob segment {} is missing, though the log's manifest lists it with records up to offset {}: \
                     its blobs are lost",
                    e.segment, e.end
                )
            };
            report.add(Severity::Damage, &path, 0, what);
        } else if e.cut_end > e.end {
            let what = format!(
                "blobs between offsets {} and {} were lost (a crash before they were durable, a torn tail cut, \
                 or a loss accepted with accept_lost_blobs): reading them returns a corruption error",
                e.end, e.cut_end
            );
            report.add(Severity::Note, &path, e.end, what);
        }
    }
    for (n, path) in segments.iter().filter(|(n, _)| manifest.entry(*n).is_none()) {
        if *n < manifest.next_segment {
            let what = format!(
                "blob segment {n} is not in the log's manifest, which was written after it was created or \
                 dropped: a stray or restored file"
            );
            report.add(Severity::Damage, path, 0, what);
        } else {
            let what = "a segment created just before a crash, not yet in the manifest (open adopts it)";
            report.add(Severity::Note, path, 0, what);
        }
    }
}

/// Which segment is checked, and what the manifest says of it.
struct Place<'a> {
    number: u32,
    is_last: bool,
    entry: Option<&'a ManifestEntry>,
}

/// Checks one segment.
fn check_segment(win: &mut Window<'_, '_, '_>, place: &Place<'_>, report: &mut Report) -> std::io::Result<Checked> {
    let (path, number) = (win.path, place.number);
    let head = win.get(0, SLOT_BYTES)?.to_vec();
    let header = match BlobSegmentHeader::decode(&head) {
        Ok(h) => h,
        Err(why) => {
            report.add(Severity::Damage, path, 0, why);
            return Ok(Checked::default());
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
    let marked = block.get(MANIFEST_MARK_OFFSET..MANIFEST_MARK_OFFSET + 8) == Some(&MANIFEST_MARK[..]);
    let Some(state) = SegmentState::newest(&block) else {
        report.add(Severity::Damage, path, STATE_SLOT_OFFSETS[0] as u64, "no valid state slot");
        return Ok(Checked { records: 0, marked });
    };
    for at in STATE_SLOT_OFFSETS {
        let slot = block.get(at..at + SLOT_BYTES).unwrap_or_default();
        if slot.iter().any(|&b| b != 0) && SegmentState::decode(slot).is_none() {
            report.add(Severity::Torn, path, at as u64, "state slot is not valid; the other slot is used");
        }
    }
    let sealed = state.sealed_end != 0;
    let limit = if sealed { state.sealed_end.min(win.len) } else { win.len };
    let misplaced = state.data_start < u64::from(header.block_bytes) || state.data_start % RECORD_ALIGN as u64 != 0;
    if misplaced || state.data_start > limit || (sealed && state.sealed_end < state.data_start) {
        let what = format!(
            "state gives data_start {} and sealed_end {} in a file of {} bytes",
            state.data_start, state.sealed_end, win.len
        );
        report.add(Severity::Damage, path, state.slot_offset() as u64, what);
        return Ok(Checked { records: 0, marked });
    }
    let scan = scan_records(win, state.data_start, limit)?;
    let known_end = place.entry.map_or(0, |e| e.end);
    if sealed {
        check_sealed(win, &scan, state.sealed_end, known_end, report);
    } else {
        judge_open_tail(win, &scan, place, report)?;
        if win.len < header.segment_bytes && !scan.zero_header {
            let what = format!(
                "blob segment {number} was truncated to {} of its {} bytes while its records ran on to the cut: \
                 the blobs past offset {} are lost",
                win.len, header.segment_bytes, scan.whole_end
            );
            report.add(Severity::Damage, path, win.len, what);
        }
    }
    Ok(Checked { records: scan.records, marked })
}

/// Reports a sealed segment whose file or records stop before its `sealed_end`, or whose
/// `sealed_end` stops before the end the manifest knows durable.
fn check_sealed(win: &Window<'_, '_, '_>, scan: &Scan, sealed_end: u64, known_end: u64, report: &mut Report) {
    let path = win.path;
    if win.len < sealed_end {
        let what = format!(
            "a sealed segment truncated to {} bytes, but its records end at offset {sealed_end}: the blobs past \
             offset {} are lost",
            win.len, win.len
        );
        report.add(Severity::Damage, path, win.len, what);
    }
    if sealed_end < known_end {
        let what = format!(
            "a sealed segment whose records end at offset {sealed_end}, but the log's manifest knows them durable \
             up to offset {known_end}: the blobs between are lost"
        );
        report.add(Severity::Damage, path, sealed_end, what);
    }
    let short = (scan.stop < sealed_end.min(win.len)).then(|| (scan.stop, "records end before sealed_end".into()));
    if let Some((at, what)) = scan.bad.clone().or(short) {
        report.add(Severity::Damage, path, at, format!("{what}, in a sealed segment"));
    }
}

/// What a scan of a segment's records found.
struct Scan {
    records: u64,
    /// Where the valid records end.
    stop: u64,
    /// Where the last transaction whose last record is present ends (the end recovery keeps).
    whole_end: u64,
    /// Whether the records end at a zero record header inside the file (not at its end).
    zero_header: bool,
    /// Flush number of the last valid record.
    last_flush_seq: Option<u32>,
    /// The first record that failed its checks: offset and why.
    bad: Option<(u64, String)>,
    /// Flush number of that record, if its header and frame index are intact.
    bad_flush_seq: Option<u32>,
}

/// Checks records from `from` until a zero header, a bad record or `limit`.
fn scan_records(win: &mut Window<'_, '_, '_>, from: u64, limit: u64) -> std::io::Result<Scan> {
    let mut scan = Scan {
        records: 0,
        stop: from,
        whole_end: from,
        zero_header: false,
        last_flush_seq: None,
        bad: None,
        bad_flush_seq: None,
    };
    let mut at = from;
    while at < limit {
        debug_assert_eq!(at % RECORD_ALIGN as u64, 0, "records are read only at record boundaries");
        match check_record(win, at, limit)? {
            Record::End => {
                scan.zero_header = at + RECORD_HEADER_BYTES as u64 <= limit;
                break;
            }
            Record::Bad { what, flush_seq } => {
                scan.bad = Some((at, what));
                scan.bad_flush_seq = flush_seq;
                break;
            }
            Record::Valid { bytes, batch_left, flush_seq } => {
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

/// Reports what follows the records of an open segment (zeros, a torn tail, or damage),
/// and records that stop before the end the manifest knows durable.
fn judge_open_tail(
    win: &mut Window<'_, '_, '_>,
    scan: &Scan,
    place: &Place<'_>,
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
    let known_end = place.entry.map_or(0, |e| e.end);
    // Open refuses, in this order: a record of a later flush past the damage, records that
    // stop before the durable end, damage in a segment before the last. Otherwise it cuts a
    // torn tail from the end of the last whole transaction.
    if let (Some(why), Some(later)) = (&why, later) {
        let what = format!("{why}; a record of a later flush follows at offset {later}, so this is not a torn tail");
        report.add(Severity::Damage, path, scan.stop, what);
    } else if scan.whole_end < known_end {
        let why = why.as_deref().unwrap_or("then zeros, or the end of the file");
        let what = format!(
            "its records end at offset {} ({why}), but the log's manifest knows records durable up to offset \
             {known_end}: the blobs between are lost",
            scan.whole_end
        );
        report.add(Severity::Damage, path, scan.whole_end, what);
    } else if let Some(why) = why {
        if place.is_last {
            let end = dirty_end.max(scan.stop);
            let what =
                format!("torn tail ({why}): bytes up to offset {end}; the next open moves them to a quarantine file");
            report.add(Severity::Torn, path, scan.whole_end, what);
        } else {
            report.add(Severity::Damage, path, scan.stop, format!("{why}, in an open segment that is not the last"));
        }
    } else if !place.is_last {
        report.add(Severity::Note, path, 0, "an open segment that is not the last (the next open seals it)");
    }
    Ok(())
}

/// The end of the non-zero bytes after the scan's stop (0 if all are zero), and the
/// offset of a valid record of a later flush than the damaged one, if one follows. A
/// record flagged unsynced proves nothing (a crash may keep it and lose earlier flushes).
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
                if let Some(seq) = synced_flush_seq(win, cand)? {
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

/// The flush number of a record at `at` whose header and frame index are intact and that
/// is not flagged unsynced.
fn synced_flush_seq(win: &mut Window<'_, '_, '_>, at: u64) -> std::io::Result<Option<u32>> {
    let head = win.get(at, RECORD_HEADER_BYTES)?.to_vec();
    let Decoded::Header(h) = decode_header(&head, win.len - at) else { return Ok(None) };
    let meta = win.get(at, h.meta_bytes() as usize)?.to_vec();
    let synced = h.flags & RECORD_FLAG_UNSYNCED == 0;
    Ok(check_meta(&h, &meta).ok().filter(|()| synced).map(|()| h.flush_seq))
}

/// What is at a record position.
enum Record {
    End,
    Valid { bytes: u64, batch_left: u32, flush_seq: u32 },
    Bad { what: String, flush_seq: Option<u32> },
}

/// Checks the record at `at`, which must end by `limit`.
fn check_record(win: &mut Window<'_, '_, '_>, at: u64, limit: u64) -> std::io::Result<Record> {
    let head = win.get(at, RECORD_HEADER_BYTES)?.to_vec();
    let h = match decode_header(&head, limit - at) {
        Decoded::End => return Ok(Record::End),
        Decoded::Invalid(what) => return Ok(Record::Bad { what, flush_seq: None }),
        Decoded::Header(h) => h,
    };
    let meta = win.get(at, h.meta_bytes() as usize)?.to_vec();
    if let Err(what) = check_meta(&h, &meta) {
        return Ok(Record::Bad { what, flush_seq: None });
    }
    let bad = |what: String| Ok(Record::Bad { what, flush_seq: Some(h.flush_seq) });
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
    Ok(Record::Valid { bytes: h.record_bytes(), batch_left: h.batch_left, flush_seq: h.flush_seq })
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
