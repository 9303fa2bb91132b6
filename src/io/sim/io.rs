//! The shard's [`Io`] on the simulated disk: every operation runs at once on the
//! disk, its completion comes with the next `wait` (or a later one, when the disk
//! injects latency).

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::disk::SimDisk;
use crate::error::Result;
use crate::io::{AlignedBuf, Completion, Io, SyncMode};

impl SimDisk {
    pub(super) fn io_read(&self, fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.lock().read(fd, buf, offset, true)
    }

    pub(super) fn io_write(&self, fd: RawFd, bytes: &[u8], offset: u64, sync: SyncMode) -> io::Result<usize> {
        self.lock().write(fd, bytes, offset, sync, true)
    }

    pub(super) fn io_sync(&self, fd: RawFd) -> io::Result<()> {
        self.lock().sync(fd)
    }
}

/// The shard I/O backend on a [`SimDisk`]: each operation runs at once on the disk (like
/// the portable backend's blocking calls); its completion is returned by the next `wait`,
/// or by a later one when the disk injects latency. Sleeps in `poll` on the eventfd.
pub struct SimIo {
    disk: SimDisk,
    eventfd: RawFd,
    ready: Vec<Completion>,
    delayed: Vec<Completion>,
}

impl SimIo {
    /// A backend on `disk`, waking on `eventfd`, which must outlive it.
    pub fn new(disk: SimDisk, eventfd: RawFd) -> SimIo {
        SimIo { disk, eventfd, ready: Vec::new(), delayed: Vec::new() }
    }

    fn complete(&mut self, fd: RawFd, completion: Completion) {
        if self.disk.delay(fd) {
            self.delayed.push(completion);
        } else {
            self.ready.push(completion);
        }
    }
}

impl Io for SimIo {
    fn write(&mut self, fd: RawFd, offset: u64, buf: AlignedBuf, len: usize, sync: SyncMode, token: u64) {
        let result =
            self.disk.io_write(fd, &buf.as_slice()[..len], offset, sync).and_then(|n| crate::io::check_len(n, len));
        self.complete(fd, Completion { token, result, buf: Some(buf) });
    }

    fn fdatasync(&mut self, fd: RawFd, token: u64) {
        let result = self.disk.io_sync(fd).map(|()| 0);
        self.complete(fd, Completion { token, result, buf: None });
    }

    fn read(&mut self, fd: RawFd, offset: u64, mut buf: AlignedBuf, len: usize, token: u64) {
        let result =
            self.disk.io_read(fd, &mut buf.as_mut_slice()[..len], offset).and_then(|n| crate::io::check_len(n, len));
        self.complete(fd, Completion { token, result, buf: Some(buf) });
    }

    fn wait(&mut self, block: bool, timeout: Option<Duration>, out: &mut Vec<Completion>) -> Result<bool> {
        if !self.ready.is_empty() || !self.delayed.is_empty() {
            out.append(&mut self.ready);
            // Held back once: they come with the next wait.
            self.ready.append(&mut self.delayed);
            if !out.is_empty() {
                return Ok(false);
            }
            out.append(&mut self.ready);
            return Ok(false);
        }
        crate::io::portable::poll_eventfd(self.eventfd, block, timeout)
    }
}
