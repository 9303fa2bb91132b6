//! The eventfd through which clients wake a sleeping shard.
//!
//! The shard's I/O backend keeps a read of it armed (io_uring) or polls it
//! (portable), so one write from a client ends the shard's wait. Writes are
//! nonblocking: a full counter means a wake-up is already pending, which is
//! all a client wants.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{Error, Result};

/// An owned, nonblocking, close-on-exec eventfd.
#[derive(Debug)]
pub struct WakeFd {
    fd: OwnedFd,
}

impl WakeFd {
    /// Creates the eventfd.
    pub fn new() -> Result<WakeFd> {
        // SAFETY: plain system call; the returned fd is checked and then owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Error::io("eventfd", None, std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh eventfd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(WakeFd { fd })
    }

    /// Adds one to the counter, ending a wait on the eventfd.
    pub fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writing 8 bytes from a valid buffer to our eventfd. A failure can only
        // be EAGAIN (counter full), which means a wake-up is already pending.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), 8) };
    }

    /// The descriptor, for the I/O backend to wait on; valid while `self` lives.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
