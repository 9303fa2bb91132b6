//! Reads of pages and chunks on the caller's thread.
//!
//! A `get` whose page or chunk is not cached reads it itself, with one
//! positioned read of the data file (O_DIRECT when the store uses it), instead
//! of asking the shard thread: no hand-off and no wake-up on either side, and
//! as many reads in flight as there are callers, which keeps the device queue
//! as deep as the clients make it.
//!
//! Reading without the shard is safe because of copy-on-write: a live page's
//! or chunk's extent is never overwritten. The shard publishes where each live
//! page lies ([`PageLoc`]); a caller that finds its page gone, or reads bytes
//! that are not that page (the page was replaced and its extent reused between
//! the look-up and the read), answers "moved", and the caller looks the key up
//! again. Bytes that fail their checks while the page is still live there are
//! corruption. A chunk is checked against its index entry by the caller (see
//! `read.rs`).
//!
//! What a caller reads it caches itself (see `cache.rs` for why that is safe).

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::page::{chunk_bytes, decode_page};
use crate::io::AlignedBuf;
use crate::io::fs::FileRef;

/// Where a live page lies in the data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageLoc {
    pub offset: u64,
    /// Bytes of its extent (what a read reads).
    pub len: u32,
    /// Bytes of its image (the extent may be longer).
    pub capacity: u32,
}

/// Live pages by id, published by the shard thread for callers.
pub(crate) type PageLocations = Arc<papaya::HashMap<u64, PageLoc, foldhash::fast::RandomState>>;

/// See the module docs.
pub(crate) struct DiskReader {
    file: FileRef,
    path: PathBuf,
    unit: usize,
    mem_align: usize,
    locations: PageLocations,
}

impl DiskReader {
    /// A reader of `file` (the store's data file).
    pub fn new(file: FileRef, path: PathBuf, unit: usize, mem_align: usize, locations: PageLocations) -> DiskReader {
        assert!(unit.is_power_of_two() && mem_align.is_power_of_two(), "O_DIRECT alignments are powers of two");
        DiskReader { file, path, unit, mem_align, locations }
    }

    /// Reads `len` bytes at `offset`; none where the file ends before them, which only a
    /// stale location can ask for and which then fails its checks.
    fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        // Extents are whole page units, so an O_DIRECT read of one is aligned in file
        // offset and length; a misaligned read would fail with EINVAL, not as corruption.
        debug_assert!(
            offset % self.unit as u64 == 0 && len % self.unit == 0,
            "a read covers whole page units of the data file"
        );
        let mut buf = take_buf(len.next_multiple_of(self.mem_align).max(self.mem_align), self.mem_align);
        match self.file.read_exact_at(&mut buf.as_mut_slice()[..len], offset) {
            Ok(()) => Ok(Bytes::from_owner(Pooled(Some(buf))).slice(..len)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(Bytes::new()),
            Err(e) => Err(Error::io("read", self.path.clone(), e)),
        }
    }

    /// The image of live page `page_id`, read from the disk; `None` if the page is
    /// not live (any more).
    pub fn read_page(&self, page_id: u64) -> Result<Option<Bytes>> {
        let Some(loc) = self.location(page_id) else { return Ok(None) };
        debug_assert!(loc.capacity <= loc.len, "a page's image fits inside its extent");
        let raw = self.read_at(loc.offset, loc.len as usize)?;
        let what = if raw.len() < loc.capacity as usize {
            "page extends past the end of the file".to_string()
        } else {
            let image = raw.slice(..loc.capacity as usize);
            match decode_page(&image) {
                Ok(page) if page.page_id == page_id => return Ok(Some(image)),
                Ok(page) => format!("page {} found where page {page_id} should be", page.page_id),
                Err(what) => what,
            }
        };
        // Replaced meanwhile (its extent may hold anything now), or corrupt.
        if self.location(page_id) == Some(loc) {
            Err(Error::Corruption { file: self.path.clone(), offset: loc.offset, what })
        } else {
            Ok(None)
        }
    }

    /// The raw bytes of the chunk of a value of `len` bytes at `offset`, unchecked.
    pub fn read_chunk(&self, offset: u64, len: u32) -> Result<Bytes> {
        self.read_at(offset, chunk_bytes(len as usize, self.unit))
    }

    fn location(&self, page_id: u64) -> Option<PageLoc> {
        self.locations.pin().get(&page_id).copied()
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
