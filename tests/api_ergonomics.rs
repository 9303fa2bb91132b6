//! Proves the API takes keys and values as anything that is bytes (`&str`, `String`,
//! `&[u8]`, `Vec<u8>`, `[u8; N]`, `&[u8; N]`, `Bytes`, a `Value` read back, and references
//! to them) in `Db`, `WriteBatch` and `Transaction`, and scan ranges of any of them
//! (byte-string literals, `&[u8]`, `&str`, owned keys, `..`, `Bound` pairs): each call
//! compiles with each type, and writes and reads back the same bytes as the plain `&[u8]`
//! form. Input checks (key and value size, reserved keys) apply whatever the type.

use std::ops::Bound;

use bytes::Bytes;
use ringdb::{Db, Error, KEY_BYTES_MAX, Options, Transaction, VALUE_BYTES_MAX, WriteBatch};

/// Small segments keep opening (a zero-filled segment and a spare per shard) cheap.
fn open() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default().shards(2).wal_segment_bytes(1 << 20)).unwrap();
    (dir, db)
}

fn get(db: &Db, key: &[u8]) -> Option<Vec<u8>> {
    db.get(key).unwrap().map(Vec::from)
}

/// The keys a scan returns, in order.
fn keys(scan: ringdb::Scan) -> Vec<Vec<u8>> {
    scan.map(|e| e.map(|(k, _)| k.to_vec())).collect::<ringdb::Result<_>>().unwrap()
}

/// Puts `value` at `key` through `Db::put`, reads it through `Db::get` with the same key
/// value, then deletes it: the bytes seen through `&[u8]` must be the argument's.
macro_rules! db_round_trip {
    ($db:expr, $key:expr, $value:expr) => {{
        let (key_bytes, value_bytes): (Vec<u8>, Vec<u8>) =
            (AsRef::<[u8]>::as_ref(&$key).to_vec(), AsRef::<[u8]>::as_ref(&$value).to_vec());
        $db.put($key, $value).unwrap();
        assert_eq!(get(&$db, &key_bytes), Some(value_bytes.clone()), "put of {key_bytes:?}");
        assert_eq!($db.get($key).unwrap().map(Vec::from), Some(value_bytes), "get of {key_bytes:?}");
        $db.delete($key).unwrap();
        assert_eq!(get(&$db, &key_bytes), None, "delete of {key_bytes:?}");
    }};
}

#[test]
fn db_put_get_delete_take_every_byte_type() {
    let (_dir, db) = open();
    let owned_string = String::from("string key");
    let owned_vec = b"vec key".to_vec();
    let array = *b"array key";
    let bytes = Bytes::from_static(b"bytes key");
    let slice: &[u8] = b"slice key";

    db_round_trip!(db, "str key", "str value");
    db_round_trip!(db, b"literal key", b"literal value");
    db_round_trip!(db, slice, slice);
    db_round_trip!(db, &owned_string, &owned_string);
    db_round_trip!(db, owned_string.clone(), owned_string.clone());
    db_round_trip!(db, &owned_vec, &owned_vec);
    db_round_trip!(db, owned_vec.clone(), owned_vec.clone());
    db_round_trip!(db, array, array);
    db_round_trip!(db, &array, &array);
    db_round_trip!(db, bytes.clone(), bytes.clone());
    db_round_trip!(db, &bytes, &bytes);
    db_round_trip!(db, 7u64.to_be_bytes(), [0u8; 0]);

    // Mixed types in one call, and a value read back written again as it is.
    db.put("mixed", b"\x00\x01").unwrap();
    let read = db.get(b"mixed").unwrap().unwrap();
    db.put(Bytes::from_static(b"copy"), &read).unwrap();
    db.put(vec![b'c', b'2'], read.clone()).unwrap();
    assert_eq!(get(&db, b"copy"), Some(vec![0, 1]));
    assert_eq!(get(&db, b"c2"), Some(vec![0, 1]));
    assert_eq!(db.shard_of("copy"), db.shard_of(b"copy"));
    assert_eq!(db.shard_of(String::from("c2")), db.shard_of(&b"c2"[..]));

    // The stats count every call, whatever its argument types (12 round trips, then 3 puts).
    let stats = db.stats();
    assert_eq!((stats.puts, stats.deletes, stats.keys), (15, 12, 3));
}

#[test]
fn async_forms_and_multi_get_take_every_byte_type() {
    let (_dir, db) = open();
    let acks = [
        db.put_async("a", "1"),
        db.put_async(b"b", b"2"),
        db.put_async(vec![b'c'], vec![b'3']),
        db.put_async(Bytes::from_static(b"d"), Bytes::from_static(b"4")),
        db.put_async(*b"e", *b"5"),
        db.put_async(String::from("f"), String::from("6")),
    ];
    for ack in acks {
        ack.wait().unwrap();
    }
    db.delete_async(*b"f").wait().unwrap();
    assert_eq!(get(&db, b"f"), None);

    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let value = runtime.block_on(db.get_async("c")).unwrap();
    assert_eq!(value.as_deref(), Some(&b"3"[..]));

    let want: Vec<Option<Vec<u8>>> = vec![Some(b"1".to_vec()), Some(b"2".to_vec()), None, Some(b"5".to_vec())];
    let got = |values: Vec<Option<ringdb::Value>>| values.into_iter().map(|v| v.map(Vec::from)).collect::<Vec<_>>();
    assert_eq!(got(db.multi_get(&["a", "b", "f", "e"]).unwrap()), want);
    assert_eq!(got(db.multi_get(&[b"a", b"b", b"f", b"e"]).unwrap()), want);
    assert_eq!(got(db.multi_get(&[b"a".to_vec(), b"b".to_vec(), b"f".to_vec(), b"e".to_vec()]).unwrap()), want);
    let as_bytes: Vec<Bytes> = ["a", "b", "f", "e"].into_iter().map(Bytes::from).collect();
    assert_eq!(got(db.multi_get(&as_bytes).unwrap()), want);
    assert_eq!(got(runtime.block_on(db.multi_get_async(&["a", "b", "f", "e"])).unwrap()), want);
}

#[test]
fn write_batch_takes_every_byte_type() {
    let (_dir, db) = open();
    let mut batch = WriteBatch::new();
    batch
        .put("a", "1")
        .unwrap()
        .put(b"b", b"2")
        .unwrap()
        .put(vec![b'c'], [b'3'])
        .unwrap()
        .put(Bytes::from_static(b"d"), &b"4"[..])
        .unwrap()
        .put(String::from("e"), Bytes::from_static(b"5"))
        .unwrap()
        .delete("a")
        .unwrap()
        .delete(Bytes::from_static(b"b"))
        .unwrap()
        .delete(*b"x")
        .unwrap();
    assert_eq!(batch.len(), 8);
    db.write_batch(batch).unwrap();
    let all: Vec<(Vec<u8>, Vec<u8>)> =
        db.scan(..).map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec()))).collect::<ringdb::Result<_>>().unwrap();
    let want: Vec<(Vec<u8>, Vec<u8>)> = [("c", "3"), ("d", "4"), ("e", "5")]
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    assert_eq!(all, want);
}

#[test]
fn transactions_take_every_byte_type() {
    let (_dir, db) = open();
    db.put("balance", 10u64.to_le_bytes()).unwrap();
    let mut tx: Transaction = db.transaction();
    let balance = tx.get("balance").unwrap().expect("written before the transaction");
    let n = u64::from_le_bytes(balance[..].try_into().unwrap());
    tx.put(b"balance", (n - 3).to_le_bytes()).unwrap();
    tx.put(String::from("note"), "paid 3").unwrap();
    tx.put(Bytes::from_static(b"gone"), Bytes::from_static(b"soon")).unwrap();
    tx.delete(Vec::from(*b"gone")).unwrap();
    assert_eq!(tx.get(*b"note").unwrap().as_deref(), Some(&b"paid 3"[..]), "its own write");
    assert_eq!(tx.get(Bytes::from_static(b"gone")).unwrap(), None, "its own delete");
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert!(runtime.block_on(tx.get_async(vec![b'n', b'o', b't', b'e'])).unwrap().is_some());
    let scanned: Vec<Vec<u8>> = tx.scan("a"..="z").unwrap().into_iter().map(|(k, _)| k.to_vec()).collect();
    assert_eq!(scanned, [b"balance".to_vec(), b"note".to_vec()], "the database's key and its own write");
    tx.commit().unwrap();
    assert_eq!(get(&db, b"balance"), Some(7u64.to_le_bytes().to_vec()));
    assert_eq!(get(&db, b"note"), Some(b"paid 3".to_vec()));
    assert_eq!(get(&db, b"gone"), None);

    let n = db
        .transact(|tx| {
            let n = tx.get("counter")?.map_or(0, |v| v[0]) + 1;
            tx.put("counter", [n])?;
            Ok(n)
        })
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn scans_take_ranges_of_every_byte_type() {
    let (_dir, db) = open();
    for key in ["a", "b", "ba", "c", "d"] {
        db.put(key, key).unwrap();
    }
    let k = |list: &[&str]| list.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();

    assert_eq!(keys(db.scan(..)), k(&["a", "b", "ba", "c", "d"]));
    // Byte-string literals of one length, and every kind of range over them.
    assert_eq!(keys(db.scan(b"b"..b"d")), k(&["b", "ba", "c"]));
    assert_eq!(keys(db.scan(b"b"..=b"d")), k(&["b", "ba", "c", "d"]));
    assert_eq!(keys(db.scan(b"c"..)), k(&["c", "d"]));
    assert_eq!(keys(db.scan(..b"b")), k(&["a"]));
    assert_eq!(keys(db.scan(..=b"b")), k(&["a", "b"]));
    // Literals of different lengths, as slices; strings; owned keys.
    assert_eq!(keys(db.scan(&b"a"[..]..&b"ba"[..])), k(&["a", "b"]));
    assert_eq!(keys(db.scan("a".."ba")), k(&["a", "b"]));
    assert_eq!(keys(db.scan(String::from("ba")..)), k(&["ba", "c", "d"]));
    assert_eq!(keys(db.scan(b"b".to_vec()..b"c".to_vec())), k(&["b", "ba"]));
    assert_eq!(keys(db.scan(Bytes::from_static(b"c")..=Bytes::from_static(b"z"))), k(&["c", "d"]));
    let start = b"b".to_vec();
    assert_eq!(keys(db.scan(&start..)), k(&["b", "ba", "c", "d"]));
    // A range kept in a variable, scanned twice through a reference.
    let kept = b"b".to_vec()..=b"c".to_vec();
    assert_eq!(keys(db.scan(&kept)), k(&["b", "ba", "c"]));
    assert_eq!(keys(db.scan(&kept)), k(&["b", "ba", "c"]));
    // Bound pairs.
    assert_eq!(keys(db.scan((Bound::Excluded("b"), Bound::Included("c")))), k(&["ba", "c"]));
    assert_eq!(keys(db.scan((Bound::Excluded(&b"b"[..]), Bound::Unbounded))), k(&["ba", "c", "d"]));
    assert_eq!(keys(db.scan((Bound::<&[u8]>::Unbounded, Bound::Unbounded))).len(), 5);
    // Empty and inverted ranges read nothing.
    assert_eq!(keys(db.scan(b"c"..b"a")), Vec::<Vec<u8>>::new());
    assert_eq!(keys(db.scan("b".."b")), Vec::<Vec<u8>>::new());
    // Prefixes of every type.
    assert_eq!(keys(db.scan_prefix("b")), k(&["b", "ba"]));
    assert_eq!(keys(db.scan_prefix(b"b")), k(&["b", "ba"]));
    assert_eq!(keys(db.scan_prefix(vec![b'b'])), k(&["b", "ba"]));
    assert_eq!(keys(db.scan_prefix(Bytes::from_static(b"ba"))), k(&["ba"]));
}

#[test]
fn scans_still_hide_typed_table_records() {
    let (_dir, db) = open();
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Hits {
        n: u64,
    }
    ringdb::record!(Hits, "Hits", 1, [n]);
    let table = db.table::<Hits>("hits").unwrap();
    table.set(0, &Hits { n: 1 }).unwrap();
    db.put("user", "v").unwrap();
    assert_eq!(keys(db.scan(..)), [b"user".to_vec()]);
    assert_eq!(keys(db.scan(b"\xFF".as_slice()..)), Vec::<Vec<u8>>::new());
    assert_eq!(keys(db.scan((Bound::<Vec<u8>>::Unbounded, Bound::Unbounded))), [b"user".to_vec()]);
}

#[test]
fn input_is_checked_whatever_its_type() {
    let (_dir, db) = open();
    let long_key = vec![b'k'; KEY_BYTES_MAX + 1];
    assert!(matches!(db.put(long_key.clone(), "v"), Err(Error::KeyTooLarge { .. })));
    assert!(matches!(db.get(&long_key), Err(Error::KeyTooLarge { .. })));
    assert!(matches!(db.delete(Bytes::from(long_key.clone())), Err(Error::KeyTooLarge { .. })));
    assert!(matches!(WriteBatch::new().put(long_key.as_slice(), "v"), Err(Error::KeyTooLarge { .. })));
    assert!(matches!(db.transaction().put(&long_key, "v"), Err(Error::KeyTooLarge { .. })));

    let big_value = Bytes::from(vec![0u8; VALUE_BYTES_MAX + 1]);
    assert!(matches!(db.put("k", big_value.clone()), Err(Error::ValueTooLarge { .. })));
    assert!(matches!(WriteBatch::new().put("k", &big_value), Err(Error::ValueTooLarge { .. })));
    assert!(matches!(db.transaction().put("k", big_value), Err(Error::ValueTooLarge { .. })));

    let reserved = *b"\xFFringdb-x";
    assert!(matches!(db.put(reserved, "v"), Err(Error::InvalidArgument(_))));
    assert!(matches!(db.get(reserved), Err(Error::InvalidArgument(_))));
    assert!(matches!(WriteBatch::new().delete(reserved), Err(Error::InvalidArgument(_))));
    assert_eq!(db.stats().keys, 0, "nothing was written");
}
