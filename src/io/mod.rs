//! The I/O layer: the only place ringdb talks to the kernel about file data.
//!
//! A shard drives one [`Io`]: it queues writes and syncs, each with a token of
//! its own, then calls [`Io::wait`], which submits everything queued in one
//! system call and returns completions (with the buffers handed in) and
//! whether a client woke the shard. Backends:
//! - `uring`: one io_uring per shard; a read of the shard's eventfd is kept
//!   armed in the ring so the shard sleeps only inside `io_uring_enter`.
//! - `portable`: blocking `pwrite`/`fdatasync` on the shard thread, `poll` on
//!   the eventfd, for kernels and sandboxes that refuse io_uring.
//! - `sim`: a deterministic, fault-injecting disk in memory, for tests; with
//!   it comes the file-system indirection (`fs`) through which the key-value
//!   engine opens, names and syncs its files.
//!
//! Buffers handed to an `Io` belong to it until their completion is returned,
//! so a buffer is never freed or reused while the kernel may still read it.

pub mod aligned;
pub mod fs;
pub mod portable;
#[cfg(feature = "sim")]
pub mod sim;
pub mod uring;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

pub use aligned::AlignedBuf;

use crate::error::{Error, Result};

/// How a write is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Not made durable (the device may still hold it in a volatile cache).
    None,
    /// The write carries `RWF_DSYNC`.
    Dsync,
    /// The write is followed by an `fdatasync` of the file, linked in order.
    Fdatasync,
}

/// The outcome of one queued operation.
#[derive(Debug)]
pub struct Completion {
    /// The token given when the operation was queued.
    pub token: u64,
    /// Bytes transferred, or the error. A short write is an error.
    pub result: io::Result<usize>,
    /// The buffer handed in with the operation, returned for reuse.
    pub buf: Option<AlignedBuf>,
}

/// What a shard's I/O backend does for it.
pub trait Io: Send {
    /// Queues a write of `buf[..len]` at `offset` of `fd`, durable per `sync`. The buffer
    /// comes back in the completion. `offset`, `len` and `buf` are aligned for O_DIRECT.
    fn write(&mut self, fd: RawFd, offset: u64, buf: AlignedBuf, len: usize, sync: SyncMode, token: u64);

    /// Queues an `fdatasync` of `fd`.
    fn fdatasync(&mut self, fd: RawFd, token: u64);

    /// Queues a read of `len` bytes at `offset` of `fd` into `buf`, which comes back in
    /// the completion. A short read (past the end of the file) is an error.
    fn read(&mut self, fd: RawFd, offset: u64, buf: AlignedBuf, len: usize, token: u64);

    /// Submits everything queued; then, if `block`, waits until at least one completion
    /// arrives, a client wakes the shard, or `timeout` passes. Appends completions to
    /// `out` and returns whether the shard was woken.
    fn wait(&mut self, block: bool, timeout: Option<Duration>, out: &mut Vec<Completion>) -> Result<bool>;
}

/// Opens (or creates, mode 0600) a file for the log, with O_DIRECT when `direct`.
/// A filesystem that refuses O_DIRECT gives [`Error::DirectIoUnsupported`].
pub fn open_data_file(path: &Path, create: bool, direct: bool) -> Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(create).mode(0o600);
    if direct {
        options.custom_flags(libc::O_DIRECT | libc::O_CLOEXEC);
    } else {
        options.custom_flags(libc::O_CLOEXEC);
    }
    options.open(path).map_err(|e| {
        if direct && e.raw_os_error() == Some(libc::EINVAL) {
            Error::DirectIoUnsupported { path: path.to_path_buf(), source: e.into() }
        } else {
            Error::io("open", path.to_path_buf(), e)
        }
    })
}

/// The memory and offset alignments O_DIRECT needs on `file` (`STATX_DIOALIGN`), each at
/// least 512 (4096 when the kernel does not say).
pub fn direct_io_aligns(file: &File) -> (usize, usize) {
    const STATX_DIOALIGN: u32 = 0x2000;
    // SAFETY: `statx` is a plain-old-data struct; all zeroes is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let empty = c"";
    // SAFETY: the fd is open for the duration of the call, the path is a valid C string,
    // and `stx` is a valid, writable statx buffer.
    let rc = unsafe { libc::statx(file.as_raw_fd(), empty.as_ptr(), libc::AT_EMPTY_PATH, STATX_DIOALIGN, &mut stx) };
    let sane = |v: u32| v.is_power_of_two() && v <= 65536;
    if rc == 0 && stx.stx_mask & STATX_DIOALIGN != 0 && sane(stx.stx_dio_mem_align) && sane(stx.stx_dio_offset_align) {
        ((stx.stx_dio_mem_align as usize).max(512), (stx.stx_dio_offset_align as usize).max(512))
    } else {
        (4096, 4096)
    }
}

/// The block size for O_DIRECT transfers on `file`: the larger of its memory and offset
/// alignments and 4096, so blocks never straddle a 4 KiB device sector.
pub fn direct_io_block_bytes(file: &File) -> usize {
    block_bytes(direct_io_aligns(file))
}

/// The O_DIRECT block size for a file with these (memory, offset) alignments.
pub(crate) fn block_bytes((mem_align, offset_align): (usize, usize)) -> usize {
    mem_align.max(offset_align).max(4096)
}

/// Makes a new or renamed entry of `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let file = File::open(dir).map_err(|e| Error::io("open directory", dir.to_path_buf(), e))?;
    file.sync_all().map_err(|e| Error::io("fsync directory", dir.to_path_buf(), e))
}

/// Writes all of `bytes` at `offset`, retrying short writes and EINTR.
pub fn pwrite_all(fd: RawFd, mut bytes: &[u8], mut offset: u64) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid readable slice for its length during the call.
        let n = unsafe { libc::pwrite(fd, bytes.as_ptr().cast(), bytes.len(), offset as libc::off_t) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "pwrite wrote nothing"));
        }
        let n = n as usize;
        bytes = &bytes[n..];
        offset += n as u64;
    }
    Ok(())
}

/// `fdatasync(fd)`.
pub fn fdatasync(fd: RawFd) -> io::Result<()> {
    // SAFETY: fdatasync takes any fd; a bad one is an error, not UB.
    if unsafe { libc::fdatasync(fd) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Turns a short transfer into an error.
fn check_len(done: usize, expected: usize) -> io::Result<usize> {
    if done == expected {
        Ok(done)
    } else {
        Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("short transfer: {done} of {expected} bytes")))
    }
}

/// Reads exactly `buf.len()` bytes at `offset`, retrying short reads and EINTR.
pub fn pread_exact(fd: RawFd, buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid writable slice for its length during the call.
        let n = unsafe { libc::pread(fd, rest.as_mut_ptr().cast(), rest.len(), offset as libc::off_t) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the file"));
        }
        done += n as usize;
        offset += n as u64;
    }
    Ok(())
}
