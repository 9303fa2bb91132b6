//! Typed tables: the reserved keys they live under and their metadata record.
//!
//! A typed table (`Table<T>`) stores each record as one key-value pair of the
//! paged store, under keys no user write may use (they start with
//! [`RESERVED_PREFIX`]):
//!
//! ```text
//! metadata  RESERVED_PREFIX, 0x00, table name (UTF-8, 1..=255 bytes)   value: TableMeta below
//! record    RESERVED_PREFIX, 0x01, table id (u32 BE), index (u64 BE)   value: the record's bytes
//! ```
//!
//! Record keys are big-endian so that key order is index order, and 20 bytes
//! long so that a record's value starts 8-aligned in a page image: records in
//! a page start at multiples of 8 (`format::page::RECORD_ALIGN`), and the value
//! follows the 20-byte record header and the 20-byte key.
//!
//! The metadata value (all integers little-endian):
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `RDBTYPE1` |
//! | 8 | 4 | table id |
//! | 12 | 4 | record_bytes (`size_of::<T>()`) |
//! | 16 | 8 | capacity (indices `0..capacity` are accepted) |
//! | 24 | 4 | record_align (`align_of::<T>()`) |
//! | 28 | 1 | endianness: 1 little |
//! | 29 | 3 | zeros |
//! | 32 | 4 | schema version |
//! | 36 | 8 | fingerprint (FNV-1a 64 of the layout, see [`fingerprint`]) |
//! | 44 | 2 | schema name length n |
//! | 46 | 2 | field count f |
//! | 48 | n | schema name (UTF-8) |
//! | | f x (8 + name) | per field: offset u32, size u32, name length u16, name |
//! | | 4 | crc32 of every byte before it |

use super::{get_u16, get_u32, get_u64};

/// First bytes of every key a typed table uses; user writes and reads of such keys are
/// refused.
pub const RESERVED_PREFIX: &[u8; 7] = b"\xFFringdb";
/// Key kind byte after the prefix: a table's metadata.
pub const KIND_META: u8 = 0;
/// Key kind byte after the prefix: a table's record.
pub const KIND_RECORD: u8 = 1;
/// Length of a record key.
pub const RECORD_KEY_BYTES: usize = RESERVED_PREFIX.len() + 1 + 4 + 8;
/// Magic of the metadata value.
pub const META_MAGIC: &[u8; 8] = b"RDBTYPE1";
/// Endianness tag for little-endian records.
pub const ENDIAN_LITTLE: u8 = 1;
/// Longest table name, schema name or field name, in bytes.
pub const NAME_BYTES_MAX: usize = 255;
/// Most fields a schema may declare.
pub const FIELDS_MAX: usize = 1024;

const META_FIXED_BYTES: usize = 48;

/// Whether `key` is one of the typed tables' reserved keys.
pub fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// The key of table `name`'s metadata.
pub fn meta_key(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(RESERVED_PREFIX.len() + 1 + name.len());
    key.extend_from_slice(RESERVED_PREFIX);
    key.push(KIND_META);
    key.extend_from_slice(name.as_bytes());
    key
}

/// The key of record `index` of table `table_id`.
pub fn record_key(table_id: u32, index: u64) -> [u8; RECORD_KEY_BYTES] {
    let mut key = [0u8; RECORD_KEY_BYTES];
    key[..7].copy_from_slice(RESERVED_PREFIX);
    key[7] = KIND_RECORD;
    key[8..12].copy_from_slice(&table_id.to_be_bytes());
    key[12..20].copy_from_slice(&index.to_be_bytes());
    key
}

/// The index in a record key of table `table_id`, or `None` if `key` is not one.
pub fn record_index(table_id: u32, key: &[u8]) -> Option<u64> {
    if key.len() != RECORD_KEY_BYTES || !key.starts_with(RESERVED_PREFIX) || key[7] != KIND_RECORD {
        return None;
    }
    if key[8..12] != table_id.to_be_bytes() {
        return None;
    }
    Some(u64::from_be_bytes(key[12..20].try_into().expect("8 bytes")))
}

/// One field of a record layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMeta {
    /// The field's name.
    pub name: String,
    /// Byte offset in the record.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// A table's metadata record: its id, capacity and record layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMeta {
    /// Number in every record key of the table.
    pub table_id: u32,
    /// Indices `0..capacity` are accepted.
    pub capacity: u64,
    /// `size_of` of the record type.
    pub record_bytes: u32,
    /// `align_of` of the record type.
    pub record_align: u32,
    /// [`ENDIAN_LITTLE`].
    pub endian: u8,
    /// The name the user gave the layout.
    pub schema_name: String,
    /// The version the user gave the layout.
    pub schema_version: u32,
    /// Fields in declaration order.
    pub fields: Vec<FieldMeta>,
}

impl TableMeta {
    /// The layout's fingerprint (see [`fingerprint`]).
    pub fn fingerprint(&self) -> u64 {
        fingerprint(self)
    }

    /// Whether `other` describes the same layout (everything but id and capacity).
    pub fn same_layout(&self, other: &TableMeta) -> bool {
        self.record_bytes == other.record_bytes
            && self.record_align == other.record_align
            && self.endian == other.endian
            && self.schema_name == other.schema_name
            && self.schema_version == other.schema_version
            && self.fields == other.fields
    }

    /// A readable description: `name v1, 24 bytes, align 8, little-endian, fields a@0+1 ...`.
    pub fn describe(&self) -> String {
        let endian = if self.endian == ENDIAN_LITTLE {
            "little-endian".to_string()
        } else {
            format!("endian tag {}", self.endian)
        };
        let fields: Vec<String> = self.fields.iter().map(|f| format!("{}@{}+{}", f.name, f.offset, f.size)).collect();
        format!(
            "`{}` v{}, {} bytes, align {}, {endian}, fields [{}], fingerprint {:016x}",
            self.schema_name,
            self.schema_version,
            self.record_bytes,
            self.record_align,
            fields.join(", "),
            self.fingerprint()
        )
    }
}

/// FNV-1a (64-bit) over the layout's canonical bytes: record_bytes, record_align,
/// endianness, schema version (little-endian), then the schema name, then per field its
/// offset and size and its name, each name preceded by its length as u16. Stable across
/// builds and platforms.
pub fn fingerprint(meta: &TableMeta) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&meta.record_bytes.to_le_bytes());
    eat(&meta.record_align.to_le_bytes());
    eat(&[meta.endian]);
    eat(&meta.schema_version.to_le_bytes());
    eat(&(meta.schema_name.len() as u16).to_le_bytes());
    eat(meta.schema_name.as_bytes());
    for f in &meta.fields {
        eat(&f.offset.to_le_bytes());
        eat(&f.size.to_le_bytes());
        eat(&(f.name.len() as u16).to_le_bytes());
        eat(f.name.as_bytes());
    }
    h
}

/// Encodes `meta`. Names must be at most [`NAME_BYTES_MAX`] bytes and fields at most
/// [`FIELDS_MAX`] (the caller checks; encoding more is a bug).
pub fn encode_meta(meta: &TableMeta) -> Vec<u8> {
    assert!(meta.schema_name.len() <= NAME_BYTES_MAX, "schema name checked by the caller");
    assert!(meta.fields.len() <= FIELDS_MAX, "field count checked by the caller");
    let mut out = Vec::with_capacity(META_FIXED_BYTES + meta.schema_name.len() + meta.fields.len() * 24 + 4);
    out.extend_from_slice(META_MAGIC);
    out.extend_from_slice(&meta.table_id.to_le_bytes());
    out.extend_from_slice(&meta.record_bytes.to_le_bytes());
    out.extend_from_slice(&meta.capacity.to_le_bytes());
    out.extend_from_slice(&meta.record_align.to_le_bytes());
    out.extend_from_slice(&[meta.endian, 0, 0, 0]);
    out.extend_from_slice(&meta.schema_version.to_le_bytes());
    out.extend_from_slice(&meta.fingerprint().to_le_bytes());
    out.extend_from_slice(&(meta.schema_name.len() as u16).to_le_bytes());
    out.extend_from_slice(&(meta.fields.len() as u16).to_le_bytes());
    debug_assert_eq!(out.len(), META_FIXED_BYTES);
    out.extend_from_slice(meta.schema_name.as_bytes());
    for f in &meta.fields {
        assert!(f.name.len() <= NAME_BYTES_MAX, "field name checked by the caller");
        out.extend_from_slice(&f.offset.to_le_bytes());
        out.extend_from_slice(&f.size.to_le_bytes());
        out.extend_from_slice(&(f.name.len() as u16).to_le_bytes());
        out.extend_from_slice(f.name.as_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a metadata value, checking its magic, checksum, lengths and fingerprint.
pub fn decode_meta(bytes: &[u8]) -> Result<TableMeta, String> {
    if bytes.len() < META_FIXED_BYTES + 4 {
        return Err(format!("table metadata of {} bytes is shorter than its fixed part", bytes.len()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored_crc = get_u32(crc, 0);
    if crc32fast::hash(body) != stored_crc {
        return Err("table metadata fails its checksum".into());
    }
    if &body[..8] != META_MAGIC {
        return Err(format!("table metadata has magic {:?}, expected {:?}", &body[..8], META_MAGIC));
    }
    if body[29..32] != [0, 0, 0] {
        return Err("table metadata has non-zero reserved bytes".into());
    }
    let name_len = get_u16(body, 44) as usize;
    let field_count = get_u16(body, 46) as usize;
    if name_len > NAME_BYTES_MAX || field_count > FIELDS_MAX {
        return Err(format!("table metadata names a {name_len}-byte schema name and {field_count} fields"));
    }
    let mut at = META_FIXED_BYTES;
    let name = |at: usize, len: usize| -> Result<String, String> {
        let raw = body.get(at..at + len).ok_or("table metadata is cut short")?;
        String::from_utf8(raw.to_vec()).map_err(|_| "table metadata holds a name that is not UTF-8".to_string())
    };
    let schema_name = name(at, name_len)?;
    at += name_len;
    let mut fields = Vec::with_capacity(field_count);
    for _ in 0..field_count {
        if body.len() < at + 10 {
            return Err("table metadata is cut short in its fields".into());
        }
        let (offset, size, len) = (get_u32(body, at), get_u32(body, at + 4), get_u16(body, at + 8) as usize);
        if len > NAME_BYTES_MAX {
            return Err(format!("table metadata names a {len}-byte field name"));
        }
        fields.push(FieldMeta { name: name(at + 10, len)?, offset, size });
        at += 10 + len;
    }
    if at != body.len() {
        return Err(format!("table metadata has {} bytes after its fields", body.len() - at));
    }
    let meta = TableMeta {
        table_id: get_u32(body, 8),
        record_bytes: get_u32(body, 12),
        capacity: get_u64(body, 16),
        record_align: get_u32(body, 24),
        endian: body[28],
        schema_version: get_u32(body, 32),
        schema_name,
        fields,
    };
    let stored_fingerprint = get_u64(body, 36);
    if meta.fingerprint() != stored_fingerprint {
        return Err(format!(
            "table metadata's fingerprint {stored_fingerprint:016x} does not match its layout ({:016x})",
            meta.fingerprint()
        ));
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TableMeta {
        TableMeta {
            table_id: 7,
            capacity: 10_000_000_000,
            record_bytes: 32,
            record_align: 8,
            endian: ENDIAN_LITTLE,
            schema_name: "sample".into(),
            schema_version: 3,
            fields: vec![
                FieldMeta { name: "a".into(), offset: 0, size: 8 },
                FieldMeta { name: "tag".into(), offset: 8, size: 24 },
            ],
        }
    }

    #[test]
    fn meta_round_trips() {
        let meta = sample();
        let bytes = encode_meta(&meta);
        assert_eq!(decode_meta(&bytes).unwrap(), meta);
    }

    #[test]
    fn meta_damage_is_refused() {
        let bytes = encode_meta(&sample());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode_meta(&bad).is_err(), "a flipped byte {i} was accepted");
        }
        for len in 0..bytes.len() {
            assert!(decode_meta(&bytes[..len]).is_err(), "a cut at {len} was accepted");
        }
    }

    #[test]
    fn fingerprint_changes_with_layout() {
        let base = sample();
        let mut moved = sample();
        moved.fields[1].offset = 16;
        let mut renamed = sample();
        renamed.fields[0].name = "b".into();
        let mut bumped = sample();
        bumped.schema_version = 4;
        for other in [moved, renamed, bumped] {
            assert_ne!(base.fingerprint(), other.fingerprint());
            assert!(!base.same_layout(&other));
        }
        let mut elsewhere = sample();
        elsewhere.table_id = 9;
        elsewhere.capacity = 5;
        assert!(base.same_layout(&elsewhere));
    }

    #[test]
    fn record_keys_sort_by_index() {
        let keys: Vec<_> = [0u64, 1, 255, 256, u64::MAX].iter().map(|&i| record_key(3, i)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(record_index(3, &keys[3]), Some(256));
        assert_eq!(record_index(4, &keys[3]), None);
        assert!(is_reserved(&keys[0]) && is_reserved(&meta_key("t")));
        assert!(!is_reserved(b"\xFFringd"));
    }
}
