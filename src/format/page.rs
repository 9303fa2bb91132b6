//! Chunks: values too large for a tree leaf, each in an extent of its own.
//!
//! ```text
//! chunk: the value alone, zero-padded to the page unit (its length and crc32
//! are in the leaf record that references it, which checks every read)
//! chunk reference (in a leaf): offset u64, len u32, crc32 u32 of the value
//! ```

use super::{get_u32, get_u64, put_u32, put_u64};

/// Bytes of a chunk reference stored in place of a value.
pub const CHUNK_REF_BYTES: usize = 16;

/// Where a chunked value lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    /// File offset of the chunk.
    pub offset: u64,
    /// Value length in bytes.
    pub len: u32,
    /// crc32 of the value.
    pub crc32: u32,
}

impl ChunkRef {
    /// The reference's 16 bytes.
    pub fn encode(&self) -> [u8; CHUNK_REF_BYTES] {
        let mut out = [0u8; CHUNK_REF_BYTES];
        put_u64(&mut out, 0, self.offset);
        put_u32(&mut out, 8, self.len);
        put_u32(&mut out, 12, self.crc32);
        out
    }

    /// Reads a reference from 16 bytes.
    pub fn decode(bytes: &[u8]) -> ChunkRef {
        ChunkRef { offset: get_u64(bytes, 0), len: get_u32(bytes, 8), crc32: get_u32(bytes, 12) }
    }
}

/// Bytes a chunk holding `value_len` bytes takes on disk: the value alone, padded to
/// the unit, so that a value of a unit's multiple reads in exactly its own size.
pub fn chunk_bytes(value_len: usize, unit: usize) -> usize {
    value_len.next_multiple_of(unit).max(unit)
}

/// Encodes a chunk into `out` (of length `chunk_bytes`); returns the value's crc32,
/// which the reference keeps.
pub fn encode_chunk(value: &[u8], out: &mut [u8]) -> u32 {
    out[..value.len()].copy_from_slice(value);
    out[value.len()..].fill(0);
    crc32fast::hash(value)
}

/// Decodes and checks a chunk against the reference that points at it (which holds
/// its length and crc32).
pub fn decode_chunk<'a>(bytes: &'a [u8], reference: &ChunkRef) -> Result<&'a [u8], String> {
    let Some(value) = bytes.get(..reference.len as usize) else {
        return Err(format!("chunk of {} bytes read where {} are expected", bytes.len(), reference.len));
    };
    if crc32fast::hash(value) != reference.crc32 {
        return Err("chunk checksum mismatch".into());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_check_their_reference() {
        let value = vec![9u8; 5000];
        let mut out = vec![0u8; chunk_bytes(value.len(), 1024)];
        assert_eq!(out.len(), 5120);
        let crc = encode_chunk(&value, &mut out);
        let reference = ChunkRef { offset: 0, len: 5000, crc32: crc };
        assert_eq!(decode_chunk(&out, &reference).unwrap(), &value[..]);
        assert!(decode_chunk(&out, &ChunkRef { len: 4999, ..reference }).is_err());
        out[100] ^= 1;
        assert!(decode_chunk(&out, &reference).is_err());
    }
}
