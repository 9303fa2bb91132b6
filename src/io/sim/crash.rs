//! Power cuts: what a crash keeps of unsynced writes and directory changes
//! ([`CrashMode`]), torn writes at sector granularity, and the armed crash that
//! freezes the disk before the n-th mutating operation.

use std::collections::BTreeMap;
use std::io;

use super::disk::{Node, Pending, Rng, SECTOR_BYTES, SimDisk, State, apply_pending, apply_write, eio, is_root, mix};

/// How a crash treats unsynced writes and directory changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Everything written reached the disk.
    KeepAll,
    /// Nothing unsynced reached the disk.
    KeepNone,
    /// A random subset of writes, some torn; a random prefix of directory changes.
    Random,
}

/// Applies `p` to `data`, keeping only the sectors `keep` picks (a torn write).
pub(super) fn apply_torn(data: &mut Vec<u8>, p: &Pending, rng: &mut Rng) -> bool {
    let mut torn = false;
    let mut at = 0;
    while at < p.bytes.len() {
        // Sectors are aligned on the file, not on the write.
        let abs = p.offset as usize + at;
        let sector_end = (abs / SECTOR_BYTES + 1) * SECTOR_BYTES;
        let n = (sector_end - abs).min(p.bytes.len() - at);
        if rng.chance(2) {
            apply_write(data, abs as u64, &p.bytes[at..at + n]);
        } else {
            torn = true;
            // A sector never written keeps its old bytes, but the file still grew.
            if data.len() < abs + n {
                data.resize(abs + n, 0);
            }
        }
        at += n;
    }
    torn
}

impl State {
    /// Counts a mutating operation; fails it (and freezes the disk) at the armed crash.
    pub(super) fn mutate(&mut self) -> io::Result<()> {
        if self.frozen {
            return Err(eio());
        }
        self.stats.mutations += 1;
        if self.crash_at.is_some_and(|at| self.stats.mutations >= at) {
            self.frozen = true;
            self.crash_at = None;
            return Err(eio());
        }
        Ok(())
    }

    pub(super) fn crash(&mut self, mode: CrashMode, seed: u64) {
        // Salted, so a test that gives the disk and the crash one seed still gets variety.
        let mut rng = Rng(mix(self.seed ^ mix(seed ^ 0x00c4_a5e5_a17e)));
        for node in self.inodes.values_mut() {
            let mut durable = std::mem::take(&mut node.durable);
            for p in node.unsynced.drain(..) {
                let keep = match mode {
                    _ if p.forced => true,
                    CrashMode::KeepAll => true,
                    CrashMode::KeepNone => false,
                    CrashMode::Random => !rng.chance(2),
                };
                if !keep {
                    self.stats.dropped_writes += 1;
                } else if mode == CrashMode::Random && !p.forced && p.set_len.is_none() && rng.chance(4) {
                    if apply_torn(&mut durable, &p, &mut rng) {
                        self.stats.torn_writes += 1;
                    }
                } else {
                    apply_pending(&mut durable, &p);
                }
            }
            node.data = durable.clone();
            node.durable = durable;
            node.lost_writes = false;
        }
        let kept = match mode {
            CrashMode::KeepAll => self.dir_ops.len(),
            CrashMode::KeepNone => 0,
            CrashMode::Random => rng.below(self.dir_ops.len() as u64 + 1) as usize,
        };
        for op in self.dir_ops.drain(..).take(kept) {
            op.apply(&mut self.durable_names);
        }
        // An entry whose folder did not survive is unreachable.
        let mut names = BTreeMap::new();
        for (path, node) in std::mem::take(&mut self.durable_names) {
            let parent_ok = path.parent().is_none_or(|p| is_root(p) || names.get(p) == Some(&Node::Dir));
            if parent_ok {
                names.insert(path, node);
            }
        }
        self.durable_names = names;
        self.names = self.durable_names.clone();
        self.epoch += 1;
        self.handles.clear();
        self.locks.clear();
        self.frozen = false;
        self.crash_at = None;
        self.stats.crashes += 1;
        self.collect();
    }
}

impl SimDisk {
    /// Arms a power cut just before the `n`-th (from 1) mutating operation from now: that
    /// operation and every later one fail with EIO until [`SimDisk::crash`].
    pub fn crash_after_ops(&self, n: u64) {
        let mut s = self.lock();
        s.crash_at = Some(s.stats.mutations + n.max(1));
    }

    /// Cancels an armed power cut that has not happened yet.
    pub fn disarm(&self) {
        self.lock().crash_at = None;
    }

    /// Whether an armed power cut happened (the disk fails everything until `crash`).
    pub fn frozen(&self) -> bool {
        self.lock().frozen
    }

    /// A power cut; `seed` picks the mode (all, none or a random subset of unsynced
    /// writes kept) and the subset. Call it after the `Db` on this disk was dropped, or
    /// while it runs (its handles then fail with EIO).
    pub fn crash(&self, seed: u64) -> CrashMode {
        let mode = match mix(seed ^ 0x00c4_a54d) % 8 {
            0 => CrashMode::KeepAll,
            1 => CrashMode::KeepNone,
            _ => CrashMode::Random,
        };
        self.crash_with(mode, seed);
        mode
    }

    /// A power cut with the given mode; `seed` picks the subset under `Random`.
    pub fn crash_with(&self, mode: CrashMode, seed: u64) {
        self.lock().crash(mode, seed);
    }
}
