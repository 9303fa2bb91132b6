//! Nodes of a shard's copy-on-write B+tree: leaves of records in key order, and
//! branches of child references.
//!
//! A node is written once, under an id never used before, to an extent of
//! `pages.dat` no live node occupies; it is never changed in place. Its image
//! is padded with zeros to a multiple of the page unit.
//!
//! ```text
//! node header (32 bytes)
//! offset size field
//!      0    4 magic        "RDND"
//!      4    4 crc32        of bytes 8..used
//!      8    8 node_id      never reused within a shard
//!     16    1 kind         0 leaf, 1 branch
//!     17    1 level        0 for a leaf, its children's level + 1 for a branch
//!     18    2 count        items
//!     20    4 used         bytes of header, slots and items
//!     24    8 reserved     zero
//!     32  4*count slots    offset of each item in the node, in key order (strictly
//!                          increasing keys); each item starts at a multiple of 8
//! leaf item (16-byte header)
//!      0    2 key_len
//!      2    1 flags        bit 0: the value is in a chunk (a 16-byte chunk reference)
//!      3    1 reserved     zero
//!      4    4 value_len    bytes stored after the key (the value, or 16)
//!      8    8 version      LSN of the write that produced the record
//!     16    . key, zeros to the next multiple of 8 (so every value starts 8-aligned in
//!             the image, and a typed record can be read in place), then the value or
//!             chunk reference
//! branch item (24-byte header)
//!      0    2 key_len      0 for the first item (it stands for every key below the second)
//!      2    2 reserved     zero
//!      4    4 child_len    bytes of the child's extent
//!      8    8 child_id     the child's node id (checked when the child is read)
//!     16    8 child_offset
//!     24    . key: the smallest key the child may hold
//! ```
//!
//! [`check_node`] verifies everything a reader relies on (checksum, bounds, key
//! order), once, when an image comes from the disk; [`NodeView`] then reads a
//! verified image without further checks.

use super::page::{CHUNK_REF_BYTES, ChunkRef};
use super::{get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};

/// Magic of a tree node.
pub const NODE_MAGIC: &[u8; 4] = b"RDND";
/// Bytes of a node header.
pub const NODE_HEADER_BYTES: usize = 32;
/// Bytes of a slot.
pub const SLOT_BYTES: usize = 4;
/// Bytes of a leaf item's header.
pub const LEAF_ITEM_HEADER_BYTES: usize = 16;
/// Bytes of a branch item's header.
pub const BRANCH_ITEM_HEADER_BYTES: usize = 24;
/// Items start at multiples of this.
pub const ITEM_ALIGN: usize = 8;
/// Leaf item flag: the value lives in a chunk.
pub const FLAG_CHUNK: u8 = 1;
/// Node kind: leaf.
pub const KIND_LEAF: u8 = 0;
/// Node kind: branch.
pub const KIND_BRANCH: u8 = 1;
/// Deepest tree a decoder accepts (a branch's level); far beyond what any data needs.
pub const LEVEL_MAX: u8 = 32;

/// Where a node lies: its id and extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeRef {
    /// The node's id.
    pub id: u64,
    /// File offset of its extent.
    pub offset: u64,
    /// Bytes of its extent (its image, padded).
    pub len: u32,
}

/// A leaf record's value as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafValue<'a> {
    /// The value itself.
    Inline(&'a [u8]),
    /// A reference to the chunk holding it.
    Chunk(ChunkRef),
}

impl LeafValue<'_> {
    /// Bytes stored in the leaf for this value.
    pub fn stored_len(&self) -> usize {
        match self {
            LeafValue::Inline(v) => v.len(),
            LeafValue::Chunk(_) => CHUNK_REF_BYTES,
        }
    }
}

/// One record of a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafItem<'a> {
    /// The key.
    pub key: &'a [u8],
    /// LSN of the write that produced it.
    pub version: u64,
    /// The value, or where it is.
    pub value: LeafValue<'a>,
}

/// One child of a branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BranchItem<'a> {
    /// Smallest key the child may hold (ignored for the first child).
    pub key: &'a [u8],
    /// The child.
    pub child: NodeRef,
}

/// Where a leaf item's value starts, from the item's start.
pub fn leaf_value_at(key_len: usize) -> usize {
    (LEAF_ITEM_HEADER_BYTES + key_len).next_multiple_of(ITEM_ALIGN)
}

/// Bytes a leaf item takes in a node, its slot and alignment padding included.
pub fn leaf_item_bytes(key_len: usize, stored_value_len: usize) -> usize {
    SLOT_BYTES + (leaf_value_at(key_len) + stored_value_len).next_multiple_of(ITEM_ALIGN)
}

/// Bytes a branch item takes in a node, its slot and alignment padding included.
pub fn branch_item_bytes(key_len: usize) -> usize {
    SLOT_BYTES + (BRANCH_ITEM_HEADER_BYTES + key_len).next_multiple_of(ITEM_ALIGN)
}

/// Bytes a node uses, from the bytes of its items (as [`leaf_item_bytes`] and
/// [`branch_item_bytes`] count them) and their number.
pub fn node_used_bytes(items_bytes: usize, count: usize) -> usize {
    // The slots come first; the first item starts at the next multiple of 8.
    let slots_end = NODE_HEADER_BYTES + SLOT_BYTES * count;
    slots_end.next_multiple_of(ITEM_ALIGN) + items_bytes - SLOT_BYTES * count
}

fn finish(out: &mut [u8], id: u64, kind: u8, level: u8, count: usize, used: usize) {
    out[..4].copy_from_slice(NODE_MAGIC);
    put_u64(out, 8, id);
    out[16] = kind;
    out[17] = level;
    put_u16(out, 18, u16::try_from(count).expect("checked by the encoder"));
    put_u32(out, 20, u32::try_from(used).expect("checked by the encoder"));
    put_u64(out, 24, 0);
    out[used..].fill(0);
    let crc = crc32fast::hash(&out[8..used]);
    put_u32(out, 4, crc);
}

fn check_encodable(count: usize, used: usize, out_len: usize) -> Result<(), String> {
    if count > usize::from(u16::MAX) {
        return Err(format!("{count} items in a node, at most 65535"));
    }
    if used > out_len || u32::try_from(used).is_err() {
        return Err(format!("{count} items need {used} bytes, the node has {out_len}"));
    }
    Ok(())
}

/// Encodes a leaf into `out` (its length is the node's padded size); returns the bytes
/// used. Items must be in strictly increasing key order.
pub fn encode_leaf(id: u64, items: &[LeafItem<'_>], out: &mut [u8]) -> Result<usize, String> {
    let items_bytes: usize = items.iter().map(|i| leaf_item_bytes(i.key.len(), i.value.stored_len())).sum();
    let used = node_used_bytes(items_bytes, items.len());
    check_encodable(items.len(), used, out.len())?;
    let mut at = (NODE_HEADER_BYTES + SLOT_BYTES * items.len()).next_multiple_of(ITEM_ALIGN);
    out[NODE_HEADER_BYTES..at].fill(0);
    for (n, item) in items.iter().enumerate() {
        if n > 0 && items[n - 1].key >= item.key {
            return Err("leaf items out of order".into());
        }
        let key_len = u16::try_from(item.key.len()).map_err(|_| "key over 65535 bytes".to_string())?;
        put_u32(out, NODE_HEADER_BYTES + SLOT_BYTES * n, at as u32);
        let stored = item.value.stored_len();
        put_u16(out, at, key_len);
        out[at + 2] = if matches!(item.value, LeafValue::Chunk(_)) { FLAG_CHUNK } else { 0 };
        out[at + 3] = 0;
        put_u32(out, at + 4, stored as u32);
        put_u64(out, at + 8, item.version);
        let key_at = at + LEAF_ITEM_HEADER_BYTES;
        out[key_at..key_at + item.key.len()].copy_from_slice(item.key);
        let value_at = at + leaf_value_at(item.key.len());
        out[key_at + item.key.len()..value_at].fill(0);
        match item.value {
            LeafValue::Inline(v) => out[value_at..value_at + v.len()].copy_from_slice(v),
            LeafValue::Chunk(c) => out[value_at..value_at + CHUNK_REF_BYTES].copy_from_slice(&c.encode()),
        }
        let end = value_at + stored;
        at = end.next_multiple_of(ITEM_ALIGN);
        out[end..at].fill(0);
    }
    debug_assert_eq!(at, used, "the size formula and the encoder agree");
    finish(out, id, KIND_LEAF, 0, items.len(), used);
    Ok(used)
}

/// Encodes a branch of level `level` (at least 1) into `out`; returns the bytes used.
/// Items must be in strictly increasing key order (the first item's key is not stored).
pub fn encode_branch(id: u64, level: u8, items: &[BranchItem<'_>], out: &mut [u8]) -> Result<usize, String> {
    if level == 0 || level > LEVEL_MAX {
        return Err(format!("branch level {level} out of 1..={LEVEL_MAX}"));
    }
    if items.is_empty() {
        return Err("a branch has at least one child".into());
    }
    let key = |n: usize| if n == 0 { &[][..] } else { items[n].key };
    let items_bytes: usize = (0..items.len()).map(|n| branch_item_bytes(key(n).len())).sum();
    let used = node_used_bytes(items_bytes, items.len());
    check_encodable(items.len(), used, out.len())?;
    let mut at = (NODE_HEADER_BYTES + SLOT_BYTES * items.len()).next_multiple_of(ITEM_ALIGN);
    out[NODE_HEADER_BYTES..at].fill(0);
    for (n, item) in items.iter().enumerate() {
        if n > 1 && items[n - 1].key >= item.key {
            return Err("branch items out of order".into());
        }
        let k = key(n);
        let key_len = u16::try_from(k.len()).map_err(|_| "key over 65535 bytes".to_string())?;
        put_u32(out, NODE_HEADER_BYTES + SLOT_BYTES * n, at as u32);
        put_u16(out, at, key_len);
        put_u16(out, at + 2, 0);
        put_u32(out, at + 4, item.child.len);
        put_u64(out, at + 8, item.child.id);
        put_u64(out, at + 16, item.child.offset);
        let key_at = at + BRANCH_ITEM_HEADER_BYTES;
        out[key_at..key_at + k.len()].copy_from_slice(k);
        let end = key_at + k.len();
        at = end.next_multiple_of(ITEM_ALIGN);
        out[end..at].fill(0);
    }
    debug_assert_eq!(at, used, "the size formula and the encoder agree");
    finish(out, id, KIND_BRANCH, level, items.len(), used);
    Ok(used)
}

/// What [`check_node`] found in a valid node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its id.
    pub id: u64,
    /// Its level (0: a leaf).
    pub level: u8,
    /// Items.
    pub count: usize,
    /// Bytes used.
    pub used: usize,
}

/// Verifies a node image (any length from its used bytes up): magic, checksum, every
/// item inside the used bytes, keys in strictly increasing order. Never panics.
pub fn check_node(bytes: &[u8]) -> Result<NodeInfo, String> {
    if bytes.len() < NODE_HEADER_BYTES {
        return Err("node shorter than its header".into());
    }
    if &bytes[..4] != NODE_MAGIC {
        return Err("wrong node magic".into());
    }
    let used = get_u32(bytes, 20) as usize;
    if used < NODE_HEADER_BYTES || used > bytes.len() {
        return Err(format!("used bytes {used} out of bounds"));
    }
    if crc32fast::hash(&bytes[8..used]) != get_u32(bytes, 4) {
        return Err("node checksum mismatch".into());
    }
    let kind = bytes[16];
    let level = bytes[17];
    let count = get_u16(bytes, 18) as usize;
    match kind {
        KIND_LEAF if level == 0 => {}
        KIND_BRANCH if (1..=LEVEL_MAX).contains(&level) && count > 0 => {}
        _ => return Err(format!("bad node kind {kind} at level {level} with {count} items")),
    }
    if get_u64(bytes, 24) != 0 {
        return Err("reserved header bytes set".into());
    }
    let slots_end = NODE_HEADER_BYTES + SLOT_BYTES * count;
    if slots_end > used {
        return Err(format!("{count} slots do not fit in {used} bytes"));
    }
    let view = NodeView { bytes: &bytes[..used] };
    let header = if kind == KIND_LEAF { LEAF_ITEM_HEADER_BYTES } else { BRANCH_ITEM_HEADER_BYTES };
    let mut min_start = slots_end;
    for n in 0..count {
        let at = get_u32(bytes, NODE_HEADER_BYTES + SLOT_BYTES * n) as usize;
        if at % ITEM_ALIGN != 0 || at < min_start || at.checked_add(header).is_none_or(|e| e > used) {
            return Err(format!("item {n} at {at} is misplaced"));
        }
        let key_len = get_u16(bytes, at) as usize;
        let end = if kind == KIND_LEAF {
            let flags = bytes[at + 2];
            let stored = get_u32(bytes, at + 4) as usize;
            if flags & !FLAG_CHUNK != 0 || bytes[at + 3] != 0 || (flags & FLAG_CHUNK != 0 && stored != CHUNK_REF_BYTES)
            {
                return Err(format!("item {n} has bad flags"));
            }
            let value_at = at + leaf_value_at(key_len);
            if value_at > used || bytes[at + header + key_len..value_at].iter().any(|&b| b != 0) {
                return Err(format!("item {n} runs past the node or has padding set"));
            }
            value_at.checked_add(stored)
        } else {
            if get_u16(bytes, at + 2) != 0 || (n == 0) != (key_len == 0) {
                return Err(format!("item {n} has a bad key length or reserved bytes"));
            }
            Some(at + header + key_len)
        };
        let Some(end) = end.filter(|&e| e <= used) else { return Err(format!("item {n} runs past the node")) };
        if n > 0 && kind == KIND_LEAF && view.key(n - 1) >= view.key(n) {
            return Err(format!("item {n} out of key order"));
        }
        if n > 1 && kind == KIND_BRANCH && view.key(n - 1) >= view.key(n) {
            return Err(format!("item {n} out of key order"));
        }
        min_start = end;
    }
    Ok(NodeInfo { id: get_u64(bytes, 8), level, count, used })
}

/// A verified node image (see [`check_node`]), read in place.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    bytes: &'a [u8],
}

impl<'a> NodeView<'a> {
    /// Views `bytes`, which [`check_node`] accepted.
    pub fn new(bytes: &'a [u8]) -> NodeView<'a> {
        debug_assert!(check_node(bytes).is_ok(), "a node is viewed only once verified");
        NodeView { bytes }
    }

    /// The node's id.
    pub fn id(&self) -> u64 {
        get_u64(self.bytes, 8)
    }

    /// Whether it is a leaf.
    pub fn is_leaf(&self) -> bool {
        self.bytes[16] == KIND_LEAF
    }

    /// Its level (0: a leaf).
    pub fn level(&self) -> u8 {
        self.bytes[17]
    }

    /// Its item count.
    pub fn count(&self) -> usize {
        get_u16(self.bytes, 18) as usize
    }

    /// Bytes used.
    pub fn used(&self) -> usize {
        get_u32(self.bytes, 20) as usize
    }

    fn item_at(&self, n: usize) -> usize {
        get_u32(self.bytes, NODE_HEADER_BYTES + SLOT_BYTES * n) as usize
    }

    /// Item `n`'s key (empty for a branch's first item).
    pub fn key(&self, n: usize) -> &'a [u8] {
        let at = self.item_at(n);
        let len = get_u16(self.bytes, at) as usize;
        let header = if self.is_leaf() { LEAF_ITEM_HEADER_BYTES } else { BRANCH_ITEM_HEADER_BYTES };
        &self.bytes[at + header..at + header + len]
    }

    /// Leaf item `n`.
    pub fn leaf_item(&self, n: usize) -> LeafItem<'a> {
        debug_assert!(self.is_leaf(), "leaf items are read from leaves");
        let at = self.item_at(n);
        let key_len = get_u16(self.bytes, at) as usize;
        let stored = get_u32(self.bytes, at + 4) as usize;
        let key_at = at + LEAF_ITEM_HEADER_BYTES;
        let value_at = at + leaf_value_at(key_len);
        let value = &self.bytes[value_at..value_at + stored];
        let value = if self.bytes[at + 2] & FLAG_CHUNK != 0 {
            LeafValue::Chunk(ChunkRef::decode(value))
        } else {
            LeafValue::Inline(value)
        };
        LeafItem { key: &self.bytes[key_at..key_at + key_len], version: get_u64(self.bytes, at + 8), value }
    }

    /// Where leaf item `n`'s inline value lies in the image: (offset, length).
    pub fn value_span(&self, n: usize) -> (usize, usize) {
        let at = self.item_at(n);
        let key_len = get_u16(self.bytes, at) as usize;
        let stored = get_u32(self.bytes, at + 4) as usize;
        (at + leaf_value_at(key_len), stored)
    }

    /// Branch item `n`'s child.
    pub fn child(&self, n: usize) -> NodeRef {
        debug_assert!(!self.is_leaf(), "children are read from branches");
        let at = self.item_at(n);
        NodeRef {
            id: get_u64(self.bytes, at + 8),
            offset: get_u64(self.bytes, at + 16),
            len: get_u32(self.bytes, at + 4),
        }
    }

    /// Branch item `n` (its key empty for the first).
    pub fn branch_item(&self, n: usize) -> BranchItem<'a> {
        BranchItem { key: self.key(n), child: self.child(n) }
    }

    /// In a leaf: `Ok(n)` if item `n` has `key`, else `Err(n)` where it would go.
    pub fn search(&self, key: &[u8]) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// In a branch: the child whose keys include `key` (the last item whose key is at
    /// most `key`; the first item covers everything below the second).
    pub fn child_for(&self, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (1, self.count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(mid) <= key { lo = mid + 1 } else { hi = mid }
        }
        lo - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf_items(keys: &[Vec<u8>]) -> Vec<LeafItem<'_>> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| LeafItem {
                key: k,
                version: 100 + i as u64,
                value: if i % 4 == 3 {
                    LeafValue::Chunk(ChunkRef { offset: 4096 * i as u64, len: 9000, crc32: 7 })
                } else {
                    LeafValue::Inline(&k[..i % k.len().max(1)])
                },
            })
            .collect()
    }

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("key{:05}", i * 7).into_bytes()).collect()
    }

    #[test]
    fn leaf_round_trip_and_search() {
        let keys = keys(40);
        let items = leaf_items(&keys);
        let bytes: usize = items.iter().map(|i| leaf_item_bytes(i.key.len(), i.value.stored_len())).sum();
        let used = node_used_bytes(bytes, items.len());
        let mut out = vec![0xAB; used.next_multiple_of(1024)];
        assert_eq!(encode_leaf(9, &items, &mut out).unwrap(), used);
        let info = check_node(&out).unwrap();
        assert_eq!(info, NodeInfo { id: 9, level: 0, count: 40, used });
        let view = NodeView::new(&out);
        for (n, item) in items.iter().enumerate() {
            assert_eq!(view.leaf_item(n), *item);
            assert_eq!(view.search(item.key), Ok(n));
            assert_eq!(view.value_span(n).0 % 8, 0, "values start 8-aligned in the image");
        }
        assert_eq!(view.search(b"a"), Err(0));
        assert_eq!(view.search(b"key00001"), Err(1));
        assert_eq!(view.search(b"z"), Err(40));
        let empty = {
            let mut out = vec![0u8; 1024];
            encode_leaf(1, &[], &mut out).unwrap();
            out
        };
        assert_eq!(check_node(&empty).unwrap().count, 0);
        assert_eq!(NodeView::new(&empty).search(b"x"), Err(0));
    }

    #[test]
    fn branch_round_trip_and_child_for() {
        let keys = keys(10);
        let items: Vec<BranchItem<'_>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| BranchItem {
                key: k,
                child: NodeRef { id: i as u64 + 1, offset: 4096 * i as u64, len: 4096 },
            })
            .collect();
        let bytes: usize = (0..items.len()).map(|n| branch_item_bytes(if n == 0 { 0 } else { keys[n].len() })).sum();
        let used = node_used_bytes(bytes, items.len());
        let mut out = vec![0u8; used.next_multiple_of(1024)];
        assert_eq!(encode_branch(77, 2, &items, &mut out).unwrap(), used);
        let info = check_node(&out).unwrap();
        assert_eq!((info.id, info.level, info.count), (77, 2, 10));
        let view = NodeView::new(&out);
        assert_eq!(view.key(0), b"");
        for n in 0..10 {
            assert_eq!(view.child(n), items[n].child);
            if n > 0 {
                assert_eq!(view.child_for(&keys[n]), n);
                let mut after = keys[n].clone();
                after.push(0);
                assert_eq!(view.child_for(&after), n);
            }
        }
        assert_eq!(view.child_for(b""), 0);
        assert_eq!(view.child_for(b"key00006"), 0);
        assert_eq!(view.child_for(b"zzz"), 9);
    }

    #[test]
    fn every_bit_flip_is_caught_or_harmless() {
        let keys = keys(6);
        let items = leaf_items(&keys);
        let mut out = vec![0u8; 1024];
        let used = encode_leaf(3, &items, &mut out).unwrap();
        for bit in 0..used * 8 {
            let mut bad = out.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(check_node(&bad).is_err(), "flip of bit {bit} not caught");
        }
    }

    #[test]
    fn garbage_never_panics_and_bad_input_is_refused() {
        for len in [0, 3, 31, 32, 33, 100] {
            let _ = check_node(&vec![0xff; len]);
        }
        let keys = vec![b"b".to_vec(), b"a".to_vec()];
        let items = leaf_items(&keys);
        assert!(encode_leaf(1, &items, &mut [0u8; 1024]).is_err());
        let big = vec![b'k'; 3000];
        let items = [LeafItem { key: &big, version: 1, value: LeafValue::Inline(b"v") }];
        assert!(encode_leaf(1, &items, &mut [0u8; 1024]).is_err());
        assert!(encode_branch(1, 0, &[], &mut [0u8; 1024]).is_err());
        // A header claiming many items in few bytes.
        let mut bogus = vec![0u8; 64];
        bogus[..4].copy_from_slice(NODE_MAGIC);
        put_u16(&mut bogus, 18, u16::MAX);
        put_u32(&mut bogus, 20, 64);
        let crc = crc32fast::hash(&bogus[8..64]);
        put_u32(&mut bogus, 4, crc);
        assert!(check_node(&bogus).is_err());
    }
}
