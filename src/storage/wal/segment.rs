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
//!
//! Sizes: a new log's first segment is [`SEGMENT_BYTES_FIRST`] (64 KiB, one
//! write of header and zeros), and each next one is [`SEGMENT_GROWTH`] times the
//! one before, up to `Options::wal_segment_bytes` (64 KiB, 256 KiB, 1 MiB, 4 MiB,
//! 16 MiB, 64 MiB by default). So a new database takes little disk and opens
//! without a long zero fill, and a busy log reaches full-size segments after five
//! rotations. Sizes never shrink while the log is open, nor on reopen (the log
//! continues from its tail segment's size): a steady heavy writer pays the small
//! rotations once, not after every checkpoint. A record too large for the next
//! segment gets one sized to hold it ([`segment_bytes_for`]). Each segment's
//! size is in its header, which is all recovery needs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;
use crate::format::segment::{SegmentHeader, file_name};
use crate::io::AlignedBuf;
use crate::io::fs::{FileRef, Fs};
use crate::options::WAL_SEGMENT_BYTES_MIN;
use crate::storage::segment::{SegmentSpec, create_segment_file};

/// Size of a new log's first segment: the smallest `Options::wal_segment_bytes` accepts,
/// so it is written whole, header and zeros, in one 64 KiB write when the log is created.
pub const SEGMENT_BYTES_FIRST: u64 = WAL_SEGMENT_BYTES_MIN;
/// Each segment is this many times the one before, up to the largest size. Four reaches
/// 64 MiB from 64 KiB in five rotations (doubling would take ten) while a new log still
/// holds only 64 KiB plus a 256 KiB spare.
pub const SEGMENT_GROWTH: u64 = 4;

const _: () = assert!(SEGMENT_BYTES_FIRST.is_power_of_two() && SEGMENT_BYTES_FIRST >= 64 << 10);

/// Size of a new log's first segment, for a largest size of `segment_bytes_max` (whole
/// blocks of `block_bytes`, a power of two of at most 64 KiB): at least four blocks, so
/// records fit beside the header block even on a device with 64 KiB blocks.
pub fn first_segment_bytes(segment_bytes_max: u64, block_bytes: usize) -> u64 {
    let block = block_bytes as u64;
    assert!(block.is_power_of_two() && segment_bytes_max % block == 0, "segments are whole blocks");
    SEGMENT_BYTES_FIRST.max(4 * block).min(segment_bytes_max)
}

/// Size of the segment after one of `current_bytes`: [`SEGMENT_GROWTH`] times larger, at
/// most `segment_bytes_max`, whole blocks of `block_bytes`.
pub fn next_segment_bytes(current_bytes: u64, segment_bytes_max: u64, block_bytes: usize) -> u64 {
    let block = block_bytes as u64;
    assert!(segment_bytes_max % block == 0, "the largest segment is whole blocks");
    let next = current_bytes.saturating_mul(SEGMENT_GROWTH).next_multiple_of(block).min(segment_bytes_max);
    debug_assert!(next % block == 0 && next >= block, "a segment is whole blocks, its header block first");
    next
}

/// Size of a segment after one of `current_bytes` that must hold a record of
/// `record_bytes`: the next size in the sequence, or the power of two that holds the
/// header block and the record if that is larger, at most `segment_bytes_max` (which
/// holds any record the log accepts, see `WalWriter::body_bytes_max`).
pub fn segment_bytes_for(record_bytes: usize, current_bytes: u64, segment_bytes_max: u64, block_bytes: usize) -> u64 {
    let need = (block_bytes + record_bytes) as u64;
    assert!(need <= segment_bytes_max, "a record the log accepts fits its largest segment");
    let next = next_segment_bytes(current_bytes, segment_bytes_max, block_bytes);
    let size = next.max(need.next_power_of_two().next_multiple_of(block_bytes as u64)).min(segment_bytes_max);
    debug_assert!(size >= need, "the segment holds its header block and the record");
    size
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_grow_by_four_to_the_largest_and_fit_large_records() {
        let max = 64 << 20;
        assert_eq!(first_segment_bytes(max, 4096), 64 << 10);
        assert_eq!(first_segment_bytes(64 << 10, 4096), 64 << 10, "the smallest largest size");
        assert_eq!(first_segment_bytes(max, 64 << 10), 256 << 10, "four blocks at least");
        let mut sizes = vec![first_segment_bytes(max, 4096)];
        while sizes.len() < 8 {
            sizes.push(next_segment_bytes(*sizes.last().unwrap(), max, 4096));
        }
        let mib = 1 << 20;
        assert_eq!(sizes, [mib / 16, mib / 4, mib, 4 * mib, 16 * mib, 64 * mib, 64 * mib, 64 * mib]);
        // A largest size that is not a power of four from 64 KiB is reached, not passed.
        assert_eq!(next_segment_bytes(1 << 20, 3 << 20, 4096), 3 << 20);

        // A record that fits the next size takes it; a larger one the power of two holding it.
        assert_eq!(segment_bytes_for(100, 64 << 10, max, 4096), 256 << 10);
        assert_eq!(segment_bytes_for(300 << 10, 64 << 10, max, 4096), 512 << 10);
        let largest_record = (max as usize - 4096 - 32) & !7;
        assert_eq!(segment_bytes_for(32 + largest_record, 64 << 10, max, 4096), max);
        assert_eq!(segment_bytes_for(5 << 20, 1 << 20, 6 << 20, 4096), 6 << 20, "never above the largest");
    }
}
