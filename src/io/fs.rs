//! The file system as the engine sees it: files, names, directory syncs, the lock.
//!
//! Every file the key-value engine and the blob log touch (log and blob
//! segments, `pages.dat`, the `CHECKPOINT` slots, `MANIFEST`, `LOCK`,
//! quarantine files) is opened, named, renamed, removed, listed and synced
//! through an [`Fs`], and shard and blob-writer I/O goes through the
//! [`super::Io`] that the same backend makes. Two implementations:
//! - [`RealFs`]: a thin wrapper over the calls the engine always made
//!   (`open(2)` with O_DIRECT, `pread`/`pwrite`, `fdatasync`, `fallocate`,
//!   `rename`, `flock`), so the real path does exactly what it did before;
//! - `SimDisk`: the deterministic, fault-injecting disk of the crash tests
//!   (see `io::sim`, compiled with the `sim` feature).
//!
//! A file is an [`FsFile`]; [`FsFile::fd`] is what the shard hands its `Io`
//! (a real descriptor, or the sim disk's handle number, which only its
//! `SimIo` understands).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use nix::fcntl::{FallocateFlags, Flock, FlockArg};

use crate::error::{Error, Result};

/// How a file is opened: for reading and writing unless `read_only`; created mode 0600.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenFlags {
    /// Create the file if it does not exist.
    pub create: bool,
    /// Cut the file to length 0.
    pub truncate: bool,
    /// Open with O_DIRECT.
    pub direct: bool,
    /// Open for reading only (never with `create` or `truncate`).
    pub read_only: bool,
}

impl OpenFlags {
    /// Open an existing file.
    pub const EXISTING: OpenFlags = OpenFlags { create: false, truncate: false, direct: false, read_only: false };
    /// Create if missing, keep the contents.
    pub const CREATE: OpenFlags = OpenFlags { create: true, truncate: false, direct: false, read_only: false };
    /// Create if missing, cut to length 0.
    pub const CREATE_NEW: OpenFlags = OpenFlags { create: true, truncate: true, direct: false, read_only: false };
    /// Open an existing file for reading only.
    pub const READ_ONLY: OpenFlags = OpenFlags { create: false, truncate: false, direct: false, read_only: true };
}

/// An open file.
pub trait FsFile: Send + Sync {
    /// The handle the shard's [`super::Io`] takes for this file.
    fn fd(&self) -> RawFd;
    /// Reads exactly `buf.len()` bytes at `offset` (a read past the end is an error).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Reads at `offset` until `buf` is full or the file ends; returns the bytes read.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `bytes` at `offset`.
    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync`.
    fn sync_all(&self) -> io::Result<()>;
    /// Reserves `len` bytes from offset 0 (`fallocate`); `EOPNOTSUPP` where the file
    /// system has no such call.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Sets the file's length (`ftruncate`): cuts it, or extends it with zeros.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Gives the space of `[offset, offset + len)` back (`fallocate` with
    /// `PUNCH_HOLE | KEEP_SIZE`): the range reads as zeros and the length stays;
    /// `EOPNOTSUPP` where the file system cannot.
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()>;
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// The memory and offset alignments O_DIRECT needs on this file, each at least 512.
    fn direct_io_aligns(&self) -> (usize, usize);
}

/// A shared open file.
pub type FileRef = Arc<dyn FsFile>;

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// A held directory lock; dropping it releases the lock.
pub type LockGuard = Box<dyn std::any::Any + Send + Sync>;

/// The engine's view of the file system; see the module docs.
pub trait Fs: Send + Sync {
    /// Opens (or creates, mode 0600) `path` for reading and writing.
    fn open(&self, path: &Path, flags: OpenFlags) -> io::Result<FileRef>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of the directory `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates the directory `dir` (mode 0700); its parent must exist.
    fn create_dir(&self, dir: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// What `path` names, or `None` if nothing.
    fn kind(&self, path: &Path) -> io::Result<Option<NodeKind>>;
    /// Takes an exclusive lock on the file `path` (created if missing), or fails with
    /// [`Error::Locked`] when another holder has it.
    fn lock(&self, path: &Path) -> Result<LockGuard>;

    /// Whether work started ahead of need (the next log segment's preparation) may run
    /// on a helper thread. The simulated disk answers no, so that every I/O of a shard
    /// reaches it in one order and a seed replays to the same bytes.
    fn helper_threads(&self) -> bool {
        true
    }

    /// The whole contents of the file `path`.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.open(path, OpenFlags::EXISTING)?;
        let len = usize::try_from(file.len()?).map_err(|_| io::Error::other("file larger than memory"))?;
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    }
}

/// Work started ahead of need: running on a helper thread, or already done.
pub enum Ahead<T> {
    /// On the helper thread of this handle.
    Running(std::thread::JoinHandle<T>),
    /// Done on the caller's thread (see [`Fs::helper_threads`]).
    Done(T),
}

impl<T> Ahead<T> {
    /// The work's result once it is done; `None` if its thread panicked.
    pub fn join(self) -> Option<T> {
        match self {
            Ahead::Running(handle) => handle.join().ok(),
            Ahead::Done(result) => Some(result),
        }
    }
}

/// Starts `job` ahead of need: on a helper thread named `name` where `fs` allows it,
/// else at once on this thread. `None` when no thread could be started: the caller then
/// does the work when it needs it.
pub fn run_ahead<T: Send + 'static>(
    fs: &dyn Fs,
    name: String,
    job: impl FnOnce() -> T + Send + 'static,
) -> Option<Ahead<T>> {
    if !fs.helper_threads() {
        return Some(Ahead::Done(job()));
    }
    std::thread::Builder::new().name(name).spawn(job).ok().map(Ahead::Running)
}

/// Makes a new or renamed entry of `dir` durable, as an [`Error`].
pub fn sync_dir(fs: &dyn Fs, dir: &Path) -> Result<()> {
    fs.sync_dir(dir).map_err(|e| Error::io("fsync directory", dir.to_path_buf(), e))
}

/// Opens (or creates) a data file, with O_DIRECT when `direct`. A file system that
/// refuses O_DIRECT gives [`Error::DirectIoUnsupported`].
pub fn open_data_file(fs: &dyn Fs, path: &Path, create: bool, direct: bool) -> Result<FileRef> {
    let flags = OpenFlags { create, truncate: false, direct, read_only: false };
    fs.open(path, flags).map_err(|e| {
        if direct && e.raw_os_error() == Some(libc::EINVAL) {
            Error::DirectIoUnsupported { path: path.to_path_buf(), source: e.into() }
        } else {
            Error::io("open", path.to_path_buf(), e)
        }
    })
}

/// The block size for O_DIRECT transfers on `file`: the larger of its memory and offset
/// alignments and 4096, so blocks never straddle a 4 KiB device sector.
pub fn direct_io_block_bytes(file: &dyn FsFile) -> usize {
    let (mem_align, offset_align) = file.direct_io_aligns();
    mem_align.max(offset_align).max(4096)
}

/// The memory and offset alignments O_DIRECT needs on `file` (`STATX_DIOALIGN`), each at
/// least 512 (4096 when the kernel does not say).
fn statx_direct_io_aligns(file: &File) -> (usize, usize) {
    const STATX_DIOALIGN: u32 = 0x2000;
    // SAFETY: `statx` is a plain-old-data struct; all zeroes is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let empty = c"";
    // SAFETY: the fd is open for the duration of the call, the path is a valid C string,
    // and `stx` is a valid, writable statx buffer.
    let rc =
        unsafe { libc::statx(file.as_raw_fd(), empty.as_ptr(), libc::AT_EMPTY_PATH, STATX_DIOALIGN, &raw mut stx) };
    let sane = |v: u32| v.is_power_of_two() && v <= 65536;
    if rc == 0 && stx.stx_mask & STATX_DIOALIGN != 0 && sane(stx.stx_dio_mem_align) && sane(stx.stx_dio_offset_align) {
        ((stx.stx_dio_mem_align as usize).max(512), (stx.stx_dio_offset_align as usize).max(512))
    } else {
        (4096, 4096)
    }
}

/// The operating system's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

/// A file of [`RealFs`].
#[derive(Debug)]
pub struct RealFile(pub File);

impl FsFile for RealFile {
    fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        super::pread_exact(self.0.as_raw_fd(), buf, offset)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        super::pread_full(self.0.as_raw_fd(), buf, offset)
    }

    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        super::pwrite_all(self.0.as_raw_fd(), bytes, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        super::fdatasync(self.0.as_raw_fd())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        // SAFETY: plain system call on an fd this value owns.
        if unsafe { libc::fallocate(self.0.as_raw_fd(), 0, 0, len) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        let offset = libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        nix::fcntl::fallocate(&self.0, flags, offset, len).map_err(io::Error::from)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn direct_io_aligns(&self) -> (usize, usize) {
        statx_direct_io_aligns(&self.0)
    }
}

impl Fs for RealFs {
    fn open(&self, path: &Path, flags: OpenFlags) -> io::Result<FileRef> {
        debug_assert!(!flags.read_only || !(flags.create || flags.truncate), "a read-only open changes nothing");
        let mut options = OpenOptions::new();
        options.read(true).write(!flags.read_only).create(flags.create).truncate(flags.truncate).mode(0o600);
        if flags.direct {
            options.custom_flags(libc::O_DIRECT | libc::O_CLOEXEC);
        } else {
            options.custom_flags(libc::O_CLOEXEC);
        }
        Ok(Arc::new(RealFile(options.open(path)?)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            // Names that are not UTF-8 are not ringdb's.
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        DirBuilder::new().mode(0o700).create(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn kind(&self, path: &Path) -> io::Result<Option<NodeKind>> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => Ok(Some(NodeKind::Dir)),
            Ok(_) => Ok(Some(NodeKind::File)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn lock(&self, path: &Path) -> Result<LockGuard> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::io("open", path.to_path_buf(), e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            if errno == nix::errno::Errno::EWOULDBLOCK {
                Error::Locked { path: path.to_path_buf() }
            } else {
                Error::io("flock", path.to_path_buf(), std::io::Error::from(errno))
            }
        })?;
        Ok(Box::new(lock))
    }
}
