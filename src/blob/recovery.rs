//! Finding where a blob log ends, on open, and cutting a torn tail.
//!
//! Sealed segments carry their end in the header block and are not scanned.
//! The open segment (the last one) is scanned from its first live byte: each
//! record's header and frame index must pass their crc and every frame its own.
//! The first position that does not is the end, and so is a zero header. If the
//! last complete record still expects more records of its transaction, the end
//! moves back to the transaction's first record: a transaction is whole or gone.
//!
//! Bytes past the end are either zero (a clean end) or the remains of the last
//! flush (a torn tail), unless a valid record written by a later flush follows
//! (its `flush_seq` is past the damaged record's own, when that record's header
//! survived, or at least two past the last valid record's): only one flush
//! is in flight at a time, so a later flush proves the damaged bytes had been
//! written completely, and that is corruption, reported with file and offset.
//! A later record flagged unsynced (written under `Durability::None`) proves
//! nothing: a crash may keep it and lose the unsynced flushes before it.
//! A torn tail is copied to `quarantine-<segment>-<offset>.bin` (made durable),
//! then punched out of the segment so nothing stale can be read past the end
//! (`storage::segment::cut_torn_tail`, shared with the key-value log).

#![forbid(unsafe_code)]

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::blob::{
    Decoded, FRAME_SHIFT_MAX, FRAME_SHIFT_MIN, KIND_PLAIN, KIND_ZSTD, RECORD_ALIGN, RECORD_FLAG_UNSYNCED,
    RECORD_HEADER_BYTES, RecordHeader, check_meta, decode_header, frame_entry,
};
use crate::io::fs::{FileRef, Fs, FsFile, OpenFlags};

/// Bytes read from the file at a time while scanning.
const CHUNK_BYTES: usize = 1 << 20;

/// A read-ahead window over a file, for scanning.
struct Cursor<'a> {
    file: &'a dyn FsFile,
    file_bytes: u64,
    buf: Vec<u8>,
    start: u64,
}

impl Cursor<'_> {
    /// Bytes `[at, at + len)`, fewer if the file ends first.
    fn get(&mut self, at: u64, len: usize) -> std::io::Result<&[u8]> {
        let len = len.min(self.file_bytes.saturating_sub(at) as usize);
        let end = at + len as u64;
        if at < self.start || end > self.start + self.buf.len() as u64 {
            let want = len.max(CHUNK_BYTES).min(self.file_bytes.saturating_sub(at) as usize);
            self.buf.resize(want, 0);
            let n = self.file.read_at(&mut self.buf, at)?;
            self.buf.truncate(n);
            self.start = at;
        }
        let from = (at - self.start) as usize;
        Ok(&self.buf[from..(from + len).min(self.buf.len())])
    }
}

/// What a scan of an open segment found.
#[derive(Debug)]
pub struct Scan {
    /// Where the records end (the cut point if anything is cut).
    pub end: u64,
    /// Flush number of the last record kept.
    pub last_flush_seq: Option<u32>,
    /// First byte past `end` that is not zero, up to which a cut reaches (0: none).
    pub dirty_end: u64,
    /// Why the scan stopped before a clean end, if it did.
    pub damage: Option<String>,
    /// Whether the records end at a zero record header inside the file (not at its
    /// end, where more records may have been cut off).
    pub zero_header: bool,
}

/// Opens a segment for reading (buffered: recovery reads it once, sequentially) and
/// returns it with its size.
fn open_for_scan(fs: &dyn Fs, path: &Path) -> Result<(FileRef, u64)> {
    let file = fs.open(path, OpenFlags::READ_ONLY).map_err(|e| Error::io("open", path.to_path_buf(), e))?;
    let file_bytes = file.len().map_err(|e| Error::io("stat", path.to_path_buf(), e))?;
    Ok((file, file_bytes))
}

/// Scans the records of the segment at `path` from `data_start`; see the module docs.
/// Returns [`Error::Corruption`] for damage that a torn tail cannot explain.
pub fn scan_segment(fs: &dyn Fs, path: &Path, data_start: u64) -> Result<Scan> {
    let (file, file_bytes) = open_for_scan(fs, path)?;
    let io = |e| Error::io("read", path.to_path_buf(), e);
    let mut cur = Cursor { file: file.as_ref(), file_bytes, buf: Vec::new(), start: 0 };
    let mut at = data_start;
    let mut txn_start = at;
    let mut txn_open = false;
    let mut last_flush_seq = None;
    let mut damage = None;
    // Flush number of a damaged record whose header and index are intact.
    let mut damaged_seq = None;
    let mut zero_header = false;
    while at < file_bytes {
        let head = cur.get(at, RECORD_HEADER_BYTES).map_err(io)?;
        let whole_header = head.len() == RECORD_HEADER_BYTES;
        let header = match decode_header(head, file_bytes - at) {
            Decoded::End => {
                zero_header = whole_header;
                break;
            }
            Decoded::Invalid(what) => {
                damage = Some(what);
                break;
            }
            Decoded::Header(h) => h,
        };
        let meta = cur.get(at, header.meta_bytes() as usize).map_err(io)?.to_vec();
        if let Err(what) = check_meta(&header, &meta) {
            damage = Some(what);
            break;
        }
        let mut frame_at = at + header.meta_bytes();
        let mut bad = None;
        for i in 0..header.frames() as usize {
            let entry = frame_entry(&meta, i);
            let stored = cur.get(frame_at, entry.stored_len as usize).map_err(io)?;
            if stored.len() != entry.stored_len as usize || crc32fast::hash(stored) != entry.crc {
                bad = Some(format!("frame {i} of the record at {at} fails its checksum"));
                break;
            }
            frame_at += u64::from(entry.stored_len);
        }
        if bad.is_none() && frame_at != at + header.meta_bytes() + header.stored_bytes {
            bad = Some(format!("frame sizes of the record at {at} do not add up to its stored size"));
        }
        if let Some(what) = bad {
            damage = Some(what);
            damaged_seq = Some(header.flush_seq);
            break;
        }
        if !txn_open {
            txn_start = at;
        }
        txn_open = header.batch_left > 0;
        last_flush_seq = Some(header.flush_seq);
        at += header.record_bytes();
    }
    let stop = at.min(file_bytes);
    let end = if txn_open { txn_start } else { stop };
    // Look past the stop: the last non-zero byte, and any record of a later flush.
    let past = Past { stop, damaged_seq, last_flush_seq, damage: damage.as_deref() };
    let mut dirty_end = dirty_end_past(&mut cur, path, &past)?;
    if damage.is_none() && (dirty_end > stop || txn_open) {
        damage = Some(if txn_open {
            "a transaction's last record is missing".to_string()
        } else {
            "zeroed record header followed by data".to_string()
        });
    }
    if damage.is_some() {
        dirty_end = dirty_end.max(stop);
    }
    Ok(Scan { end, last_flush_seq, dirty_end, damage, zero_header })
}

/// Where a scan stopped, and what it knew there.
struct Past<'a> {
    /// First byte not taken as a valid record.
    stop: u64,
    /// Flush number of the damaged record, if its header and index are intact.
    damaged_seq: Option<u32>,
    /// Flush number of the last valid record.
    last_flush_seq: Option<u32>,
    /// Why the scan stopped, if for damage.
    damage: Option<&'a str>,
}

/// The end of the bytes that are not zero past `past.stop` (0 when all are zero), or
/// [`Error::Corruption`] when a record of a later flush than the damaged one follows.
fn dirty_end_past(cur: &mut Cursor<'_>, path: &Path, past: &Past<'_>) -> Result<u64> {
    let (stop, file_bytes) = (past.stop, cur.file_bytes);
    let io = |e| Error::io("read", path.to_path_buf(), e);
    let mut dirty_end = 0;
    let mut pos = stop;
    while pos < file_bytes {
        let chunk = cur.get(pos, CHUNK_BYTES).map_err(io)?.to_vec();
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
                let found = valid_record_at(cur, cand, file_bytes).map_err(io)?;
                // A record written without waiting for stable storage may outlive an
                // earlier flush a crash lost: it proves nothing.
                if let Some(seq) = found.filter(|h| h.flags & RECORD_FLAG_UNSYNCED == 0).map(|h| h.flush_seq) {
                    // The damaged flush is the damaged record's own, or else at most one
                    // past the last valid record's.
                    let later = match (past.damaged_seq, past.last_flush_seq) {
                        (Some(f), _) => (1..1 << 31).contains(&seq.wrapping_sub(f)),
                        (None, Some(base)) => (2..1 << 31).contains(&seq.wrapping_sub(base)),
                        (None, None) => false,
                    };
                    if later {
                        return Err(Error::Corruption {
                            file: path.to_path_buf(),
                            offset: stop,
                            what: format!(
                                "{}; a record of a later flush follows at offset {cand}, so this is not a torn tail",
                                past.damage.unwrap_or("zeroed record header followed by data")
                            ),
                        });
                    }
                }
            }
            off += RECORD_ALIGN;
        }
        pos += chunk.len() as u64;
    }
    Ok(dirty_end)
}

/// The header of a record at `at` whose header and frame index are valid.
fn valid_record_at(cur: &mut Cursor<'_>, at: u64, file_bytes: u64) -> std::io::Result<Option<RecordHeader>> {
    let head = cur.get(at, RECORD_HEADER_BYTES)?.to_vec();
    let Decoded::Header(h) = decode_header(&head, file_bytes - at) else { return Ok(None) };
    let meta = cur.get(at, h.meta_bytes() as usize)?.to_vec();
    Ok(check_meta(&h, &meta).ok().map(|()| h))
}

/// Whether a record with valid header and frame index starts at `at` of the file at `path`.
pub fn is_record_start(fs: &dyn Fs, path: &Path, at: u64) -> Result<bool> {
    let (file, file_bytes) = open_for_scan(fs, path)?;
    if at >= file_bytes {
        return Ok(false);
    }
    let mut cur = Cursor { file: file.as_ref(), file_bytes, buf: Vec::new(), start: 0 };
    Ok(valid_record_at(&mut cur, at, file_bytes).map_err(|e| Error::io("read", path.to_path_buf(), e))?.is_some())
}
