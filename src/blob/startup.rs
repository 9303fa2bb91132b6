//! Opening a blob log for writing: what must exist is checked against the
//! manifest, the open segment is recovered, and appends continue where no
//! earlier [`super::Location`] can point.
//!
//! In order:
//! 1. finish interrupted drops (a tombstone whose segment is still there);
//! 2. read the manifest, or build one from the segments of a log that predates it
//!    (a log whose segments carry the manifest mark but has no manifest lost it:
//!    [`Error::Corruption`]; a new log writes its manifest before its first segment);
//! 3. every segment the manifest lists must exist, and none below its next number
//!    that it does not list (else corruption); a segment at or past that number is
//!    one created just before a crash, and is adopted;
//! 4. a sealed segment must hold its records (its file at least as long as its
//!    sealed end, which must reach the manifest's end);
//! 5. the open segment is scanned (`recovery`). Its records must reach the end the
//!    manifest knows to be durable, and the file must not be shorter than it was
//!    created unless the records end cleanly before the cut: anything less lost
//!    acknowledged blobs and is corruption, naming the file and what is missing;
//! 6. if the last writer did not close cleanly (it may have acknowledged blobs
//!    that a crash took back, under `Periodic` or `None`) or recovery cut a torn
//!    tail, the open segment is to be sealed where its records end, and appends go
//!    to a new segment numbered from the manifest: a lost blob's `Location` then
//!    points past a sealed end, never at a later blob. A clean close lets the next
//!    open continue the same segment;
//! 7. the manifest is written with the open segment's synced end, marked not
//!    closed while this writer runs, and the range of lost blobs (`cut_end`);
//!    only then are the seals of step 6 written, so a crash in between cannot
//!    leave a sealed segment whose lost blobs would read as never written.
//!
//! With `BlobOptions::accept_lost_blobs` the corruption of steps 2 to 5 is
//! accepted instead: a missing segment stays listed as lost, a stray one is taken
//! in, a segment cut short is sealed where its records end with the lost range
//! recorded (`cut_end`), so the lost blobs read as corruption and appends go to a
//! new segment.
//!
//! On a full disk the new segment cannot be created, the seal may not be
//! writable, and a torn tail cannot be copied to quarantine (it then stays in
//! the segment, past its sealed end): the log opens anyway with no segment to
//! append to, so reads, drops and trims keep working, and the first append tries
//! again.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

use super::BlobOptions;
use super::manifest::{self, MANIFEST_NAME, ManifestFile};
use super::reader::SegmentFile;
use super::recovery;
use super::segment::{create_segment, list_segments, open_segment, read_meta, segment_path, write_state};
use super::writer::{SegState, WriterStart};
use crate::error::{Error, Result};
use crate::format::blob::{BlobManifest, ManifestEntry, SegmentState};
use crate::io::fs::{Fs, OpenFlags, sync_dir};
use crate::storage::segment::{Erase, TornTail, cut_torn_tail};

/// What an operator can do about lost blobs, as the errors of open say.
const TO_DO: &str =
    "restore the file from a backup, or open with BlobOptions::accept_lost_blobs(true) to go on without them";

/// Which segment recovery looks at, and how.
#[derive(Clone, Copy)]
struct Place {
    n: u32,
    is_last: bool,
    probe_block: usize,
    /// `BlobOptions::accept_lost_blobs`.
    accept: bool,
}

/// What recovery found in one segment.
struct Recovered {
    state: SegState,
    last_flush_seq: Option<u32>,
    /// Where blobs lost now may lie up to: the end of a torn tail cut, or the segment's
    /// size after a crash (0: nothing lost).
    cut_end: u64,
    /// Bytes a seal keeps of the file: the records, and a torn tail left in place.
    keep_bytes: u64,
}

/// Recovers the log in `dir` for the writer; see the module docs.
pub fn recover(fs: &dyn Fs, dir: &Path, config: &BlobOptions, probe_block: usize) -> Result<WriterStart> {
    let mut numbers = list_segments(fs, dir, true)?;
    let buried = manifest::tombstones(fs, dir)?;
    finish_drops(fs, dir, &mut numbers, &buried)?;
    let _ = fs.remove_file(&dir.join(format!("{MANIFEST_NAME}.tmp")));
    let accept = config.accept_lost_blobs;
    let mut mf = match manifest::load(fs, dir)? {
        Some(mf) => mf,
        None => legacy_manifest(fs, dir, &numbers, probe_block, accept)?,
    };
    if mf.slot_bytes == 0 && numbers.is_empty() {
        // A new log: its manifest exists before its first segment, so a crash between
        // the two leaves a segment the manifest will adopt, not one it has never seen.
        manifest::store(fs, dir, &mut mf)?;
    }
    mf.manifest.entries.retain(|e| !buried.contains(&e.segment));
    check_listed(dir, &mut mf.manifest, &numbers, accept)?;
    let mut segments = BTreeMap::new();
    let mut keep = BTreeMap::new();
    let mut next_flush_seq = 0u32;
    for (i, &n) in numbers.iter().enumerate() {
        let entry = mf.manifest.entry(n).copied();
        let at = Place { n, is_last: i + 1 == numbers.len(), probe_block, accept };
        let found = recover_segment(fs, dir, at, entry)?;
        if let Some(seq) = found.last_flush_seq {
            next_flush_seq = seq.wrapping_add(1);
        }
        let cut_end = found.cut_end.max(entry.map_or(0, |e| e.cut_end));
        let e = ManifestEntry {
            segment: n,
            sealed: found.state.sealed,
            closed: false,
            lost: false,
            end: found.state.end,
            cut_end,
        };
        upsert(&mut mf.manifest, e);
        segments.insert(n, found.state);
        keep.insert(n, found.keep_bytes);
    }
    let last = numbers.last().copied();
    mf.manifest.next_segment = mf.manifest.next_segment.max(last.map_or(0, |n| n.saturating_add(1)));
    let (current, created) = match last.filter(|n| !segments[n].sealed) {
        Some(n) => (n, false),
        None => start_segment(fs, dir, config, probe_block, &mut mf.manifest, &mut segments, last)?,
    };
    match manifest::store(fs, dir, &mut mf) {
        Ok(()) => {
            manifest::remove_tombstones(fs, dir, &buried)?;
            for (&n, state) in segments.iter_mut().filter(|(_, s)| s.seal_pending) {
                seal(fs, dir, (n, keep[&n]), probe_block, state)?;
            }
        }
        // A full disk: the manifest (and the seals after it) wait for the next rotation,
        // and until then nothing is appended, since the manifest does not say this
        // writer runs.
        Err(e) if !created && e.io_kind() == Some(ErrorKind::StorageFull) => {
            let state = segments.get_mut(&current).expect("the current segment is listed");
            if !state.sealed {
                state.sealed = true;
                state.seal_pending = true;
            }
        }
        Err(e) => return Err(e),
    }
    writer_start(fs, dir, config, probe_block, current, segments, next_flush_seq, mf)
}

/// Sets the manifest entry of `e.segment`.
fn upsert(manifest: &mut BlobManifest, e: ManifestEntry) {
    match manifest.entries.binary_search_by_key(&e.segment, |x| x.segment) {
        Ok(i) => manifest.entries[i] = e,
        Err(i) => manifest.entries.insert(i, e),
    }
}

/// Removes the segments that have a tombstone (a drop a crash interrupted).
fn finish_drops(fs: &dyn Fs, dir: &Path, numbers: &mut Vec<u32>, buried: &[u32]) -> Result<()> {
    let before = numbers.len();
    for &n in buried {
        if numbers.contains(&n) {
            let path = segment_path(dir, n);
            fs.remove_file(&path).map_err(|e| Error::io("remove", path, e))?;
        }
    }
    numbers.retain(|n| !buried.contains(n));
    if numbers.len() != before {
        sync_dir(fs, dir)?;
    }
    Ok(())
}

/// The manifest of a log written before there was one: its segments as they are.
fn legacy_manifest(fs: &dyn Fs, dir: &Path, numbers: &[u32], probe_block: usize, accept: bool) -> Result<ManifestFile> {
    let mut manifest = BlobManifest::default();
    for &n in numbers {
        let path = segment_path(dir, n);
        let file = open_segment(fs, &path, true, false)?;
        let meta = read_meta(file.as_ref(), &path, probe_block)?;
        if meta.marked && !accept {
            return Err(Error::Corruption {
                file: manifest::manifest_path(dir),
                offset: 0,
                what: format!(
                    "the blob log's manifest is missing, though segment {n} was written with one: \
                     which segments must exist is unknown ({TO_DO})"
                ),
            });
        }
        let sealed = meta.state.sealed_end != 0;
        let end = if sealed { meta.state.sealed_end } else { meta.state.data_start };
        manifest.entries.push(ManifestEntry { segment: n, sealed, closed: false, lost: false, end, cut_end: 0 });
        manifest.next_segment = n.saturating_add(1);
    }
    Ok(ManifestFile { manifest, slot_bytes: 0 })
}

/// Every listed segment exists, and every segment below the next number is listed. With
/// `accept`, a missing segment is marked lost instead, and a stray one is taken in.
fn check_listed(dir: &Path, manifest: &mut BlobManifest, numbers: &[u32], accept: bool) -> Result<()> {
    for e in manifest.entries.iter_mut().filter(|e| !e.lost) {
        if numbers.binary_search(&e.segment).is_err() {
            if accept {
                e.lost = true;
                continue;
            }
            return Err(Error::Corruption {
                file: segment_path(dir, e.segment),
                offset: 0,
                what: format!(
                    "blob segment {} is missing, though the log's manifest lists it with records up to \
                     offset {}: its blobs are lost ({TO_DO})",
                    e.segment, e.end
                ),
            });
        }
    }
    let stray = numbers.iter().find(|&&n| n < manifest.next_segment && manifest.entry(n).is_none());
    if let Some(&n) = stray.filter(|_| !accept) {
        return Err(Error::Corruption {
            file: segment_path(dir, n),
            offset: 0,
            what: format!(
                "blob segment {n} is not in the log's manifest, which was written after it was created \
                 or dropped: a stray or restored file (move it away)"
            ),
        });
    }
    Ok(())
}

/// Recovers segment `n`: a sealed one from its header block, checked against its file's
/// length; an open one by a scan (see the module docs), sealing it unless it can be
/// continued.
fn recover_segment(fs: &dyn Fs, dir: &Path, at: Place, entry: Option<ManifestEntry>) -> Result<Recovered> {
    let n = at.n;
    let path = segment_path(dir, n);
    let file = open_segment(fs, &path, false, false)?;
    let meta = read_meta(file.as_ref(), &path, at.probe_block)?;
    if meta.header.segment != n {
        let what = format!("segment header says {}, the file name {n}", meta.header.segment);
        return Err(Error::Corruption { file: path, offset: 0, what });
    }
    let file_bytes = file.len().map_err(|e| Error::io("stat", path.clone(), e))?;
    let known_end = entry.map_or(0, |e| e.end);
    let mut state = SegState {
        generation: meta.state.generation,
        data_start: meta.state.data_start,
        end: meta.state.sealed_end,
        sealed: meta.state.sealed_end != 0,
        seal_pending: false,
    };
    if state.sealed {
        let cut_end = check_sealed(at, &path, state.end, file_bytes, known_end)?;
        return Ok(Recovered { state, last_flush_seq: None, cut_end, keep_bytes: file_bytes });
    }
    let scan = recovery::scan_segment(fs, &path, state.data_start)?;
    let truncated = file_bytes < meta.header.segment_bytes;
    let mut cut_end = check_open(at, &path, &scan, (file_bytes, meta.header.segment_bytes), known_end)?;
    if scan.damage.is_some() {
        cut_tail(fs, dir, n, &path, &scan)?;
        cut_end = cut_end.max(scan.dirty_end);
    }
    state.end = scan.end;
    let closed = entry.is_some_and(|e| e.closed);
    if !closed {
        // The last writer did not close: it may have acknowledged blobs anywhere up to
        // the segment's size that the crash took back (`Periodic`, `None`).
        cut_end = cut_end.max(meta.header.segment_bytes);
    }
    if at.is_last && closed && !truncated && cut_end == 0 {
        // Everything read is made durable: it is the end the manifest records.
        file.sync_data().map_err(|e| Error::io("fdatasync", path.clone(), e))?;
    } else {
        // Sealed once the manifest holds what was lost (`recover`), so no crash in
        // between can leave a sealed segment whose lost blobs read as never written.
        state.sealed = true;
        state.seal_pending = true;
    }
    let keep_bytes = scan.end.max(scan.dirty_end);
    Ok(Recovered { state, last_flush_seq: scan.last_flush_seq, cut_end, keep_bytes })
}

/// Checks that a sealed segment (records ending at `end`) holds its records; returns
/// where accepted lost blobs reach (0: none).
fn check_sealed(at: Place, path: &Path, end: u64, file_bytes: u64, known_end: u64) -> Result<u64> {
    let n = at.n;
    let corrupt = |offset: u64, what: String| Error::Corruption { file: path.to_path_buf(), offset, what };
    let mut lost_end = 0;
    if file_bytes < end {
        let what = format!(
            "sealed blob segment {n} was truncated to {file_bytes} bytes, but its records end at offset {end}: \
             the blobs past offset {file_bytes} are lost ({TO_DO})"
        );
        lose(at.accept, &mut lost_end, end, corrupt(file_bytes, what))?;
    }
    if end < known_end {
        let what = format!(
            "sealed blob segment {n} says its records end at offset {end}, but the log's manifest knows them \
             durable up to offset {known_end}: the blobs between are lost ({TO_DO})"
        );
        lose(at.accept, &mut lost_end, known_end, corrupt(end, what))?;
    }
    Ok(lost_end)
}

/// Checks the scan of an open segment (`sizes`: the file's length and the size it was
/// created with) against what was durable; returns where accepted lost blobs reach.
fn check_open(at: Place, path: &Path, scan: &recovery::Scan, sizes: (u64, u64), known_end: u64) -> Result<u64> {
    let (n, (file_bytes, segment_bytes)) = (at.n, sizes);
    let corrupt = |offset: u64, what: String| Error::Corruption { file: path.to_path_buf(), offset, what };
    let mut lost_end = 0;
    if file_bytes < segment_bytes && !scan.zero_header {
        let what = format!(
            "blob segment {n} was truncated to {file_bytes} of its {segment_bytes} bytes while its records ran \
             on to the cut: the blobs past offset {} are lost ({TO_DO})",
            scan.end
        );
        lose(at.accept, &mut lost_end, segment_bytes, corrupt(file_bytes, what))?;
    }
    if scan.end < known_end {
        let why = scan.damage.as_deref().unwrap_or("then zeros, or the end of the file");
        let what = format!(
            "blob segment {n}: its records end at offset {} ({why}), but records up to offset {known_end} were \
             durable: the blobs between are lost ({TO_DO})",
            scan.end
        );
        lose(at.accept, &mut lost_end, segment_bytes, corrupt(scan.end, what))?;
    }
    if let Some(why) = scan.damage.as_deref().filter(|_| !at.is_last) {
        let e = corrupt(scan.end, format!("{why}, in a segment before the last"));
        lose(at.accept, &mut lost_end, scan.dirty_end, e)?;
    }
    Ok(lost_end)
}

/// Cuts the damaged tail a scan found into a quarantine file. On a full disk the bytes
/// stay where they are, past the end the segment is sealed at, where nothing reads or
/// writes them.
fn cut_tail(fs: &dyn Fs, dir: &Path, n: u32, path: &Path, scan: &recovery::Scan) -> Result<()> {
    let segment_hex = format!("{n:08x}");
    let tail = TornTail { path, segment_hex, from: scan.end, to: scan.dirty_end, erase: Erase::PunchHole };
    match cut_torn_tail(fs, dir, &tail) {
        Ok(_) => Ok(()),
        Err(e) if e.io_kind() == Some(ErrorKind::StorageFull) => {
            let _ = fs.remove_file(&dir.join(format!("quarantine-{n:08x}-{}.bin", scan.end)));
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// A loss recovery found: the error `e`, or with `accept` none, with `lost_end` raised to
/// `up_to` (the blobs below it read as corruption).
fn lose(accept: bool, lost_end: &mut u64, up_to: u64, e: Error) -> Result<()> {
    if !accept {
        return Err(e);
    }
    *lost_end = (*lost_end).max(up_to);
    Ok(())
}

/// Writes the seal of segment `n`, which recovery will not continue, then gives back its
/// reserved space past `keep_bytes`. On a full disk the seal is left for the next
/// rotation to write (the segment takes no appends meanwhile).
fn seal(fs: &dyn Fs, dir: &Path, (n, keep_bytes): (u32, u64), probe_block: usize, state: &mut SegState) -> Result<()> {
    debug_assert!(state.sealed && state.seal_pending, "only a segment recovery sealed in memory is sealed here");
    let path = segment_path(dir, n);
    let file = open_segment(fs, &path, false, false)?;
    let block = read_meta(file.as_ref(), &path, probe_block)?.header.block_bytes as usize;
    let sealed = SegmentState { generation: state.generation + 1, data_start: state.data_start, sealed_end: state.end };
    match write_state(file.as_ref(), &path, block, sealed) {
        Ok(()) => {
            state.generation += 1;
            state.seal_pending = false;
        }
        Err(e) if e.io_kind() == Some(ErrorKind::StorageFull) => return Ok(()),
        Err(e) => return Err(e),
    }
    // The end is in the header now, so a crash here leaves a longer file, never one
    // shorter than its records.
    let keep = keep_bytes.max(state.end).next_multiple_of(block as u64);
    let len = file.len().map_err(|e| Error::io("stat", path.clone(), e))?;
    if len <= keep {
        return Ok(());
    }
    match file.set_len(keep).and_then(|()| file.sync_all()) {
        // Only space is lost; a later open does not retry it.
        Err(e) if e.kind() == ErrorKind::StorageFull => Ok(()),
        other => other.map_err(|e| Error::io("truncate sealed segment", path, e)),
    }
}

/// Creates the segment appends go to next, listing it in `manifest` (written by the
/// caller). On a full disk, returns the last segment (sealed) instead. Returns the
/// current segment and whether one was created.
fn start_segment(
    fs: &dyn Fs,
    dir: &Path,
    config: &BlobOptions,
    probe_block: usize,
    manifest: &mut BlobManifest,
    segments: &mut BTreeMap<u32, SegState>,
    last: Option<u32>,
) -> Result<(u32, bool)> {
    let next = manifest.next_segment;
    if next == u32::MAX {
        return Err(Error::InvalidArgument("blob segment numbers ran out".into()));
    }
    let created =
        create_segment(fs, dir, next, config.max_segment_bytes, probe_block, config.direct_io, config.zero_fill);
    match created {
        Ok(_) => {}
        Err(e) if e.io_kind() == Some(ErrorKind::StorageFull) && last.is_some() => {
            return Ok((last.expect("checked"), false));
        }
        Err(e) => return Err(e),
    }
    let block = probe_block as u64;
    let state = SegState { generation: 1, data_start: block, end: block, sealed: false, seal_pending: false };
    segments.insert(next, state);
    upsert(
        manifest,
        ManifestEntry { segment: next, sealed: false, closed: false, lost: false, end: block, cut_end: 0 },
    );
    manifest.next_segment = next + 1;
    Ok((next, true))
}

/// The writer's starting point: the current segment open for writing, and the bytes of
/// its last partial block.
#[expect(clippy::too_many_arguments, reason = "the parts recovery assembled, handed over once")]
fn writer_start(
    fs: &dyn Fs,
    dir: &Path,
    config: &BlobOptions,
    probe_block: usize,
    current: u32,
    segments: BTreeMap<u32, SegState>,
    next_flush_seq: u32,
    manifest: ManifestFile,
) -> Result<WriterStart> {
    let path = segment_path(dir, current);
    let file = open_segment(fs, &path, false, config.direct_io)?;
    let block_bytes = read_meta(file.as_ref(), &path, probe_block)?.header.block_bytes as usize;
    let end = segments[&current].end;
    let tail_start = end - end % block_bytes as u64;
    let mut tail = vec![0u8; (end - tail_start) as usize];
    let plain = fs.open(&path, OpenFlags::READ_ONLY).map_err(|e| Error::io("open", path.clone(), e))?;
    plain.read_at(&mut tail, tail_start).map_err(|e| Error::io("read", path.clone(), e))?;
    let file = Arc::new(SegmentFile { file, path, block_bytes });
    Ok(WriterStart { current, file, tail, next_flush_seq, segments, manifest })
}
