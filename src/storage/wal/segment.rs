//! Creation of log segment files.
//!
//! A segment is created under a temporary name, reserved with `fallocate`
//! (so a full disk is found here, not in the middle of a flush), filled with
//! zeros by real writes (so later log writes overwrite written blocks and an
//! `fdatasync` has no extent metadata to commit), given its header, synced,
//! renamed to its final name, and the directory synced. A crash at any point
//! leaves either no segment or a complete, empty one; temporary files are
//! removed on open.
//!
//! The next segment is prepared ahead of need on a short-lived thread
//! (`ringdb-prep-N`) so the shard never waits for the zero fill.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::segment::{SegmentHeader, file_name};
use crate::io::AlignedBuf;
use crate::io::fs::{FileRef, Fs, open_data_file, sync_dir};

/// Bytes written per zero-fill write.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

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
    let tmp = wal_dir.join(format!("{}.tmp", file_name(seq)));
    let fs = fs.as_ref();
    let file = open_data_file(fs, &tmp, true, direct)?;
    if let Err(e) = file.allocate(segment_bytes) {
        // Filesystems without fallocate still get the zero fill below.
        if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
            let _ = fs.remove_file(&tmp);
            return Err(Error::io("fallocate", tmp, e));
        }
    }
    let chunk = ZERO_CHUNK_BYTES.min(segment_bytes as usize);
    let mut buf = AlignedBuf::zeroed(chunk.next_multiple_of(block_bytes), block_bytes);
    let header = SegmentHeader {
        shard: u32::try_from(shard).expect("shard count is at most 1024"),
        segment_seq: seq,
        segment_bytes,
        block_bytes: u32::try_from(block_bytes).expect("block size is at most 64 KiB"),
    };
    let mut offset = 0u64;
    while offset < segment_bytes {
        let n = (segment_bytes - offset).min(buf.capacity() as u64) as usize;
        if offset == 0 {
            header.encode(buf.as_mut_slice());
        }
        let written = file.write_all_at(&buf.as_slice()[..n], offset);
        if offset == 0 {
            buf.as_mut_slice()[..crate::format::segment::HEADER_BYTES].fill(0);
        }
        if let Err(e) = written {
            let _ = fs.remove_file(&tmp);
            return Err(Error::io("zero-fill log segment", tmp, e));
        }
        offset += n as u64;
    }
    file.sync_data().map_err(|e| Error::io("fdatasync", tmp.clone(), e))?;
    fs.rename(&tmp, &path).map_err(|e| Error::io("rename", tmp.clone(), e))?;
    sync_dir(fs, wal_dir)?;
    Ok(PreparedSegment { seq, file, path, segment_bytes })
}
