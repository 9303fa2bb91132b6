//! A shard's checkpoint: a two-slot `CHECKPOINT` file pointing at a table blob
//! in the data file.
//!
//! The table blob lists every live page (id, extent, capacity) and every key
//! stored in a page or a chunk (the key directory), so recovery rebuilds the
//! index by reading the blob alone, never the pages.
//!
//! ```text
//! CHECKPOINT: two slots of 4096 bytes; the valid one with the larger generation wins
//! offset size field
//!      0    8 magic           "RDBCKPT1"
//!      8    4 format_version
//!     12    4 shard
//!     16    8 generation
//!     24    8 checkpoint_lsn  every log record <= this is in the pages
//!     32    8 next_page_id
//!     40    8 table_offset    in pages.dat
//!     48    8 table_len       bytes of the blob (before padding)
//!     56    4 table_crc       crc32 of the blob
//!     60    4 page_unit
//!     64    8 file_end        bytes of pages.dat in use
//!     72   20 reserved        zeros
//!     92    4 crc32           of bytes 0..92
//!
//! table blob
//!      0    8 magic           "RDBTABL1"
//!      8    8 page_count
//!     16    8 entry_count
//!     24      page_count pages of 32 bytes:
//!               page_id u64, offset u64, extent_len u32, capacity u32, used u32, records u16, flags u16
//!       .     entry_count entries:
//!               key_len u16, kind u8 (1 page, 2 chunk), reserved u8, version u64,
//!               location u64 (page id, or chunk offset), value_offset u32 (in the page image),
//!               value_len u32, chunk_crc u32 (0 for a page), key
//! ```

use super::{FORMAT_VERSION, get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};

/// Magic of a checkpoint slot.
pub const SLOT_MAGIC: &[u8; 8] = b"RDBCKPT1";
/// Magic of a table blob.
pub const TABLE_MAGIC: &[u8; 8] = b"RDBTABL1";
/// Bytes per slot.
pub const SLOT_BYTES: usize = 4096;
/// Bytes of a page entry in the table.
pub const PAGE_ENTRY_BYTES: usize = 32;
/// Bytes of a key entry in the table, before the key.
pub const KEY_ENTRY_BYTES: usize = 32;
/// Entry kind: the value is in a page.
pub const KIND_PAGE: u8 = 1;
/// Entry kind: the value is in a chunk.
pub const KIND_CHUNK: u8 = 2;

/// What a checkpoint slot says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Owning shard.
    pub shard: u32,
    /// Write generation.
    pub generation: u64,
    /// Every log record with an LSN up to this one is in the pages.
    pub checkpoint_lsn: u64,
    /// Next page id to hand out.
    pub next_page_id: u64,
    /// Offset of the table blob in the data file.
    pub table_offset: u64,
    /// Length of the table blob.
    pub table_len: u64,
    /// crc32 of the table blob.
    pub table_crc: u32,
    /// Page unit in bytes.
    pub page_unit: u32,
    /// Bytes of the data file in use.
    pub file_end: u64,
}

impl Slot {
    /// Encodes into one slot.
    pub fn encode(&self) -> [u8; SLOT_BYTES] {
        let mut out = [0u8; SLOT_BYTES];
        out[..8].copy_from_slice(SLOT_MAGIC);
        put_u32(&mut out, 8, FORMAT_VERSION);
        put_u32(&mut out, 12, self.shard);
        put_u64(&mut out, 16, self.generation);
        put_u64(&mut out, 24, self.checkpoint_lsn);
        put_u64(&mut out, 32, self.next_page_id);
        put_u64(&mut out, 40, self.table_offset);
        put_u64(&mut out, 48, self.table_len);
        put_u32(&mut out, 56, self.table_crc);
        put_u32(&mut out, 60, self.page_unit);
        put_u64(&mut out, 64, self.file_end);
        let crc = crc32fast::hash(&out[..92]);
        put_u32(&mut out, 92, crc);
        out
    }

    /// Decodes one slot.
    pub fn decode(bytes: &[u8]) -> Result<Slot, String> {
        if bytes.len() < 96 || &bytes[..8] != SLOT_MAGIC {
            return Err("wrong magic".into());
        }
        if crc32fast::hash(&bytes[..92]) != get_u32(bytes, 92) {
            return Err("checksum mismatch".into());
        }
        let version = get_u32(bytes, 8);
        if version != FORMAT_VERSION {
            return Err(format!("format version {version}, this build reads {FORMAT_VERSION}"));
        }
        Ok(Slot {
            shard: get_u32(bytes, 12),
            generation: get_u64(bytes, 16),
            checkpoint_lsn: get_u64(bytes, 24),
            next_page_id: get_u64(bytes, 32),
            table_offset: get_u64(bytes, 40),
            table_len: get_u64(bytes, 48),
            table_crc: get_u32(bytes, 56),
            page_unit: get_u32(bytes, 60),
            file_end: get_u64(bytes, 64),
        })
    }
}

/// The newest valid slot of a CHECKPOINT file, or `None` if neither is valid (no
/// checkpoint was ever completed). The reasons each slot failed are returned too.
pub fn newest_slot(file: &[u8]) -> (Option<Slot>, Vec<String>) {
    let mut best: Option<Slot> = None;
    let mut why = Vec::new();
    for (i, slot) in file.chunks(SLOT_BYTES).take(2).enumerate() {
        if slot.iter().all(|&b| b == 0) {
            continue;
        }
        match Slot::decode(slot) {
            Ok(s) if best.is_none_or(|b| s.generation > b.generation) => best = Some(s),
            Ok(_) => {}
            Err(e) => why.push(format!("slot {i}: {e}")),
        }
    }
    (best, why)
}

/// A live page in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageEntry {
    /// Page id.
    pub page_id: u64,
    /// Offset of its extent.
    pub offset: u64,
    /// Length of its extent.
    pub extent_len: u32,
    /// Its capacity (bytes of the image).
    pub capacity: u32,
    /// Bytes used.
    pub used: u32,
    /// Records held.
    pub records: u16,
}

/// Where a key's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLocation {
    /// In page `page_id`, `value_len` bytes at `value_offset` of its image.
    Page {
        /// Page id.
        page_id: u64,
        /// Offset of the value in the page image.
        value_offset: u32,
        /// Value length.
        value_len: u32,
    },
    /// In the chunk at `offset`.
    Chunk {
        /// Chunk offset in the data file.
        offset: u64,
        /// Value length.
        value_len: u32,
        /// crc32 of the value.
        crc32: u32,
    },
}

/// A key of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry<'a> {
    /// The key.
    pub key: &'a [u8],
    /// Its version.
    pub version: u64,
    /// Where its value is.
    pub location: KeyLocation,
}

/// Appends the table blob for `pages` and `keys` to `out`.
pub fn encode_table<'a>(pages: &[PageEntry], keys: impl ExactSizeIterator<Item = KeyEntry<'a>>, out: &mut Vec<u8>) {
    let mut header = [0u8; 24];
    header[..8].copy_from_slice(TABLE_MAGIC);
    put_u64(&mut header, 8, pages.len() as u64);
    put_u64(&mut header, 16, keys.len() as u64);
    out.extend_from_slice(&header);
    for p in pages {
        let mut e = [0u8; PAGE_ENTRY_BYTES];
        put_u64(&mut e, 0, p.page_id);
        put_u64(&mut e, 8, p.offset);
        put_u32(&mut e, 16, p.extent_len);
        put_u32(&mut e, 20, p.capacity);
        put_u32(&mut e, 24, p.used);
        put_u16(&mut e, 28, p.records);
        out.extend_from_slice(&e);
    }
    for k in keys {
        let mut e = [0u8; KEY_ENTRY_BYTES];
        put_u16(&mut e, 0, u16::try_from(k.key.len()).expect("keys are at most 16 KiB"));
        put_u64(&mut e, 4, k.version);
        match k.location {
            KeyLocation::Page { page_id, value_offset, value_len } => {
                e[2] = KIND_PAGE;
                put_u64(&mut e, 12, page_id);
                put_u32(&mut e, 20, value_offset);
                put_u32(&mut e, 24, value_len);
            }
            KeyLocation::Chunk { offset, value_len, crc32 } => {
                e[2] = KIND_CHUNK;
                put_u64(&mut e, 12, offset);
                put_u32(&mut e, 24, value_len);
                put_u32(&mut e, 28, crc32);
            }
        }
        out.extend_from_slice(&e);
        out.extend_from_slice(k.key);
    }
}

/// A decoded table blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table<'a> {
    /// Live pages.
    pub pages: Vec<PageEntry>,
    /// The key directory.
    pub keys: Vec<KeyEntry<'a>>,
}

/// Decodes a table blob, checking every length against the blob.
pub fn decode_table(bytes: &[u8]) -> Result<Table<'_>, String> {
    if bytes.len() < 24 || &bytes[..8] != TABLE_MAGIC {
        return Err("wrong table magic".into());
    }
    let page_count = get_u64(bytes, 8);
    let key_count = get_u64(bytes, 16);
    let rest = (bytes.len() - 24) as u64;
    // Refuse counts the blob cannot hold before allocating for them.
    if page_count
        .saturating_mul(PAGE_ENTRY_BYTES as u64)
        .saturating_add(key_count.saturating_mul(KEY_ENTRY_BYTES as u64))
        > rest
    {
        return Err(format!("{page_count} pages and {key_count} keys cannot fit in {} bytes", bytes.len()));
    }
    let mut at = 24;
    let mut pages = Vec::with_capacity(page_count as usize);
    for _ in 0..page_count {
        let e = &bytes[at..at + PAGE_ENTRY_BYTES];
        pages.push(PageEntry {
            page_id: get_u64(e, 0),
            offset: get_u64(e, 8),
            extent_len: get_u32(e, 16),
            capacity: get_u32(e, 20),
            used: get_u32(e, 24),
            records: get_u16(e, 28),
        });
        at += PAGE_ENTRY_BYTES;
    }
    let mut keys = Vec::with_capacity(key_count as usize);
    for i in 0..key_count {
        if bytes.len() - at < KEY_ENTRY_BYTES {
            return Err(format!("key entry {i} runs past the blob"));
        }
        let e = &bytes[at..at + KEY_ENTRY_BYTES];
        let key_len = get_u16(e, 0) as usize;
        let key_start = at + KEY_ENTRY_BYTES;
        let key = bytes.get(key_start..key_start + key_len).ok_or(format!("key {i} runs past the blob"))?;
        let location = match e[2] {
            KIND_PAGE => {
                KeyLocation::Page { page_id: get_u64(e, 12), value_offset: get_u32(e, 20), value_len: get_u32(e, 24) }
            }
            KIND_CHUNK => {
                KeyLocation::Chunk { offset: get_u64(e, 12), value_len: get_u32(e, 24), crc32: get_u32(e, 28) }
            }
            other => return Err(format!("key {i} has unknown kind {other}")),
        };
        keys.push(KeyEntry { key, version: get_u64(e, 4), location });
        at = key_start + key_len;
    }
    if at != bytes.len() {
        return Err(format!("{} bytes after the last key entry", bytes.len() - at));
    }
    Ok(Table { pages, keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_newest_wins() {
        let a = Slot {
            shard: 1,
            generation: 3,
            checkpoint_lsn: 77,
            next_page_id: 9,
            table_offset: 8192,
            table_len: 100,
            table_crc: 5,
            page_unit: 1024,
            file_end: 16384,
        };
        let b = Slot { generation: 4, checkpoint_lsn: 90, ..a };
        let mut file = Vec::new();
        file.extend_from_slice(&b.encode());
        file.extend_from_slice(&a.encode());
        assert_eq!(newest_slot(&file).0, Some(b));
        file[30] ^= 1;
        let (slot, why) = newest_slot(&file);
        assert_eq!(slot, Some(a));
        assert_eq!(why.len(), 1);
        assert_eq!(newest_slot(&[0u8; 8192]).0, None);
    }

    #[test]
    fn tables_round_trip_and_reject_bad_counts() {
        let pages = [PageEntry { page_id: 4, offset: 0, extent_len: 2048, capacity: 2048, used: 900, records: 3 }];
        let keys = vec![
            KeyEntry {
                key: b"a",
                version: 5,
                location: KeyLocation::Page { page_id: 4, value_offset: 60, value_len: 10 },
            },
            KeyEntry {
                key: b"bb",
                version: 6,
                location: KeyLocation::Chunk { offset: 4096, value_len: 9000, crc32: 1 },
            },
        ];
        let mut blob = Vec::new();
        encode_table(&pages, keys.clone().into_iter(), &mut blob);
        let table = decode_table(&blob).unwrap();
        assert_eq!(table.pages, pages);
        assert_eq!(table.keys, keys);
        let mut bad = blob.clone();
        put_u64(&mut bad, 16, u64::MAX);
        assert!(decode_table(&bad).is_err());
        assert!(decode_table(&blob[..blob.len() - 1]).is_err());
        for len in 0..blob.len() {
            let _ = decode_table(&blob[..len]);
        }
    }
}
