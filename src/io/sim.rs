//! The simulated disk: deterministic, in memory, fault-injecting.
//!
//! A [`SimDisk`] is a cloneable handle on an in-memory file system that
//! outlives any [`crate::Db`] opened on it (`IoBackend::Sim(disk)`), so a test
//! can open, crash and reopen. It keeps what the hardware keeps apart:
//!
//! - **Per file**, the bytes a read sees (`data`) and the bytes that survive a
//!   power cut (`durable`), plus the writes in between, in order (`unsynced`).
//!   `fdatasync`/`fsync` make all of them durable; a write with `RWF_DSYNC`
//!   makes itself durable (it is kept whole by any crash).
//! - **Per directory**, entry changes (create, rename, remove) are durable only
//!   after an fsync of that directory; until then they wait, in order, in
//!   `dir_ops`.
//!
//! [`SimDisk::crash`] is a power cut: each file keeps all, none, or a random
//! subset of its unsynced writes (applied in order over the durable bytes), and
//! a kept write may be torn at sector granularity ([`SECTOR_BYTES`]): some of
//! its sectors keep their old, stale contents. Pending directory changes keep a
//! prefix (a journaling file system commits them in order). Every handle opened
//! before the crash then fails with EIO, and locks are released.
//! [`SimDisk::crash_after_ops`] arms a power cut just before the n-th mutating
//! operation from now; from then on every operation fails with EIO until
//! [`SimDisk::crash`] is called.
//!
//! Faults ([`SimFaults`], rates in parts per million of operations): EIO on
//! read, write and sync; short reads and writes (on the shard's `Io`, where the
//! engine sees them as such; blocking helpers retry short transfers as the real
//! ones do); ENOSPC on writes and allocation; latency, as completions held back
//! to a later `wait`. A failed sync behaves as Linux does after an fsync error:
//! the file's unsynced writes are marked clean, a random subset of them having
//! reached the disk; reads still see them, a later sync does not write them,
//! and a crash loses the rest. [`SimDisk::flip_bits`] flips bits at rest.
//!
//! **Determinism.** Every decision comes from the seed and counters: a fault
//! from (seed, file number, that file's operation count), a crash from the
//! seed given to `crash`. File numbers are given in creation order. A
//! workload whose operations reach the disk in one order (one shard, one
//! client waiting for each answer) replays to the same bytes;
//! [`SimDisk::durable_hash`] and [`SimDisk::state_hash`] check it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::fs::{FileRef, Fs, FsFile, LockGuard, NodeKind, OpenFlags};
use super::{AlignedBuf, Completion, Io, SyncMode};
use crate::error::{Error, Result};

/// Granularity at which the simulated disk tears a write, in bytes.
pub const SECTOR_BYTES: usize = 512;

/// First handle number given to a simulated file (far from real descriptors, so a mix-up
/// fails loudly rather than touching a real file).
const FD_BASE: RawFd = 1 << 24;

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

/// Counters of a [`SimDisk`] since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Operations that change the disk (writes, syncs, allocations, directory changes).
    pub mutations: u64,
    /// Reads.
    pub reads: u64,
    /// Power cuts.
    pub crashes: u64,
    /// Faults injected (errors, short transfers, held-back completions).
    pub faults: u64,
    /// Writes torn by crashes.
    pub torn_writes: u64,
    /// Unsynced writes dropped by crashes.
    pub dropped_writes: u64,
}

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

#[derive(Debug, Clone)]
struct Pending {
    offset: u64,
    bytes: Vec<u8>,
    /// A length change instead of a write.
    set_len: Option<u64>,
    /// Written with RWF_DSYNC: durable, kept whole by any crash.
    forced: bool,
}

#[derive(Debug, Clone)]
struct Inode {
    /// Last name given, for targeted faults and reports.
    path: PathBuf,
    data: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Pending>,
    /// Operations on this file so far (drives its fault decisions).
    ops: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Node {
    File(u64),
    Dir,
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(PathBuf, Node),
    Unlink(PathBuf),
    Rename(PathBuf, PathBuf),
}

impl DirOp {
    fn touches(&self, dir: &Path) -> bool {
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        match self {
            DirOp::Link(p, _) | DirOp::Unlink(p) => in_dir(p),
            DirOp::Rename(a, b) => in_dir(a) || in_dir(b),
        }
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, Node>) {
        match self {
            DirOp::Link(p, node) => {
                names.insert(p.clone(), *node);
            }
            DirOp::Unlink(p) => {
                names.remove(p);
            }
            DirOp::Rename(a, b) => {
                if let Some(node) = names.remove(a) {
                    names.insert(b.clone(), node);
                }
            }
        }
    }
}

struct State {
    seed: u64,
    epoch: u64,
    next_inode: u64,
    next_fd: RawFd,
    inodes: BTreeMap<u64, Inode>,
    names: BTreeMap<PathBuf, Node>,
    durable_names: BTreeMap<PathBuf, Node>,
    dir_ops: Vec<DirOp>,
    /// Open handles: handle number to (inode, epoch it was opened in).
    handles: HashMap<RawFd, (u64, u64)>,
    locks: BTreeSet<PathBuf>,
    crash_at: Option<u64>,
    frozen: bool,
    faults: SimFaults,
    /// Targeted sync failures: (path fragment, how many more).
    sync_failures: Vec<(String, u32)>,
    stats: SimStats,
}

/// A deterministic simulated disk; see the module docs. Clones are handles on the same
/// disk.
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("SimDisk").field("seed", &s.seed).field("files", &s.inodes.len()).finish()
    }
}

impl PartialEq for SimDisk {
    fn eq(&self, other: &SimDisk) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }
}

impl Eq for SimDisk {}

/// splitmix64 of `x`: the disk's only source of randomness, so runs replay.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small generator for crash decisions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

const FAULT_READ_EIO: u64 = 1;
const FAULT_WRITE_EIO: u64 = 2;
const FAULT_SYNC_EIO: u64 = 3;
const FAULT_SHORT: u64 = 4;
const FAULT_ENOSPC: u64 = 5;
const FAULT_LATENCY: u64 = 6;
const FAULT_PARTIAL: u64 = 7;

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

fn is_root(p: &Path) -> bool {
    p.as_os_str().is_empty() || p == Path::new("/")
}

fn apply_write(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let offset = offset as usize;
    if data.len() < offset + bytes.len() {
        data.resize(offset + bytes.len(), 0);
    }
    data[offset..offset + bytes.len()].copy_from_slice(bytes);
}

fn apply_pending(data: &mut Vec<u8>, p: &Pending) {
    match p.set_len {
        Some(len) => data.resize(len as usize, 0),
        None => apply_write(data, p.offset, &p.bytes),
    }
}

/// Applies `p` to `data`, keeping only the sectors `keep` picks (a torn write).
fn apply_torn(data: &mut Vec<u8>, p: &Pending, rng: &mut Rng) -> bool {
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
    fn fault(&self, inode: u64, ops: u64, kind: u64, ppm: u32) -> bool {
        ppm > 0
            && mix(self.seed ^ mix(inode.wrapping_mul(0x1000_0000_01b3) ^ mix(ops ^ (kind << 56)))) % 1_000_000
                < u64::from(ppm)
    }

    /// Counts a mutating operation; fails it (and freezes the disk) at the armed crash.
    fn mutate(&mut self) -> io::Result<()> {
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

    fn handle(&self, fd: RawFd) -> io::Result<u64> {
        if self.frozen {
            return Err(eio());
        }
        match self.handles.get(&fd) {
            Some(&(inode, epoch)) if epoch == self.epoch && self.inodes.contains_key(&inode) => Ok(inode),
            _ => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    /// Takes the next operation number of `inode`.
    fn tick(&mut self, inode: u64) -> u64 {
        let node = self.inodes.get_mut(&inode).expect("a handle's inode exists");
        node.ops += 1;
        node.ops
    }

    fn targeted_sync_failure(&mut self, inode: u64) -> bool {
        let path = self.inodes[&inode].path.to_string_lossy().into_owned();
        for (fragment, left) in &mut self.sync_failures {
            if *left > 0 && path.contains(fragment.as_str()) {
                *left -= 1;
                return true;
            }
        }
        false
    }

    fn read(&mut self, fd: RawFd, buf: &mut [u8], offset: u64, allow_short: bool) -> io::Result<usize> {
        let inode = self.handle(fd)?;
        let ops = self.tick(inode);
        self.stats.reads += 1;
        if self.fault(inode, ops, FAULT_READ_EIO, self.faults.read_eio_ppm) {
            self.stats.faults += 1;
            return Err(eio());
        }
        let data = &self.inodes[&inode].data;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        let mut n = buf.len().min(data.len() - start);
        if allow_short && n > SECTOR_BYTES && self.fault(inode, ops, FAULT_SHORT, self.faults.short_ppm) {
            self.stats.faults += 1;
            n = (n / 2) / SECTOR_BYTES * SECTOR_BYTES;
        }
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn write(&mut self, fd: RawFd, bytes: &[u8], offset: u64, sync: SyncMode, allow_short: bool) -> io::Result<usize> {
        let inode = self.handle(fd)?;
        self.mutate()?;
        let ops = self.tick(inode);
        if self.fault(inode, ops, FAULT_ENOSPC, self.faults.enospc_ppm) {
            self.stats.faults += 1;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let mut n = bytes.len();
        let mut failed = None;
        if self.fault(inode, ops, FAULT_WRITE_EIO, self.faults.write_eio_ppm) {
            self.stats.faults += 1;
            // A failed write may still have written some of its sectors.
            n = (mix(self.seed ^ ops ^ FAULT_PARTIAL) as usize % (n / SECTOR_BYTES + 1)) * SECTOR_BYTES;
            failed = Some(eio());
        } else if allow_short && n > SECTOR_BYTES && self.fault(inode, ops, FAULT_SHORT, self.faults.short_ppm) {
            self.stats.faults += 1;
            n = (n / 2) / SECTOR_BYTES * SECTOR_BYTES;
        }
        let sync_fails = sync != SyncMode::None
            && failed.is_none()
            && (self.fault(inode, ops, FAULT_SYNC_EIO, self.faults.sync_eio_ppm) || self.targeted_sync_failure(inode));
        let node = self.inodes.get_mut(&inode).expect("checked by handle");
        if n > 0 {
            apply_write(&mut node.data, offset, &bytes[..n]);
            node.unsynced.push(Pending { offset, bytes: bytes[..n].to_vec(), set_len: None, forced: false });
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if sync == SyncMode::None || n < bytes.len() {
            return Ok(n);
        }
        // The flush half of a synced write is an operation of its own: a power cut can
        // come between the write and it, leaving the write unsynced (and tearable).
        self.mutate()?;
        if sync_fails {
            self.stats.faults += 1;
            self.sync_failed(inode);
            return Err(eio());
        }
        match sync {
            // RWF_DSYNC makes this write durable, not the file's other unsynced writes.
            SyncMode::Dsync => {
                let node = self.inodes.get_mut(&inode).expect("checked by handle");
                node.unsynced.last_mut().expect("pushed above").forced = true;
            }
            _ => self.make_durable(inode),
        }
        Ok(n)
    }

    fn make_durable(&mut self, inode: u64) {
        let node = self.inodes.get_mut(&inode).expect("inode exists");
        for p in node.unsynced.drain(..) {
            apply_pending(&mut node.durable, &p);
        }
        debug_assert_eq!(node.durable, node.data);
    }

    /// Linux after a failed fsync: the dirty pages are marked clean whether or not they
    /// reached the disk. Reads still see them; a later sync will not write them.
    fn sync_failed(&mut self, inode: u64) {
        let seed = self.seed;
        let node = self.inodes.get_mut(&inode).expect("inode exists");
        let mut rng = Rng(seed ^ mix(inode) ^ mix(node.ops));
        for p in node.unsynced.drain(..) {
            if p.forced || rng.chance(2) {
                apply_pending(&mut node.durable, &p);
            }
        }
    }

    fn sync(&mut self, fd: RawFd) -> io::Result<()> {
        let inode = self.handle(fd)?;
        self.mutate()?;
        let ops = self.tick(inode);
        if self.fault(inode, ops, FAULT_SYNC_EIO, self.faults.sync_eio_ppm) || self.targeted_sync_failure(inode) {
            self.stats.faults += 1;
            self.sync_failed(inode);
            return Err(eio());
        }
        self.make_durable(inode);
        Ok(())
    }

    fn set_len(&mut self, fd: RawFd, len: u64, only_grow: bool) -> io::Result<()> {
        let inode = self.handle(fd)?;
        self.mutate()?;
        let ops = self.tick(inode);
        if self.fault(inode, ops, FAULT_ENOSPC, self.faults.enospc_ppm) {
            self.stats.faults += 1;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let node = self.inodes.get_mut(&inode).expect("checked by handle");
        if only_grow && node.data.len() as u64 >= len {
            return Ok(());
        }
        let p = Pending { offset: 0, bytes: Vec::new(), set_len: Some(len), forced: false };
        apply_pending(&mut node.data, &p);
        node.unsynced.push(p);
        Ok(())
    }

    fn check_live(&self) -> io::Result<()> {
        if self.frozen { Err(eio()) } else { Ok(()) }
    }

    fn dir_exists(&self, dir: &Path) -> bool {
        is_root(dir) || self.names.get(dir) == Some(&Node::Dir)
    }

    fn link(&mut self, path: &Path, node: Node) {
        self.names.insert(path.to_path_buf(), node);
        self.dir_ops.push(DirOp::Link(path.to_path_buf(), node));
    }

    fn crash(&mut self, mode: CrashMode, seed: u64) {
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

    /// Drops files no name and no handle reaches.
    fn collect(&mut self) {
        let mut live: BTreeSet<u64> = BTreeSet::new();
        for node in self.names.values().chain(self.durable_names.values()) {
            if let Node::File(i) = node {
                live.insert(*i);
            }
        }
        for op in &self.dir_ops {
            if let DirOp::Link(_, Node::File(i)) = op {
                live.insert(*i);
            }
        }
        for &(i, epoch) in self.handles.values() {
            if epoch == self.epoch {
                live.insert(i);
            }
        }
        self.inodes.retain(|i, _| live.contains(i));
    }
}

impl SimDisk {
    /// An empty disk whose decisions derive from `seed`.
    pub fn new(seed: u64) -> SimDisk {
        SimDisk {
            state: Arc::new(Mutex::new(State {
                seed: mix(seed),
                epoch: 0,
                next_inode: 1,
                next_fd: FD_BASE,
                inodes: BTreeMap::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dir_ops: Vec::new(),
                handles: HashMap::new(),
                locks: BTreeSet::new(),
                crash_at: None,
                frozen: false,
                faults: SimFaults::default(),
                sync_failures: Vec::new(),
                stats: SimStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock (a test assertion) leaves a usable state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the fault rates (replacing the previous ones).
    pub fn set_faults(&self, faults: SimFaults) {
        self.lock().faults = faults;
    }

    /// The next `count` syncs (fsync, fdatasync, and writes with RWF_DSYNC or a linked
    /// fdatasync) of files whose path contains `path_fragment` fail with EIO.
    pub fn fail_syncs(&self, path_fragment: &str, count: u32) {
        self.lock().sync_failures.push((path_fragment.to_string(), count));
    }

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

    /// A hash of what survives a power cut that keeps nothing unsynced: durable names and
    /// the durable bytes of the files they name.
    pub fn durable_hash(&self) -> u64 {
        let s = self.lock();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (path, node) in &s.durable_names {
            path.hash(&mut h);
            match node {
                Node::Dir => 0u8.hash(&mut h),
                Node::File(i) => {
                    let node = &s.inodes[i];
                    node.durable.hash(&mut h);
                    node.unsynced.iter().filter(|p| p.forced).for_each(|p| (p.offset, &p.bytes).hash(&mut h));
                }
            }
        }
        h.finish()
    }

    /// A hash of everything: current and durable names and bytes, and what is unsynced.
    pub fn state_hash(&self) -> u64 {
        let s = self.lock();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        s.names.hash(&mut h);
        s.durable_names.hash(&mut h);
        for (i, node) in &s.inodes {
            i.hash(&mut h);
            node.data.hash(&mut h);
            node.durable.hash(&mut h);
            for p in &node.unsynced {
                (p.offset, &p.bytes, p.set_len, p.forced).hash(&mut h);
            }
        }
        h.finish()
    }

    /// Counters since the disk was made.
    pub fn stats(&self) -> SimStats {
        self.lock().stats
    }

    /// Paths of the files that exist now, in order.
    pub fn files(&self) -> Vec<PathBuf> {
        let s = self.lock();
        s.names.iter().filter(|(_, n)| matches!(n, Node::File(_))).map(|(p, _)| p.clone()).collect()
    }

    /// The current bytes of file `path` (what a read sees), if it exists.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock();
        match s.names.get(path) {
            Some(Node::File(i)) => Some(s.inodes[i].data.clone()),
            _ => None,
        }
    }

    /// Replaces the contents of file `path` (creating it and its folders), durably: for
    /// tests that build a directory from given bytes.
    pub fn write_file(&self, path: &Path, bytes: &[u8]) {
        let mut s = self.lock();
        let mut dirs = Vec::new();
        let mut p = path.parent();
        while let Some(d) = p.filter(|d| !is_root(d)) {
            dirs.push(d.to_path_buf());
            p = d.parent();
        }
        for d in dirs.into_iter().rev() {
            s.names.insert(d.clone(), Node::Dir);
            s.durable_names.insert(d, Node::Dir);
        }
        let inode = match s.names.get(path) {
            Some(Node::File(i)) => *i,
            _ => {
                let i = s.next_inode;
                s.next_inode += 1;
                i
            }
        };
        let node = Inode {
            path: path.to_path_buf(),
            data: bytes.to_vec(),
            durable: bytes.to_vec(),
            unsynced: Vec::new(),
            ops: 0,
        };
        s.inodes.insert(inode, node);
        s.names.insert(path.to_path_buf(), Node::File(inode));
        s.durable_names.insert(path.to_path_buf(), Node::File(inode));
    }

    pub(crate) fn io_read(&self, fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.lock().read(fd, buf, offset, true)
    }

    pub(crate) fn io_write(&self, fd: RawFd, bytes: &[u8], offset: u64, sync: SyncMode) -> io::Result<usize> {
        self.lock().write(fd, bytes, offset, sync, true)
    }

    pub(crate) fn io_sync(&self, fd: RawFd) -> io::Result<()> {
        self.lock().sync(fd)
    }

    /// Whether the next completion of a file's I/O is held back (latency).
    fn delay(&self, fd: RawFd) -> bool {
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

/// An open file of a [`SimDisk`].
struct SimFile {
    disk: SimDisk,
    fd: RawFd,
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut s = self.disk.lock();
        s.handles.remove(&self.fd);
    }
}

impl FsFile for SimFile {
    fn fd(&self) -> RawFd {
        self.fd
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let n = self.disk.lock().read(self.fd, buf, offset, false)?;
        if n < buf.len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the file"));
        }
        Ok(())
    }

    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.disk.lock().write(self.fd, bytes, offset, SyncMode::None, false).map(|_| ())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.disk.lock().sync(self.fd)
    }

    fn sync_all(&self) -> io::Result<()> {
        self.disk.lock().sync(self.fd)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.disk.lock().set_len(self.fd, len, true)
    }

    fn len(&self) -> io::Result<u64> {
        let s = self.disk.lock();
        let inode = s.handle(self.fd)?;
        Ok(s.inodes[&inode].data.len() as u64)
    }

    fn direct_io_aligns(&self) -> (usize, usize) {
        (SECTOR_BYTES, SECTOR_BYTES)
    }
}

/// A lock held on a [`SimDisk`]; a crash releases it too.
struct SimLock {
    disk: SimDisk,
    path: PathBuf,
    epoch: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = self.disk.lock();
        if s.epoch == self.epoch {
            s.locks.remove(&self.path);
        }
    }
}

impl Fs for SimDisk {
    fn open(&self, path: &Path, flags: OpenFlags) -> io::Result<FileRef> {
        let mut s = self.lock();
        s.check_live()?;
        let inode = match s.names.get(path) {
            Some(Node::File(i)) => *i,
            Some(Node::Dir) => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
            None if !flags.create => return Err(io::Error::from_raw_os_error(libc::ENOENT)),
            None => {
                if !path.parent().is_some_and(|p| s.dir_exists(p)) {
                    return Err(io::Error::from_raw_os_error(libc::ENOENT));
                }
                s.mutate()?;
                let i = s.next_inode;
                s.next_inode += 1;
                s.inodes.insert(
                    i,
                    Inode {
                        path: path.to_path_buf(),
                        data: Vec::new(),
                        durable: Vec::new(),
                        unsynced: Vec::new(),
                        ops: 0,
                    },
                );
                s.link(path, Node::File(i));
                i
            }
        };
        s.inodes.get_mut(&inode).expect("named files exist").path = path.to_path_buf();
        let fd = s.next_fd;
        s.next_fd = if s.next_fd == RawFd::MAX { FD_BASE } else { s.next_fd + 1 };
        let epoch = s.epoch;
        s.handles.insert(fd, (inode, epoch));
        drop(s);
        let file = SimFile { disk: self.clone(), fd };
        if flags.truncate {
            self.lock().set_len(fd, 0, false)?;
        }
        Ok(Arc::new(file))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.check_live()?;
        let Some(node) = s.names.get(from).copied() else { return Err(io::Error::from_raw_os_error(libc::ENOENT)) };
        if !to.parent().is_some_and(|p| s.dir_exists(p)) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        s.mutate()?;
        s.names.remove(from);
        s.names.insert(to.to_path_buf(), node);
        if let Node::File(i) = node {
            s.inodes.get_mut(&i).expect("named files exist").path = to.to_path_buf();
        }
        s.dir_ops.push(DirOp::Rename(from.to_path_buf(), to.to_path_buf()));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.check_live()?;
        match s.names.get(path) {
            Some(Node::File(_)) => {}
            Some(Node::Dir) => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
            None => return Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
        s.mutate()?;
        s.names.remove(path);
        s.dir_ops.push(DirOp::Unlink(path.to_path_buf()));
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        s.check_live()?;
        if !s.dir_exists(dir) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
            .collect())
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.check_live()?;
        if is_root(dir) || s.names.contains_key(dir) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        if !dir.parent().is_some_and(|p| s.dir_exists(p)) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        s.mutate()?;
        s.link(dir, Node::Dir);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.check_live()?;
        if !s.dir_exists(dir) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        s.mutate()?;
        let ops = std::mem::take(&mut s.dir_ops);
        let (now, later): (Vec<DirOp>, Vec<DirOp>) = ops.into_iter().partition(|op| op.touches(dir));
        for op in &now {
            op.apply(&mut s.durable_names);
        }
        s.dir_ops = later;
        s.collect();
        Ok(())
    }

    fn kind(&self, path: &Path) -> io::Result<Option<NodeKind>> {
        let s = self.lock();
        s.check_live()?;
        if is_root(path) {
            return Ok(Some(NodeKind::Dir));
        }
        Ok(s.names.get(path).map(|n| match n {
            Node::File(_) => NodeKind::File,
            Node::Dir => NodeKind::Dir,
        }))
    }

    fn lock(&self, path: &Path) -> Result<LockGuard> {
        // The lock file exists like the real one does.
        drop(self.open(path, OpenFlags::CREATE).map_err(|e| Error::io("open", path.to_path_buf(), e))?);
        let mut s = SimDisk::lock(self);
        if !s.locks.insert(path.to_path_buf()) {
            return Err(Error::Locked { path: path.to_path_buf() });
        }
        let epoch = s.epoch;
        Ok(Box::new(SimLock { disk: self.clone(), path: path.to_path_buf(), epoch }))
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
            self.disk.io_write(fd, &buf.as_slice()[..len], offset, sync).and_then(|n| super::check_len(n, len));
        self.complete(fd, Completion { token, result, buf: Some(buf) });
    }

    fn fdatasync(&mut self, fd: RawFd, token: u64) {
        let result = self.disk.io_sync(fd).map(|()| 0);
        self.complete(fd, Completion { token, result, buf: None });
    }

    fn read(&mut self, fd: RawFd, offset: u64, mut buf: AlignedBuf, len: usize, token: u64) {
        let result =
            self.disk.io_read(fd, &mut buf.as_mut_slice()[..len], offset).and_then(|n| super::check_len(n, len));
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
        super::portable::poll_eventfd(self.eventfd, block, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn unsynced_writes_and_names_are_lost_by_a_crash_that_keeps_nothing() {
        let disk = SimDisk::new(1);
        disk.create_dir(&p("/d")).unwrap();
        disk.sync_dir(&p("/")).unwrap();
        let f = disk.open(&p("/d/a"), OpenFlags::CREATE).unwrap();
        f.write_all_at(b"durable", 0).unwrap();
        f.sync_data().unwrap();
        disk.sync_dir(&p("/d")).unwrap();
        f.write_all_at(b"VOLATILE", 0).unwrap();
        let g = disk.open(&p("/d/b"), OpenFlags::CREATE).unwrap();
        g.write_all_at(b"x", 0).unwrap();
        g.sync_data().unwrap();
        // `b`'s data is durable but its name is not.
        disk.crash_with(CrashMode::KeepNone, 7);
        assert_eq!(disk.read_file(&p("/d/a")).unwrap(), b"durable");
        assert!(disk.read_file(&p("/d/b")).is_none());
        // Handles from before the crash are dead.
        assert!(f.read_exact_at(&mut [0u8; 1], 0).is_err());
    }

    #[test]
    fn a_crash_that_keeps_all_keeps_everything() {
        let disk = SimDisk::new(2);
        let f = disk.open(&p("/a"), OpenFlags::CREATE).unwrap();
        f.write_all_at(&[7u8; 2048], 0).unwrap();
        disk.crash_with(CrashMode::KeepAll, 1);
        assert_eq!(disk.read_file(&p("/a")).unwrap(), vec![7u8; 2048]);
    }

    #[test]
    fn torn_writes_keep_whole_sectors_of_old_or_new_bytes() {
        let mut torn_seen = false;
        for seed in 0..64 {
            let disk = SimDisk::new(seed);
            let f = disk.open(&p("/a"), OpenFlags::CREATE).unwrap();
            f.write_all_at(&[1u8; 4096], 0).unwrap();
            f.sync_data().unwrap();
            disk.sync_dir(&p("/")).unwrap();
            f.write_all_at(&[2u8; 4096], 0).unwrap();
            disk.crash_with(CrashMode::Random, seed);
            let data = disk.read_file(&p("/a")).unwrap();
            assert_eq!(data.len(), 4096);
            for sector in data.chunks(SECTOR_BYTES) {
                assert!(sector.iter().all(|&b| b == sector[0]), "a sector mixes old and new bytes");
            }
            torn_seen |= data.chunks(SECTOR_BYTES).any(|s| s[0] == 1) && data.chunks(SECTOR_BYTES).any(|s| s[0] == 2);
        }
        assert!(torn_seen, "64 random crashes never tore a write");
    }

    #[test]
    fn a_failed_sync_loses_the_writes_for_good() {
        // After EIO from fsync, a later successful fsync does not make the lost writes
        // durable (Linux marks the pages clean).
        let mut lost = false;
        for seed in 0..16 {
            let disk = SimDisk::new(seed);
            let f = disk.open(&p("/a"), OpenFlags::CREATE).unwrap();
            disk.sync_dir(&p("/")).unwrap();
            for i in 0..8u8 {
                f.write_all_at(&[i + 1; 512], u64::from(i) * 512).unwrap();
            }
            disk.fail_syncs("/a", 1);
            assert!(f.sync_data().is_err());
            f.sync_data().unwrap();
            assert_eq!(disk.read_file(&p("/a")).unwrap().len(), 4096, "reads still see the writes");
            disk.crash_with(CrashMode::KeepAll, seed);
            let data = disk.read_file(&p("/a")).unwrap();
            lost |= data.chunks(512).any(|s| s[0] == 0);
        }
        assert!(lost, "a failed sync never lost a write");
    }

    #[test]
    fn same_seed_same_faults() {
        let run = |seed| {
            let disk = SimDisk::new(seed);
            disk.set_faults(SimFaults { write_eio_ppm: 200_000, sync_eio_ppm: 200_000, ..SimFaults::default() });
            let f = disk.open(&p("/a"), OpenFlags::CREATE).unwrap();
            let mut results = Vec::new();
            for i in 0..64u64 {
                results.push(f.write_all_at(&[i as u8; 1024], i * 1024).is_ok());
                results.push(f.sync_data().is_ok());
            }
            (results, disk.state_hash())
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5).0, run(6).0);
    }

    #[test]
    fn an_armed_crash_freezes_the_disk() {
        let disk = SimDisk::new(3);
        let f = disk.open(&p("/a"), OpenFlags::CREATE).unwrap();
        disk.crash_after_ops(2);
        f.write_all_at(b"one", 0).unwrap();
        assert!(f.write_all_at(b"two", 0).is_err());
        assert!(disk.frozen());
        assert!(disk.open(&p("/b"), OpenFlags::CREATE).is_err());
        disk.crash_with(CrashMode::KeepNone, 0);
        assert!(!disk.frozen());
        // The file's name was never synced.
        assert!(disk.read_file(&p("/a")).is_none());
    }
}
