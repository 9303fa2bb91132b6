//! Reads of tree nodes and chunks on the caller's thread.
//!
//! A `get` whose node or chunk is not cached reads it itself, with one
//! positioned read of the data file (O_DIRECT when the store uses it), instead
//! of asking the shard thread: no hand-off and no wake-up on either side, and
//! as many reads in flight as there are callers, which keeps the device queue
//! as deep as the clients make it.
//!
//! Reading without the shard is safe because of copy-on-write: a node or chunk
//! the newest durable checkpoint references is never overwritten. A reader
//! that holds an older root may find the extent reused (its node freed by a
//! later checkpoint); the node's id (in its header, and in the reference that
//! led there) or the chunk's checksum tells, and the reader starts again from
//! the newest root (`reader.rs`).
//!
//! What a caller reads it caches itself (see `cache.rs` for why that is safe).

use std::cell::RefCell;
use std::path::PathBuf;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::page::chunk_bytes;
use crate::format::tree::{NodeRef, check_node};
use crate::io::AlignedBuf;
use crate::io::fs::FileRef;

/// See the module docs.
pub(crate) struct DiskReader {
    file: FileRef,
    path: PathBuf,
    unit: usize,
    mem_align: usize,
}

impl DiskReader {
    /// A reader of `file` (the store's data file).
    pub fn new(file: FileRef, path: PathBuf, unit: usize, mem_align: usize) -> DiskReader {
        assert!(unit.is_power_of_two() && mem_align.is_power_of_two(), "O_DIRECT alignments are powers of two");
        DiskReader { file, path, unit, mem_align }
    }

    /// The data file's path.
    pub fn path(&self) -> &PathBuf {
        &self.path
    }

    /// Reads `len` bytes at `offset`; none where the file ends before them, which only a
    /// stale reference can ask for and which then fails its checks.
    fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        // Extents are whole page units, so an O_DIRECT read of one is aligned in file
        // offset and length; a misaligned read would fail with EINVAL, not as corruption.
        if offset % self.unit as u64 != 0 || len % self.unit != 0 || len == 0 {
            return Ok(Bytes::new());
        }
        let mut buf = take_buf(len.next_multiple_of(self.mem_align).max(self.mem_align), self.mem_align);
        match self.file.read_exact_at(&mut buf.as_mut_slice()[..len], offset) {
            Ok(()) => Ok(Bytes::from_owner(Pooled(Some(buf))).slice(..len)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(Bytes::new()),
            Err(e) => Err(Error::io("read", self.path.clone(), e)),
        }
    }

    /// The image of `node`, read from the disk and checked; `Ok(Err(what))` if the bytes
    /// there are not that node (freed and reused, or damaged: the caller tells which).
    pub fn read_node(&self, node: &NodeRef) -> Result<std::result::Result<Bytes, String>> {
        let raw = self.read_at(node.offset, node.len as usize)?;
        if raw.len() < node.len as usize {
            return Ok(Err(format!("node {} lies past the end of the file", node.id)));
        }
        Ok(match check_node(&raw) {
            Ok(info) if info.id == node.id => Ok(raw),
            Ok(info) => Err(format!("node {} found where node {} should be", info.id, node.id)),
            Err(what) => Err(format!("node {}: {what}", node.id)),
        })
    }

    /// Reads `nodes` ahead, each run of adjacent extents (up to 1 MiB) in one read, and
    /// returns the images that check (checksum and id); the rest are left out, for the
    /// reader's own load to read again and report.
    pub fn read_nodes_ahead(&self, nodes: &[NodeRef]) -> Vec<(u64, Bytes)> {
        const RUN_BYTES_MAX: u64 = 1 << 20;
        let mut out = Vec::with_capacity(nodes.len());
        let mut at = 0;
        while at < nodes.len() {
            let start = nodes[at].offset;
            let mut end = start + u64::from(nodes[at].len);
            let mut next = at + 1;
            while next < nodes.len()
                && nodes[next].offset == end
                && end - start + u64::from(nodes[next].len) <= RUN_BYTES_MAX
            {
                end += u64::from(nodes[next].len);
                next += 1;
            }
            if let Ok(raw) = self.read_at(start, (end - start) as usize) {
                for node in &nodes[at..next] {
                    let from = (node.offset - start) as usize;
                    let Some(image) = raw.get(from..from + node.len as usize) else { continue };
                    if check_node(image).is_ok_and(|info| info.id == node.id) {
                        // Each node in a buffer of its own: a slice of the run would keep
                        // the whole run alive while the cache keeps any of its nodes.
                        let image = if next - at == 1 {
                            raw.slice(from..from + node.len as usize)
                        } else {
                            super::store::own_copy(image)
                        };
                        out.push((node.id, image));
                    }
                }
            }
            at = next;
        }
        out
    }

    /// The raw bytes of the chunk of a value of `len` bytes at `offset`, unchecked.
    pub fn read_chunk(&self, offset: u64, len: u32) -> Result<Bytes> {
        self.read_at(offset, chunk_bytes(len as usize, self.unit))
    }
}

/// Read buffers a thread keeps for reuse, at most.
const FREE_BUFS_MAX: usize = 64;
/// Largest buffer kept for reuse, in bytes.
const FREE_BUF_BYTES_MAX: usize = 64 << 10;

thread_local! {
    /// Buffers of reads whose images were dropped on this thread, for the next reads:
    /// an aligned allocation per read costs more than the rest of a cached read.
    static FREE_BUFS: RefCell<Vec<AlignedBuf>> = const { RefCell::new(Vec::new()) };
}

fn take_buf(capacity: usize, align: usize) -> AlignedBuf {
    debug_assert!(capacity % align == 0 && capacity > 0, "read buffers are whole, non-empty alignment units");
    let reused = FREE_BUFS
        .try_with(|free| {
            let mut free = free.try_borrow_mut().ok()?;
            let at = free.iter().position(|b| b.capacity() == capacity && b.align() == align)?;
            Some(free.swap_remove(at))
        })
        .ok()
        .flatten();
    reused.unwrap_or_else(|| AlignedBuf::zeroed(capacity, align))
}

/// A read's buffer, given back to the dropping thread's free list when the last
/// `Bytes` of it goes. Its bytes past what the read filled may be an earlier read's;
/// they are never exposed (the image is sliced to what was read).
struct Pooled(Option<AlignedBuf>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], AlignedBuf::as_slice)
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(buf) = self.0.take() else { return };
        if buf.capacity() > FREE_BUF_BYTES_MAX {
            return;
        }
        // If the thread's list is gone (thread exit) or busy, the buffer is simply freed.
        let _ = FREE_BUFS.try_with(move |free| {
            if let Ok(mut free) = free.try_borrow_mut()
                && free.len() < FREE_BUFS_MAX
            {
                free.push(buf);
            }
        });
    }
}
