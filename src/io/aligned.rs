//! Heap buffers aligned for O_DIRECT.
//!
//! O_DIRECT needs the memory address, the file offset and the length of every
//! transfer aligned to the device's logical block size. An [`AlignedBuf`] owns
//! a zeroed allocation whose address and capacity are multiples of the
//! alignment it was made with, so a buffer can be handed to the kernel as is.
//! A buffer given to an in-flight operation is owned by the I/O layer's
//! in-flight table until its completion arrives (see `io::uring`), so no
//! caller can free or touch memory the kernel still reads or writes.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;

/// A zeroed heap buffer whose address and capacity are multiples of `align`.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the buffer is a plain owned allocation with no interior sharing; moving it
// between threads moves ownership of the bytes, like a `Vec<u8>`.
unsafe impl Send for AlignedBuf {}
// SAFETY: `&AlignedBuf` only gives out `&[u8]`, which is safe to share.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `capacity` zeroed bytes aligned to `align`.
    ///
    /// `align` must be a power of two and `capacity` a non-zero multiple of it;
    /// both come from the engine's own block size, so a violation is a bug.
    pub fn zeroed(capacity: usize, align: usize) -> AlignedBuf {
        assert!(align.is_power_of_two(), "alignment {align} is not a power of two");
        assert!(capacity > 0 && capacity % align == 0, "capacity {capacity} is not a multiple of {align}");
        let layout = Layout::from_size_align(capacity, align).expect("valid aligned layout");
        // SAFETY: the layout has a non-zero size (asserted above).
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else { std::alloc::handle_alloc_error(layout) };
        AlignedBuf { ptr, layout }
    }

    /// The buffer's capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.layout.size()
    }

    /// The alignment the buffer was made with.
    pub fn align(&self) -> usize {
        self.layout.align()
    }

    /// The whole buffer.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `capacity` initialized (zeroed at allocation) bytes that
        // this value owns; the borrow of `self` keeps them alive and unaliased by `&mut`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    /// The whole buffer, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }

    /// Raw pointer for handing the buffer to the kernel.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated by `alloc_zeroed` with exactly `layout`, and is freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf").field("capacity", &self.capacity()).field("align", &self.align()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        let mut buf = AlignedBuf::zeroed(8192, 4096);
        assert_eq!(buf.as_ptr() as usize % 4096, 0);
        assert!(buf.as_slice().iter().all(|&b| b == 0));
        buf.as_mut_slice()[8191] = 7;
        assert_eq!(buf.as_slice()[8191], 7);
    }
}
