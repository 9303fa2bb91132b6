//! Segment files, shared by the key-value log (`storage::wal`) and the blob log
//! (`blob`): creating a preallocated segment, listing a directory's segments,
//! erasing a range, and cutting a torn tail into a quarantine file. What a
//! segment holds (its header block, its records) is each log's own format.
//!
//! A segment is created under a temporary name (`<name>.tmp`), reserved with
//! `fallocate` (so a full disk shows here, not in the middle of a flush; where
//! the file system has no `fallocate` the file is extended instead), optionally
//! filled with zeros by real writes (so later writes overwrite written blocks
//! and their `fdatasync` has no extent conversion to commit), given its header
//! block, synced, renamed to its final name, and the directory synced. A crash
//! at any point leaves either no segment or a complete, empty one; temporary
//! files are removed when the log opens.
//!
//! A torn tail is copied to `quarantine-<segment>-<offset>.bin` beside the
//! segments and made durable (file and directory entry) before it is erased
//! from the segment, so the bytes are never lost and nothing stale can be read
//! past the log's end.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::AlignedBuf;
use crate::io::fs::{FileRef, Fs, FsFile, OpenFlags, open_data_file, sync_dir};

/// Bytes written per zero-fill write, and copied per step into a quarantine file.
const CHUNK_BYTES: usize = 1 << 20;

/// How a segment file is created.
pub struct SegmentSpec<'a> {
    /// Its size in bytes, a multiple of `block_bytes`.
    pub segment_bytes: u64,
    /// The O_DIRECT block size the segment is written with.
    pub block_bytes: usize,
    /// Open with O_DIRECT.
    pub direct: bool,
    /// Write zeros over the whole segment (see the module docs).
    pub zero_fill: bool,
    /// The first block of the segment: its header, `block_bytes` long.
    pub header_block: &'a [u8],
    /// The operation named by an error of the zero fill (`"zero-fill log segment"`).
    pub zero_fill_op: &'static str,
}

/// The temporary name a segment at `path` is created under.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Creates the segment `path` in `dir` as `spec` says (see the module docs) and returns
/// it open for writing. On failure the temporary file is removed.
pub fn create_segment_file(fs: &dyn Fs, dir: &Path, path: &Path, spec: &SegmentSpec<'_>) -> Result<FileRef> {
    assert_eq!(spec.header_block.len(), spec.block_bytes, "the header block is one block");
    assert!(
        spec.segment_bytes >= spec.block_bytes as u64 && spec.segment_bytes % spec.block_bytes as u64 == 0,
        "a segment is whole blocks and holds its header block"
    );
    let tmp = tmp_path(path);
    let file = open_data_file(fs, &tmp, true, spec.direct)?;
    let result = fill_segment(file.as_ref(), &tmp, spec).and_then(|()| {
        file.sync_data().map_err(|e| Error::io("fdatasync", tmp.clone(), e))?;
        fs.rename(&tmp, path).map_err(|e| Error::io("rename", tmp.clone(), e))?;
        sync_dir(fs, dir)
    });
    if let Err(e) = result {
        let _ = fs.remove_file(&tmp);
        return Err(e);
    }
    Ok(file)
}

/// Reserves the segment's space, fills it with zeros when asked and writes its header
/// block.
fn fill_segment(file: &dyn FsFile, tmp: &Path, spec: &SegmentSpec<'_>) -> Result<()> {
    if let Err(e) = file.allocate(spec.segment_bytes) {
        // File systems without fallocate get the length (and the zero fill) instead.
        if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(Error::io("fallocate", tmp.to_path_buf(), e));
        }
        file.set_len(spec.segment_bytes).map_err(|e| Error::io("ftruncate", tmp.to_path_buf(), e))?;
    }
    let block = spec.block_bytes;
    if !spec.zero_fill {
        let mut buf = AlignedBuf::zeroed(block, block);
        buf.as_mut_slice().copy_from_slice(spec.header_block);
        return file.write_all_at(buf.as_slice(), 0).map_err(|e| Error::io("write", tmp.to_path_buf(), e));
    }
    let chunk = CHUNK_BYTES.min(spec.segment_bytes as usize).next_multiple_of(block);
    let mut buf = AlignedBuf::zeroed(chunk, block);
    let mut offset = 0u64;
    while offset < spec.segment_bytes {
        let n = (spec.segment_bytes - offset).min(buf.capacity() as u64) as usize;
        // The header block goes out with the first chunk of zeros.
        if offset == 0 {
            buf.as_mut_slice()[..block].copy_from_slice(spec.header_block);
        }
        let written = file.write_all_at(&buf.as_slice()[..n], offset);
        if offset == 0 {
            buf.as_mut_slice()[..block].fill(0);
        }
        written.map_err(|e| Error::io(spec.zero_fill_op, tmp.to_path_buf(), e))?;
        offset += n as u64;
    }
    debug_assert_eq!(offset, spec.segment_bytes, "the zero fill ends at the segment's end");
    Ok(())
}

/// The segments in `dir` whose names `parse` reads, ascending by number, with their
/// paths. Names ending in `tmp_suffix` are leftovers of an interrupted creation,
/// removed when `remove_tmp`.
pub fn list_segments<N: Ord>(
    fs: &dyn Fs,
    dir: &Path,
    parse: impl Fn(&str) -> Option<N>,
    tmp_suffix: &str,
    remove_tmp: bool,
) -> Result<Vec<(N, PathBuf)>> {
    let mut segments = Vec::new();
    let names = fs.list_dir(dir).map_err(|e| Error::io("read directory", dir.to_path_buf(), e))?;
    for name in names {
        let path = dir.join(&name);
        if name.ends_with(tmp_suffix) {
            if remove_tmp {
                fs.remove_file(&path).map_err(|e| Error::io("remove", path.clone(), e))?;
            }
        } else if let Some(n) = parse(&name) {
            segments.push((n, path));
        }
    }
    segments.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    // A segment's number has one spelling, so no two files may claim it.
    debug_assert!(segments.windows(2).all(|w| w[0].0 < w[1].0), "one file per segment number");
    Ok(segments)
}

/// How bytes leave a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erase {
    /// Zeros written over them through the segment's handle, which must not be O_DIRECT:
    /// the blocks stay written (the key-value log, whose flushes then have no extent
    /// conversion to commit).
    Zeros,
    /// Their space given back (`fallocate(PUNCH_HOLE)`; zeros written through a buffered
    /// handle where the file system cannot): the blob log, whose trims return disk space.
    PunchHole,
}

/// Erases `[from, to)` of the segment `file` (at `path`) as `how` says, then syncs the
/// segment. The range reads as zeros afterwards and the length is unchanged.
pub fn erase_range(fs: &dyn Fs, file: &dyn FsFile, path: &Path, from: u64, to: u64, how: Erase) -> Result<()> {
    if to <= from {
        return Ok(());
    }
    match how {
        Erase::Zeros => write_zeros(file, path, from, to, "write")?,
        Erase::PunchHole => match file.punch_hole(from, to - from) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                // A buffered handle of its own: `file` may be O_DIRECT, the range unaligned.
                let plain = fs.open(path, OpenFlags::EXISTING).map_err(|e| Error::io("open", path.to_path_buf(), e))?;
                write_zeros(plain.as_ref(), path, from, to, "write zeros")?;
                plain.sync_data().map_err(|e| Error::io("fdatasync", path.to_path_buf(), e))?;
            }
            Err(e) => return Err(Error::io("fallocate(PUNCH_HOLE)", path.to_path_buf(), e)),
        },
    }
    file.sync_data().map_err(|e| Error::io("fdatasync", path.to_path_buf(), e))
}

/// Writes zeros over `[from, to)` of `file`, a chunk at a time.
fn write_zeros(file: &dyn FsFile, path: &Path, from: u64, to: u64, op: &'static str) -> Result<()> {
    let zeros = vec![0u8; CHUNK_BYTES.min(usize::try_from(to - from).unwrap_or(CHUNK_BYTES))];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at).map_err(|e| Error::io(op, path.to_path_buf(), e))?;
        at += n as u64;
    }
    Ok(())
}

/// A torn tail to cut out of a segment.
pub struct TornTail<'a> {
    /// The segment.
    pub path: &'a Path,
    /// Its number, as its log writes it in file names (`{:016x}`, `{:08x}`).
    pub segment_hex: String,
    /// First torn byte.
    pub from: u64,
    /// End of the torn bytes (past the last byte that is not zero).
    pub to: u64,
    /// How the torn bytes leave the segment.
    pub erase: Erase,
}

/// Copies `[tail.from, tail.to)` of the segment to `quarantine-<segment>-<from>.bin` in
/// `dir`, makes the copy and its name durable, then erases the range from the segment.
/// Returns the quarantine file's path.
pub fn cut_torn_tail(fs: &dyn Fs, dir: &Path, tail: &TornTail<'_>) -> Result<PathBuf> {
    assert!(tail.from <= tail.to, "a torn tail ends after it starts");
    let path = tail.path;
    let quarantine = dir.join(format!("quarantine-{}-{}.bin", tail.segment_hex, tail.from));
    // Buffered: the cut is read and written once, at offsets of no particular alignment.
    let segment = fs.open(path, OpenFlags::EXISTING).map_err(|e| Error::io("open", path.to_path_buf(), e))?;
    {
        let out =
            fs.open(&quarantine, OpenFlags::CREATE_NEW).map_err(|e| Error::io("create", quarantine.clone(), e))?;
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut at = tail.from;
        while at < tail.to {
            let n = (tail.to - at).min(CHUNK_BYTES as u64) as usize;
            let got = segment.read_at(&mut buf[..n], at).map_err(|e| Error::io("read", path.to_path_buf(), e))?;
            out.write_all_at(&buf[..got], at - tail.from).map_err(|e| Error::io("write", quarantine.clone(), e))?;
            if got < n {
                break;
            }
            at += n as u64;
        }
        out.sync_all().map_err(|e| Error::io("fsync", quarantine.clone(), e))?;
    }
    sync_dir(fs, dir)?;
    erase_range(fs, segment.as_ref(), path, tail.from, tail.to, tail.erase)?;
    Ok(quarantine)
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::io::sim::SimDisk;

    fn spec(header: &[u8], zero_fill: bool) -> SegmentSpec<'_> {
        SegmentSpec {
            segment_bytes: 16 << 10,
            block_bytes: 4096,
            direct: false,
            zero_fill,
            header_block: header,
            zero_fill_op: "zero-fill test segment",
        }
    }

    #[test]
    fn a_created_segment_is_whole_named_and_listed() {
        for zero_fill in [false, true] {
            let disk = SimDisk::new(1);
            let dir = Path::new("/seg");
            disk.create_dir(dir).unwrap();
            let header = [7u8; 4096];
            let file = create_segment_file(&disk, dir, &dir.join("00000001.seg"), &spec(&header, zero_fill)).unwrap();
            assert_eq!(file.len().unwrap(), 16 << 10);
            let bytes = disk.read_file(&dir.join("00000001.seg")).unwrap();
            assert_eq!(&bytes[..4096], &header[..]);
            assert!(bytes[4096..].iter().all(|&b| b == 0), "past the header the segment reads as zeros");
            // A leftover of an interrupted creation is removed by the listing.
            disk.write_file(&dir.join("00000002.seg.tmp"), b"partial");
            let parse = |name: &str| name.strip_suffix(".seg").and_then(|n| u32::from_str_radix(n, 16).ok());
            let listed = list_segments(&disk, dir, parse, ".seg.tmp", true).unwrap();
            assert_eq!(listed, vec![(1, dir.join("00000001.seg"))]);
            assert!(disk.read_file(&dir.join("00000002.seg.tmp")).is_none());
        }
    }

    #[test]
    fn a_cut_torn_tail_is_quarantined_then_erased() {
        for erase in [Erase::Zeros, Erase::PunchHole] {
            let disk = SimDisk::new(2);
            let dir = Path::new("/seg");
            let path = dir.join("a.seg");
            let mut bytes = vec![1u8; 8192];
            bytes[5000..6000].fill(9);
            disk.write_file(&path, &bytes);
            let tail = TornTail { path: &path, segment_hex: "0001".into(), from: 5000, to: 6000, erase };
            let quarantine = cut_torn_tail(&disk, dir, &tail).unwrap();
            assert_eq!(quarantine, dir.join("quarantine-0001-5000.bin"));
            assert_eq!(disk.read_file(&quarantine).unwrap(), vec![9u8; 1000]);
            let after = disk.read_file(&path).unwrap();
            assert_eq!(after.len(), 8192, "erasing keeps the length");
            assert!(after[5000..6000].iter().all(|&b| b == 0), "the torn bytes are gone");
            assert!(after[..5000].iter().chain(&after[6000..]).all(|&b| b == 1), "nothing else changed");
        }
    }
}
