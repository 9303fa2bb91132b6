//! The file system on the simulated disk: [`Fs`] and [`FsFile`] for
//! [`SimDisk`]. Directory entries change at once for readers and become durable
//! with an fsync of their directory; file bytes are current for readers and
//! durable only after a sync (or with `RWF_DSYNC`), the writes in between kept in
//! order for a crash to choose from.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::disk::{
    FD_BASE, Inode, Node, Pending, SECTOR_BYTES, SimDisk, State, apply_pending, apply_write, eio, is_root, mix,
};
use super::faults::{FAULT_ENOSPC, FAULT_PARTIAL, FAULT_READ_EIO, FAULT_SHORT, FAULT_SYNC_EIO, FAULT_WRITE_EIO};
use crate::error::{Error, Result};
use crate::io::SyncMode;
use crate::io::fs::{FileRef, Fs, FsFile, LockGuard, NodeKind, OpenFlags};

/// A directory change not yet durable (waiting for an fsync of its directory).
#[derive(Debug, Clone)]
pub(super) enum DirOp {
    Link(PathBuf, Node),
    Unlink(PathBuf),
    Rename(PathBuf, PathBuf),
}

impl DirOp {
    pub(super) fn touches(&self, dir: &Path) -> bool {
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        match self {
            DirOp::Link(p, _) | DirOp::Unlink(p) => in_dir(p),
            DirOp::Rename(a, b) => in_dir(a) || in_dir(b),
        }
    }

    pub(super) fn apply(&self, names: &mut BTreeMap<PathBuf, Node>) {
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

impl State {
    /// The prologue of every change to a file: the handle's inode, the power-cut check
    /// (`mutate`) and the file's operation count, which seeds its faults.
    fn start_change(&mut self, fd: RawFd) -> io::Result<(u64, u64)> {
        let inode = self.handle(fd)?;
        self.mutate()?;
        let ops = self.tick(inode);
        Ok((inode, ops))
    }

    /// [`State::start_change`] for a change that may need space: an injected ENOSPC
    /// refuses it before anything is written.
    fn start_growth(&mut self, fd: RawFd) -> io::Result<(u64, u64)> {
        let (inode, ops) = self.start_change(fd)?;
        if self.fault(inode, ops, FAULT_ENOSPC, self.faults.enospc_ppm) {
            self.stats.faults += 1;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok((inode, ops))
    }

    pub(super) fn read(&mut self, fd: RawFd, buf: &mut [u8], offset: u64, allow_short: bool) -> io::Result<usize> {
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

    pub(super) fn write(
        &mut self,
        fd: RawFd,
        bytes: &[u8],
        offset: u64,
        sync: SyncMode,
        allow_short: bool,
    ) -> io::Result<usize> {
        let (inode, ops) = self.start_growth(fd)?;
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

    pub(super) fn make_durable(&mut self, inode: u64) {
        let node = self.inodes.get_mut(&inode).expect("inode exists");
        for p in node.unsynced.drain(..) {
            apply_pending(&mut node.durable, &p);
        }
        // Without writes lost to a failed sync, a file with nothing unsynced reads
        // back exactly what a crash would leave of it.
        debug_assert!(
            node.lost_writes || node.durable == node.data,
            "a synced file's durable bytes match what readers see"
        );
    }

    pub(super) fn sync(&mut self, fd: RawFd) -> io::Result<()> {
        let (inode, ops) = self.start_change(fd)?;
        if self.fault(inode, ops, FAULT_SYNC_EIO, self.faults.sync_eio_ppm) || self.targeted_sync_failure(inode) {
            self.stats.faults += 1;
            self.sync_failed(inode);
            return Err(eio());
        }
        self.make_durable(inode);
        Ok(())
    }

    pub(super) fn set_len(&mut self, fd: RawFd, len: u64, only_grow: bool) -> io::Result<()> {
        let (inode, _) = self.start_growth(fd)?;
        let node = self.inodes.get_mut(&inode).expect("checked by handle");
        if only_grow && node.data.len() as u64 >= len {
            return Ok(());
        }
        let p = Pending { offset: 0, bytes: Vec::new(), set_len: Some(len), forced: false };
        apply_pending(&mut node.data, &p);
        node.unsynced.push(p);
        Ok(())
    }

    /// A hole punched in `[offset, offset + len)`: zeros written over the part of the range
    /// inside the file (a write like any other for syncs and crashes), the length kept.
    pub(super) fn punch_hole(&mut self, fd: RawFd, offset: u64, len: u64) -> io::Result<()> {
        let inode = self.handle(fd)?;
        let file_bytes = self.inodes[&inode].data.len() as u64;
        let end = offset.saturating_add(len).min(file_bytes);
        if offset >= end {
            return Ok(());
        }
        let zeros = vec![0u8; usize::try_from(end - offset).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?];
        self.write(fd, &zeros, offset, SyncMode::None, false)?;
        debug_assert_eq!(self.inodes[&inode].data.len() as u64, file_bytes, "a punched hole keeps the length");
        Ok(())
    }
}

/// An open file of a [`SimDisk`].
struct SimFile {
    disk: SimDisk,
    fd: RawFd,
    /// Opened read-only: changes through it fail with EBADF, as on Linux.
    read_only: bool,
}

impl SimFile {
    /// EBADF for a change through a read-only handle.
    fn writable(&self) -> io::Result<()> {
        if self.read_only { Err(io::Error::from_raw_os_error(libc::EBADF)) } else { Ok(()) }
    }
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

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.disk.lock().read(self.fd, buf, offset, false)
    }

    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.writable()?;
        self.disk.lock().write(self.fd, bytes, offset, SyncMode::None, false).map(|_| ())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.disk.lock().sync(self.fd)
    }

    fn sync_all(&self) -> io::Result<()> {
        self.disk.lock().sync(self.fd)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.writable()?;
        self.disk.lock().set_len(self.fd, len, true)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.writable()?;
        self.disk.lock().set_len(self.fd, len, false)
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.writable()?;
        self.disk.lock().punch_hole(self.fd, offset, len)
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
    fn helper_threads(&self) -> bool {
        false
    }

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
                        lost_writes: false,
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
        let file = SimFile { disk: self.clone(), fd, read_only: flags.read_only };
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
