//! Blob segment files: creation, listing, the header block's state, hole punching.
//!
//! A segment is created as every segment file is (see `storage::segment`):
//! under a temporary name (`%08x.blob.tmp`), reserved with `fallocate` (so a
//! full disk shows here, not mid-flush; the reserved extents read as zeros,
//! which is what marks the end of the records), optionally zero filled by real
//! writes (`BlobOptions::zero_fill`), given its header block, synced, renamed
//! and the directory synced: a crash leaves no segment or a complete empty one.
//! Zero filling is off by default, unlike the key-value log's: it doubles the
//! bytes written per blob, and blob logs are often bandwidth-bound; it helps
//! small `Sync` appends, whose flushes otherwise commit an extent conversion
//! each.
//!
//! Only the header block's state slots change after creation (sealing, left
//! trims); each state write goes to the older slot, then `fdatasync`.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::blob::{
    BlobSegmentHeader, MANIFEST_MARK, MANIFEST_MARK_OFFSET, SLOT_BYTES, SegmentState, file_name, parse_file_name,
};
use crate::io::AlignedBuf;
use crate::io::fs::{FileRef, Fs, FsFile, OpenFlags, open_data_file};
use crate::storage::segment::{Erase, SegmentSpec, create_segment_file, erase_range};

/// What the header block of a segment says.
#[derive(Debug, Clone, Copy)]
pub struct SegmentMeta {
    /// The identity slot.
    pub header: BlobSegmentHeader,
    /// The newest valid state.
    pub state: SegmentState,
    /// Whether the segment was created by a log that keeps a manifest.
    pub marked: bool,
}

/// Path of segment `segment` in `dir`.
pub fn segment_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(file_name(segment))
}

/// Segment numbers in `dir`, ascending. With `remove_tmp`, leftovers of an
/// interrupted creation are deleted.
pub fn list_segments(fs: &dyn Fs, dir: &Path, remove_tmp: bool) -> Result<Vec<u32>> {
    let segments = crate::storage::segment::list_segments(fs, dir, parse_file_name, ".blob.tmp", remove_tmp)?;
    Ok(segments.into_iter().map(|(n, _)| n).collect())
}

/// Opens a segment for reading (and writing, unless `read_only`).
pub fn open_segment(fs: &dyn Fs, path: &Path, read_only: bool, direct: bool) -> Result<FileRef> {
    if !read_only {
        return open_data_file(fs, path, false, direct).map_err(name_blob_options);
    }
    fs.open(path, OpenFlags { direct, ..OpenFlags::READ_ONLY }).map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL) if direct => {
            name_blob_options(Error::DirectIoUnsupported { path: path.to_path_buf(), source: e.into() })
        }
        _ => Error::io("open", path.to_path_buf(), e),
    })
}

/// Reads a segment's header block (through `file`, which may be O_DIRECT).
pub fn read_meta(file: &dyn FsFile, path: &Path, block_bytes: usize) -> Result<SegmentMeta> {
    let mut buf = AlignedBuf::zeroed(block_bytes, block_bytes);
    let n = file.read_at(buf.as_mut_slice(), 0).map_err(|e| Error::io("read", path.to_path_buf(), e))?;
    let bytes = &buf.as_slice()[..n];
    let corrupt = |what: String| Error::Corruption { file: path.to_path_buf(), offset: 0, what };
    let header = BlobSegmentHeader::decode(bytes).map_err(corrupt)?;
    let state = SegmentState::newest(bytes).ok_or_else(|| corrupt("no valid state slot in the header block".into()))?;
    let marked = bytes.get(MANIFEST_MARK_OFFSET..MANIFEST_MARK_OFFSET + 8) == Some(&MANIFEST_MARK[..]);
    Ok(SegmentMeta { header, state, marked })
}

/// Writes `state` into its slot of the header block of `file`, then `fdatasync`s.
pub fn write_state(file: &dyn FsFile, path: &Path, block_bytes: usize, state: SegmentState) -> Result<()> {
    debug_assert!(state.data_start >= block_bytes as u64, "the live bytes start after the header block");
    let mut buf = AlignedBuf::zeroed(block_bytes, block_bytes);
    file.read_at(buf.as_mut_slice(), 0).map_err(|e| Error::io("read", path.to_path_buf(), e))?;
    let at = state.slot_offset();
    state.encode(&mut buf.as_mut_slice()[at..at + SLOT_BYTES]);
    file.write_all_at(buf.as_slice(), 0).map_err(|e| Error::io("write segment state", path.to_path_buf(), e))?;
    file.sync_data().map_err(|e| Error::io("fdatasync", path.to_path_buf(), e))
}

/// Creates segment `segment` of `segment_bytes` in `dir`, zero-filled when asked; see
/// the module docs.
pub fn create_segment(
    fs: &dyn Fs,
    dir: &Path,
    segment: u32,
    segment_bytes: u64,
    block_bytes: usize,
    direct: bool,
    zero_fill: bool,
) -> Result<FileRef> {
    let mut block = AlignedBuf::zeroed(block_bytes, block_bytes);
    let header = BlobSegmentHeader {
        segment,
        segment_bytes,
        block_bytes: u32::try_from(block_bytes).expect("block size is at most 64 KiB"),
    };
    header.encode(block.as_mut_slice());
    block.as_mut_slice()[MANIFEST_MARK_OFFSET..MANIFEST_MARK_OFFSET + 8].copy_from_slice(MANIFEST_MARK);
    let state = SegmentState { generation: 1, data_start: block_bytes as u64, sealed_end: 0 };
    let at = state.slot_offset();
    state.encode(&mut block.as_mut_slice()[at..at + SLOT_BYTES]);
    let spec = SegmentSpec {
        segment_bytes,
        block_bytes,
        direct,
        zero_fill,
        header_block: block.as_slice(),
        zero_fill_op: "zero-fill blob segment",
    };
    create_segment_file(fs, dir, &segment_path(dir, segment), &spec).map_err(name_blob_options)
}

/// The blob log's own words for a refused O_DIRECT: the option to change is
/// `BlobOptions::direct_io`, not the database's.
pub fn name_blob_options(e: Error) -> Error {
    match e {
        Error::DirectIoUnsupported { path, source } => Error::InvalidArgument(format!(
            "the filesystem of {} refuses O_DIRECT ({source}; tmpfs, ramfs?): open the blob log with \
             BlobOptions::direct_io(false)",
            path.display()
        )),
        other => other,
    }
}

/// Gives the disk space of `[from, to)` back (`fallocate(PUNCH_HOLE)`; zeros written where
/// the file system cannot); the file keeps its size and the range reads as zeros.
pub fn punch_hole(fs: &dyn Fs, file: &dyn FsFile, path: &Path, from: u64, to: u64) -> Result<()> {
    erase_range(fs, file, path, from, to, Erase::PunchHole)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_o_direct_names_the_blob_log_option() {
        let refused = Error::DirectIoUnsupported {
            path: PathBuf::from("/x/00000000.blob"),
            source: std::io::Error::from_raw_os_error(libc::EINVAL).into(),
        };
        let shown = name_blob_options(refused).to_string();
        assert!(shown.contains("BlobOptions::direct_io(false)"), "{shown}");
        assert!(!shown.contains(" Options::direct_io"), "{shown}");
        assert!(shown.contains("/x/00000000.blob"), "{shown}");
    }
}
