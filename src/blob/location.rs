//! Where a blob lives: the address users keep elsewhere to read it back.
//!
//! A [`Location`] is `(segment, offset, len)`: the segment file number, the byte
//! offset of the blob's record in that file, and the blob's length. Its 20-byte
//! encoding is stable across versions: segment (u32), offset (u64) and len (u64),
//! little-endian, in that order.

#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// The address of one blob in a [`crate::BlobLog`]. Stays valid until its segment is
/// dropped or the trimmed part of its segment covers it.
///
/// ```
/// use ringdb::Location;
///
/// let loc = Location { segment: 3, offset: 4096, len: 1024 };
/// assert_eq!(Location::from_bytes(&loc.to_bytes()), loc);
/// assert_eq!(loc.to_string(), "3:4096+1024");
/// assert_eq!("3:4096+1024".parse::<Location>().unwrap(), loc);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Segment file number.
    pub segment: u32,
    /// Byte offset of the blob's record in the segment file.
    pub offset: u64,
    /// Length of the blob in bytes.
    pub len: u64,
}

impl Location {
    /// Bytes of the encoding returned by [`Location::to_bytes`].
    pub const ENCODED_BYTES: usize = 20;

    /// The stable 20-byte encoding: segment u32, offset u64, len u64, little-endian.
    pub fn to_bytes(&self) -> [u8; Location::ENCODED_BYTES] {
        let mut out = [0u8; Location::ENCODED_BYTES];
        out[..4].copy_from_slice(&self.segment.to_le_bytes());
        out[4..12].copy_from_slice(&self.offset.to_le_bytes());
        out[12..].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    /// Decodes [`Location::to_bytes`]'s encoding.
    pub fn from_bytes(bytes: &[u8; Location::ENCODED_BYTES]) -> Location {
        Location {
            segment: u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")),
            offset: u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes")),
            len: u64::from_le_bytes(bytes[12..].try_into().expect("8 bytes")),
        }
    }
}

impl fmt::Display for Location {
    /// `segment:offset+len`, e.g. `3:4096+1024`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}+{}", self.segment, self.offset, self.len)
    }
}

impl FromStr for Location {
    type Err = Error;

    /// Parses the [`Display`](fmt::Display) form `segment:offset+len`.
    fn from_str(s: &str) -> Result<Location, Error> {
        let bad = || Error::InvalidArgument(format!("{s:?} is not a blob location (segment:offset+len)"));
        let (segment, rest) = s.split_once(':').ok_or_else(bad)?;
        let (offset, len) = rest.split_once('+').ok_or_else(bad)?;
        Ok(Location {
            segment: segment.parse().map_err(|_| bad())?,
            offset: offset.parse().map_err(|_| bad())?,
            len: len.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_stable() {
        let loc = Location { segment: 0x0102_0304, offset: 0x1122_3344_5566_7788, len: 9 };
        let bytes = loc.to_bytes();
        assert_eq!(&bytes[..4], &[4, 3, 2, 1]);
        assert_eq!(bytes[4], 0x88);
        assert_eq!(bytes[12], 9);
        assert_eq!(Location::from_bytes(&bytes), loc);
        assert!("1:2".parse::<Location>().is_err());
    }
}
