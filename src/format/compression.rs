//! Blob frame compression: turning a blob into a blob log record and its frames
//! back into blob bytes. Pure, like the rest of `format`: no I/O.
//!
//! A blob is cut into frames of `2^frame_shift` bytes. Without compression the
//! frames are stored as is (one contiguous payload, so a read returns a slice of
//! the read buffer). With compression each frame is a separate zstd frame, so a
//! range read decompresses only the frames it covers; a blob whose frames do not
//! shrink overall is stored as is, so incompressible data costs nothing. Encoding
//! runs on the appending thread, so compression scales with the callers, not with
//! the one writer thread.

#![forbid(unsafe_code)]

use std::cell::RefCell;

use crate::error::{Error, Result};
use crate::format::blob::{KIND_PLAIN, KIND_ZSTD, encode_record};

thread_local! {
    /// One zstd compression context per thread and level, reused across blobs.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// Encodes `blob` into a record (its transaction and flush fields zero; the writer
/// stamps them). `level` is the zstd level, or `None` for no compression.
pub(crate) fn encode_blob(blob: &[u8], frame_shift: u8, level: Option<i32>) -> Result<Vec<u8>> {
    let frame_bytes = 1usize << frame_shift;
    let plain: Vec<&[u8]> = blob.chunks(frame_bytes).collect();
    let Some(level) = level else {
        return Ok(encode_record(KIND_PLAIN, frame_shift, 0, blob.len() as u64, &plain));
    };
    let compressed = COMPRESSOR.with(|cell| -> Result<Vec<Vec<u8>>> {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            let c = zstd::bulk::Compressor::new(level)
                .map_err(|e| Error::InvalidArgument(format!("zstd level {level}: {e}")))?;
            *slot = Some((level, c));
        }
        let (_, compressor) = slot.as_mut().expect("set above");
        plain.iter().map(|frame| compressor.compress(frame).map_err(|e| Error::io("zstd compress", None, e))).collect()
    })?;
    let stored: usize = compressed.iter().map(Vec::len).sum();
    if stored >= blob.len() {
        return Ok(encode_record(KIND_PLAIN, frame_shift, 0, blob.len() as u64, &plain));
    }
    let frames: Vec<&[u8]> = compressed.iter().map(Vec::as_slice).collect();
    Ok(encode_record(KIND_ZSTD, frame_shift, 0, blob.len() as u64, &frames))
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
    use crate::format::blob::{Decoded, decode_header};

    #[test]
    fn compressible_blobs_shrink_and_random_ones_stay_plain() {
        let text = b"ringdb blob ".repeat(2000);
        let rec = encode_blob(&text, 12, Some(3)).unwrap();
        let Decoded::Header(h) = decode_header(&rec, rec.len() as u64) else { panic!("a header") };
        assert_eq!(h.kind, KIND_ZSTD);
        assert!(h.stored_bytes < text.len() as u64 / 4);
        let mut state = 1u64;
        let noise: Vec<u8> = (0..9000)
            .map(|_| {
                // xorshift64: no pattern zstd can find.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let rec = encode_blob(&noise, 12, Some(3)).unwrap();
        let Decoded::Header(h) = decode_header(&rec, rec.len() as u64) else { panic!("a header") };
        assert_eq!(h.kind, KIND_PLAIN);
    }

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
