//! Proves the transaction API's single-threaded behaviour: read-your-writes, rollback
//! (explicit and on drop), conflict detection (write-write, read-write, a key read as
//! absent, a phantom in a scanned range, on one shard and across shards), read-only
//! transactions, `transact` retrying, limits, cross-shard write batches, async commit,
//! and a clear error for a directory of the previous format version.

use ringdb::{Db, Error, Options, WriteBatch};

/// Small log segments: a fresh segment is zero-filled when created.
fn options() -> Options {
    Options::default().wal_segment_bytes(256 << 10)
}

fn open(dir: &std::path::Path, shards: usize) -> Db {
    Db::open(dir, options().shards(shards)).expect("open")
}

/// Two keys on different shards (and one pair on the same shard), found by search.
fn keys_on(db: &Db, prefix: &str, same: bool) -> (Vec<u8>, Vec<u8>) {
    let a = format!("{prefix}-a").into_bytes();
    for i in 0..10_000 {
        let b = format!("{prefix}-b{i}").into_bytes();
        if (db.shard_of(&a) == db.shard_of(&b)) == same {
            return (a, b);
        }
    }
    panic!("no key pair found");
}

fn conflict(r: ringdb::Result<ringdb::CommitInfo>) -> bool {
    matches!(r, Err(Error::Conflict { .. }))
}

#[test]
fn read_your_writes_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), 3);
    db.put(b"k1", b"old").unwrap();
    let mut tx = db.transaction();
    assert_eq!(tx.get(b"k1").unwrap().as_deref(), Some(&b"old"[..]));
    tx.put(b"k1", b"new").unwrap();
    tx.put(b"k2", b"two").unwrap();
    tx.delete(b"k1").unwrap();
    assert_eq!(tx.get(b"k1").unwrap(), None, "own delete");
    assert_eq!(tx.get(b"k2").unwrap().as_deref(), Some(&b"two"[..]), "own put");
    assert_eq!(db.get(b"k2").unwrap(), None, "not visible before commit");
    tx.rollback();
    assert_eq!(db.get(b"k1").unwrap().as_deref(), Some(&b"old"[..]));
    assert_eq!(db.get(b"k2").unwrap(), None);
    {
        let mut tx = db.transaction();
        tx.put(b"k3", b"dropped").unwrap();
    }
    assert_eq!(db.get(b"k3").unwrap(), None, "drop rolls back");
    let mut tx = db.transaction();
    tx.put(b"k1", b"committed").unwrap();
    tx.put(b"k4", b"four").unwrap();
    let info = tx.commit().unwrap();
    assert_eq!(info.writes, 2);
    assert_eq!(db.get(b"k1").unwrap().as_deref(), Some(&b"committed"[..]));
    assert_eq!(db.get(b"k4").unwrap().as_deref(), Some(&b"four"[..]));
    // A scan sees the transaction's own writes merged in.
    db.put(b"s:1", b"1").unwrap();
    db.put(b"s:3", b"3").unwrap();
    let mut tx = db.transaction();
    tx.put(b"s:2", b"2").unwrap();
    tx.delete(b"s:3").unwrap();
    let seen: Vec<(Vec<u8>, Vec<u8>)> =
        tx.scan(&b"s:"[..]..&b"s;"[..]).unwrap().into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    assert_eq!(seen, vec![(b"s:1".to_vec(), b"1".to_vec()), (b"s:2".to_vec(), b"2".to_vec())]);
    tx.commit().unwrap();
    db.close().unwrap();
    // Committed writes survive a reopen.
    let db = open(dir.path(), 0);
    assert_eq!(db.get(b"k4").unwrap().as_deref(), Some(&b"four"[..]));
    assert_eq!(db.get(b"s:3").unwrap(), None);
    assert_eq!(db.get(b"s:2").unwrap().as_deref(), Some(&b"2"[..]));
}

#[test]
fn conflicts_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), 3);
    for same in [true, false] {
        let tag = if same { "same" } else { "cross" };
        let (a, b) = keys_on(&db, tag, same);
        db.put(&a, b"1").unwrap();
        db.put(&b, b"1").unwrap();

        // Write-write on a key both read: the first committer wins.
        let mut t1 = db.transaction();
        let mut t2 = db.transaction();
        t1.get(&a).unwrap();
        t2.get(&a).unwrap();
        t1.put(&a, b"t1").unwrap();
        t1.put(&b, b"t1").unwrap();
        t2.put(&a, b"t2").unwrap();
        t2.put(&b, b"t2").unwrap();
        t1.commit().unwrap();
        assert!(conflict(t2.commit()), "{tag}: write-write");
        assert_eq!(db.get(&b).unwrap().as_deref(), Some(&b"t1"[..]), "{tag}: the loser wrote nothing");

        // Read-write: a plain put to a key read makes the reader's commit fail.
        let mut t = db.transaction();
        t.get(&a).unwrap();
        t.put(&b, b"from t").unwrap();
        db.put(&a, b"plain").unwrap();
        assert!(conflict(t.commit()), "{tag}: read-write");
        assert_eq!(db.get(&b).unwrap().as_deref(), Some(&b"t1"[..]));

        // A key read as absent, then created.
        let absent = format!("{tag}-absent").into_bytes();
        let mut t = db.transaction();
        assert_eq!(t.get(&absent).unwrap(), None);
        t.put(&b, b"from t").unwrap();
        db.put(&absent, b"now here").unwrap();
        assert!(conflict(t.commit()), "{tag}: absent then created");

        // A phantom: a key inserted into a scanned range.
        let prefix = format!("{tag}-range:");
        db.put(format!("{prefix}1").as_bytes(), b"x").unwrap();
        let mut t = db.transaction();
        let end = format!("{tag}-range;");
        let rows = t.scan(prefix.as_bytes()..end.as_bytes()).unwrap();
        assert_eq!(rows.len(), 1);
        t.put(&a, b"count=1").unwrap();
        db.put(format!("{prefix}2").as_bytes(), b"y").unwrap();
        assert!(conflict(t.commit()), "{tag}: phantom");
        // And a scan with nothing changed commits.
        let mut t = db.transaction();
        assert_eq!(t.scan(prefix.as_bytes()..end.as_bytes()).unwrap().len(), 2);
        t.put(&a, b"count=2").unwrap();
        t.commit().unwrap();
        assert_eq!(db.get(&a).unwrap().as_deref(), Some(&b"count=2"[..]));

        // Read-only transactions validate too.
        let mut t = db.transaction();
        t.get(&a).unwrap();
        t.get(&b).unwrap();
        t.commit().unwrap();
        let mut t = db.transaction();
        t.get(&a).unwrap();
        t.get(&b).unwrap();
        db.delete(&b).unwrap();
        assert!(conflict(t.commit()), "{tag}: read-only, deleted since");

        // Blind writes never conflict.
        let mut t1 = db.transaction();
        let mut t2 = db.transaction();
        t1.put(&a, b"blind1").unwrap();
        t2.put(&a, b"blind2").unwrap();
        t2.commit().unwrap();
        t1.commit().unwrap();
        assert_eq!(db.get(&a).unwrap().as_deref(), Some(&b"blind1"[..]));
    }
    let stats = db.stats();
    assert!(stats.tx_conflicts >= 10, "conflicts counted: {}", stats.tx_conflicts);
    assert!(stats.tx_commits > 0);
}

#[test]
fn transact_retries_until_it_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), 2);
    let (a, b) = keys_on(&db, "retry", false);
    db.put(&a, b"0").unwrap();
    let mut attempts = 0;
    let value = db
        .transact(|tx| {
            attempts += 1;
            let v = tx.get(&a)?.unwrap();
            if attempts < 3 {
                // Someone else writes what this attempt read: its commit must fail.
                db.put(&a, format!("{attempts}").as_bytes())?;
            }
            tx.put(&b, &v)?;
            Ok(v.to_vec())
        })
        .unwrap();
    assert_eq!(attempts, 3);
    assert_eq!(value, b"2");
    assert_eq!(db.get(&b).unwrap().as_deref(), Some(&b"2"[..]));
    // A closure's own error is returned at once and nothing is written.
    let mut calls = 0;
    let err = db
        .transact(|tx| {
            calls += 1;
            tx.put(b"never", b"x")?;
            Err::<(), _>(Error::InvalidArgument("no".into()))
        })
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)));
    assert_eq!(calls, 1);
    assert_eq!(db.get(b"never").unwrap(), None);
    // A transaction that always conflicts gives up after the documented attempts (the
    // key it reads it also writes, so locking mode does not lock it).
    let mut calls = 0;
    let err = db
        .transact(|tx| {
            calls += 1;
            tx.get(&a)?;
            db.put(&a, b"again")?;
            tx.put(&a, b"x")
        })
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(calls, ringdb::TRANSACT_ATTEMPTS_MAX);
}

#[test]
fn limits_give_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options().shards(2).tx_keys_max(3).tx_bytes_max(1024)).unwrap();
    let mut tx = db.transaction();
    tx.get(b"a").unwrap();
    tx.get(b"b").unwrap();
    tx.put(b"c", b"1").unwrap();
    let err = tx.get(b"d").unwrap_err();
    assert!(matches!(err, Error::TransactionTooLarge { what: "keys", len: 4, max: 3 }), "{err}");
    assert!(!err.is_conflict());
    tx.put(b"c", b"overwriting a written key adds no key").unwrap();
    let mut tx = db.transaction();
    let err = tx.put(b"big", [0u8; 2000]).unwrap_err();
    assert!(matches!(err, Error::TransactionTooLarge { what: "bytes", .. }), "{err}");
    assert!(err.to_string().contains("tx_bytes_max"), "{err}");
    for i in 0..5 {
        db.put(format!("r{i}").as_bytes(), b"v").unwrap();
    }
    let mut tx = db.transaction();
    let err = tx.scan(&b"r"[..]..&b"s"[..]).unwrap_err();
    assert!(matches!(err, Error::TransactionTooLarge { what: "keys", .. }), "{err}");
    assert!(Db::open(tempfile::tempdir().unwrap().path(), options().tx_keys_max(0)).is_err());
    // A committed transaction cannot be used again through a clone of its handle, and
    // operations on a closed database fail.
    let mut tx = db.transaction();
    db.clone().close().unwrap();
    assert!(matches!(tx.get(b"a"), Err(Error::Closed)));
}

#[test]
fn write_batch_across_shards_is_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), 4);
    let mut batch = WriteBatch::new();
    for i in 0..32 {
        batch.put(format!("b{i}").as_bytes(), b"1").unwrap();
    }
    batch.delete(b"b0").unwrap();
    db.write_batch(batch).unwrap();
    assert_eq!(db.get(b"b0").unwrap(), None, "ops apply in order");
    assert_eq!(db.get(b"b31").unwrap().as_deref(), Some(&b"1"[..]));
    // A reader in a transaction never sees half of a batch, while batches and a
    // transaction holding shared locks run at once.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for round in 0..200u32 {
                let mut batch = WriteBatch::new();
                for i in 1..32 {
                    batch.put(format!("b{i}").as_bytes(), round.to_le_bytes()).unwrap();
                }
                db.write_batch(batch).unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let mut consistent = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let values = db
                .transact(|tx| (1..32).map(|i| tx.get(format!("b{i}").as_bytes())).collect::<ringdb::Result<Vec<_>>>())
                .unwrap();
            assert!(values.windows(2).all(|w| w[0] == w[1]), "a transaction saw half a batch");
            consistent += 1;
        }
        writer.join().unwrap();
        assert!(consistent > 0);
    });
    db.close().unwrap();
}

#[test]
fn commit_async_on_any_executor() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), 2);
    let (a, b) = keys_on(&db, "async", false);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut tx = db.transaction();
        assert_eq!(tx.get_async(&a).await.unwrap(), None);
        tx.put(&a, b"1").unwrap();
        tx.put(&b, b"2").unwrap();
        let info = tx.commit_async().await.unwrap();
        assert_eq!((info.shards, info.writes), (2, 2));
        let mut batch = WriteBatch::new();
        batch.put(&a, b"3").unwrap().put(&b, b"4").unwrap();
        db.write_batch_async(batch).await.unwrap();
    });
    assert_eq!(db.get(&a).unwrap().as_deref(), Some(&b"3"[..]));
    assert_eq!(db.get(&b).unwrap().as_deref(), Some(&b"4"[..]));
}

#[test]
fn previous_format_version_is_refused() {
    use ringdb::format::manifest::{Manifest, SLOT_BYTES};
    let dir = tempfile::tempdir().unwrap();
    open(dir.path(), 1).close().unwrap();
    let path = dir.path().join("MANIFEST");
    let bytes = std::fs::read(&path).unwrap();
    let mut out = bytes.clone();
    for slot in 0..bytes.len() / SLOT_BYTES {
        if let Ok(mut m) = Manifest::decode(&bytes[slot * SLOT_BYTES..(slot + 1) * SLOT_BYTES]) {
            m.format_version = 1;
            out[slot * SLOT_BYTES..(slot + 1) * SLOT_BYTES].copy_from_slice(&m.encode().unwrap());
        }
    }
    std::fs::write(&path, out).unwrap();
    let err = Db::open(dir.path(), options()).err().expect("a version 1 directory is refused");
    assert!(matches!(err, Error::Incompatible(_)), "{err}");
    assert!(err.to_string().contains("format version 1"), "{err}");
}

#[test]
fn transactions_under_every_durability_mode() {
    use ringdb::Durability;
    let periodic = Durability::Periodic { bytes: 1 << 20, items: 1000, interval: std::time::Duration::from_millis(5) };
    for durability in [Durability::None, periodic] {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), options().shards(3).durability(durability)).unwrap();
        let (a, b) = keys_on(&db, "mode", false);
        let (c, d) = keys_on(&db, "mode2", true);
        db.put(&a, b"0").unwrap();
        for i in 0..50u32 {
            db.transact(|tx| {
                let n: u32 = std::str::from_utf8(&tx.get(&a)?.unwrap()).unwrap().parse().unwrap();
                tx.put(&a, (n + 1).to_string().as_bytes())?;
                tx.put(&b, i.to_string().as_bytes())?;
                tx.put(&c, i.to_string().as_bytes())?;
                tx.put(&d, i.to_string().as_bytes())
            })
            .unwrap();
            // A plain write to a key a transaction just wrote, and a conflict.
            let mut t = db.transaction();
            t.get(&c).unwrap();
            t.put(&d, b"lost").unwrap();
            db.put(&c, b"plain").unwrap();
            assert!(conflict(t.commit()), "{durability:?}");
        }
        assert_eq!(db.get(&a).unwrap().as_deref(), Some(&b"50"[..]), "{durability:?}");
        db.close().unwrap();
        let db = Db::open(dir.path(), options()).unwrap();
        assert_eq!(db.get(&a).unwrap().as_deref(), Some(&b"50"[..]), "{durability:?}: after reopen");
        assert_eq!(db.get(&b).unwrap().as_deref(), Some(&b"49"[..]));
        assert_eq!(db.get(&c).unwrap().as_deref(), Some(&b"plain"[..]));
        assert_eq!(db.get(&d).unwrap().as_deref(), Some(&b"49"[..]));
    }
}

#[test]
fn plain_writes_wait_for_locks_and_never_fail() {
    // One thread puts 1..=N to a key; transactions read it (conflicting with the puts, so
    // `transact` soon locks it, holding the puts back) and copy it elsewhere. Every put
    // succeeds, in order, and what the transactions saw never goes backwards.
    const N: u32 = 300;
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), 2);
    let (p, mirror) = keys_on(&db, "plain", false);
    db.put(&p, 0u32.to_le_bytes()).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let read = |v: Option<ringdb::Value>| u32::from_le_bytes(v.unwrap()[..].try_into().unwrap());
    let seen: Vec<u32> = std::thread::scope(|s| {
        let db = &db;
        let (p, mirror, done) = (&p, &mirror, &done);
        s.spawn(move || {
            for i in 1..=N {
                db.put(p, i.to_le_bytes()).expect("a plain put never fails beside transactions");
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let mut seen = Vec::new();
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let v = db
                .transact(|tx| {
                    let v = read(tx.get(p)?);
                    tx.put(mirror, v.to_le_bytes())?;
                    Ok(v)
                })
                .unwrap();
            seen.push(v);
        }
        seen
    });
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "a committed read went backwards: {seen:?}");
    assert_eq!(read(db.get(&p).unwrap()), N, "every put applied, the last one last");
    assert_eq!(read(db.get(&mirror).unwrap()), *seen.last().unwrap());
    assert!(!seen.is_empty());
}

/// A transaction one of whose operations failed stays failed: its commit returns that
/// error and writes nothing, whatever it wrote before the failure (single- and
/// cross-shard, a refused size and a refused key alike).
#[test]
fn a_failed_transaction_stays_failed() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options().shards(2).tx_bytes_max(1024)).unwrap();
    let (a, b) = keys_on(&db, "failed", false);
    let mut tx = db.transaction();
    tx.put(&a, b"1").unwrap();
    tx.put(&b, b"2").unwrap();
    let refused = tx.put(b"big", [0u8; 2000]).unwrap_err();
    assert!(matches!(refused, Error::TransactionTooLarge { what: "bytes", .. }), "{refused}");
    // Later operations still answer, but the transaction has failed.
    tx.put(b"after", b"3").unwrap();
    let err = tx.commit().unwrap_err();
    assert_eq!(err.to_string(), refused.to_string(), "commit returns the operation's error");
    for key in [&a[..], &b[..], b"big", b"after"] {
        assert_eq!(db.get(key).unwrap(), None, "nothing of a failed transaction is written");
    }
    // A refused key fails it too; a transaction with no failure still commits.
    let mut tx = db.transaction();
    tx.put(&a, b"1").unwrap();
    let long = vec![b'k'; ringdb::KEY_BYTES_MAX + 1];
    assert!(matches!(tx.get(&long), Err(Error::KeyTooLarge { .. })));
    assert!(matches!(tx.commit(), Err(Error::KeyTooLarge { .. })));
    assert_eq!(db.get(&a).unwrap(), None);
    let mut tx = db.transaction();
    tx.put(&a, b"1").unwrap();
    tx.commit().unwrap();
    assert_eq!(db.get(&a).unwrap().as_deref(), Some(&b"1"[..]));
    db.close().unwrap();
}
