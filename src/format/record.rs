//! Log records: the unit of the write-ahead log and of crash atomicity.
//!
//! A record holds one write (a put, a delete, or a whole write batch) and is
//! valid as a whole or not at all: a crc32 covers its header (which holds the
//! body's crc32), so header and body are checked together. The body's crc is
//! computed by the calling thread, the header's by the shard thread, which
//! then never has to checksum a value.
//!
//! ```text
//! offset size field
//!      0    4 header_crc   crc32 of bytes 4..32
//!      4    4 body_len     bytes of body that follow the header
//!      8    8 lsn          log sequence number, +1 per record, per shard
//!     16    4 group_delta  lsn minus the lsn of the first record of the flush that wrote this one
//!     20    4 body_crc     crc32 of the body
//!     24    1 kind         1 = ops, 2 = prepare, 3 = commit, 4 = abort
//!     25    1 flags        bit 0: FLAG_UNSYNCED, the flush that wrote it did not wait for
//!                          durability (Durability::None); other bits 0
//!     26    2 reserved     0
//!     28    4 op_count     ops in the body
//!     32    . body         see below
//!      .    . padding      zeros up to the next multiple of 8
//! ```
//!
//! Bodies by kind:
//! - ops (1): `op_count` ops, back to back.
//! - prepare (2): the transaction header, then `op_count` ops (the transaction's
//!   writes on this shard, not applied until the transaction is decided).
//! - commit (3) and abort (4): the transaction header alone (no participants:
//!   `participant_count` is 0), `op_count` 0.
//!
//! The transaction header: `txid u64`, `participant_count u16`, `reserved u16`
//! (0), `reserved u32` (0), then `participant_count` shard ids as `u16`, then
//! zeros up to a multiple of 8 bytes. The participants are the shards that hold
//! a prepare record of the transaction (the shards it writes).
//!
//! An op: `kind u8 (1 put, 2 delete)`, `reserved u8`, `key_len u16`,
//! `value_len u32` (0 for a delete), the key, the value.
//!
//! A header whose first 8 bytes are zero marks the end of the log.

use super::{get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};

/// Bytes in a record header.
pub const HEADER_BYTES: usize = 32;
/// Bytes in an op header inside a record body.
pub const OP_HEADER_BYTES: usize = 8;
/// Records start at multiples of this.
pub const RECORD_ALIGN: usize = 8;
/// Record kind: a body of ops.
pub const KIND_OPS: u8 = 1;
/// Record kind: a transaction's prepare (header and its writes on this shard).
pub const KIND_PREPARE: u8 = 2;
/// Record kind: a transaction's commit marker.
pub const KIND_COMMIT: u8 = 3;
/// Record kind: a transaction's abort marker.
pub const KIND_ABORT: u8 = 4;
/// Bytes of a transaction header before its participant list.
pub const TX_HEADER_BYTES: usize = 16;
/// Most participants a transaction header lists (the most shards a database has).
pub const TX_PARTICIPANTS_MAX: usize = 1024;
/// Op kind: insert or overwrite.
pub const OP_PUT: u8 = 1;
/// Op kind: delete.
pub const OP_DELETE: u8 = 2;
/// Record flag: written by a flush that did not make it durable (`SyncMode::None`), so a
/// crash may keep it while losing an earlier flush; it proves nothing about earlier
/// records (see `wal::recovery`).
pub const FLAG_UNSYNCED: u8 = 1;

/// Size on disk of a record with `body_len` bytes of body, padding included.
pub fn record_bytes(body_len: usize) -> usize {
    (HEADER_BYTES + body_len).next_multiple_of(RECORD_ALIGN)
}

/// Encoded size of one op.
pub fn op_bytes(key_len: usize, value_len: usize) -> usize {
    OP_HEADER_BYTES + key_len + value_len
}

/// Appends one op to a record body. Lengths are checked by the caller against the
/// limits (which fit the fields); a violation is a bug.
pub fn encode_op(body: &mut Vec<u8>, kind: u8, key: &[u8], value: &[u8]) {
    let key_len = u16::try_from(key.len()).expect("key length checked against KEY_BYTES_MAX");
    let value_len = u32::try_from(value.len()).expect("value length checked against VALUE_BYTES_MAX");
    let mut header = [0u8; OP_HEADER_BYTES];
    header[0] = kind;
    put_u16(&mut header, 2, key_len);
    put_u32(&mut header, 4, value_len);
    body.extend_from_slice(&header);
    body.extend_from_slice(key);
    body.extend_from_slice(value);
}

/// One op decoded from a record body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op<'a> {
    /// [`OP_PUT`] or [`OP_DELETE`].
    pub kind: u8,
    /// The key.
    pub key: &'a [u8],
    /// The value (empty for a delete).
    pub value: &'a [u8],
    /// Offset of the value in the body.
    pub value_offset: usize,
    /// Offset of the key in the body.
    pub key_offset: usize,
}

/// Decodes the ops of a record body, checking every length against the body.
/// Returns `Err` with a description on the first malformed op.
pub fn decode_ops(body: &[u8], op_count: u32) -> Result<Vec<Op<'_>>, String> {
    // Every op takes at least OP_HEADER_BYTES, so a count the body cannot hold is
    // refused before anything is allocated from it.
    if (op_count as usize).saturating_mul(OP_HEADER_BYTES) > body.len() {
        return Err(format!("op count {op_count} cannot fit in a body of {} bytes", body.len()));
    }
    let mut ops = Vec::with_capacity(op_count as usize);
    let mut at = 0usize;
    for i in 0..op_count {
        if body.len() - at < OP_HEADER_BYTES {
            return Err(format!("op {i} header runs past the body"));
        }
        let kind = body[at];
        let key_len = get_u16(body, at + 2) as usize;
        let value_len = get_u32(body, at + 4) as usize;
        if kind != OP_PUT && kind != OP_DELETE {
            return Err(format!("op {i} has unknown kind {kind}"));
        }
        if kind == OP_DELETE && value_len != 0 {
            return Err(format!("delete op {i} carries a value"));
        }
        let key_offset = at + OP_HEADER_BYTES;
        let value_offset = key_offset + key_len;
        let end = value_offset
            .checked_add(value_len)
            .filter(|&end| end <= body.len())
            .ok_or_else(|| format!("op {i} runs past the body"))?;
        ops.push(Op {
            kind,
            key: &body[key_offset..value_offset],
            value: &body[value_offset..end],
            key_offset,
            value_offset,
        });
        at = end;
    }
    if at != body.len() {
        return Err(format!("{} bytes left after {op_count} ops", body.len() - at));
    }
    Ok(ops)
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Stored header checksum.
    pub crc32: u32,
    /// Body length in bytes.
    pub body_len: u32,
    /// Log sequence number.
    pub lsn: u64,
    /// LSN of the first record of the flush that wrote this record.
    pub group_lsn: u64,
    /// Record kind.
    pub kind: u8,
    /// Ops in the body.
    pub op_count: u32,
    /// Flag bits (`FLAG_UNSYNCED`).
    pub flags: u8,
}

/// Appends a transaction header (see the module docs) to `body`.
pub fn encode_tx_header(body: &mut Vec<u8>, txid: u64, participants: &[u16]) {
    assert!(participants.len() <= TX_PARTICIPANTS_MAX, "at most {TX_PARTICIPANTS_MAX} participants");
    let start = body.len();
    body.extend_from_slice(&txid.to_le_bytes());
    body.extend_from_slice(&(participants.len() as u16).to_le_bytes());
    body.extend_from_slice(&[0u8; 6]);
    for p in participants {
        body.extend_from_slice(&p.to_le_bytes());
    }
    let len = (body.len() - start).next_multiple_of(8);
    body.resize(start + len, 0);
}

/// A decoded transaction header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxHeader {
    /// The transaction's id.
    pub txid: u64,
    /// Shards holding a prepare record of it.
    pub participants: Vec<u16>,
    /// Bytes the header takes in the body (the ops follow).
    pub len: usize,
}

/// Decodes the transaction header at the start of `body`.
pub fn decode_tx_header(body: &[u8]) -> Result<TxHeader, String> {
    if body.len() < TX_HEADER_BYTES {
        return Err(format!("transaction header of {} bytes, at least {TX_HEADER_BYTES} expected", body.len()));
    }
    let txid = get_u64(body, 0);
    let count = get_u16(body, 8) as usize;
    if get_u16(body, 10) != 0 || get_u32(body, 12) != 0 {
        return Err("transaction header has nonzero reserved bytes".into());
    }
    if count > TX_PARTICIPANTS_MAX {
        return Err(format!("{count} participants, at most {TX_PARTICIPANTS_MAX}"));
    }
    let len = (TX_HEADER_BYTES + 2 * count).next_multiple_of(8);
    if body.len() < len {
        return Err(format!("{count} participants run past the body"));
    }
    let participants: Vec<u16> = (0..count).map(|i| get_u16(body, TX_HEADER_BYTES + 2 * i)).collect();
    if body[TX_HEADER_BYTES + 2 * count..len].iter().any(|&b| b != 0) {
        return Err("transaction header padding is not zero".into());
    }
    Ok(TxHeader { txid, participants, len })
}

/// Writes a record header for `body` (whose crc32 is `body_crc`) into `out[..HEADER_BYTES]`.
/// `group_lsn` is at most `lsn` and within `u32::MAX` of it (a flush is far smaller).
pub fn encode_header(out: &mut [u8], kind: u8, lsn: u64, group_lsn: u64, op_count: u32, body_len: u32, body_crc: u32) {
    debug_assert!((KIND_OPS..=KIND_ABORT).contains(&kind));
    let group_delta = u32::try_from(lsn - group_lsn).expect("a flush holds fewer than 2^32 records");
    out[..HEADER_BYTES].fill(0);
    put_u32(out, 4, body_len);
    put_u64(out, 8, lsn);
    put_u32(out, 16, group_delta);
    put_u32(out, 20, body_crc);
    out[24] = kind;
    put_u32(out, 28, op_count);
    let crc = crc32fast::hash(&out[4..HEADER_BYTES]);
    put_u32(out, 0, crc);
}

/// Sets `flags` in the header at the start of `record` (written by [`encode_header`]) and
/// updates its checksum.
pub fn set_header_flags(record: &mut [u8], flags: u8) {
    record[25] = flags;
    let crc = crc32fast::hash(&record[4..HEADER_BYTES]);
    put_u32(record, 0, crc);
}

/// What is at a position of the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A valid record with its header; it takes `record_bytes(body_len)` bytes.
    Record(RecordHeader),
    /// Zeros: the end of the log.
    End,
    /// Bytes that are not a valid record (torn or corrupt), with the reason.
    Invalid(String),
}

/// Decodes the record at the start of `bytes`. `body_max` bounds the body length
/// accepted (a larger one is invalid, never allocated).
pub fn decode_record(bytes: &[u8], body_max: usize) -> Decoded {
    if bytes.len() < HEADER_BYTES {
        return if bytes.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Invalid("header runs past the end of the segment".into())
        };
    }
    if bytes[..HEADER_BYTES].iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    let header_crc = crc32fast::hash(&bytes[4..HEADER_BYTES]);
    let stored = get_u32(bytes, 0);
    if header_crc != stored {
        return Decoded::Invalid(format!(
            "header checksum mismatch (stored {stored:#010x}, computed {header_crc:#010x})"
        ));
    }
    let lsn = get_u64(bytes, 8);
    let group_delta = u64::from(get_u32(bytes, 16));
    let header = RecordHeader {
        crc32: stored,
        body_len: get_u32(bytes, 4),
        lsn,
        group_lsn: lsn.saturating_sub(group_delta),
        kind: bytes[24],
        op_count: get_u32(bytes, 28),
        flags: bytes[25],
    };
    if !(KIND_OPS..=KIND_ABORT).contains(&header.kind) || header.flags & !FLAG_UNSYNCED != 0 || get_u16(bytes, 26) != 0
    {
        return Decoded::Invalid(format!("unknown record kind {} or flags", header.kind));
    }
    if lsn == 0 || group_delta >= lsn {
        return Decoded::Invalid("lsn 0, or a group lsn before lsn 1".into());
    }
    let body_len = header.body_len as usize;
    if body_len > body_max || HEADER_BYTES + body_len > bytes.len() {
        return Decoded::Invalid(format!("body length {body_len} is out of bounds"));
    }
    let body = &bytes[HEADER_BYTES..HEADER_BYTES + body_len];
    let body_crc = crc32fast::hash(body);
    let stored_body_crc = get_u32(bytes, 20);
    if body_crc != stored_body_crc {
        return Decoded::Invalid(format!(
            "body checksum mismatch (stored {stored_body_crc:#010x}, computed {body_crc:#010x})"
        ));
    }
    Decoded::Record(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(lsn: u64, ops: &[(u8, &[u8], &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, key, value) in ops {
            encode_op(&mut body, *kind, key, value);
        }
        let mut out = vec![0u8; record_bytes(body.len())];
        encode_header(&mut out, KIND_OPS, lsn, lsn, ops.len() as u32, body.len() as u32, crc32fast::hash(&body));
        out[HEADER_BYTES..HEADER_BYTES + body.len()].copy_from_slice(&body);
        out
    }

    #[test]
    fn round_trip() {
        let bytes = record(7, &[(OP_PUT, b"k1", b"v1"), (OP_DELETE, b"k2", b"")]);
        let Decoded::Record(h) = decode_record(&bytes, 1 << 20) else { panic!() };
        assert_eq!(h.lsn, 7);
        let body = &bytes[HEADER_BYTES..HEADER_BYTES + h.body_len as usize];
        let ops = decode_ops(body, h.op_count).unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!((ops[0].key, ops[0].value), (&b"k1"[..], &b"v1"[..]));
        assert_eq!(ops[1].kind, OP_DELETE);
    }

    #[test]
    fn every_bit_flip_is_caught() {
        let bytes = record(1, &[(OP_PUT, b"key", b"value")]);
        for bit in 0..(HEADER_BYTES + 8 + 8) * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(!matches!(decode_record(&bad, 1 << 20), Decoded::Record(_)), "flip of bit {bit} not caught");
        }
    }

    #[test]
    fn zeros_are_end_and_garbage_is_invalid() {
        assert_eq!(decode_record(&[0u8; 64], 100), Decoded::End);
        assert!(matches!(decode_record(&[0xffu8; 64], 100), Decoded::Invalid(_)));
        assert!(matches!(decode_record(&[1u8; 5], 100), Decoded::Invalid(_)));
    }

    #[test]
    fn tx_header_round_trip_and_rejects() {
        let mut body = Vec::new();
        encode_tx_header(&mut body, 0xdead_beef, &[0, 3, 7]);
        assert_eq!(body.len() % 8, 0);
        encode_op(&mut body, OP_PUT, b"k", b"v");
        let h = decode_tx_header(&body).unwrap();
        assert_eq!((h.txid, h.participants.as_slice()), (0xdead_beef, &[0u16, 3, 7][..]));
        let ops = decode_ops(&body[h.len..], 1).unwrap();
        assert_eq!(ops[0].key, b"k");
        assert!(decode_tx_header(&body[..10]).is_err());
        let mut bad = body.clone();
        bad[8] = 0xff; // participant count past the body
        assert!(decode_tx_header(&bad).is_err());
        let mut bad = body.clone();
        bad[11] = 1;
        assert!(decode_tx_header(&bad).is_err());
    }

    #[test]
    fn ops_reject_bad_lengths() {
        assert!(decode_ops(&[1, 0, 255, 255, 0, 0, 0, 0], 1).is_err());
        assert!(decode_ops(&[], u32::MAX).is_err());
        assert!(decode_ops(&[9, 0, 0, 0, 0, 0, 0, 0], 1).is_err());
    }
}
