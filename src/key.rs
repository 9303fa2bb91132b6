//! Keys and key ranges, validated once where they enter the database.
//!
//! A [`Key`] is a key the engine accepts: at most [`KEY_BYTES_MAX`] bytes and,
//! when it comes from a caller ([`Key::user`]), outside the space reserved for
//! typed tables (keys that start with `format::table::RESERVED_PREFIX`). The
//! typed tables make their own keys, which lie in that space, with
//! [`Key::reserved`]. Code below the API takes a `Key` and never checks again.
//!
//! A [`KeyRange`] is a range of keys with owned bounds. [`KeyRange::is_empty`]
//! (through [`bounds_are_empty`]) is the one definition of an empty range: a
//! range is empty when no key at all lies in it. Keys are byte strings in
//! lexicographic order, so the smallest key a start bound admits is known (the
//! bound itself when included, the bound followed by a zero byte when
//! excluded, the empty key when unbounded), and the range is empty exactly when
//! its end refuses that key. This covers every range `BTreeMap::range` refuses
//! (inverted, or one key excluded at both ends), so callers test it before
//! walking an ordered map.
//!
//! [`KeyBounds`] is what the scans take from a caller: any of the standard ranges (and a
//! pair of [`Bound`]s) over anything that is bytes (`&[u8]`, `&[u8; N]`, `&str`,
//! `Vec<u8>`, `String`, `Bytes`, ...), or `..` for every key. [`KeyRange::copied`]
//! turns it into a `KeyRange`.

use std::ops::{Bound, Deref, Range, RangeBounds, RangeFrom, RangeFull, RangeInclusive, RangeTo, RangeToInclusive};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::table::RESERVED_PREFIX;

/// Longest key accepted, in bytes.
pub const KEY_BYTES_MAX: usize = 16 * 1024;

/// A validated key; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key<'a>(&'a [u8]);

impl<'a> Key<'a> {
    /// A caller's key: refuses one longer than [`KEY_BYTES_MAX`], then one in the space
    /// reserved for typed tables.
    pub fn user(bytes: &'a [u8]) -> Result<Key<'a>> {
        let key = Key::sized(bytes)?;
        if is_reserved(bytes) {
            return Err(Error::InvalidArgument(format!(
                "keys starting with {:?} are reserved for typed tables (ringdb::Table); use another prefix",
                Bytes::from_static(RESERVED_PREFIX)
            )));
        }
        Ok(key)
    }

    /// A typed table's own key (its metadata or one of its records), which lies in the
    /// reserved space. Only the typed tables make these.
    pub fn reserved(bytes: &'a [u8]) -> Key<'a> {
        assert!(is_reserved(bytes), "a typed table's keys lie in the reserved space, where no caller's key goes");
        assert!(bytes.len() <= KEY_BYTES_MAX, "a typed table's key (prefix, kind, name or index) is short");
        Key(bytes)
    }

    fn sized(bytes: &'a [u8]) -> Result<Key<'a>> {
        if bytes.len() > KEY_BYTES_MAX {
            return Err(Error::KeyTooLarge { len: bytes.len(), max: KEY_BYTES_MAX });
        }
        Ok(Key(bytes))
    }

    /// The key's bytes.
    pub fn as_bytes(self) -> &'a [u8] {
        self.0
    }
}

impl Deref for Key<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0
    }
}

/// Whether `key` lies in the space reserved for typed tables.
pub(crate) fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// A range of keys as [`Db::scan`](crate::Db::scan) and
/// [`Transaction::scan`](crate::Transaction::scan) take it: `..`, `a..b`, `a..=b`, `a..`,
/// `..b`, `..=b` or a `(Bound, Bound)` pair, whose keys are anything that is bytes
/// (`AsRef<[u8]>`): byte-string literals, `&[u8]`, `&str`, `Vec<u8>`, `String`, `Bytes`;
/// or a reference to one of those ranges.
///
/// Both ends of a Rust range have one type, so two byte-string literals of different
/// lengths (`b"a"..b"bc"`: `&[u8; 1]` and `&[u8; 2]`) do not make a range; write them as
/// slices (`&b"a"[..]..&b"bc"[..]`) or strings (`"a".."bc"`).
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let db = ringdb::Db::open(dir.path(), ringdb::Options::default())?;
/// for key in ["a", "b", "c", "d"] {
///     db.put(key, "v")?;
/// }
/// let count = |scan: ringdb::Scan| scan.collect::<ringdb::Result<Vec<_>>>().map(|entries| entries.len());
/// assert_eq!(count(db.scan(..))?, 4);
/// assert_eq!(count(db.scan(b"b"..b"d"))?, 2);
/// assert_eq!(count(db.scan("b"..="d"))?, 3);
/// assert_eq!(count(db.scan(&b"a"[..]..&b"bb"[..]))?, 2);
/// assert_eq!(count(db.scan(b"c".to_vec()..))?, 2);
/// let (start, end) = (std::ops::Bound::Excluded("a"), std::ops::Bound::Unbounded);
/// assert_eq!(count(db.scan((start, end)))?, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait KeyBounds: sealed::Sealed {
    /// The range's two bounds, as byte strings.
    fn key_bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>);
}

mod sealed {
    /// Keeps [`super::KeyBounds`] to the range types listed there, so more can be added
    /// without breaking anyone.
    pub trait Sealed {}
}

/// The bounds of any standard range over byte-like keys, as byte strings.
fn byte_bounds<'a, K: AsRef<[u8]> + 'a>(range: &'a impl RangeBounds<K>) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    (range.start_bound().map(AsRef::as_ref), range.end_bound().map(AsRef::as_ref))
}

/// Implements [`KeyBounds`] for standard ranges over any `K: AsRef<[u8]>`.
macro_rules! key_bounds_for {
    ($($range:ident),*) => {$(
        impl<K: AsRef<[u8]>> sealed::Sealed for $range<K> {}
        impl<K: AsRef<[u8]>> KeyBounds for $range<K> {
            fn key_bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
                byte_bounds(self)
            }
        }
    )*};
}

key_bounds_for!(Range, RangeInclusive, RangeFrom, RangeTo, RangeToInclusive);

impl<K: AsRef<[u8]>> sealed::Sealed for (Bound<K>, Bound<K>) {}
impl<K: AsRef<[u8]>> KeyBounds for (Bound<K>, Bound<K>) {
    fn key_bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (self.0.as_ref().map(AsRef::as_ref), self.1.as_ref().map(AsRef::as_ref))
    }
}

// A range held in a variable can be scanned again through a reference.
impl<R: KeyBounds + ?Sized> sealed::Sealed for &R {}
impl<R: KeyBounds + ?Sized> KeyBounds for &R {
    fn key_bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (**self).key_bounds()
    }
}

// `..` has no key type to infer, so it gets its own impl rather than one over `K`.
impl sealed::Sealed for RangeFull {}
impl KeyBounds for RangeFull {
    fn key_bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (Bound::Unbounded, Bound::Unbounded)
    }
}

/// A range of keys with owned bounds; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyRange {
    pub start: Bound<Bytes>,
    pub end: Bound<Bytes>,
}

impl KeyRange {
    /// The range from `start` to `end`.
    pub fn new(start: Bound<Bytes>, end: Bound<Bytes>) -> KeyRange {
        KeyRange { start, end }
    }

    /// Every key.
    pub fn all() -> KeyRange {
        KeyRange::new(Bound::Unbounded, Bound::Unbounded)
    }

    /// A copy of a caller's range.
    pub fn copied(range: &impl KeyBounds) -> KeyRange {
        let (start, end) = range.key_bounds();
        KeyRange::new(start.map(Bytes::copy_from_slice), end.map(Bytes::copy_from_slice))
    }

    /// The keys that start with `prefix`.
    pub fn prefix(prefix: &[u8]) -> KeyRange {
        KeyRange::new(Bound::Included(Bytes::copy_from_slice(prefix)), prefix_end(prefix))
    }

    /// The range's bounds, borrowed (as `BTreeMap::range` takes them).
    pub fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (self.start.as_ref().map(|k| &k[..]), self.end.as_ref().map(|k| &k[..]))
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        let (start, end) = self.bounds();
        RangeBounds::<[u8]>::contains(&(start, end), key)
    }

    /// Whether no key lies in the range (the one definition; see the module docs).
    pub fn is_empty(&self) -> bool {
        let (start, end) = self.bounds();
        bounds_are_empty(start, end)
    }
}

/// Whether no key lies between `start` and `end`: whether `end` refuses the smallest key
/// `start` admits (see the module docs).
pub(crate) fn bounds_are_empty(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (_, Bound::Unbounded) => false,
        // The smallest key of all is the empty key.
        (Bound::Unbounded, Bound::Included(_)) => false,
        (Bound::Unbounded, Bound::Excluded(e)) => e.is_empty(),
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s), Bound::Excluded(e)) => s >= e,
        // The smallest key after `s` is `s` then a zero byte: no key lies between them.
        (Bound::Excluded(s), Bound::Included(e)) => s >= e,
        (Bound::Excluded(s), Bound::Excluded(e)) => s >= e || is_successor(s, e),
    }
}

/// Whether `next` is `key` followed by a zero byte (the smallest key after `key`).
fn is_successor(key: &[u8], next: &[u8]) -> bool {
    next.len() == key.len() + 1 && next.starts_with(key) && next[key.len()] == 0
}

/// The smallest key greater than every key that starts with `prefix`, if any.
pub(crate) fn prefix_end(prefix: &[u8]) -> Bound<Bytes> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Bound::Excluded(Bytes::from(end));
        }
    }
    Bound::Unbounded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    fn range(start: Bound<&[u8]>, end: Bound<&[u8]>) -> KeyRange {
        KeyRange::new(start.map(b), end.map(b))
    }

    /// Brute force: whether some key of up to three bytes over a small alphabet lies in
    /// the range (enough to witness every non-empty range built from those keys).
    fn holds_a_key(r: &KeyRange) -> bool {
        let alphabet = [0u8, 1, b'a', b'b'];
        let mut keys = vec![Vec::new()];
        for len in 1..=3 {
            let mut more = Vec::new();
            for k in keys.iter().filter(|k| k.len() == len - 1) {
                for &c in &alphabet {
                    let mut n = k.clone();
                    n.push(c);
                    more.push(n);
                }
            }
            keys.extend(more);
        }
        keys.iter().any(|k| r.contains(k))
    }

    #[test]
    fn empty_means_no_key_lies_in_the_range() {
        let points: [&[u8]; 5] = [b"", b"a", b"a\0", b"a\x01", b"b"];
        let mut bounds = vec![Bound::Unbounded];
        for p in points {
            bounds.push(Bound::Included(p));
            bounds.push(Bound::Excluded(p));
        }
        for &start in &bounds {
            for &end in &bounds {
                let r = range(start, end);
                assert_eq!(r.is_empty(), !holds_a_key(&r), "{r:?}");
            }
        }
    }

    #[test]
    fn empty_covers_what_an_ordered_map_refuses() {
        assert!(range(Bound::Included(b"b"), Bound::Excluded(b"a")).is_empty());
        assert!(range(Bound::Excluded(b"a"), Bound::Excluded(b"a")).is_empty());
        assert!(range(Bound::Included(b"a"), Bound::Excluded(b"a")).is_empty());
        let one = range(Bound::Included(b"a"), Bound::Included(b"a"));
        assert!(!one.is_empty() && one.contains(b"a"));
    }

    #[test]
    fn user_keys_are_checked_for_size_then_reserved_space() {
        assert!(Key::user(b"k").is_ok());
        let long = vec![0xFF; KEY_BYTES_MAX + 1];
        assert!(matches!(Key::user(&long), Err(Error::KeyTooLarge { .. })), "size is checked first");
        assert!(matches!(Key::user(b"\xFFringdb-x"), Err(Error::InvalidArgument(_))));
        assert_eq!(Key::reserved(b"\xFFringdb\x00t").as_bytes(), b"\xFFringdb\x00t");
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"ab"), Bound::Excluded(b(b"ac")));
        assert_eq!(prefix_end(b"a\xff"), Bound::Excluded(b(b"b")));
        assert_eq!(prefix_end(b"\xff\xff"), Bound::Unbounded);
        assert_eq!(prefix_end(b""), Bound::Unbounded);
        assert!(KeyRange::prefix(b"ab").contains(b"abz") && !KeyRange::prefix(b"ab").contains(b"ac"));
    }
}
