//! Zstd frame primitives for the blob log: compressing a blob's frames and
//! decompressing one frame. Pure, like the rest of `format`: no I/O, and nothing
//! about the record the frames go into (`format::blob` assembles it).
//!
//! Each frame is a separate zstd frame, so a range read decompresses only the
//! frames it covers. Encoding runs on the appending thread, so compression scales
//! with the callers, not with the one writer thread; each thread keeps its zstd
//! contexts across blobs.

#![forbid(unsafe_code)]

use std::cell::RefCell;

use crate::error::{Error, Result};

thread_local! {
    /// One zstd compression context per thread and level, reused across blobs.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// Compresses each of `frames` into its own zstd frame at `level`, in order.
pub(crate) fn compress_frames(frames: &[&[u8]], level: i32) -> Result<Vec<Vec<u8>>> {
    COMPRESSOR.with(|cell| -> Result<Vec<Vec<u8>>> {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            let c = zstd::bulk::Compressor::new(level)
                .map_err(|e| Error::InvalidArgument(format!("zstd level {level}: {e}")))?;
            *slot = Some((level, c));
        }
        let (_, compressor) = slot.as_mut().expect("set above");
        frames.iter().map(|frame| compressor.compress(frame).map_err(|e| Error::io("zstd compress", None, e))).collect()
    })
}

thread_local! {
    /// One zstd decompression context per thread, reused across frames.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Decompresses one zstd frame that must hold exactly `expected_bytes`, appending it to
/// `out`; `None` if it does not (the caller reports corruption with the frame's place).
pub(crate) fn decompress_frame(stored: &[u8], expected_bytes: usize, out: &mut Vec<u8>) -> Option<()> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().ok()?);
        }
        let decompressor = slot.as_mut().expect("set above");
        let start = out.len();
        out.resize(start + expected_bytes, 0);
        // Straight into the caller's buffer (a `Vec` destination would be written from
        // its start, not appended to).
        let n = decompressor.decompress_to_buffer(stored, &mut out[start..]);
        if n.ok()? != expected_bytes {
            out.truncate(start);
            return None;
        }
        Some(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decompress_back_to_back() {
        let mut out = b"prefix".to_vec();
        for part in [&b"aaaa".repeat(3000)[..], &b"bcd".repeat(100)[..]] {
            let z = zstd::bulk::compress(part, 3).unwrap();
            decompress_frame(&z, part.len(), &mut out).unwrap();
            assert!(decompress_frame(&z, part.len() + 1, &mut Vec::new()).is_none());
        }
        assert_eq!(out.len(), 6 + 12_000 + 300);
        assert!(out.starts_with(b"prefixaaaa") && out.ends_with(b"bcdbcd"));
    }
}
