//! Reads of blobs, from any thread, without the writer thread and without a lock.
//!
//! Segment files are opened once and kept in a lock-free map (`papaya`); a read
//! is one `pread` (two for a range of a large or compressed blob: the frame index,
//! then the frames it needs) into an O_DIRECT-aligned buffer, whose bytes are
//! handed to the caller without a copy. Reading with `pread` was measured against
//! `mmap` (`examples/blob_bench.rs --read-mode`): see `docs/ARCHITECTURE.md`.
//!
//! Appends acknowledged before they reach the file (durability `Periodic` or
//! `None`) are kept in `pending`, keyed by location, from before the append is
//! acknowledged until its write completes; reads look there first, only while
//! anything is pending. With `Sync` durability nothing is ever pending.
//!
//! Every frame read is checked against its crc32; a mismatch is
//! [`Error::Corruption`] naming the file and the frame's offset.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use super::BLOB_SEGMENT_BYTES_MAX;
use super::location::Location;
use super::manifest;
use super::segment::{open_segment, read_meta, segment_path};
use crate::error::{Error, Result};
use crate::format::blob::{
    Decoded, FRAME_ENTRY_BYTES, FRAME_SHIFT_MIN, KIND_PLAIN, RECORD_HEADER_BYTES, RecordHeader, check_meta,
    decode_header, frame_entry,
};
use crate::format::compression::decompress_frame;
use crate::io::AlignedBuf;
use crate::io::fs::{FileRef, Fs, direct_io_block_bytes};
use crate::value::Value;

/// Records up to this size are read whole by a range read (one `pread`).
const WHOLE_READ_BYTES_MAX: u64 = 256 << 10;

/// An open segment file.
pub struct SegmentFile {
    /// The file (O_DIRECT when the log uses it).
    pub file: FileRef,
    /// Its path, for errors.
    pub path: PathBuf,
    /// Alignment of O_DIRECT transfers.
    pub block_bytes: usize,
}

/// An aligned read buffer handed out as `Bytes` without a copy.
struct AlignedBytes(AlignedBuf);

impl AsRef<[u8]> for AlignedBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// The read side of a blob log, shared by every handle and the writer thread.
pub struct Reader {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    direct: bool,
    files: papaya::HashMap<u32, Arc<SegmentFile>>,
    pending: RwLock<HashMap<(u32, u64), Bytes>>,
    pending_count: AtomicUsize,
    /// The segment being written: only it can have pending records (rotation waits
    /// until nothing is pending), so reads of any other never touch the lock.
    current: Arc<AtomicU32>,
    /// Where the current segment's appended records end (0 for a read-only handle, which
    /// knows only what the manifest says).
    current_end: AtomicU64,
}

enum Source {
    File(Arc<SegmentFile>),
    Memory(Bytes),
}

impl Reader {
    /// A reader of the segments in `dir` on `fs`.
    pub fn new(fs: Arc<dyn Fs>, dir: PathBuf, direct: bool, current: Arc<AtomicU32>) -> Reader {
        Reader {
            fs,
            dir,
            direct,
            files: papaya::HashMap::new(),
            pending: RwLock::new(HashMap::new()),
            pending_count: AtomicUsize::new(0),
            current,
            current_end: AtomicU64::new(0),
        }
    }

    /// Publishes the segment being written and where its appended records end.
    pub fn set_current(&self, segment: u32, end: u64) {
        self.current_end.store(end, Ordering::Release);
        self.current.store(segment, Ordering::Release);
    }

    /// Registers a file the writer opened (so readers share its descriptor).
    pub fn insert_file(&self, segment: u32, file: Arc<SegmentFile>) {
        self.files.pin().insert(segment, file);
    }

    /// Forgets a dropped segment's file (reads already holding it finish normally).
    pub fn remove_file(&self, segment: u32) {
        self.files.pin().remove(&segment);
    }

    /// The open file of `segment`, opening it on first use.
    pub fn file(&self, segment: u32) -> Result<Arc<SegmentFile>> {
        if let Some(f) = self.files.pin().get(&segment) {
            return Ok(Arc::clone(f));
        }
        let path = segment_path(&self.dir, segment);
        if !self.exists(&path) {
            return Err(self.missing_segment(segment, &path));
        }
        // The writer's descriptors are registered by the writer; others are read-only.
        let file = open_segment(self.fs.as_ref(), &path, true, self.direct)?;
        let block_bytes = direct_io_block_bytes(file.as_ref());
        let opened = Arc::new(SegmentFile { file, path, block_bytes });
        let file = Arc::clone(self.files.pin().get_or_insert(segment, opened));
        // A segment dropped while it was being opened must not stay cached: the writer
        // unlinks before it forgets the descriptor, so checking after inserting suffices.
        if !self.exists(&file.path) {
            self.files.pin().remove(&segment);
            return Err(self.missing_segment(segment, &file.path));
        }
        Ok(file)
    }

    /// Why segment `segment` (at `path`) has no file: dropped or never created
    /// ([`Error::InvalidArgument`]), or lost although the manifest lists it
    /// ([`Error::Corruption`]).
    fn missing_segment(&self, segment: u32, path: &Path) -> Error {
        let fs = self.fs.as_ref();
        let listed = match manifest::load(fs, &self.dir) {
            Ok(Some(mf)) if !manifest::has_tombstone(fs, &self.dir, segment) => mf.manifest.entry(segment).copied(),
            Ok(_) => None,
            Err(e) => return e,
        };
        match listed {
            Some(entry) => Error::Corruption {
                file: path.to_path_buf(),
                offset: 0,
                what: format!(
                    "blob segment {segment} is missing, though the log's manifest lists it with records \
                     up to offset {}: its blobs are lost (restore the file from a backup)",
                    entry.end
                ),
            },
            None => Error::InvalidArgument(format!(
                "blob segment {segment} does not exist in {} (dropped, or never written)",
                self.dir.display()
            )),
        }
    }

    /// Why there is no record at `loc` in a segment whose file is there: before the live
    /// bytes, past the records, or never persisted ([`Error::InvalidArgument`]); where the
    /// segment's records are known to reach, or in a tail recovery cut
    /// ([`Error::Corruption`]: the blob's bytes are gone).
    fn missing_record(&self, loc: Location, file: &SegmentFile) -> Error {
        let meta = match read_meta(file.file.as_ref(), &file.path, file.block_bytes) {
            Ok(meta) => meta,
            Err(e) => return e,
        };
        let entry = match manifest::load(self.fs.as_ref(), &self.dir) {
            Ok(mf) => mf.and_then(|mf| mf.manifest.entry(loc.segment).copied()),
            Err(e) => return e,
        };
        let gone = |what: String| Error::Corruption { file: file.path.clone(), offset: loc.offset, what };
        if loc.offset < meta.state.data_start {
            return Error::InvalidArgument(format!("no blob at {loc}: the start of its segment was trimmed"));
        }
        let known_end = if meta.state.sealed_end != 0 {
            meta.state.sealed_end
        } else {
            let current = loc.segment == self.current.load(Ordering::Acquire);
            let appended = if current { self.current_end.load(Ordering::Acquire) } else { 0 };
            entry.map_or(0, |e| e.end).max(appended)
        };
        if loc.offset < known_end {
            return gone(format!(
                "no record at blob {loc}, though the segment's records reach offset {known_end}: \
                 the blob's bytes are gone (zeroed or cut off)"
            ));
        }
        if entry.is_some_and(|e| loc.offset < e.cut_end) {
            return gone(format!(
                "blob {loc} lies past offset {known_end}, where the segment's records ended when the log \
                 was recovered from a crash or a torn tail: it was lost before it was durable \
                 (durability Periodic or None), or its write was torn (see the quarantine files)",
            ));
        }
        Error::InvalidArgument(format!("no blob at {loc}: never written, not yet persisted, or trimmed"))
    }

    /// Whether `path` names anything (an error looking counts as no, as `Path::exists`).
    fn exists(&self, path: &Path) -> bool {
        matches!(self.fs.kind(path), Ok(Some(_)))
    }

    /// Makes an acknowledged, not yet written record readable.
    pub fn add_pending(&self, loc: Location, record: Bytes) {
        let mut map = self.pending.write().expect("pending map lock");
        map.insert((loc.segment, loc.offset), record);
        self.pending_count.store(map.len(), Ordering::Release);
    }

    /// Forgets records whose write completed.
    pub fn remove_pending(&self, locs: &[Location]) {
        if locs.is_empty() {
            return;
        }
        let mut map = self.pending.write().expect("pending map lock");
        for loc in locs {
            map.remove(&(loc.segment, loc.offset));
        }
        self.pending_count.store(map.len(), Ordering::Release);
    }

    fn source(&self, loc: Location) -> Result<Source> {
        if loc.segment == self.current.load(Ordering::Acquire) && self.pending_count.load(Ordering::Acquire) > 0 {
            if let Some(rec) = self.pending.read().expect("pending map lock").get(&(loc.segment, loc.offset)) {
                return Ok(Source::Memory(rec.clone()));
            }
        }
        Ok(Source::File(self.file(loc.segment)?))
    }

    /// Bytes `[rel, rel + len)` of the record at `offset`; shorter if the file ends.
    fn fetch(&self, src: &Source, offset: u64, rel: u64, len: u64) -> Result<Bytes> {
        match src {
            Source::Memory(rec) => {
                let start = (rel as usize).min(rec.len());
                let end = (rel.saturating_add(len)).min(rec.len() as u64) as usize;
                Ok(rec.slice(start..end))
            }
            Source::File(f) => {
                let at = offset + rel;
                let block = f.block_bytes as u64;
                let (start, end) =
                    if self.direct { (at - at % block, (at + len).next_multiple_of(block)) } else { (at, at + len) };
                let cap = usize::try_from(end - start).map_err(|_| Self::too_large(len))?;
                if cap == 0 {
                    return Ok(Bytes::new());
                }
                let mut buf = AlignedBuf::zeroed(cap.next_multiple_of(f.block_bytes), f.block_bytes);
                let n = f
                    .file
                    .read_at(&mut buf.as_mut_slice()[..cap], start)
                    .map_err(|e| Error::io("read", f.path.clone(), e))?;
                let skip = (at - start) as usize;
                let valid = n.saturating_sub(skip).min(len as usize);
                Ok(Bytes::from_owner(AlignedBytes(buf)).slice(skip..skip + valid))
            }
        }
    }

    fn too_large(len: u64) -> Error {
        Error::InvalidArgument(format!("a read of {len} bytes does not fit in memory"))
    }

    fn path_of(&self, src: &Source, segment: u32) -> PathBuf {
        match src {
            Source::File(f) => f.path.clone(),
            Source::Memory(_) => segment_path(&self.dir, segment),
        }
    }

    /// The blob at `loc`.
    pub fn read(&self, loc: Location) -> Result<Value> {
        self.read_blob(loc, None)
    }

    /// Bytes `range` of the blob at `loc`.
    pub fn read_range(&self, loc: Location, range: Range<u64>) -> Result<Value> {
        if range.start > range.end || range.end > loc.len {
            return Err(Error::InvalidArgument(format!(
                "range {}..{} is outside the blob {loc} (length {})",
                range.start, range.end, loc.len
            )));
        }
        self.read_blob(loc, Some(range))
    }

    /// The record at `loc` from its start: its header and frame index checked, with the
    /// whole record when `whole_wanted` or small, else the header and index alone.
    fn read_record_head(&self, loc: Location, src: &Source, whole_wanted: bool) -> Result<(Bytes, RecordHeader)> {
        let path = || self.path_of(src, loc.segment);
        let frames_max = loc.len.div_ceil(1 << FRAME_SHIFT_MIN);
        let meta_max = frames_max
            .checked_mul(FRAME_ENTRY_BYTES as u64)
            .and_then(|b| b.checked_add(RECORD_HEADER_BYTES as u64))
            .ok_or_else(|| Self::too_large(loc.len))?;
        let whole = meta_max.checked_add(loc.len).ok_or_else(|| Self::too_large(loc.len))?;
        let first_len = if whole_wanted || whole <= WHOLE_READ_BYTES_MAX { whole } else { meta_max };
        let first = self.fetch(src, loc.offset, 0, first_len)?;
        let header = match decode_header(&first, u64::MAX) {
            Decoded::Header(h) => h,
            Decoded::End => {
                return Err(match src {
                    Source::File(f) => self.missing_record(loc, f),
                    Source::Memory(_) => Error::InvalidArgument(format!("no blob at {loc}: not yet persisted")),
                });
            }
            Decoded::Invalid(what) => {
                return Err(Error::Corruption {
                    file: path(),
                    offset: loc.offset,
                    what: format!("blob {loc}: {what}"),
                });
            }
        };
        if first.len() < header.meta_bytes() as usize {
            return Err(Error::Corruption {
                file: path(),
                offset: loc.offset,
                what: format!("blob {loc}: the record runs past the end of the segment"),
            });
        }
        check_meta(&header, &first).map_err(|what| Error::Corruption {
            file: path(),
            offset: loc.offset,
            what: format!("blob {loc}: {what}"),
        })?;
        if header.blob_bytes != loc.len {
            return Err(Error::InvalidArgument(format!(
                "location {loc} does not match the blob recorded there ({} bytes)",
                header.blob_bytes
            )));
        }
        Ok((first, header))
    }

    fn read_blob(&self, loc: Location, range: Option<Range<u64>>) -> Result<Value> {
        if loc.len > BLOB_SEGMENT_BYTES_MAX {
            // No segment holds a blob this long: do not try to allocate for it.
            return Err(Error::InvalidArgument(format!("no blob at {loc}: longer than any segment")));
        }
        let src = self.source(loc)?;
        let path = || self.path_of(&src, loc.segment);
        let (first, header) = self.read_record_head(loc, &src, range.is_none())?;
        let meta_bytes = header.meta_bytes();
        let range = range.unwrap_or(0..loc.len);
        if range.is_empty() {
            return Ok(Value(Bytes::new()));
        }
        let shift = header.frame_shift;
        let (f_first, f_last) = ((range.start >> shift) as usize, ((range.end - 1) >> shift) as usize);
        // Stored offsets of the needed frames, relative to the payload.
        let mut stored_at = 0u64;
        let mut spans = Vec::with_capacity(f_last - f_first + 1);
        for i in 0..=f_last {
            let entry = frame_entry(&first, i);
            if i >= f_first {
                spans.push((i, stored_at, entry));
            }
            stored_at += u64::from(entry.stored_len);
        }
        if stored_at > header.stored_bytes {
            return Err(Error::Corruption {
                file: path(),
                offset: loc.offset,
                what: format!("blob {loc}: frame index exceeds the stored size"),
            });
        }
        let span_start = meta_bytes + spans[0].1;
        let span_end = meta_bytes + stored_at;
        let data = if span_end as usize <= first.len() {
            first.slice(span_start as usize..span_end as usize)
        } else {
            self.fetch(&src, loc.offset, span_start, span_end - span_start)?
        };
        if data.len() as u64 != span_end - span_start {
            return Err(Error::Corruption {
                file: path(),
                offset: loc.offset + span_start,
                what: format!("blob {loc}: the record runs past the end of the segment"),
            });
        }
        let mut out = Vec::new();
        for &(i, at, entry) in &spans {
            let rel = (at - spans[0].1) as usize;
            let stored = &data[rel..rel + entry.stored_len as usize];
            let corrupt = |what: &str| Error::Corruption {
                file: path(),
                offset: loc.offset + meta_bytes + at,
                what: format!("blob {loc}: frame {i} {what}"),
            };
            if crc32fast::hash(stored) != entry.crc {
                return Err(corrupt("checksum mismatch"));
            }
            if header.kind != KIND_PLAIN {
                let frame_start = (i as u64) << shift;
                let expected = ((frame_start + (1 << shift)).min(loc.len) - frame_start) as usize;
                decompress_frame(stored, expected, &mut out).ok_or_else(|| corrupt("does not decompress"))?;
            }
        }
        let skip = (range.start - ((f_first as u64) << shift)) as usize;
        let len = (range.end - range.start) as usize;
        if header.kind == KIND_PLAIN {
            // Plain frames are contiguous blob bytes: hand out the read buffer itself.
            Ok(Value(data.slice(skip..skip + len)))
        } else {
            out.drain(..skip);
            out.truncate(len);
            Ok(Value(Bytes::from(out)))
        }
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file system the log lives on.
    pub fn fs(&self) -> &dyn Fs {
        self.fs.as_ref()
    }
}
