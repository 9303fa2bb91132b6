//! The io_uring backend: one ring per shard, created on the shard thread.
//!
//! The ring is set up with SINGLE_ISSUER and DEFER_TASKRUN (plus TASKRUN_FLAG)
//! where the kernel has them: only the shard thread submits, and completions
//! are run when it enters the kernel to wait, so a batch of submissions and a
//! wait cost one `io_uring_enter`. A read of the shard's eventfd is kept armed;
//! a client writes the eventfd only when the shard is asleep, which completes
//! that read and wakes the shard.
//!
//! Every operation's buffer sits in the in-flight slab, keyed by `user_data`,
//! until the kernel posts its completion; `Drop` waits for every outstanding
//! operation, so the kernel never touches freed memory.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::{IoUring, opcode, squeue, types};
use slab::Slab;

use super::{AlignedBuf, Completion, Io, SyncMode, check_len};
use crate::error::{Error, Result};

/// `user_data` of the armed eventfd read.
const WAKE_USER_DATA: u64 = u64::MAX;

struct InFlight {
    token: u64,
    buf: Option<AlignedBuf>,
    expected_bytes: usize,
    /// Completions still to come (2 for a write linked to an fdatasync).
    pending: u8,
    result: Option<io::Result<usize>>,
}

/// The io_uring backend of one shard.
pub struct UringIo {
    ring: IoUring,
    in_flight: Slab<InFlight>,
    eventfd: RawFd,
    /// Target of the armed eventfd read; boxed so its address is stable.
    eventfd_buf: Box<[u8; 8]>,
    wake_armed: bool,
    /// Completions reaped while making room in a full submission queue.
    pending_ready: Vec<Completion>,
    /// Set when the wake read completed while making room.
    pending_wake: bool,
}

impl UringIo {
    /// Creates the ring. `eventfd` must outlive this value (the shard owns both).
    /// A kernel or sandbox that refuses io_uring gives [`Error::IoUringUnavailable`].
    pub fn new(entries: u32, eventfd: RawFd) -> Result<UringIo> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(entries * 4)
            .build(entries)
            .or_else(|e| {
                // EINVAL: a kernel older than 6.1 lacks DEFER_TASKRUN; use a plain ring.
                if e.raw_os_error() == Some(libc::EINVAL) {
                    IoUring::builder().setup_cqsize(entries * 4).build(entries)
                } else {
                    Err(e)
                }
            })
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EPERM | libc::ENOSYS | libc::EACCES) => Error::IoUringUnavailable { source: e.into() },
                _ => Error::io("io_uring_setup", None, e),
            })?;
        let mut io = UringIo {
            ring,
            in_flight: Slab::with_capacity(64),
            eventfd,
            eventfd_buf: Box::new([0u8; 8]),
            wake_armed: false,
            pending_ready: Vec::new(),
            pending_wake: false,
        };
        io.arm_wake();
        Ok(io)
    }

    fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: every entry pushed here points at memory owned by `self.in_flight` or
            // `self.eventfd_buf`, which stay alive and untouched until the completion for
            // that `user_data` is reaped (and `Drop` waits for all of them).
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                return;
            }
            // The submission queue is full: hand what is there to the kernel and retry.
            if let Err(e) = self.ring.submit() {
                assert!(e.raw_os_error() == Some(libc::EBUSY) || e.kind() == io::ErrorKind::Interrupted);
                // EBUSY: the completion queue is full; reaping makes room. What is
                // reaped is kept for the next `wait`.
                let mut reaped = std::mem::take(&mut self.pending_ready);
                self.pending_wake |= self.reap(&mut reaped);
                self.pending_ready = reaped;
            }
        }
    }

    fn push_pair(&mut self, first: &squeue::Entry, second: &squeue::Entry) {
        // A linked pair must land in the queue together: make room for both first.
        let room = {
            let sq = self.ring.submission();
            sq.capacity() - sq.len()
        };
        if room < 2 {
            let _ = self.ring.submit();
        }
        self.push(first);
        self.push(second);
    }

    fn arm_wake(&mut self) {
        debug_assert!(!self.wake_armed);
        let entry = opcode::Read::new(types::Fd(self.eventfd), self.eventfd_buf.as_mut_ptr(), 8)
            .build()
            .user_data(WAKE_USER_DATA);
        self.push(&entry);
        self.wake_armed = true;
    }

    /// Moves every posted completion into `out`; returns whether the wake read fired.
    fn reap(&mut self, out: &mut Vec<Completion>) -> bool {
        let mut woken = false;
        let mut finished = Vec::new();
        for cqe in self.ring.completion() {
            let user_data = cqe.user_data();
            if user_data == WAKE_USER_DATA {
                self.wake_armed = false;
                woken = true;
                continue;
            }
            let key = user_data as usize;
            let Some(op) = self.in_flight.get_mut(key) else {
                panic!("completion for unknown user_data {user_data}");
            };
            let res = cqe.result();
            let this: io::Result<usize> =
                if res < 0 { Err(io::Error::from_raw_os_error(-res)) } else { Ok(res.unsigned_abs() as usize) };
            // The first part of an op (the write) carries the byte count; a failure in any
            // part fails the whole op, and the first failure is the one reported.
            match (&op.result, this) {
                (None, r) => op.result = Some(r.and_then(|n| check_len(n, op.expected_bytes))),
                (Some(Ok(_)), Err(e)) => op.result = Some(Err(e)),
                _ => {}
            }
            op.pending -= 1;
            if op.pending == 0 {
                finished.push(key);
            }
        }
        for key in finished {
            let op = self.in_flight.remove(key);
            out.push(Completion {
                token: op.token,
                result: op.result.expect("a finished op has a result"),
                buf: op.buf,
            });
        }
        woken
    }
}

impl Io for UringIo {
    fn write(&mut self, fd: RawFd, offset: u64, buf: AlignedBuf, len: usize, sync: SyncMode, token: u64) {
        // The length must also suit O_DIRECT (a multiple of the device's alignment); the
        // kernel refuses it otherwise, which the completion reports.
        assert!(len <= buf.capacity());
        let len_u32 = u32::try_from(len).expect("log writes are capped far below 4 GiB");
        let pending = if sync == SyncMode::Fdatasync { 2 } else { 1 };
        let key = self.in_flight.insert(InFlight { token, buf: Some(buf), expected_bytes: len, pending, result: None });
        let ptr = self.in_flight[key].buf.as_ref().expect("just inserted").as_ptr();
        let rw_flags = if sync == SyncMode::Dsync { libc::RWF_DSYNC } else { 0 };
        let write = opcode::Write::new(types::Fd(fd), ptr, len_u32)
            .offset(offset)
            .rw_flags(rw_flags)
            .build()
            .user_data(key as u64);
        if sync == SyncMode::Fdatasync {
            let sync =
                opcode::Fsync::new(types::Fd(fd)).flags(types::FsyncFlags::DATASYNC).build().user_data(key as u64);
            self.push_pair(&write.flags(squeue::Flags::IO_LINK), &sync);
        } else {
            self.push(&write);
        }
    }

    fn fdatasync(&mut self, fd: RawFd, token: u64) {
        let key = self.in_flight.insert(InFlight { token, buf: None, expected_bytes: 0, pending: 1, result: None });
        let entry = opcode::Fsync::new(types::Fd(fd)).flags(types::FsyncFlags::DATASYNC).build().user_data(key as u64);
        self.push(&entry);
    }

    fn read(&mut self, fd: RawFd, offset: u64, mut buf: AlignedBuf, len: usize, token: u64) {
        assert!(len <= buf.capacity());
        let len_u32 = u32::try_from(len).expect("reads are capped far below 4 GiB");
        let ptr = buf.as_mut_slice().as_mut_ptr();
        let key =
            self.in_flight.insert(InFlight { token, buf: Some(buf), expected_bytes: len, pending: 1, result: None });
        let entry = opcode::Read::new(types::Fd(fd), ptr, len_u32).offset(offset).build().user_data(key as u64);
        self.push(&entry);
    }

    fn wait(&mut self, block: bool, timeout: Option<Duration>, out: &mut Vec<Completion>) -> Result<bool> {
        let mut woken = std::mem::take(&mut self.pending_wake);
        out.append(&mut self.pending_ready);
        let want = usize::from(block && out.is_empty() && !woken);
        let result = match (want, timeout) {
            (1, Some(timeout)) => {
                let ts = types::Timespec::from(timeout);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            (want, _) => self.ring.submitter().submit_and_wait(want),
        };
        match result {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(Error::io("io_uring_enter", None, e)),
        }
        woken |= self.reap(out);
        if !self.wake_armed {
            // Drain the counter so the next write makes it readable again.
            let mut counter = [0u8; 8];
            // SAFETY: reading 8 bytes into a valid 8-byte buffer from our own eventfd.
            let _ = unsafe { libc::read(self.eventfd, counter.as_mut_ptr().cast(), 8) };
            self.arm_wake();
        }
        Ok(woken)
    }
}

impl Drop for UringIo {
    fn drop(&mut self) {
        // The kernel may still write into `eventfd_buf` and read in-flight buffers:
        // complete the wake read by writing the eventfd, and wait for everything.
        let one = 1u64.to_ne_bytes();
        // SAFETY: writing 8 bytes from a valid buffer to our own eventfd.
        let _ = unsafe { libc::write(self.eventfd, one.as_ptr().cast(), 8) };
        let mut scratch = Vec::new();
        let mut spins = 0u32;
        while self.wake_armed || !self.in_flight.is_empty() {
            match self.ring.submitter().submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::ETIME)) => {}
                Err(_) => {
                    // The ring cannot wait any more; leak the buffers rather than free
                    // memory the kernel may still touch.
                    std::mem::forget(std::mem::take(&mut self.in_flight));
                    std::mem::forget(std::mem::replace(&mut self.eventfd_buf, Box::new([0; 8])));
                    return;
                }
            }
            if self.reap(&mut scratch) {
                self.wake_armed = false;
            }
            scratch.clear();
            spins += 1;
            debug_assert!(spins < 1_000_000, "io_uring drain does not finish");
        }
    }
}
