//! Injected faults: the rates of [`SimFaults`], each decision drawn from the
//! seed and the file's operation count, targeted sync failures, Linux's
//! behaviour after a failed sync, and bits flipped at rest.

use std::os::fd::RawFd;
use std::path::PathBuf;

use super::disk::{Node, Rng, SimDisk, State, apply_pending, mix};

/// Fault rates of a [`SimDisk`], each in parts per million of the operations it applies
/// to. All zero (no faults) by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimFaults {
    /// Reads that fail with EIO.
    pub read_eio_ppm: u32,
    /// Writes that fail with EIO (some of their sectors may have been written).
    pub write_eio_ppm: u32,
    /// Syncs (fsync, fdatasync, RWF_DSYNC writes) that fail with EIO.
    pub sync_eio_ppm: u32,
    /// Reads and writes through the shard's `Io` that transfer only part of their bytes.
    pub short_ppm: u32,
    /// Writes and allocations that fail with ENOSPC, writing nothing.
    pub enospc_ppm: u32,
    /// Completions held back to a later `wait` (the shard sees the I/O as slow).
    pub latency_ppm: u32,
}

// Kinds of fault decision, mixed into the draw so each kind is decided apart.
pub(super) const FAULT_READ_EIO: u64 = 1;
pub(super) const FAULT_WRITE_EIO: u64 = 2;
pub(super) const FAULT_SYNC_EIO: u64 = 3;
pub(super) const FAULT_SHORT: u64 = 4;
pub(super) const FAULT_ENOSPC: u64 = 5;
pub(super) const FAULT_LATENCY: u64 = 6;
pub(super) const FAULT_PARTIAL: u64 = 7;

impl State {
    pub(super) fn fault(&self, inode: u64, ops: u64, kind: u64, ppm: u32) -> bool {
        ppm > 0
            && mix(self.seed ^ mix(inode.wrapping_mul(0x1000_0000_01b3) ^ mix(ops ^ (kind << 56)))) % 1_000_000
                < u64::from(ppm)
    }

    pub(super) fn targeted_sync_failure(&mut self, inode: u64) -> bool {
        let path = self.inodes[&inode].path.to_string_lossy().into_owned();
        for (fragment, left) in &mut self.sync_failures {
            if *left > 0 && path.contains(fragment.as_str()) {
                *left -= 1;
                return true;
            }
        }
        false
    }

    /// Linux after a failed fsync: the dirty pages are marked clean whether or not they
    /// reached the disk. Reads still see them; a later sync will not write them.
    pub(super) fn sync_failed(&mut self, inode: u64) {
        let seed = self.seed;
        let node = self.inodes.get_mut(&inode).expect("inode exists");
        let mut rng = Rng(seed ^ mix(inode) ^ mix(node.ops));
        for p in node.unsynced.drain(..) {
            if p.forced || rng.chance(2) {
                apply_pending(&mut node.durable, &p);
            } else {
                node.lost_writes = true;
            }
        }
    }
}

impl SimDisk {
    /// Sets the fault rates (replacing the previous ones).
    pub fn set_faults(&self, faults: SimFaults) {
        self.lock().faults = faults;
    }

    /// The next `count` syncs (fsync, fdatasync, and writes with RWF_DSYNC or a linked
    /// fdatasync) of files whose path contains `path_fragment` fail with EIO.
    pub fn fail_syncs(&self, path_fragment: &str, count: u32) {
        self.lock().sync_failures.push((path_fragment.to_string(), count));
    }

    /// Flips `count` bits at rest: each in a random file's durable (and current) bytes,
    /// preferring bytes that are not zero. Returns where: (path, byte offset).
    pub fn flip_bits(&self, seed: u64, count: u32) -> Vec<(PathBuf, u64)> {
        let mut s = self.lock();
        let mut rng = Rng(mix(s.seed ^ mix(seed ^ 0xb17f)));
        let files: Vec<(PathBuf, u64)> = s
            .durable_names
            .iter()
            .filter_map(|(p, n)| match n {
                Node::File(i) if !s.inodes[i].durable.is_empty() => Some((p.clone(), *i)),
                _ => None,
            })
            .collect();
        let mut out = Vec::new();
        if files.is_empty() {
            return out;
        }
        for _ in 0..count {
            let (path, inode) = &files[rng.below(files.len() as u64) as usize];
            let node = s.inodes.get_mut(inode).expect("named files exist");
            let len = node.durable.len() as u64;
            let mut at = rng.below(len) as usize;
            // Look a little for a non-zero byte (data, not preallocated space).
            for _ in 0..64 {
                if node.durable[at] != 0 {
                    break;
                }
                at = rng.below(len) as usize;
            }
            let bit = 1u8 << rng.below(8);
            node.durable[at] ^= bit;
            if let Some(b) = node.data.get_mut(at) {
                *b ^= bit;
            }
            out.push((path.clone(), at as u64));
        }
        out
    }

    /// Whether the next completion of a file's I/O is held back (latency).
    pub(super) fn delay(&self, fd: RawFd) -> bool {
        let mut s = self.lock();
        let Ok(inode) = s.handle(fd) else { return false };
        let ops = s.inodes[&inode].ops;
        let delayed = s.fault(inode, ops, FAULT_LATENCY, s.faults.latency_ppm);
        if delayed {
            s.stats.faults += 1;
        }
        delayed
    }
}
