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
//! - `sim`: a deterministic, fault-injecting disk in memory, for tests,
//!   compiled with the `sim` cargo feature only.
//!
//! Files are opened, named and synced through the file-system indirection
//! (`fs`): the key-value engine's and the blob log's alike, on the real file
//! system or on the simulated disk.
//!
//! Buffers handed to an `Io` belong to it until their completion is returned,
//! so a buffer is never freed or reused while the kernel may still read it.

pub mod aligned;
pub mod eventfd;
pub mod fs;
pub mod portable;
#[cfg(feature = "sim")]
pub mod sim;
pub mod token;
pub mod uring;

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

pub use aligned::AlignedBuf;

use crate::error::Result;

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
    ///
    /// An `Err` does not mean `out` is untouched: completions reaped before the failure
    /// (the io_uring backend's held-back ones) may already be in it, and the caller
    /// routes them as after a successful wait.
    fn wait(&mut self, block: bool, timeout: Option<Duration>, out: &mut Vec<Completion>) -> Result<bool>;
}

/// Writes all of `bytes` at `offset`, retrying short writes and EINTR.
pub fn pwrite_all(fd: RawFd, bytes: &[u8], offset: u64) -> io::Result<()> {
    let done = transfer(bytes.len(), offset, |done, at| {
        let rest = &bytes[done..];
        // SAFETY: `rest` is a valid readable slice for its length during the call.
        unsafe { libc::pwrite(fd, rest.as_ptr().cast(), rest.len(), at) }
    })?;
    if done < bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "pwrite wrote nothing"));
    }
    Ok(())
}

/// Calls `call(done, offset)` (a `pread` or `pwrite` of the bytes from `done` on at
/// `offset`) until `len` bytes moved or a call moved none, retrying EINTR; returns
/// the bytes moved. Both short reads and short writes continue where they stopped.
fn transfer(len: usize, mut offset: u64, mut call: impl FnMut(usize, libc::off_t) -> isize) -> io::Result<usize> {
    let mut done = 0;
    while done < len {
        #[expect(
            clippy::cast_possible_wrap,
            reason = "an offset past `i64::MAX` turns negative and the kernel refuses it with EINVAL"
        )]
        let n = call(done, offset as libc::off_t);
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        // Not negative: the error case returned above.
        let n = n.unsigned_abs();
        done += n;
        offset += n as u64;
    }
    Ok(done)
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

/// Reads at `offset` until `buf` is full or the file ends, retrying short reads and
/// EINTR; returns the bytes read.
pub fn pread_full(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let len = buf.len();
    transfer(len, offset, |done, at| {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid writable slice for its length during the call.
        unsafe { libc::pread(fd, rest.as_mut_ptr().cast(), rest.len(), at) }
    })
}

/// Reads exactly `buf.len()` bytes at `offset`, retrying short reads and EINTR.
pub fn pread_exact(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<()> {
    if pread_full(fd, buf, offset)? < buf.len() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the file"));
    }
    Ok(())
}
