//! Blob log segments: the header block and the blob record.
//!
//! A blob segment file (`%08x.blob`, the segment number in hex) starts with one
//! header block of `block_bytes`, followed by blob records from offset
//! `block_bytes` on, each starting at a multiple of [`RECORD_ALIGN`]. The bytes
//! after the last record are zero: segments are preallocated with `fallocate`
//! (unwritten extents read as zeros) and a trimmed or torn region is zeroed.
//!
//! Header block:
//! ```text
//! offset size field           (identity slot, written once at creation)
//!      0    8 magic           "RDBBLOBS"
//!      8    4 format_version
//!     12    4 segment         segment number, also the file name
//!     16    8 segment_bytes   size allocated at creation
//!     24    4 block_bytes     I/O block size; the first record is at block_bytes
//!     28   32 reserved        zeros
//!     60    4 crc32           over bytes 0..60
//!
//! offset size field           (state slots at 512 and 1024, the newer valid one wins)
//!      0    8 magic           "RDBBLOBT"
//!      8    8 generation      incremented by every state write
//!     16    8 data_start      first live byte (block_bytes, or where a left trim stopped)
//!     24    8 sealed_end      end of the last record once the segment is immutable; 0 while open
//!     32   28 reserved        zeros
//!     60    4 crc32           over bytes 0..60
//! ```
//! Two state slots in different sectors let a state write be torn without losing
//! the previous state: the writer always rewrites the older slot.
//!
//! Blob record (at a multiple of 8):
//! ```text
//! offset size field
//!      0    1 kind            1 = stored as is, 2 = zstd frames
//!      1    1 frame_shift     log2 of the uncompressed frame size (12..=24)
//!      2    1 flags           bit 0: RECORD_FLAG_UNSYNCED, written under Durability::None
//!      3    1 reserved        zero
//!      4    4 batch_left      records after this one in the same transaction (0: last)
//!      8    8 blob_bytes      length of the blob
//!     16    8 stored_bytes    payload bytes after the frame index
//!     24    4 flush_seq       number of the flush that wrote the record (wrapping)
//!     28    4 meta_crc        crc32 of bytes 0..28 and of the frame index
//!     32  8*n frame index     per frame: stored_len u32, crc32 u32 of the stored frame
//!      …      payload         the frames, back to back; then zeros to a multiple of 8
//! ```
//! `n = ceil(blob_bytes / 2^frame_shift)`; every frame but the last holds exactly
//! `2^frame_shift` blob bytes, so the frames holding a byte range are found by
//! division, and a range read checks and decompresses only those frames.
//!
//! Bytes 64..72 of the header block of a segment created by a log that keeps a
//! manifest hold [`MANIFEST_MARK`] (zeros in older segments): a log whose segments
//! carry the mark but whose manifest is gone has lost it.
//!
//! The manifest (`SEGMENTS`, see [`BlobManifest`]) says which segments must exist
//! and how far each one's records are known to reach. The file is two slots of
//! equal size (a multiple of 4096); each write goes to the older slot, then
//! `fdatasync`, so a torn write leaves the previous state readable. A slot:
//! ```text
//! offset size field
//!      0    8 magic           "RDBBLOGM"
//!      8    4 format_version
//!     12    4 count           entries that follow
//!     16    8 generation      incremented by every write; the newer valid slot wins
//!     24    4 next_segment    the next segment number to create; no lower one is ever created again
//!     28    4 reserved        zero
//!     32 24*n entries         per segment, ascending:
//!                               segment u32, flags u32 (bit 0: sealed; bit 1: the open
//!                               segment's writer closed cleanly; bit 2: its file is
//!                               lost, accepted by `accept_lost_blobs`),
//!                               end u64 (records known durable up to here),
//!                               cut_end u64 (end of a tail cut by recovery; 0: none)
//!      …    4 crc32           over everything before it; then zeros to the slot's end
//! ```

use super::compression::{compress_frames, decompress_frame};
use super::{BLOB_FORMAT_VERSION as FORMAT_VERSION, get_u32, get_u64, put_u32, put_u64};
use crate::error::Result as CrateResult;

/// Magic bytes at the start of every blob segment.
pub const MAGIC: &[u8; 8] = b"RDBBLOBS";
/// Magic bytes of a state slot.
pub const STATE_MAGIC: &[u8; 8] = b"RDBBLOBT";
/// Bytes of the identity slot and of each state slot.
pub const SLOT_BYTES: usize = 64;
/// Offsets of the two state slots in the header block.
pub const STATE_SLOT_OFFSETS: [usize; 2] = [512, 1024];
/// Bytes of a record header, before its frame index.
pub const RECORD_HEADER_BYTES: usize = 32;
/// Bytes of one frame index entry.
pub const FRAME_ENTRY_BYTES: usize = 8;
/// Records start at multiples of this.
pub const RECORD_ALIGN: usize = 8;
/// Record kind: frames stored as is.
pub const KIND_PLAIN: u8 = 1;
/// Record kind: each frame compressed with zstd.
pub const KIND_ZSTD: u8 = 2;
/// Record flag: written by a flush that did not wait for stable storage
/// (`Durability::None`), so a crash may have kept it while losing an earlier flush.
pub const RECORD_FLAG_UNSYNCED: u8 = 1;
/// Smallest frame shift accepted (4 KiB frames).
pub const FRAME_SHIFT_MIN: u8 = 12;
/// Largest frame shift accepted (16 MiB frames).
pub const FRAME_SHIFT_MAX: u8 = 24;

/// Marks the header block of a segment whose log keeps a manifest (at [`MANIFEST_MARK_OFFSET`]).
pub const MANIFEST_MARK: &[u8; 8] = b"RDBBMARK";
/// Offset of [`MANIFEST_MARK`] in a segment's header block (between the identity slot and
/// the first state slot).
pub const MANIFEST_MARK_OFFSET: usize = 64;
/// Magic bytes of a manifest slot.
pub const MANIFEST_MAGIC: &[u8; 8] = b"RDBBLOGM";
/// Bytes of a manifest slot before its entries.
pub const MANIFEST_HEADER_BYTES: usize = 32;
/// Bytes of one manifest entry.
pub const MANIFEST_ENTRY_BYTES: usize = 24;
/// Manifest slot sizes are multiples of this.
pub const MANIFEST_SLOT_ALIGN: usize = 4096;

/// What a blob log's manifest says of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Segment number.
    pub segment: u32,
    /// Whether the segment is immutable.
    pub sealed: bool,
    /// For the open segment: its writer closed cleanly, so no blob was acknowledged past
    /// `end`. Cleared while a writer runs.
    pub closed: bool,
    /// The segment's file was lost and the log opened anyway (`accept_lost_blobs`): its
    /// blobs read as corruption until the segment is dropped.
    pub lost: bool,
    /// Its records are known to reach this offset on stable storage: the sealed end, or
    /// for the open segment the end synced when the log last opened, rotated or closed.
    pub end: u64,
    /// End of a torn tail that recovery cut from this segment (0: none): blobs between
    /// `end` and here were lost in a crash.
    pub cut_end: u64,
}

/// A blob log's manifest: the segments that must exist (ascending) and the next
/// segment number.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlobManifest {
    /// Incremented by every write.
    pub generation: u64,
    /// The next segment number to create; every segment below it was created once.
    pub next_segment: u32,
    /// The segments, ascending by number.
    pub entries: Vec<ManifestEntry>,
}

impl BlobManifest {
    /// Bytes of the encoded slot, before padding.
    pub fn encoded_bytes(&self) -> usize {
        MANIFEST_HEADER_BYTES + self.entries.len() * MANIFEST_ENTRY_BYTES + 4
    }

    /// The entry of `segment`, if listed.
    pub fn entry(&self, segment: u32) -> Option<&ManifestEntry> {
        self.entries.binary_search_by_key(&segment, |e| e.segment).ok().map(|i| &self.entries[i])
    }

    /// Encodes into a slot of `slot_bytes` (at least [`BlobManifest::encoded_bytes`]).
    pub fn encode(&self, slot_bytes: usize) -> Vec<u8> {
        assert!(slot_bytes >= self.encoded_bytes(), "the manifest fits its slot");
        debug_assert!(self.entries.windows(2).all(|w| w[0].segment < w[1].segment), "entries ascend");
        let mut out = vec![0u8; slot_bytes];
        out[..8].copy_from_slice(MANIFEST_MAGIC);
        put_u32(&mut out, 8, FORMAT_VERSION);
        put_u32(&mut out, 12, u32::try_from(self.entries.len()).expect("fewer than 2^32 segments"));
        put_u64(&mut out, 16, self.generation);
        put_u32(&mut out, 24, self.next_segment);
        for (i, e) in self.entries.iter().enumerate() {
            let at = MANIFEST_HEADER_BYTES + i * MANIFEST_ENTRY_BYTES;
            put_u32(&mut out, at, e.segment);
            let flags = u32::from(e.sealed) | u32::from(e.closed) << 1 | u32::from(e.lost) << 2;
            put_u32(&mut out, at + 4, flags);
            put_u64(&mut out, at + 8, e.end);
            put_u64(&mut out, at + 16, e.cut_end);
        }
        let crc_at = self.encoded_bytes() - 4;
        let crc = crc32fast::hash(&out[..crc_at]);
        put_u32(&mut out, crc_at, crc);
        out
    }

    /// Decodes one slot; `Err` says why it is not a valid manifest.
    pub fn decode(slot: &[u8]) -> Result<BlobManifest, String> {
        if slot.len() < MANIFEST_HEADER_BYTES + 4 || &slot[..8] != MANIFEST_MAGIC {
            return Err("blob log manifest slot has a wrong magic".into());
        }
        let count = get_u32(slot, 12) as usize;
        let crc_at = count
            .checked_mul(MANIFEST_ENTRY_BYTES)
            .and_then(|b| b.checked_add(MANIFEST_HEADER_BYTES))
            .filter(|&at| at + 4 <= slot.len())
            .ok_or("blob log manifest slot claims more entries than it holds")?;
        if crc32fast::hash(&slot[..crc_at]) != get_u32(slot, crc_at) {
            return Err("blob log manifest slot checksum mismatch".into());
        }
        let version = get_u32(slot, 8);
        if version != FORMAT_VERSION {
            return Err(format!("blob log manifest format version {version}, this build reads {FORMAT_VERSION}"));
        }
        let entries: Vec<ManifestEntry> = (0..count)
            .map(|i| {
                let at = MANIFEST_HEADER_BYTES + i * MANIFEST_ENTRY_BYTES;
                ManifestEntry {
                    segment: get_u32(slot, at),
                    sealed: get_u32(slot, at + 4) & 1 == 1,
                    closed: get_u32(slot, at + 4) & 2 == 2,
                    lost: get_u32(slot, at + 4) & 4 == 4,
                    end: get_u64(slot, at + 8),
                    cut_end: get_u64(slot, at + 16),
                }
            })
            .collect();
        let next_segment = get_u32(slot, 24);
        let ascending = entries.windows(2).all(|w| w[0].segment < w[1].segment);
        if !ascending || entries.last().is_some_and(|e| e.segment >= next_segment) {
            return Err("blob log manifest lists segments out of order or past its next segment".into());
        }
        Ok(BlobManifest { generation: get_u64(slot, 16), next_segment, entries })
    }

    /// The newer valid slot of a manifest file (two slots of half its length each).
    pub fn newest(file: &[u8]) -> Result<BlobManifest, String> {
        let half = file.len() / 2;
        if file.len() < 2 * MANIFEST_SLOT_ALIGN || half % MANIFEST_SLOT_ALIGN != 0 || file.len() != 2 * half {
            return Err(format!("blob log manifest is {} bytes, not two slots of 4096-byte blocks", file.len()));
        }
        match (BlobManifest::decode(&file[..half]), BlobManifest::decode(&file[half..])) {
            (Ok(a), Ok(b)) => Ok(if b.generation > a.generation { b } else { a }),
            (Ok(m), Err(_)) | (Err(_), Ok(m)) => Ok(m),
            (Err(a), Err(_)) => Err(format!("no valid slot in the blob log manifest ({a})")),
        }
    }

    /// Index of the slot this manifest is written to (generations alternate slots).
    pub fn slot_index(&self) -> usize {
        (self.generation % 2) as usize
    }
}

/// The identity slot of a segment's header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobSegmentHeader {
    /// Segment number.
    pub segment: u32,
    /// Bytes allocated at creation.
    pub segment_bytes: u64,
    /// Block size; the first record is at this offset.
    pub block_bytes: u32,
}

impl BlobSegmentHeader {
    /// Encodes into `out[..SLOT_BYTES]`.
    pub fn encode(&self, out: &mut [u8]) {
        out[..SLOT_BYTES].fill(0);
        out[..8].copy_from_slice(MAGIC);
        put_u32(out, 8, FORMAT_VERSION);
        put_u32(out, 12, self.segment);
        put_u64(out, 16, self.segment_bytes);
        put_u32(out, 24, self.block_bytes);
        let crc = crc32fast::hash(&out[..60]);
        put_u32(out, 60, crc);
    }

    /// Decodes and checks the identity slot at the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<BlobSegmentHeader, String> {
        if bytes.len() < SLOT_BYTES {
            return Err("blob segment header is truncated".into());
        }
        if &bytes[..8] != MAGIC {
            return Err("blob segment header has a wrong magic".into());
        }
        if crc32fast::hash(&bytes[..60]) != get_u32(bytes, 60) {
            return Err("blob segment header checksum mismatch".into());
        }
        let version = get_u32(bytes, 8);
        if version != FORMAT_VERSION {
            return Err(format!("blob segment format version {version}, this build reads {FORMAT_VERSION}"));
        }
        let header = BlobSegmentHeader {
            segment: get_u32(bytes, 12),
            segment_bytes: get_u64(bytes, 16),
            block_bytes: get_u32(bytes, 24),
        };
        let block = u64::from(header.block_bytes);
        if !block.is_power_of_two() || !(4096..=65536).contains(&block) || header.segment_bytes < 2 * block {
            return Err("blob segment header has impossible sizes".into());
        }
        Ok(header)
    }
}

/// A state slot: what changes during a segment's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentState {
    /// Incremented by every state write.
    pub generation: u64,
    /// First live byte.
    pub data_start: u64,
    /// End of the last record once sealed; 0 while the segment is open.
    pub sealed_end: u64,
}

impl SegmentState {
    /// Encodes into `out[..SLOT_BYTES]`.
    pub fn encode(&self, out: &mut [u8]) {
        out[..SLOT_BYTES].fill(0);
        out[..8].copy_from_slice(STATE_MAGIC);
        put_u64(out, 8, self.generation);
        put_u64(out, 16, self.data_start);
        put_u64(out, 24, self.sealed_end);
        let crc = crc32fast::hash(&out[..60]);
        put_u32(out, 60, crc);
    }

    /// Decodes one slot; `None` if it is empty or fails its checksum.
    pub fn decode(bytes: &[u8]) -> Option<SegmentState> {
        if bytes.len() < SLOT_BYTES || &bytes[..8] != STATE_MAGIC || crc32fast::hash(&bytes[..60]) != get_u32(bytes, 60)
        {
            return None;
        }
        Some(SegmentState {
            generation: get_u64(bytes, 8),
            data_start: get_u64(bytes, 16),
            sealed_end: get_u64(bytes, 24),
        })
    }

    /// The newest valid state of a header block, if any slot is valid.
    pub fn newest(block: &[u8]) -> Option<SegmentState> {
        STATE_SLOT_OFFSETS
            .iter()
            .filter_map(|&at| block.get(at..).and_then(SegmentState::decode))
            .max_by_key(|s| s.generation)
    }

    /// Offset of the slot this state is written to (generations alternate slots).
    pub fn slot_offset(&self) -> usize {
        STATE_SLOT_OFFSETS[(self.generation % 2) as usize]
    }
}

/// File name of blob segment `segment`.
pub fn file_name(segment: u32) -> String {
    format!("{segment:08x}.blob")
}

/// Segment number from a file name, if it is one.
pub fn parse_file_name(name: &str) -> Option<u32> {
    let hex = name.strip_suffix(".blob")?;
    if hex.len() != 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// [`KIND_PLAIN`] or [`KIND_ZSTD`].
    pub kind: u8,
    /// log2 of the uncompressed frame size.
    pub frame_shift: u8,
    /// Flag bits ([`RECORD_FLAG_UNSYNCED`]).
    pub flags: u8,
    /// Records after this one in the same transaction.
    pub batch_left: u32,
    /// Blob length.
    pub blob_bytes: u64,
    /// Payload bytes after the frame index.
    pub stored_bytes: u64,
    /// Number (wrapping) of the flush that wrote the record.
    pub flush_seq: u32,
    /// The record's meta crc (header and frame index).
    pub meta_crc: u32,
}

impl RecordHeader {
    /// Number of frames of this record.
    pub fn frames(&self) -> u64 {
        frame_count(self.blob_bytes, self.frame_shift)
    }

    /// Bytes of header plus frame index.
    pub fn meta_bytes(&self) -> u64 {
        RECORD_HEADER_BYTES as u64 + self.frames() * FRAME_ENTRY_BYTES as u64
    }

    /// Bytes of the whole record, padding included.
    pub fn record_bytes(&self) -> u64 {
        (self.meta_bytes() + self.stored_bytes).next_multiple_of(RECORD_ALIGN as u64)
    }
}

/// Frames of a blob of `blob_bytes` with frames of `2^frame_shift` bytes.
pub fn frame_count(blob_bytes: u64, frame_shift: u8) -> u64 {
    blob_bytes.div_ceil(1u64 << frame_shift)
}

/// What is at a record position.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A record header whose fields are sane (its meta crc is not checked yet: that
    /// needs the frame index, see [`check_meta`]).
    Header(RecordHeader),
    /// Eight zero bytes: no record here.
    End,
    /// Something that is not a record header.
    Invalid(String),
}

/// Decodes the record header at the start of `bytes`. `record_bytes_max` bounds the
/// record's size (what is left of the segment), so no length field is trusted.
pub fn decode_header(bytes: &[u8], record_bytes_max: u64) -> Decoded {
    if bytes.len() < RECORD_HEADER_BYTES {
        return if bytes.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Invalid("record header runs past the segment".into())
        };
    }
    if bytes[..RECORD_HEADER_BYTES].iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    let kind = bytes[0];
    let frame_shift = bytes[1];
    if kind != KIND_PLAIN && kind != KIND_ZSTD {
        return Decoded::Invalid(format!("record kind {kind} is unknown"));
    }
    if !(FRAME_SHIFT_MIN..=FRAME_SHIFT_MAX).contains(&frame_shift) {
        return Decoded::Invalid(format!("frame shift {frame_shift} is out of range"));
    }
    let header = RecordHeader {
        kind,
        frame_shift,
        flags: bytes[2],
        batch_left: get_u32(bytes, 4),
        blob_bytes: get_u64(bytes, 8),
        stored_bytes: get_u64(bytes, 16),
        flush_seq: get_u32(bytes, 24),
        meta_crc: get_u32(bytes, 28),
    };
    if kind == KIND_PLAIN && header.stored_bytes != header.blob_bytes {
        return Decoded::Invalid("stored size of a plain record differs from its blob size".into());
    }
    let frames = header.blob_bytes.checked_add((1 << frame_shift) - 1).map(|n| n >> frame_shift);
    let fits = frames
        .and_then(|f| f.checked_mul(FRAME_ENTRY_BYTES as u64))
        .and_then(|index| index.checked_add(RECORD_HEADER_BYTES as u64))
        .and_then(|meta| meta.checked_add(header.stored_bytes))
        .is_some_and(|total| total <= record_bytes_max);
    if !fits {
        return Decoded::Invalid("record sizes run past the segment".into());
    }
    Decoded::Header(header)
}

/// Checks the meta crc of a record, given its first `meta_bytes()` bytes.
pub fn check_meta(header: &RecordHeader, meta: &[u8]) -> Result<(), String> {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&meta[..28]);
    hasher.update(&meta[RECORD_HEADER_BYTES..header.meta_bytes() as usize]);
    if hasher.finalize() == header.meta_crc { Ok(()) } else { Err("record header checksum mismatch".into()) }
}

/// One frame index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEntry {
    /// Stored (possibly compressed) bytes of the frame.
    pub stored_len: u32,
    /// crc32 of the stored bytes.
    pub crc: u32,
}

/// Entry `i` of the frame index in a record's meta bytes.
pub fn frame_entry(meta: &[u8], i: usize) -> FrameEntry {
    let at = RECORD_HEADER_BYTES + i * FRAME_ENTRY_BYTES;
    FrameEntry { stored_len: get_u32(meta, at), crc: get_u32(meta, at + 4) }
}

/// Decodes a whole blob record at the start of `bytes` (its header, frame index, frame
/// checksums, and each zstd frame, which must hold exactly its share of the blob) and
/// returns the blob. Every length is checked against `bytes` before use, and no buffer
/// grows past the blob length the header states, which must be at most `blob_bytes_max`
/// (a compressed record may claim far more than it holds; the reader bounds it by the
/// segment size).
pub fn decode_blob_record(bytes: &[u8], blob_bytes_max: u64) -> Result<Vec<u8>, String> {
    let header = match decode_header(bytes, bytes.len() as u64) {
        Decoded::Header(h) => h,
        Decoded::End => return Err("no record".into()),
        Decoded::Invalid(what) => return Err(what),
    };
    if header.blob_bytes > blob_bytes_max {
        return Err(format!("blob of {} bytes is longer than {blob_bytes_max}", header.blob_bytes));
    }
    let meta_bytes = header.meta_bytes() as usize;
    check_meta(&header, &bytes[..meta_bytes])?;
    let mut at = meta_bytes;
    let mut out = Vec::new();
    for i in 0..header.frames() as usize {
        let entry = frame_entry(bytes, i);
        let end = at.checked_add(entry.stored_len as usize).filter(|&e| e <= bytes.len());
        let Some(end) = end else { return Err(format!("frame {i} runs past the record")) };
        let stored = &bytes[at..end];
        if crc32fast::hash(stored) != entry.crc {
            return Err(format!("frame {i} checksum mismatch"));
        }
        let frame_start = (i as u64) << header.frame_shift;
        let expected = ((frame_start + (1 << header.frame_shift)).min(header.blob_bytes) - frame_start) as usize;
        if header.kind == KIND_PLAIN {
            if stored.len() != expected {
                return Err(format!("plain frame {i} holds {} bytes, not {expected}", stored.len()));
            }
            out.extend_from_slice(stored);
        } else {
            // A zstd frame may claim any size: it is decompressed into exactly `expected`
            // bytes, which the (bounded) blob length fixes.
            decompress_frame(stored, expected, &mut out)
                .ok_or_else(|| format!("frame {i} does not decompress to {expected} bytes"))?;
        }
        at = end;
    }
    if (at - meta_bytes) as u64 != header.stored_bytes {
        return Err("frame index does not add up to the stored size".into());
    }
    Ok(out)
}

/// Encodes `blob` into a whole record as the blob log writes it (frames of
/// `2^frame_shift` bytes, compressed with zstd at `zstd_level` when that makes it
/// smaller; transaction and flush fields zero). For tests and fuzzing seeds.
pub fn encode_blob_record(blob: &[u8], frame_shift: u8, zstd_level: Option<i32>) -> Result<Vec<u8>, String> {
    encode_blob(blob, frame_shift, zstd_level).map_err(|e| e.to_string())
}

/// Encodes `blob` into a record (its transaction and flush fields zero; the writer
/// stamps them). `level` is the zstd level, or `None` for no compression. The blob is
/// cut into frames of `2^frame_shift` bytes. Without compression the frames are stored
/// as is (one contiguous payload, so a read returns a slice of the read buffer); a blob
/// whose frames do not shrink overall is stored as is too, so incompressible data costs
/// nothing.
pub(crate) fn encode_blob(blob: &[u8], frame_shift: u8, level: Option<i32>) -> CrateResult<Vec<u8>> {
    let frame_bytes = 1usize << frame_shift;
    let plain: Vec<&[u8]> = blob.chunks(frame_bytes).collect();
    let Some(level) = level else {
        return Ok(encode_record(KIND_PLAIN, frame_shift, 0, blob.len() as u64, &plain));
    };
    let compressed = compress_frames(&plain, level)?;
    let stored: usize = compressed.iter().map(Vec::len).sum();
    if stored >= blob.len() {
        return Ok(encode_record(KIND_PLAIN, frame_shift, 0, blob.len() as u64, &plain));
    }
    let frames: Vec<&[u8]> = compressed.iter().map(Vec::as_slice).collect();
    Ok(encode_record(KIND_ZSTD, frame_shift, 0, blob.len() as u64, &frames))
}

/// Encodes a record of `blob_bytes` whose stored frames are `frames` (each with its
/// bytes already in the order they are stored) into a new buffer, zero-padded to
/// [`RECORD_ALIGN`].
pub fn encode_record(kind: u8, frame_shift: u8, batch_left: u32, blob_bytes: u64, frames: &[&[u8]]) -> Vec<u8> {
    assert_eq!(frames.len() as u64, frame_count(blob_bytes, frame_shift), "one stored frame per blob frame");
    let stored: usize = frames.iter().map(|f| f.len()).sum();
    let meta = RECORD_HEADER_BYTES + frames.len() * FRAME_ENTRY_BYTES;
    let total = (meta + stored).next_multiple_of(RECORD_ALIGN);
    let mut out = vec![0u8; total];
    out[0] = kind;
    out[1] = frame_shift;
    put_u32(&mut out, 4, batch_left);
    put_u64(&mut out, 8, blob_bytes);
    put_u64(&mut out, 16, stored as u64);
    let mut at = meta;
    for (i, frame) in frames.iter().enumerate() {
        let entry = RECORD_HEADER_BYTES + i * FRAME_ENTRY_BYTES;
        put_u32(&mut out, entry, u32::try_from(frame.len()).expect("a frame is at most 16 MiB plus zstd overhead"));
        put_u32(&mut out, entry + 4, crc32fast::hash(frame));
        out[at..at + frame.len()].copy_from_slice(frame);
        at += frame.len();
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&out[..28]);
    hasher.update(&out[RECORD_HEADER_BYTES..meta]);
    let crc = hasher.finalize();
    put_u32(&mut out, 28, crc);
    out
}

/// Sets the `flags`, `batch_left` and `flush_seq` fields of an encoded record, fixing its
/// meta crc.
pub fn stamp_record(record: &mut [u8], flags: u8, batch_left: u32, flush_seq: u32) {
    record[2] = flags;
    put_u32(record, 4, batch_left);
    put_u32(record, 24, flush_seq);
    let frames = frame_count(get_u64(record, 8), record[1]) as usize;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&record[..28]);
    hasher.update(&record[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + frames * FRAME_ENTRY_BYTES]);
    let crc = hasher.finalize();
    put_u32(record, 28, crc);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_records_decode_and_bounds_hold() {
        let blob: Vec<u8> = (0..20_000u32).map(|i| (i / 7) as u8).collect();
        for level in [None, Some(3)] {
            let rec = encode_blob_record(&blob, 12, level).unwrap();
            assert_eq!(decode_blob_record(&rec, 1 << 20).unwrap(), blob);
            assert!(decode_blob_record(&rec, blob.len() as u64 - 1).is_err(), "blob_bytes_max not enforced");
            for cut in [0, 31, rec.len() / 2, rec.len() - 8] {
                assert!(decode_blob_record(&rec[..cut], 1 << 20).is_err(), "cut at {cut}");
            }
            let mut bad = rec.clone();
            let last = bad.len() - 1 - bad.iter().rev().position(|&b| b != 0).unwrap();
            bad[last] ^= 1;
            assert!(decode_blob_record(&bad, 1 << 20).is_err());
        }
    }

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
    fn header_and_state_round_trip() {
        let h = BlobSegmentHeader { segment: 7, segment_bytes: 1 << 20, block_bytes: 4096 };
        let mut block = vec![0u8; 4096];
        h.encode(&mut block);
        assert_eq!(BlobSegmentHeader::decode(&block).unwrap(), h);
        assert_eq!(SegmentState::newest(&block), None);
        let s1 = SegmentState { generation: 1, data_start: 4096, sealed_end: 0 };
        s1.encode(&mut block[s1.slot_offset()..]);
        let s2 = SegmentState { generation: 2, data_start: 4096, sealed_end: 9000 };
        s2.encode(&mut block[s2.slot_offset()..]);
        assert_eq!(SegmentState::newest(&block), Some(s2));
        block[s2.slot_offset() + 20] ^= 1;
        assert_eq!(SegmentState::newest(&block), Some(s1));
        block[20] ^= 1;
        assert!(BlobSegmentHeader::decode(&block).is_err());
        assert_eq!(parse_file_name(&file_name(0xab)), Some(0xab));
        assert_eq!(parse_file_name("quarantine.blob"), None);
    }

    #[test]
    fn manifest_round_trips_and_the_newer_valid_slot_wins() {
        let entry =
            |segment, sealed, end| ManifestEntry { segment, sealed, closed: !sealed, lost: false, end, cut_end: 0 };
        let mut m =
            BlobManifest { generation: 1, next_segment: 9, entries: vec![entry(3, true, 9000), entry(8, false, 4096)] };
        let slot = MANIFEST_SLOT_ALIGN;
        assert!(m.encoded_bytes() <= slot);
        let mut file = vec![0u8; 2 * slot];
        file[slot * m.slot_index()..][..slot].copy_from_slice(&m.encode(slot));
        assert_eq!(BlobManifest::newest(&file).unwrap(), m);
        let older = m.clone();
        m.generation = 2;
        m.entries[1].end = 8192;
        m.entries[1].cut_end = 12_288;
        m.entries[0].lost = true;
        file[slot * m.slot_index()..][..slot].copy_from_slice(&m.encode(slot));
        assert_eq!(BlobManifest::newest(&file).unwrap(), m);
        assert_eq!(m.entry(8).unwrap().cut_end, 12_288);
        assert!(m.entry(4).is_none());
        // A torn write of the newer slot leaves the older one.
        file[slot * m.slot_index() + 40] ^= 1;
        assert_eq!(BlobManifest::newest(&file).unwrap(), older);
        file[slot * older.slot_index() + 40] ^= 1;
        assert!(BlobManifest::newest(&file).is_err());
        assert!(BlobManifest::newest(&file[..4096]).is_err());
        // A count past the slot, and entries past next_segment, are refused.
        let mut bad = older.encode(slot);
        put_u32(&mut bad, 12, u32::MAX);
        assert!(BlobManifest::decode(&bad).is_err());
        let past = BlobManifest { generation: 1, next_segment: 3, entries: vec![entry(3, true, 1)] };
        assert!(BlobManifest::decode(&past.encode(slot)).is_err());
    }

    #[test]
    fn record_round_trip() {
        let blob: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let frames: Vec<&[u8]> = blob.chunks(4096).collect();
        let mut rec = encode_record(KIND_PLAIN, 12, 0, blob.len() as u64, &frames);
        let Decoded::Header(h) = decode_header(&rec, rec.len() as u64) else { panic!("a header") };
        assert_eq!(h.frames(), 3);
        assert_eq!(h.record_bytes(), rec.len() as u64);
        check_meta(&h, &rec).unwrap();
        assert_eq!(frame_entry(&rec, 2).stored_len, 10_000 - 8192);
        stamp_record(&mut rec, RECORD_FLAG_UNSYNCED, 3, 9);
        let Decoded::Header(h) = decode_header(&rec, rec.len() as u64) else { panic!("a header") };
        assert_eq!((h.flags, h.batch_left, h.flush_seq), (RECORD_FLAG_UNSYNCED, 3, 9));
        check_meta(&h, &rec).unwrap();
        rec[40] ^= 1;
        assert!(check_meta(&h, &rec).is_err());
        assert_eq!(decode_header(&[0u8; 64], 64), Decoded::End);
        assert!(matches!(decode_header(&rec, 100), Decoded::Invalid(_)));
        let empty = encode_record(KIND_PLAIN, 12, 0, 0, &[]);
        assert_eq!(empty.len(), RECORD_HEADER_BYTES);
        assert!(matches!(decode_header(&empty, 32), Decoded::Header(_)));
    }
}
