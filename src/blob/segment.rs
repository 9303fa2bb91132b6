//! Blob segment files: creation, listing, the header block's state, hole punching.
//!
//! A segment is created under a temporary name (`%08x.blob.tmp`), reserved with
//! `fallocate` (so a full disk shows here, not mid-flush; the reserved extents
//! read as zeros, which is what marks the end of the records), optionally zero
//! filled by real writes (`BlobOptions::zero_fill`), given its header block,
//! synced, renamed and the directory synced: a crash leaves no segment or a
//! complete empty one. Zero filling is off by default, unlike the key-value
//! log's: it doubles the bytes written per blob, and blob logs are often
//! bandwidth-bound; it helps small `Sync` appends, whose flushes otherwise
//! commit an extent conversion each.
//!
//! Only the header block's state slots change after creation (sealing, left
//! trims); each state write goes to the older slot, then `fdatasync`.

#![forbid(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::FallocateFlags;

use crate::error::{Error, Result};
use crate::format::blob::{BlobSegmentHeader, SLOT_BYTES, SegmentState, file_name, parse_file_name};
use crate::io::{AlignedBuf, open_data_file, pwrite_all, sync_dir};

/// What the header block of a segment says.
#[derive(Debug, Clone, Copy)]
pub struct SegmentMeta {
    /// The identity slot.
    pub header: BlobSegmentHeader,
    /// The newest valid state.
    pub state: SegmentState,
}

/// Path of segment `segment` in `dir`.
pub fn segment_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(file_name(segment))
}

/// Segment numbers in `dir`, ascending. With `remove_tmp`, leftovers of an
/// interrupted creation are deleted.
pub fn list_segments(dir: &Path, remove_tmp: bool) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir.to_path_buf(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", dir.to_path_buf(), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".blob.tmp") {
            if remove_tmp {
                std::fs::remove_file(entry.path()).map_err(|e| Error::io("remove", entry.path(), e))?;
            }
        } else if let Some(n) = parse_file_name(name) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Opens a segment for reading (and writing, unless `read_only`).
pub fn open_segment(path: &Path, read_only: bool, direct: bool) -> Result<File> {
    if !read_only {
        return open_data_file(path, false, direct);
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    options.custom_flags(libc::O_CLOEXEC | if direct { libc::O_DIRECT } else { 0 });
    options.open(path).map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL) if direct => Error::DirectIoUnsupported { path: path.to_path_buf(), source: e.into() },
        _ => Error::io("open", path.to_path_buf(), e),
    })
}

/// Reads a segment's header block (through `file`, which may be O_DIRECT).
pub fn read_meta(file: &File, path: &Path, block_bytes: usize) -> Result<SegmentMeta> {
    let mut buf = AlignedBuf::zeroed(block_bytes, block_bytes);
    let n = read_full(file, buf.as_mut_slice(), 0).map_err(|e| Error::io("read", path.to_path_buf(), e))?;
    let bytes = &buf.as_slice()[..n];
    let corrupt = |what: String| Error::Corruption { file: path.to_path_buf(), offset: 0, what };
    let header = BlobSegmentHeader::decode(bytes).map_err(corrupt)?;
    let state = SegmentState::newest(bytes).ok_or_else(|| corrupt("no valid state slot in the header block".into()))?;
    Ok(SegmentMeta { header, state })
}

/// `pread` until `buf` is full or the file ends; returns the bytes read.
pub fn read_full(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Writes `state` into its slot of the header block of `file`, then `fdatasync`s.
pub fn write_state(file: &File, path: &Path, block_bytes: usize, state: SegmentState) -> Result<()> {
    let mut buf = AlignedBuf::zeroed(block_bytes, block_bytes);
    read_full(file, buf.as_mut_slice(), 0).map_err(|e| Error::io("read", path.to_path_buf(), e))?;
    let at = state.slot_offset();
    state.encode(&mut buf.as_mut_slice()[at..at + SLOT_BYTES]);
    pwrite_all(file.as_raw_fd(), buf.as_slice(), 0)
        .map_err(|e| Error::io("write segment state", path.to_path_buf(), e))?;
    crate::io::fdatasync(file.as_raw_fd()).map_err(|e| Error::io("fdatasync", path.to_path_buf(), e))
}

/// Bytes written per zero-fill write.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// Creates segment `segment` of `segment_bytes` in `dir`, zero-filled when asked; see
/// the module docs.
pub fn create_segment(
    dir: &Path,
    segment: u32,
    segment_bytes: u64,
    block_bytes: usize,
    direct: bool,
    zero_fill: bool,
) -> Result<File> {
    let path = segment_path(dir, segment);
    let tmp = dir.join(format!("{}.tmp", file_name(segment)));
    let file = open_data_file(&tmp, true, direct)?;
    let result = (|| {
        if let Err(e) = fallocate(&file, FallocateFlags::empty(), 0, segment_bytes) {
            if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(Error::io("fallocate", tmp.clone(), e));
            }
            file.set_len(segment_bytes).map_err(|e| Error::io("ftruncate", tmp.clone(), e))?;
        }
        if zero_fill {
            // Written zeros turn the reserved (unwritten) extents into written ones, so a
            // later RWF_DSYNC write has no extent conversion to commit to the journal.
            let zeros = AlignedBuf::zeroed(ZERO_CHUNK_BYTES, block_bytes);
            let mut at = 0;
            while at < segment_bytes {
                let n = (segment_bytes - at).min(ZERO_CHUNK_BYTES as u64) as usize;
                pwrite_all(file.as_raw_fd(), &zeros.as_slice()[..n], at)
                    .map_err(|e| Error::io("zero-fill blob segment", tmp.clone(), e))?;
                at += n as u64;
            }
        }
        let mut block = AlignedBuf::zeroed(block_bytes, block_bytes);
        let header = BlobSegmentHeader {
            segment,
            segment_bytes,
            block_bytes: u32::try_from(block_bytes).expect("block size is at most 64 KiB"),
        };
        header.encode(block.as_mut_slice());
        let state = SegmentState { generation: 1, data_start: block_bytes as u64, sealed_end: 0 };
        let at = state.slot_offset();
        state.encode(&mut block.as_mut_slice()[at..at + SLOT_BYTES]);
        pwrite_all(file.as_raw_fd(), block.as_slice(), 0).map_err(|e| Error::io("write", tmp.clone(), e))?;
        crate::io::fdatasync(file.as_raw_fd()).map_err(|e| Error::io("fdatasync", tmp.clone(), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", tmp.clone(), e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| file)
}

/// `fallocate(2)` on `file`.
pub fn fallocate(file: &File, flags: FallocateFlags, offset: u64, len: u64) -> std::io::Result<()> {
    let offset = libc::off_t::try_from(offset).map_err(std::io::Error::other)?;
    let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
    nix::fcntl::fallocate(file, flags, offset, len).map_err(std::io::Error::from)
}

/// Gives the disk space of `[from, to)` back (partial blocks at either end are zeroed,
/// whole ones deallocated); the file keeps its size and the range reads as zeros.
/// Filesystems without hole punching get zeros written instead.
pub fn punch_hole(file: &File, path: &Path, from: u64, to: u64) -> Result<()> {
    if to <= from {
        return Ok(());
    }
    let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    match fallocate(file, flags, from, to - from) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            // Buffered writes through a second descriptor: `file` may be O_DIRECT.
            let plain = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
                .map_err(|e| Error::io("open", path.to_path_buf(), e))?;
            let zeros = vec![0u8; 1 << 20];
            let mut at = from;
            while at < to {
                let n = (to - at).min(zeros.len() as u64) as usize;
                plain.write_all_at(&zeros[..n], at).map_err(|e| Error::io("write zeros", path.to_path_buf(), e))?;
                at += n as u64;
            }
            plain.sync_data().map_err(|e| Error::io("fdatasync", path.to_path_buf(), e))?;
        }
        Err(e) => return Err(Error::io("fallocate(PUNCH_HOLE)", path.to_path_buf(), e)),
    }
    crate::io::fdatasync(file.as_raw_fd()).map_err(|e| Error::io("fdatasync", path.to_path_buf(), e))
}
