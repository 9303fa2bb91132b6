//! Creation of log segment files.
//!
//! A segment is created as every segment file is (see `storage::segment`):
//! under a temporary name, reserved, here always filled with zeros by real
//! writes (so later log writes overwrite written blocks and an `fdatasync` has
//! no extent metadata to commit), given its header, synced, renamed to its
//! final name, and the directory synced. A crash at any point leaves either no
//! segment or a complete, empty one; temporary files are removed on open.
//!
//! The next segment is prepared ahead of need on a short-lived thread
//! (`ringdb-prep-N`) so the shard never waits for the zero fill; on the
//! simulated disk it is prepared at once on the shard thread, so every I/O of
//! the shard happens in one order (see `Fs::helper_threads`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;
use crate::format::segment::{SegmentHeader, file_name};
use crate::io::AlignedBuf;
use crate::io::fs::{FileRef, Fs};
use crate::storage::segment::{SegmentSpec, create_segment_file};

/// A prepared, durable, empty segment.
pub struct PreparedSegment {
    /// Sequence number.
    pub seq: u64,
    /// The segment, opened for writing (O_DIRECT when asked).
    pub file: FileRef,
    /// Its path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub segment_bytes: u64,
}

/// Creates segment `seq` of `shard` in `wal_dir`; see the module docs for the steps.
pub fn prepare_segment(
    fs: &Arc<dyn Fs>,
    wal_dir: &Path,
    shard: usize,
    seq: u64,
    segment_bytes: u64,
    block_bytes: usize,
    direct: bool,
) -> Result<PreparedSegment> {
    let path = wal_dir.join(file_name(seq));
    let header = SegmentHeader {
        shard: u32::try_from(shard).expect("shard count is at most 1024"),
        segment_seq: seq,
        segment_bytes,
        block_bytes: u32::try_from(block_bytes).expect("block size is at most 64 KiB"),
    };
    debug_assert!(crate::format::segment::HEADER_BYTES <= block_bytes, "the segment header fits its block");
    let mut header_block = AlignedBuf::zeroed(block_bytes, block_bytes);
    header.encode(header_block.as_mut_slice());
    let spec = SegmentSpec {
        segment_bytes,
        block_bytes,
        direct,
        zero_fill: true,
        header_block: header_block.as_slice(),
        zero_fill_op: "zero-fill log segment",
    };
    let file = create_segment_file(fs.as_ref(), wal_dir, &path, &spec)?;
    Ok(PreparedSegment { seq, file, path, segment_bytes })
}
