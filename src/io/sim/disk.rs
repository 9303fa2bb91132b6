//! The simulated disk's shared state and the cloneable [`SimDisk`] handle on it:
//! inodes with their current, durable and unsynced bytes, the names, the open
//! handles, and the inspection calls tests make (hashes, file contents, counters).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::faults::SimFaults;
use super::files::DirOp;

/// Granularity at which the simulated disk tears a write, in bytes.
pub const SECTOR_BYTES: usize = 512;

/// First handle number given to a simulated file (far from real descriptors, so a mix-up
/// fails loudly rather than touching a real file).
pub(super) const FD_BASE: RawFd = 1 << 24;

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

/// A write (or a length change) not yet durable, kept in the order it was made.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) offset: u64,
    pub(super) bytes: Vec<u8>,
    /// A length change instead of a write.
    pub(super) set_len: Option<u64>,
    /// Written with RWF_DSYNC: durable, kept whole by any crash.
    pub(super) forced: bool,
}

/// Writes `bytes` at `offset` of `data`, growing it with zeros as needed.
pub(super) fn apply_write(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let offset = offset as usize;
    if data.len() < offset + bytes.len() {
        data.resize(offset + bytes.len(), 0);
    }
    data[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// Applies one pending write or length change to `data`.
pub(super) fn apply_pending(data: &mut Vec<u8>, p: &Pending) {
    match p.set_len {
        Some(len) => data.resize(len as usize, 0),
        None => apply_write(data, p.offset, &p.bytes),
    }
}

/// A file: the bytes a read sees (`data`), the bytes a power cut keeps (`durable`),
/// and the writes between them.
#[derive(Debug, Clone)]
pub(super) struct Inode {
    /// Last name given, for targeted faults and reports.
    pub(super) path: PathBuf,
    pub(super) data: Vec<u8>,
    pub(super) durable: Vec<u8>,
    pub(super) unsynced: Vec<Pending>,
    /// Operations on this file so far (drives its fault decisions).
    pub(super) ops: u64,
    /// A failed sync dropped some of this file's writes from `durable` while
    /// readers still see them in `data` (Linux marks those pages clean), so the two
    /// differ until a crash reloads `data` from `durable`.
    pub(super) lost_writes: bool,
}

/// What a name points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Node {
    File(u64),
    Dir,
}

/// Everything on the disk, behind the handle's mutex.
pub(super) struct State {
    pub(super) seed: u64,
    pub(super) epoch: u64,
    pub(super) next_inode: u64,
    pub(super) next_fd: RawFd,
    pub(super) inodes: BTreeMap<u64, Inode>,
    pub(super) names: BTreeMap<PathBuf, Node>,
    pub(super) durable_names: BTreeMap<PathBuf, Node>,
    pub(super) dir_ops: Vec<DirOp>,
    /// Open handles: handle number to (inode, epoch it was opened in).
    pub(super) handles: HashMap<RawFd, (u64, u64)>,
    pub(super) locks: BTreeSet<PathBuf>,
    pub(super) crash_at: Option<u64>,
    pub(super) frozen: bool,
    pub(super) faults: SimFaults,
    /// Targeted sync failures: (path fragment, how many more).
    pub(super) sync_failures: Vec<(String, u32)>,
    pub(super) stats: SimStats,
}

/// A deterministic simulated disk; see `io::sim`. Clones are handles on the same
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
pub(super) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small generator for crash decisions.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    pub(super) fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

pub(super) fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

pub(super) fn is_root(p: &Path) -> bool {
    p.as_os_str().is_empty() || p == Path::new("/")
}

impl State {
    pub(super) fn handle(&self, fd: RawFd) -> io::Result<u64> {
        if self.frozen {
            return Err(eio());
        }
        match self.handles.get(&fd) {
            Some(&(inode, epoch)) if epoch == self.epoch && self.inodes.contains_key(&inode) => Ok(inode),
            _ => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    /// Takes the next operation number of `inode`.
    pub(super) fn tick(&mut self, inode: u64) -> u64 {
        let node = self.inodes.get_mut(&inode).expect("a handle's inode exists");
        node.ops += 1;
        node.ops
    }

    pub(super) fn check_live(&self) -> io::Result<()> {
        if self.frozen { Err(eio()) } else { Ok(()) }
    }

    pub(super) fn dir_exists(&self, dir: &Path) -> bool {
        is_root(dir) || self.names.get(dir) == Some(&Node::Dir)
    }

    pub(super) fn link(&mut self, path: &Path, node: Node) {
        self.names.insert(path.to_path_buf(), node);
        self.dir_ops.push(DirOp::Link(path.to_path_buf(), node));
    }

    /// Drops files no name and no handle reaches.
    pub(super) fn collect(&mut self) {
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

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock (a test assertion) leaves a usable state.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let inode = if let Some(Node::File(i)) = s.names.get(path) {
            *i
        } else {
            let i = s.next_inode;
            s.next_inode += 1;
            i
        };
        let node = Inode {
            path: path.to_path_buf(),
            data: bytes.to_vec(),
            durable: bytes.to_vec(),
            unsynced: Vec::new(),
            ops: 0,
            lost_writes: false,
        };
        s.inodes.insert(inode, node);
        s.names.insert(path.to_path_buf(), Node::File(inode));
        s.durable_names.insert(path.to_path_buf(), Node::File(inode));
    }
}
