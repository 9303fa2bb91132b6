//! Log segment header: the first block of every log segment file.
//!
//! ```text
//! offset size field
//!      0    8 magic          "RDBWALSG"
//!      8    4 format_version
//!     12    4 shard          shard that owns the segment
//!     16    8 segment_seq    sequence number, also the file name (%016x.log)
//!     24    8 segment_bytes  file size
//!     32    4 block_bytes    I/O block size; records start at offset block_bytes
//!     36   24 reserved       zeros
//!     60    4 crc32          over bytes 0..60
//! ```
//! The rest of the first block is zero.

use super::{FORMAT_VERSION, get_u32, get_u64, put_u32, put_u64};

/// Magic bytes at the start of every log segment.
pub const MAGIC: &[u8; 8] = b"RDBWALSG";
/// Bytes of the header that carry data (the rest of the block is zero).
pub const HEADER_BYTES: usize = 64;

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Owning shard.
    pub shard: u32,
    /// Segment sequence number.
    pub segment_seq: u64,
    /// File size in bytes.
    pub segment_bytes: u64,
    /// Block size; first record at this offset.
    pub block_bytes: u32,
}

impl SegmentHeader {
    /// Encodes into `out[..HEADER_BYTES]`.
    pub fn encode(&self, out: &mut [u8]) {
        out[..HEADER_BYTES].fill(0);
        out[..8].copy_from_slice(MAGIC);
        put_u32(out, 8, FORMAT_VERSION);
        put_u32(out, 12, self.shard);
        put_u64(out, 16, self.segment_seq);
        put_u64(out, 24, self.segment_bytes);
        put_u32(out, 32, self.block_bytes);
        let crc = crc32fast::hash(&out[..60]);
        put_u32(out, 60, crc);
    }

    /// Decodes and checks a header.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, String> {
        if bytes.len() < HEADER_BYTES {
            return Err("segment header is truncated".into());
        }
        if &bytes[..8] != MAGIC {
            return Err("segment header has a wrong magic".into());
        }
        let crc = crc32fast::hash(&bytes[..60]);
        if crc != get_u32(bytes, 60) {
            return Err("segment header checksum mismatch".into());
        }
        let version = get_u32(bytes, 8);
        if version != FORMAT_VERSION {
            return Err(format!("segment format version {version}, this build reads {FORMAT_VERSION}"));
        }
        let header = SegmentHeader {
            shard: get_u32(bytes, 12),
            segment_seq: get_u64(bytes, 16),
            segment_bytes: get_u64(bytes, 24),
            block_bytes: get_u32(bytes, 32),
        };
        let block = u64::from(header.block_bytes);
        if !block.is_power_of_two() || !(512..=65536).contains(&block) || header.segment_bytes < 2 * block {
            return Err("segment header has impossible sizes".into());
        }
        Ok(header)
    }
}

/// File name of a segment.
pub fn file_name(segment_seq: u64) -> String {
    format!("{segment_seq:016x}.log")
}

/// Segment sequence number from a file name, if it is one.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".log")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_names() {
        let h = SegmentHeader { shard: 3, segment_seq: 9, segment_bytes: 1 << 20, block_bytes: 4096 };
        let mut buf = [0u8; HEADER_BYTES];
        h.encode(&mut buf);
        assert_eq!(SegmentHeader::decode(&buf).unwrap(), h);
        buf[20] ^= 1;
        assert!(SegmentHeader::decode(&buf).is_err());
        assert_eq!(parse_file_name(&file_name(0xabc)), Some(0xabc));
        assert_eq!(parse_file_name("quarantine.log"), None);
    }
}
