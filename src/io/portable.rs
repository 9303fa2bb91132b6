//! The portable backend: blocking system calls on the shard thread.
//!
//! For kernels and sandboxes that refuse io_uring. Each queued operation runs
//! at once (`pwrite`, `pwritev2(RWF_DSYNC)`, `fdatasync`) and its completion is
//! returned by the next `wait`; the shard sleeps in `poll` on its eventfd.
//! Group commit still works: requests that arrive while a flush blocks the
//! shard thread gather in its queue and go out in the next batch.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{AlignedBuf, Completion, Io, SyncMode, fdatasync};
use crate::error::{Error, Result};

/// The blocking backend of one shard.
pub struct PortableIo {
    eventfd: RawFd,
    ready: Vec<Completion>,
}

impl PortableIo {
    /// A backend waking on `eventfd`, which must outlive it.
    pub fn new(eventfd: RawFd) -> PortableIo {
        PortableIo { eventfd, ready: Vec::new() }
    }
}

fn write_dsync(fd: RawFd, bytes: &[u8], offset: u64) -> io::Result<()> {
    let iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    loop {
        #[expect(
            clippy::cast_possible_wrap,
            reason = "an offset past `i64::MAX` turns negative and the kernel refuses it with EINVAL"
        )]
        // SAFETY: `iov` describes a valid readable buffer for the duration of the call.
        let n = unsafe { libc::pwritev2(fd, &raw const iov, 1, offset as libc::off_t, libc::RWF_DSYNC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return super::check_len(n.unsigned_abs(), bytes.len()).map(|_| ());
    }
}

impl Io for PortableIo {
    fn write(&mut self, fd: RawFd, offset: u64, buf: AlignedBuf, len: usize, sync: SyncMode, token: u64) {
        let bytes = &buf.as_slice()[..len];
        let result = match sync {
            SyncMode::Dsync => write_dsync(fd, bytes, offset),
            SyncMode::None => super::pwrite_all(fd, bytes, offset),
            SyncMode::Fdatasync => super::pwrite_all(fd, bytes, offset).and_then(|()| fdatasync(fd)),
        };
        self.ready.push(Completion { token, result: result.map(|()| len), buf: Some(buf) });
    }

    fn fdatasync(&mut self, fd: RawFd, token: u64) {
        let result = fdatasync(fd).map(|()| 0);
        self.ready.push(Completion { token, result, buf: None });
    }

    fn read(&mut self, fd: RawFd, offset: u64, mut buf: AlignedBuf, len: usize, token: u64) {
        let result = super::pread_exact(fd, &mut buf.as_mut_slice()[..len], offset).map(|()| len);
        self.ready.push(Completion { token, result, buf: Some(buf) });
    }

    fn wait(&mut self, block: bool, timeout: Option<Duration>, out: &mut Vec<Completion>) -> Result<bool> {
        if !self.ready.is_empty() {
            out.append(&mut self.ready);
            return Ok(false);
        }
        poll_eventfd(self.eventfd, block, timeout)
    }
}

/// Sleeps in `poll` on `eventfd` (if `block`, at most `timeout`), and drains it when it
/// fired. Returns whether it fired.
pub(crate) fn poll_eventfd(eventfd: RawFd, block: bool, timeout: Option<Duration>) -> Result<bool> {
    let timeout_ms: libc::c_int = match (block, timeout) {
        (false, _) => 0,
        (true, None) => -1,
        (true, Some(t)) => t.as_millis().clamp(1, i32::MAX as u128) as libc::c_int,
    };
    let mut pfd = libc::pollfd { fd: eventfd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(Error::io("poll", None, e));
    }
    if n > 0 && pfd.revents & libc::POLLIN != 0 {
        let mut counter = [0u8; 8];
        // SAFETY: reading 8 bytes into a valid 8-byte buffer from our own eventfd.
        let _ = unsafe { libc::read(eventfd, counter.as_mut_ptr().cast(), 8) };
        return Ok(true);
    }
    Ok(false)
}
