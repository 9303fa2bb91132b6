//! A shard's checkpoint: a two-slot `CHECKPOINT` file naming the root of the
//! shard's tree in the data file, and the data file's free extents.
//!
//! Open reads a slot and the free list, never the tree: its cost does not grow
//! with the key count.
//!
//! ```text
//! CHECKPOINT: two slots of 4096 bytes; the valid one with the larger generation wins
//! offset size field
//!      0    8 magic           "RDBCKPT2"
//!      8    4 format_version
//!     12    4 shard
//!     16    8 generation
//!     24    8 checkpoint_lsn  every log record <= this is in the tree
//!     32    8 next_node_id    node ids (and chunk ids) below it were handed out
//!     40    8 root_id         0: the tree is empty
//!     48    8 root_offset
//!     56    4 root_len
//!     60    1 root_level
//!     61    3 reserved        zeros
//!     64    8 keys            keys in the tree
//!     72    8 free_offset     the free list blob, in pages.dat
//!     80    4 free_len        bytes of the blob (before padding)
//!     84    4 free_crc        crc32 of the blob
//!     88    4 page_unit
//!     92    4 reserved        zero
//!     96    8 file_end        bytes of pages.dat in use
//!    104    8 nodes           nodes in the tree
//!    112    8 log_seq         the log segment writes after checkpoint_lsn went to first;
//!                             it and every segment after it must exist
//!    120    4 reserved        zeros
//!    124    4 crc32           of bytes 0..124
//!
//! free list blob
//!      0    8 magic           "RDBFREE1"
//!      8    8 count
//!     16      count extents of 16 bytes, by increasing offset, not touching:
//!               offset u64, len u64   (whole page units, inside file_end)
//! ```

use super::{FORMAT_VERSION, get_u32, get_u64, put_u32, put_u64};

/// Magic of a checkpoint slot.
pub const SLOT_MAGIC: &[u8; 8] = b"RDBCKPT2";
/// Magic of a free list blob.
pub const FREE_MAGIC: &[u8; 8] = b"RDBFREE1";
/// Bytes per slot.
pub const SLOT_BYTES: usize = 4096;
/// Bytes of a slot covered by its checksum.
const SLOT_CRC_AT: usize = 124;
/// Bytes of an extent in the free list.
pub const FREE_ENTRY_BYTES: usize = 16;

/// What a checkpoint slot says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Owning shard.
    pub shard: u32,
    /// Write generation.
    pub generation: u64,
    /// Every log record with an LSN up to this one is in the tree.
    pub checkpoint_lsn: u64,
    /// Next node id to hand out.
    pub next_node_id: u64,
    /// The root: (id, offset, length); id 0 for an empty tree.
    pub root: (u64, u64, u32),
    /// The root's level (0: a leaf).
    pub root_level: u8,
    /// Keys in the tree.
    pub keys: u64,
    /// Offset of the free list blob in the data file.
    pub free_offset: u64,
    /// Length of the free list blob.
    pub free_len: u32,
    /// crc32 of the free list blob.
    pub free_crc: u32,
    /// Page unit in bytes.
    pub page_unit: u32,
    /// Bytes of the data file in use.
    pub file_end: u64,
    /// Nodes in the tree.
    pub nodes: u64,
    /// The log segment the records after `checkpoint_lsn` start in (or a later one).
    pub log_seq: u64,
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
        put_u64(&mut out, 32, self.next_node_id);
        put_u64(&mut out, 40, self.root.0);
        put_u64(&mut out, 48, self.root.1);
        put_u32(&mut out, 56, self.root.2);
        out[60] = self.root_level;
        put_u64(&mut out, 64, self.keys);
        put_u64(&mut out, 72, self.free_offset);
        put_u32(&mut out, 80, self.free_len);
        put_u32(&mut out, 84, self.free_crc);
        put_u32(&mut out, 88, self.page_unit);
        put_u64(&mut out, 96, self.file_end);
        put_u64(&mut out, 104, self.nodes);
        put_u64(&mut out, 112, self.log_seq);
        let crc = crc32fast::hash(&out[..SLOT_CRC_AT]);
        put_u32(&mut out, SLOT_CRC_AT, crc);
        out
    }

    /// Decodes one slot.
    pub fn decode(bytes: &[u8]) -> Result<Slot, String> {
        if bytes.len() < SLOT_CRC_AT + 4 || &bytes[..8] != SLOT_MAGIC {
            // A valid slot of format 2 (its own magic and checksum) is an older database,
            // not damage.
            if bytes.len() >= 96 && &bytes[..8] == b"RDBCKPT1" && crc32fast::hash(&bytes[..92]) == get_u32(bytes, 92) {
                return Err(format!(
                    "a checkpoint of an older format (format {}); this build reads format {FORMAT_VERSION}",
                    get_u32(bytes, 8)
                ));
            }
            return Err("wrong magic".into());
        }
        if crc32fast::hash(&bytes[..SLOT_CRC_AT]) != get_u32(bytes, SLOT_CRC_AT) {
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
            next_node_id: get_u64(bytes, 32),
            root: (get_u64(bytes, 40), get_u64(bytes, 48), get_u32(bytes, 56)),
            root_level: bytes[60],
            keys: get_u64(bytes, 64),
            free_offset: get_u64(bytes, 72),
            free_len: get_u32(bytes, 80),
            free_crc: get_u32(bytes, 84),
            page_unit: get_u32(bytes, 88),
            file_end: get_u64(bytes, 96),
            nodes: get_u64(bytes, 104),
            log_seq: get_u64(bytes, 112),
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

/// Bytes of a free list blob of `count` extents.
pub fn free_list_bytes(count: usize) -> usize {
    16 + count * FREE_ENTRY_BYTES
}

/// Encodes free extents `(offset, len)` (by increasing offset) as a free list blob.
pub fn encode_free_list(extents: &[(u64, u64)], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(FREE_MAGIC);
    out.extend_from_slice(&(extents.len() as u64).to_le_bytes());
    for &(offset, len) in extents {
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
}

/// Decodes a free list blob, checking that its extents are whole units of `unit`,
/// non-empty, in increasing order without touching or overlapping, and inside
/// `file_end`.
pub fn decode_free_list(bytes: &[u8], unit: u64, file_end: u64) -> Result<Vec<(u64, u64)>, String> {
    if bytes.len() < 16 || &bytes[..8] != FREE_MAGIC {
        return Err("wrong free list magic".into());
    }
    let count = get_u64(bytes, 8);
    if usize::try_from(count).ok().and_then(|c| c.checked_mul(FREE_ENTRY_BYTES)).is_none_or(|b| b != bytes.len() - 16) {
        return Err(format!("free list of {count} extents in {} bytes", bytes.len()));
    }
    let mut out = Vec::with_capacity(bytes.len() / FREE_ENTRY_BYTES);
    let mut at_least = 0u64;
    for entry in bytes[16..].chunks_exact(FREE_ENTRY_BYTES) {
        let (offset, len) = (get_u64(entry, 0), get_u64(entry, 8));
        let end = offset.checked_add(len).ok_or("free extent overflows")?;
        if len == 0 || offset % unit != 0 || len % unit != 0 || offset < at_least || end > file_end {
            return Err(format!("impossible free extent at {offset} of {len} bytes"));
        }
        // Touching extents would have been one.
        at_least = end + 1;
        out.push((offset, len));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Slot {
        Slot {
            shard: 3,
            generation: 9,
            checkpoint_lsn: 1234,
            next_node_id: 77,
            root: (76, 8192, 4096),
            root_level: 2,
            keys: 1_000_000,
            free_offset: 65536,
            free_len: 48,
            free_crc: 0xdead_beef,
            page_unit: 1024,
            file_end: 1 << 30,
            nodes: 300,
            log_seq: 12,
        }
    }

    #[test]
    fn slots_round_trip_and_the_newest_wins() {
        let a = slot();
        assert_eq!(Slot::decode(&a.encode()).unwrap(), a);
        let b = Slot { generation: 10, ..a };
        let mut file = vec![0u8; 2 * SLOT_BYTES];
        file[..SLOT_BYTES].copy_from_slice(&b.encode());
        file[SLOT_BYTES..].copy_from_slice(&a.encode());
        assert_eq!(newest_slot(&file).0, Some(b));
        file[5] ^= 1;
        let (best, why) = newest_slot(&file);
        assert_eq!(best, Some(a));
        assert_eq!(why.len(), 1);
        for bit in 0..(SLOT_CRC_AT + 4) * 8 {
            let mut bad = a.encode();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(Slot::decode(&bad).is_err(), "flip of bit {bit} not caught");
        }
    }

    #[test]
    fn an_older_format_is_named() {
        let mut old = [0u8; SLOT_BYTES];
        old[..8].copy_from_slice(b"RDBCKPT1");
        put_u32(&mut old, 8, 2);
        let crc = crc32fast::hash(&old[..92]);
        put_u32(&mut old, 92, crc);
        assert!(Slot::decode(&old).unwrap_err().contains("older format"));
        // The same bytes damaged are not an older format, nor is a damaged current slot.
        old[20] ^= 1;
        assert!(!Slot::decode(&old).unwrap_err().contains("older format"));
        let mut flipped = slot().encode();
        flipped[7] ^= 4;
        assert!(!Slot::decode(&flipped).unwrap_err().contains("older format"));
    }

    #[test]
    fn free_lists_round_trip_and_bad_ones_are_refused() {
        let extents = vec![(0, 1024), (4096, 2048), (10240, 1024)];
        let mut blob = Vec::new();
        encode_free_list(&extents, &mut blob);
        assert_eq!(blob.len(), free_list_bytes(3));
        assert_eq!(decode_free_list(&blob, 1024, 16384).unwrap(), extents);
        assert!(decode_free_list(&blob, 1024, 10240).is_err(), "past the file's end");
        for bad in [vec![(0, 1024), (1024, 1024)], vec![(1024, 1024), (0, 1024)], vec![(0, 0)], vec![(100, 1024)]] {
            encode_free_list(&bad, &mut blob);
            assert!(decode_free_list(&blob, 1024, 1 << 20).is_err(), "{bad:?}");
        }
        assert!(decode_free_list(&blob[..20], 1024, 1 << 20).is_err());
        assert!(decode_free_list(&[0xff; 40], 1024, 1 << 20).is_err());
    }
}
