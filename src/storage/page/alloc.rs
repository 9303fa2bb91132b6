//! Extent allocator of a shard's data file.
//!
//! The file is carved into extents, each a whole number of page units. Free
//! extents are kept by offset (so neighbours coalesce) and by size (so an
//! allocation takes the smallest free extent that fits: best fit keeps large
//! runs for large pages and chunks). When nothing fits, the file grows.
//!
//! Copy-on-write: an extent that the last durable checkpoint references must
//! not be overwritten. A checkpoint therefore *retires* the extents it stops
//! using; they become free only when [`Allocator::checkpoint_durable`] is
//! called after that checkpoint's manifest slot is on disk. Until then a crash
//! recovers the previous checkpoint, whose pages are intact.

use std::collections::{BTreeMap, BTreeSet};

/// A run of the data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Extent {
    /// Byte offset, a multiple of the unit.
    pub offset: u64,
    /// Length in bytes, a non-zero multiple of the unit.
    pub len: u64,
}

impl Extent {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Free-space bookkeeping of one data file; see the module docs.
#[derive(Debug)]
pub struct Allocator {
    unit: u64,
    /// Free extents: offset to length.
    by_offset: BTreeMap<u64, u64>,
    /// Free extents: (length, offset).
    by_len: BTreeSet<(u64, u64)>,
    /// Extents retired by the checkpoint being written; free once it is durable.
    retired: Vec<Extent>,
    /// End of the file in use.
    file_end: u64,
}

impl Allocator {
    /// An allocator for a file whose first `file_end` bytes hold exactly the extents
    /// `used` (the rest of `0..file_end` is free). `unit` is a power of two.
    pub fn new(unit: u64, file_end: u64, used: impl IntoIterator<Item = Extent>) -> Allocator {
        assert!(unit.is_power_of_two());
        let mut used: Vec<Extent> = used.into_iter().collect();
        used.sort();
        let mut a =
            Allocator { unit, by_offset: BTreeMap::new(), by_len: BTreeSet::new(), retired: Vec::new(), file_end };
        let mut at = 0;
        for e in used {
            debug_assert!(
                e.offset % unit == 0 && e.len % unit == 0 && e.len > 0,
                "extents in use are whole units (checked when the checkpoint was loaded)"
            );
            assert!(e.offset >= at && e.end() <= file_end, "overlapping or out-of-file extent {e:?}");
            if e.offset > at {
                a.insert_free(Extent { offset: at, len: e.offset - at });
            }
            at = e.end();
        }
        if file_end > at {
            a.insert_free(Extent { offset: at, len: file_end - at });
        }
        a
    }

    /// An allocator for a file of `file_end` bytes whose free extents are `free` (by
    /// increasing offset, checked by the free list's decoder).
    pub fn with_free(unit: u64, file_end: u64, free: impl IntoIterator<Item = Extent>) -> Allocator {
        assert!(unit.is_power_of_two());
        let mut a =
            Allocator { unit, by_offset: BTreeMap::new(), by_len: BTreeSet::new(), retired: Vec::new(), file_end };
        for e in free {
            assert!(e.end() <= file_end, "a free extent lies inside the file");
            a.insert_free(e);
        }
        a
    }

    /// The extents free once the checkpoint being written is durable (free now, and
    /// retired by it), by increasing offset, neighbours joined.
    pub fn free_after_checkpoint(&self) -> Vec<Extent> {
        let mut all: Vec<Extent> = self
            .by_offset
            .iter()
            .map(|(&offset, &len)| Extent { offset, len })
            .chain(self.retired.iter().copied())
            .collect();
        all.sort();
        let mut out: Vec<Extent> = Vec::with_capacity(all.len());
        for e in all {
            match out.last_mut() {
                Some(last) if last.end() == e.offset => last.len += e.len,
                _ => out.push(e),
            }
        }
        out
    }

    /// Free extents now and retired ones, counted (a bound on the free list's length).
    pub fn extents_free_or_retired(&self) -> usize {
        self.by_offset.len() + self.retired.len()
    }

    /// Takes an extent of `bytes` (whole units) for the next of a run of nodes written in
    /// key order: right after the run's last one (`after`) if the space there is free, so
    /// a scan reads the run's nodes in one sequential read; else at the start of the
    /// largest free extent if it holds at least `RUN_BYTES_MIN`; else where
    /// [`Allocator::allocate`] puts it (the best-fitting hole, so the file does not grow
    /// while holes could take the node).
    pub fn allocate_run(&mut self, bytes: u64, after: Option<u64>) -> Extent {
        /// Smallest free extent a run starts in: one that holds a few dozen nodes.
        const RUN_BYTES_MIN: u64 = 256 << 10;
        let len = self.round(bytes);
        if let Some(at) = after {
            if let Some((&offset, &free_len)) = self.by_offset.range(..=at).next_back() {
                if offset <= at && at + len <= offset + free_len {
                    self.remove_free(offset, free_len);
                    if at > offset {
                        self.insert_free(Extent { offset, len: at - offset });
                    }
                    if offset + free_len > at + len {
                        self.insert_free(Extent { offset: at + len, len: offset + free_len - at - len });
                    }
                    return Extent { offset: at, len };
                }
            }
            if at == self.file_end {
                self.file_end += len;
                return Extent { offset: at, len };
            }
        }
        if let Some(&(free_len, offset)) = self.by_len.iter().next_back().filter(|(l, _)| *l >= RUN_BYTES_MIN.max(len))
        {
            self.remove_free(offset, free_len);
            if free_len > len {
                self.insert_free(Extent { offset: offset + len, len: free_len - len });
            }
            return Extent { offset, len };
        }
        self.allocate(len)
    }

    /// Takes `len` bytes at the end of the file, reusing a free run at its end.
    fn grow(&mut self, len: u64) -> Extent {
        let mut offset = self.file_end;
        if let Some((&last_offset, &last_len)) = self.by_offset.iter().next_back() {
            if last_offset + last_len == self.file_end {
                self.remove_free(last_offset, last_len);
                offset = last_offset;
            }
        }
        debug_assert!(
            self.by_offset.range(offset..).next().is_none(),
            "growth takes only the file's free tail, never an extent in use"
        );
        self.file_end = offset + len;
        Extent { offset, len }
    }

    /// Rounds `bytes` up to whole units.
    pub fn round(&self, bytes: u64) -> u64 {
        debug_assert!(self.unit.is_power_of_two(), "extents are whole units of a power of two");
        bytes.max(1).next_multiple_of(self.unit)
    }

    /// Takes an extent of at least `bytes` (rounded up to whole units).
    pub fn allocate(&mut self, bytes: u64) -> Extent {
        let len = self.round(bytes);
        if let Some(&(free_len, offset)) = self.by_len.range((len, 0)..).next() {
            self.remove_free(offset, free_len);
            if free_len > len {
                self.insert_free(Extent { offset: offset + len, len: free_len - len });
            }
            debug_assert!(offset + len <= self.file_end, "a free extent lies inside the file");
            return Extent { offset, len };
        }
        // Nothing fits: grow the file, reusing a free run at its end.
        self.grow(len)
    }

    /// Marks an extent referenced by the last durable checkpoint as no longer needed by
    /// the next one; it is freed by [`Allocator::checkpoint_durable`].
    pub fn retire(&mut self, extent: Extent) {
        debug_assert!(extent.end() <= self.file_end, "a retired extent lies inside the file");
        debug_assert!(!self.retired.contains(&extent), "an extent is retired once per checkpoint");
        // Retiring a free extent would free it twice once the checkpoint is durable, and
        // hand the same bytes to two owners.
        debug_assert!(
            self.by_offset.range(..extent.end()).next_back().is_none_or(|(&o, &l)| o + l <= extent.offset),
            "a retired extent is in use, never free"
        );
        self.retired.push(extent);
    }

    /// Frees an extent that no durable checkpoint references (one allocated since the
    /// last checkpoint and dropped before the next).
    #[cfg(test)]
    pub fn free_now(&mut self, extent: Extent) {
        self.insert_free(extent);
    }

    /// The checkpoint that retired extents is durable: they are free now.
    pub fn checkpoint_durable(&mut self) {
        debug_assert!(
            self.retired.iter().all(|e| !self.by_offset.contains_key(&e.offset)),
            "a retired extent is still in use until now, never free already"
        );
        for e in std::mem::take(&mut self.retired) {
            self.insert_free(e);
        }
    }

    /// The checkpoint being written failed: its retirements are void (the previous
    /// checkpoint still references those extents).
    pub fn checkpoint_abandoned(&mut self) {
        self.retired.clear();
    }

    /// End of the file in use, in bytes.
    pub fn file_end(&self) -> u64 {
        self.file_end
    }

    /// Free bytes inside the file.
    pub fn free_bytes(&self) -> u64 {
        self.by_offset.values().sum()
    }

    fn remove_free(&mut self, offset: u64, len: u64) {
        let removed = self.by_offset.remove(&offset);
        debug_assert_eq!(removed, Some(len), "the two free lists agree");
        let removed = self.by_len.remove(&(len, offset));
        debug_assert!(removed, "the two free lists agree");
    }

    fn insert_free(&mut self, extent: Extent) {
        debug_assert!(extent.offset % self.unit == 0 && extent.len % self.unit == 0 && extent.len > 0);
        let (mut offset, mut len) = (extent.offset, extent.len);
        if let Some((&prev_offset, &prev_len)) = self.by_offset.range(..offset).next_back() {
            assert!(prev_offset + prev_len <= offset, "double free of {extent:?}");
            if prev_offset + prev_len == offset {
                self.remove_free(prev_offset, prev_len);
                offset = prev_offset;
                len += prev_len;
            }
        }
        if let Some((&next_offset, &next_len)) = self.by_offset.range(offset..).next() {
            assert!(offset + len <= next_offset, "double free of {extent:?}");
            if offset + len == next_offset {
                self.remove_free(next_offset, next_len);
                len += next_len;
            }
        }
        self.by_offset.insert(offset, len);
        self.by_len.insert((len, offset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_fit_split_coalesce_and_growth() {
        let mut a = Allocator::new(1024, 0, []);
        let x = a.allocate(1000);
        let y = a.allocate(3000);
        let z = a.allocate(1024);
        assert_eq!(
            (x, y, z),
            (Extent { offset: 0, len: 1024 }, Extent { offset: 1024, len: 3072 }, Extent { offset: 4096, len: 1024 })
        );
        a.free_now(y);
        // Best fit: a 1 KiB request splits the 3 KiB hole rather than growing the file.
        assert_eq!(a.allocate(1).offset, 1024);
        a.free_now(x);
        a.free_now(Extent { offset: 1024, len: 1024 });
        // x, the split piece and the rest of y coalesce into one 4 KiB run.
        assert_eq!(a.free_bytes(), 4096);
        assert_eq!(a.allocate(4096).offset, 0);
        assert_eq!(a.file_end(), 5120);
    }

    #[test]
    fn retired_extents_wait_for_a_durable_checkpoint() {
        let mut a = Allocator::new(1024, 4096, [Extent { offset: 0, len: 2048 }, Extent { offset: 2048, len: 2048 }]);
        assert_eq!(a.free_bytes(), 0);
        a.retire(Extent { offset: 0, len: 2048 });
        assert_eq!(
            a.allocate(1024).offset,
            4096,
            "a retired extent is never handed out before the checkpoint is durable"
        );
        a.checkpoint_abandoned();
        a.checkpoint_durable();
        assert_eq!(a.free_bytes(), 0);
        a.retire(Extent { offset: 0, len: 2048 });
        a.checkpoint_durable();
        assert_eq!(a.free_bytes(), 2048);
        assert_eq!(a.allocate(2048).offset, 0);
    }

    #[test]
    fn growth_reuses_a_free_tail() {
        let mut a = Allocator::new(1024, 3072, [Extent { offset: 0, len: 1024 }]);
        assert_eq!(a.free_bytes(), 2048);
        let e = a.allocate(4096);
        assert_eq!(e, Extent { offset: 1024, len: 4096 });
        assert_eq!(a.file_end(), 5120);
    }

    #[test]
    fn steady_churn_does_not_grow_the_file() {
        // Allocate and free pages of varying sizes in a loop: the file stays bounded.
        let mut a = Allocator::new(1024, 0, []);
        let mut live = std::collections::VecDeque::new();
        let mut x = 7u64;
        for _ in 0..10_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let size = 1024 * (1 + (x >> 60));
            live.push_back(a.allocate(size));
            if live.len() > 100 {
                let e = live.pop_front().unwrap();
                a.retire(e);
                a.checkpoint_durable();
            }
        }
        let live_bytes: u64 = live.iter().map(|e| e.len).sum();
        assert!(a.file_end() <= 3 * live_bytes, "file {} for {} live bytes", a.file_end(), live_bytes);
    }

    #[test]
    fn runs_are_contiguous_and_start_in_large_free_extents() {
        let mut a =
            Allocator::new(1024, 1 << 20, [Extent { offset: 0, len: 4096 }, Extent { offset: 8192, len: 1024 }]);
        // Free: 4096..8192 (a small hole) and 9216..1 MiB (a large run).
        let first = a.allocate_run(4096, None);
        assert_eq!(first.offset, 9216, "a run starts in the largest free extent, not a small hole");
        let second = a.allocate_run(4096, Some(first.end()));
        assert_eq!(second.offset, first.end(), "the next node follows the last one");
        // At the end of the file a run grows it.
        let mut b = Allocator::new(1024, 0, []);
        let x = b.allocate_run(2048, None);
        let y = b.allocate_run(2048, Some(x.end()));
        assert_eq!((x.offset, y.offset, b.file_end()), (0, 2048, 4096));
        // With no large free extent, a run takes the best-fitting hole, not new space.
        let mut c = Allocator::new(1024, 16384, [Extent { offset: 0, len: 8192 }, Extent { offset: 12288, len: 4096 }]);
        assert_eq!(c.allocate_run(2048, None).offset, 8192);
        assert_eq!(c.file_end(), 16384, "the file does not grow while a hole fits");
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn double_free_is_a_bug() {
        let mut a = Allocator::new(1024, 2048, []);
        a.free_now(Extent { offset: 0, len: 1024 });
    }
}
