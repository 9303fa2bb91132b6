//! The `MANIFEST` file: two fixed slots, the newest valid one wins.
//!
//! Writing alternates between the slots, so a torn write of one slot leaves
//! the other intact.
//!
//! ```text
//! slot i at offset i * SLOT_BYTES, SLOT_BYTES = 4096
//! offset size field
//!      0    8 magic          "RDBMANIF"
//!      8    4 format_version
//!     12    4 shard_count
//!     16    8 generation     +1 per manifest write; the valid slot with the larger wins
//!     24    4 payload_len    bytes of payload (0 in format version 1)
//!     28    4 crc32          over bytes 0..28, then the payload
//!     32    . payload        reserved for checkpoints
//! ```

use super::{FORMAT_VERSION, get_u32, get_u64, put_u32, put_u64};

/// Magic bytes of a manifest slot.
pub const MAGIC: &[u8; 8] = b"RDBMANIF";
/// Bytes per slot.
pub const SLOT_BYTES: usize = 4096;
/// Bytes of a slot's fixed header.
pub const HEADER_BYTES: usize = 32;

/// What a manifest slot says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Format version that wrote it.
    pub format_version: u32,
    /// Number of shards, fixed at creation.
    pub shard_count: u32,
    /// Write generation.
    pub generation: u64,
    /// Checkpoint payload (empty in this format version).
    pub payload: Vec<u8>,
}

impl Manifest {
    /// Encodes into one slot.
    pub fn encode(&self) -> Result<[u8; SLOT_BYTES], String> {
        if self.payload.len() > SLOT_BYTES - HEADER_BYTES {
            return Err("manifest payload does not fit a slot".into());
        }
        let mut out = [0u8; SLOT_BYTES];
        out[..8].copy_from_slice(MAGIC);
        put_u32(&mut out, 8, self.format_version);
        put_u32(&mut out, 12, self.shard_count);
        put_u64(&mut out, 16, self.generation);
        put_u32(&mut out, 24, self.payload.len() as u32);
        out[HEADER_BYTES..HEADER_BYTES + self.payload.len()].copy_from_slice(&self.payload);
        let crc = slot_crc(&out, self.payload.len());
        put_u32(&mut out, 28, crc);
        Ok(out)
    }

    /// Decodes one slot; `Err` says why it is not valid.
    pub fn decode(slot: &[u8]) -> Result<Manifest, String> {
        if slot.len() < HEADER_BYTES {
            return Err("slot is truncated".into());
        }
        if &slot[..8] != MAGIC {
            return Err("wrong magic".into());
        }
        let payload_len = get_u32(slot, 24) as usize;
        if payload_len > slot.len() - HEADER_BYTES {
            return Err("payload length out of bounds".into());
        }
        if slot_crc(slot, payload_len) != get_u32(slot, 28) {
            return Err("checksum mismatch".into());
        }
        Ok(Manifest {
            format_version: get_u32(slot, 8),
            shard_count: get_u32(slot, 12),
            generation: get_u64(slot, 16),
            payload: slot[HEADER_BYTES..HEADER_BYTES + payload_len].to_vec(),
        })
    }

    /// A manifest for a new database.
    pub fn new(shard_count: u32) -> Manifest {
        Manifest { format_version: FORMAT_VERSION, shard_count, generation: 1, payload: Vec::new() }
    }
}

fn slot_crc(slot: &[u8], payload_len: usize) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&slot[..28]);
    hasher.update(&slot[HEADER_BYTES..HEADER_BYTES + payload_len]);
    hasher.finalize()
}

/// Picks the newest valid slot of a whole manifest file. `Err` lists why each slot failed.
pub fn decode_file(bytes: &[u8]) -> Result<Manifest, String> {
    let mut best: Option<Manifest> = None;
    let mut why = Vec::new();
    for (i, slot) in bytes.chunks(SLOT_BYTES).take(2).enumerate() {
        match Manifest::decode(slot) {
            Ok(m) if best.as_ref().is_none_or(|b| m.generation > b.generation) => best = Some(m),
            Ok(_) => {}
            Err(e) => why.push(format!("slot {i}: {e}")),
        }
    }
    best.ok_or_else(|| format!("no valid manifest slot ({})", why.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_valid_slot_wins() {
        let a = Manifest::new(4);
        let mut b = a.clone();
        b.generation = 2;
        let mut file = Vec::new();
        file.extend_from_slice(&a.encode().unwrap());
        file.extend_from_slice(&b.encode().unwrap());
        assert_eq!(decode_file(&file).unwrap().generation, 2);
        file[SLOT_BYTES + 13] ^= 1;
        assert_eq!(decode_file(&file).unwrap().generation, 1);
        file[13] ^= 1;
        assert!(decode_file(&file).is_err());
        assert!(decode_file(&[]).is_err());
    }
}
