//! Pages of records, and chunks for values too large for a page.
//!
//! A page holds up to N records (seed 000's design). Written out, it is padded
//! to a multiple of the page unit (1024 bytes, or the device's O_DIRECT
//! alignment if larger), leaving free space for updates: its capacity is
//! `((used + unit * free_space_factor) / unit) * unit` bytes, so a factor of 2
//! leaves between one and two units free. Once a page holds N records its
//! capacity is fixed; an update that still fits stays in the page, one that
//! does not moves to another page.
//!
//! ```text
//! page header (32 bytes)
//! offset size field
//!      0    4 magic        "RDPG"
//!      4    4 crc32        of bytes 8..used_bytes
//!      8    8 page_id
//!     16    8 lsn          highest record version in the page
//!     24    2 record_count
//!     26    2 flags        bit 0: records start at multiples of 8 (always set by this version)
//!     28    4 used_bytes   header and records; the rest, to the capacity, is zero
//! records from offset 32, each padded with zeros to a multiple of 8 bytes (flag bit 0;
//! without it, as pages written before it, back to back):
//!      0    4 body_len     bytes after this 20-byte header: key, then value or chunk reference
//!      4    8 version      LSN of the write that produced the record
//!     12    4 crc32        of bytes 16..20 of this header, then the body
//!     16    2 key_len
//!     18    1 flags        bit 0: the value is in a chunk (body holds a chunk reference)
//!     19    1 reserved     0
//!     20    . key, then the value (or a 16-byte chunk reference)
//! chunk reference: offset u64, len u32, crc32 u32 of the value
//!
//! chunk: the value alone, zero-padded to the page unit (its length and crc32
//! are in the key directory and the index, which check every read)
//! ```

use super::{get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};

/// Magic of a page.
pub const PAGE_MAGIC: &[u8; 4] = b"RDPG";
/// Bytes of a page header.
pub const PAGE_HEADER_BYTES: usize = 32;
/// Bytes of a record header inside a page.
pub const RECORD_HEADER_BYTES: usize = 20;
/// Bytes of a chunk reference stored in place of a value.
pub const CHUNK_REF_BYTES: usize = 16;
/// Record flag: the value lives in a chunk.
pub const FLAG_CHUNKED: u8 = 1;
/// Page flag: every record starts at a multiple of [`RECORD_ALIGN`] bytes.
pub const PAGE_FLAG_ALIGNED: u16 = 1;
/// Records in a page start at multiples of this (with [`PAGE_FLAG_ALIGNED`]), so a value
/// whose key is 4 more than a multiple of 8 bytes long (a typed table's record key is
/// 20) starts 8-aligned in the page image and can be read in place as a typed record.
pub const RECORD_ALIGN: usize = 8;

/// Capacity of a page holding `used` bytes, in bytes (see the module docs).
pub fn page_capacity(used: usize, unit: usize, free_space_factor: usize) -> usize {
    debug_assert!(unit.is_power_of_two() && free_space_factor >= 1);
    (used + unit * free_space_factor) / unit * unit
}

/// Bytes a record takes in a page, with its padding to [`RECORD_ALIGN`].
pub fn record_bytes(key_len: usize, stored_value_len: usize) -> usize {
    (RECORD_HEADER_BYTES + key_len + stored_value_len).next_multiple_of(RECORD_ALIGN)
}

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

/// A record's value as stored in a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored<'a> {
    /// The value itself.
    Inline(&'a [u8]),
    /// A reference to the chunk holding it.
    Chunk(ChunkRef),
}

/// One record of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRecord<'a> {
    /// Version (LSN of the write).
    pub version: u64,
    /// The key.
    pub key: &'a [u8],
    /// The value, or where it is.
    pub value: Stored<'a>,
}

impl PageRecord<'_> {
    /// Bytes this record takes in a page.
    pub fn bytes(&self) -> usize {
        match self.value {
            Stored::Inline(v) => record_bytes(self.key.len(), v.len()),
            Stored::Chunk(_) => record_bytes(self.key.len(), CHUNK_REF_BYTES),
        }
    }
}

/// Bytes a page with `records` uses (header and records).
pub fn page_used_bytes(records: &[PageRecord<'_>]) -> usize {
    PAGE_HEADER_BYTES + records.iter().map(PageRecord::bytes).sum::<usize>()
}

/// Encodes a page into `out`, whose length is the page's capacity; the bytes after the
/// records are zeroed. Fails if the records do not fit or there are more than 65535.
pub fn encode_page(page_id: u64, records: &[PageRecord<'_>], out: &mut [u8]) -> Result<usize, String> {
    let used = page_used_bytes(records);
    if used > out.len() {
        return Err(format!("{} records need {used} bytes, the page has {}", records.len(), out.len()));
    }
    let count = u16::try_from(records.len()).map_err(|_| "more than 65535 records in a page".to_string())?;
    let lsn = records.iter().map(|r| r.version).max().unwrap_or(0);
    let mut at = PAGE_HEADER_BYTES;
    for r in records {
        let key_len = u16::try_from(r.key.len()).map_err(|_| "key longer than 65535 bytes".to_string())?;
        let start = at;
        let body_start = start + RECORD_HEADER_BYTES;
        out[body_start..body_start + r.key.len()].copy_from_slice(r.key);
        let value_start = body_start + r.key.len();
        let (flags, end) = match r.value {
            Stored::Inline(v) => {
                out[value_start..value_start + v.len()].copy_from_slice(v);
                (0u8, value_start + v.len())
            }
            Stored::Chunk(c) => {
                out[value_start..value_start + CHUNK_REF_BYTES].copy_from_slice(&c.encode());
                (FLAG_CHUNKED, value_start + CHUNK_REF_BYTES)
            }
        };
        let body_len = u32::try_from(end - body_start).map_err(|_| "record body over 4 GiB".to_string())?;
        put_u32(out, start, body_len);
        put_u64(out, start + 4, r.version);
        put_u16(out, start + 16, key_len);
        out[start + 18] = flags;
        out[start + 19] = 0;
        let mut h = crc32fast::Hasher::new();
        h.update(&out[start + 16..start + 20]);
        h.update(&out[body_start..end]);
        put_u32(out, start + 12, h.finalize());
        at = end.next_multiple_of(RECORD_ALIGN);
        out[end..at].fill(0);
    }
    debug_assert_eq!(at, used);
    out[used..].fill(0);
    out[..4].copy_from_slice(PAGE_MAGIC);
    put_u64(out, 8, page_id);
    put_u64(out, 16, lsn);
    put_u16(out, 24, count);
    put_u16(out, 26, PAGE_FLAG_ALIGNED);
    put_u32(out, 28, used as u32);
    let crc = crc32fast::hash(&out[8..used]);
    put_u32(out, 4, crc);
    Ok(used)
}

/// A decoded page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedPage<'a> {
    /// Its id.
    pub page_id: u64,
    /// Highest record version.
    pub lsn: u64,
    /// Bytes used.
    pub used_bytes: usize,
    /// Its records, in stored order.
    pub records: Vec<PageRecord<'a>>,
}

/// Decodes and checks a page image (any length from its used bytes up).
pub fn decode_page(bytes: &[u8]) -> Result<DecodedPage<'_>, String> {
    if bytes.len() < PAGE_HEADER_BYTES {
        return Err("page shorter than its header".into());
    }
    if &bytes[..4] != PAGE_MAGIC {
        return Err("wrong page magic".into());
    }
    let used = get_u32(bytes, 28) as usize;
    if used < PAGE_HEADER_BYTES || used > bytes.len() {
        return Err(format!("used bytes {used} out of bounds"));
    }
    let crc = crc32fast::hash(&bytes[8..used]);
    if crc != get_u32(bytes, 4) {
        return Err("page checksum mismatch".into());
    }
    let count = get_u16(bytes, 24) as usize;
    let page_flags = get_u16(bytes, 26);
    if page_flags & !PAGE_FLAG_ALIGNED != 0 {
        return Err("unknown page flags".into());
    }
    let align = if page_flags & PAGE_FLAG_ALIGNED != 0 { RECORD_ALIGN } else { 1 };
    // Every record takes at least its header: refuse a count the page cannot hold
    // before allocating for it.
    if count * RECORD_HEADER_BYTES > used - PAGE_HEADER_BYTES {
        return Err(format!("record count {count} cannot fit in {used} bytes"));
    }
    let mut records = Vec::with_capacity(count);
    let mut at = PAGE_HEADER_BYTES;
    for i in 0..count {
        if used - at < RECORD_HEADER_BYTES {
            return Err(format!("record {i} header runs past the used bytes"));
        }
        let body_len = get_u32(bytes, at) as usize;
        let version = get_u64(bytes, at + 4);
        let stored_crc = get_u32(bytes, at + 12);
        let key_len = get_u16(bytes, at + 16) as usize;
        let flags = bytes[at + 18];
        let body_start = at + RECORD_HEADER_BYTES;
        let end =
            body_start.checked_add(body_len).filter(|&e| e <= used).ok_or(format!("record {i} runs past the page"))?;
        if key_len > body_len || flags & !FLAG_CHUNKED != 0 || bytes[at + 19] != 0 {
            return Err(format!("record {i} has a bad key length or flags"));
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&bytes[at + 16..at + 20]);
        h.update(&bytes[body_start..end]);
        if h.finalize() != stored_crc {
            return Err(format!("record {i} checksum mismatch"));
        }
        let key = &bytes[body_start..body_start + key_len];
        let rest = &bytes[body_start + key_len..end];
        let value = if flags & FLAG_CHUNKED != 0 {
            if rest.len() != CHUNK_REF_BYTES {
                return Err(format!("record {i} has a malformed chunk reference"));
            }
            Stored::Chunk(ChunkRef::decode(rest))
        } else {
            Stored::Inline(rest)
        };
        records.push(PageRecord { version, key, value });
        at = end.next_multiple_of(align).min(used);
    }
    if at != used {
        return Err(format!("{} bytes after the last record", used - at));
    }
    Ok(DecodedPage { page_id: get_u64(bytes, 8), lsn: get_u64(bytes, 16), used_bytes: used, records })
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

    fn sample<'a>(values: &'a [Vec<u8>]) -> Vec<PageRecord<'a>> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| PageRecord {
                version: 10 + i as u64,
                key: &v[..1],
                value: if i % 3 == 2 {
                    Stored::Chunk(ChunkRef { offset: 4096 * i as u64, len: 9000, crc32: 7 })
                } else {
                    Stored::Inline(&v[1..])
                },
            })
            .collect()
    }

    #[test]
    fn capacity_follows_the_seed_formula() {
        assert_eq!(page_capacity(100, 1024, 2), 2048);
        assert_eq!(page_capacity(1024, 1024, 2), 3072);
        assert_eq!(page_capacity(1023, 1024, 1), 1024);
        assert_eq!(page_capacity(5000, 4096, 1), 8192);
    }

    #[test]
    fn round_trip_and_padding() {
        let values: Vec<Vec<u8>> = (0..7u8).map(|i| vec![b'a' + i; 1 + 30 * i as usize]).collect();
        let records = sample(&values);
        let used = page_used_bytes(&records);
        let mut out = vec![0xAAu8; page_capacity(used, 1024, 2)];
        assert_eq!(encode_page(42, &records, &mut out).unwrap(), used);
        assert!(out[used..].iter().all(|&b| b == 0));
        let page = decode_page(&out).unwrap();
        assert_eq!((page.page_id, page.lsn, page.used_bytes), (42, 16, used));
        assert_eq!(page.records, records);
    }

    #[test]
    fn records_start_aligned_and_unpadded_pages_still_decode() {
        let values: Vec<Vec<u8>> = (0..5u8).map(|i| vec![b'a' + i; 1 + 13 * i as usize]).collect();
        let records = sample(&values);
        let used = page_used_bytes(&records);
        let mut out = vec![0u8; page_capacity(used, 1024, 2)];
        encode_page(3, &records, &mut out).unwrap();
        let page = decode_page(&out).unwrap();
        let mut at = PAGE_HEADER_BYTES;
        for r in &page.records {
            assert_eq!(at % RECORD_ALIGN, 0);
            assert_eq!(r.key.as_ptr() as usize - out.as_ptr() as usize, at + RECORD_HEADER_BYTES);
            at += r.bytes();
        }
        assert_eq!(at, used);
        // A page written back to back (flags 0), as before records were aligned.
        let mut old = vec![0u8; 1024];
        let mut at = PAGE_HEADER_BYTES;
        for r in &records {
            let Stored::Inline(v) = r.value else { continue };
            let body = [r.key, v].concat();
            put_u32(&mut old, at, body.len() as u32);
            put_u64(&mut old, at + 4, r.version);
            put_u16(&mut old, at + 16, r.key.len() as u16);
            old[at + 20..at + 20 + body.len()].copy_from_slice(&body);
            let mut h = crc32fast::Hasher::new();
            h.update(&old[at + 16..at + 20]);
            h.update(&body);
            put_u32(&mut old, at + 12, h.finalize());
            at += 20 + body.len();
        }
        old[..4].copy_from_slice(PAGE_MAGIC);
        put_u16(&mut old, 24, records.iter().filter(|r| matches!(r.value, Stored::Inline(_))).count() as u16);
        put_u32(&mut old, 28, at as u32);
        let crc = crc32fast::hash(&old[8..at]);
        put_u32(&mut old, 4, crc);
        let decoded = decode_page(&old).unwrap();
        let inline: Vec<_> = records.iter().filter(|r| matches!(r.value, Stored::Inline(_))).copied().collect();
        assert_eq!(decoded.records, inline);
    }

    #[test]
    fn every_bit_flip_in_used_bytes_is_caught() {
        let values: Vec<Vec<u8>> = (0..3u8).map(|i| vec![b'k' + i; 12]).collect();
        let records = sample(&values);
        let used = page_used_bytes(&records);
        let mut out = vec![0u8; page_capacity(used, 1024, 1)];
        encode_page(1, &records, &mut out).unwrap();
        for bit in 0..used * 8 {
            let mut bad = out.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_page(&bad).map(|p| p.records != records).unwrap_or(true), "flip of bit {bit} not caught");
        }
    }

    #[test]
    fn too_many_bytes_is_an_error_and_garbage_never_panics() {
        let values = vec![vec![1u8; 2000]];
        let records = sample(&values);
        assert!(encode_page(1, &records, &mut [0u8; 1024]).is_err());
        for len in [0, 3, 31, 32, 100] {
            let _ = decode_page(&vec![0xffu8; len]);
        }
        let mut bogus = vec![0u8; 64];
        bogus[..4].copy_from_slice(PAGE_MAGIC);
        put_u16(&mut bogus, 24, u16::MAX);
        put_u32(&mut bogus, 28, 64);
        assert!(decode_page(&bogus).is_err());
    }

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
