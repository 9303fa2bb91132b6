//! A crash at each step of the cross-shard commit protocol leaves the transaction whole
//! or absent, as the commit rule says: after every participant prepared (no commit
//! sent, or one participant told) it is there on reopen, decided by recovery from the
//! shards' logs without help; after a participant refused (the others prepared, not yet
//! told to abort) it is absent. A second reopen finds the same, and the database takes
//! transactions again.

mod common;

use common::{child_command, emit, marked_lines};
use ringdb::{Db, Options};

const CHILD_ENV: &str = "RINGDB_TEST_TX_CRASH_DIR";
const POINT_ENV: &str = "RINGDB_TEST_TX_CRASH_POINT";

fn options() -> Options {
    Options::default().shards(3).wal_segment_bytes(256 << 10)
}

/// Three keys, one on each shard.
fn keys(db: &Db) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for i in 0.. {
        let k = format!("key{i}").into_bytes();
        if out.iter().all(|o| db.shard_of(o) != db.shard_of(&k)) {
            out.push(k);
            if out.len() == 3 {
                return out;
            }
        }
    }
    unreachable!()
}

/// Child mode: commits one transaction over three shards, which aborts the process at
/// the failpoint the parent chose.
#[test]
fn child_commit() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let point = std::env::var(POINT_ENV).unwrap();
    let db = Db::open(&dir, options()).unwrap();
    let k = keys(&db);
    for key in &k {
        db.put(key, b"before").unwrap();
    }
    emit("ready");
    let mut tx = db.transaction();
    for key in &k {
        assert_eq!(tx.get(key).unwrap().as_deref(), Some(&b"before"[..]));
        tx.put(key, b"after").unwrap();
    }
    if point == "tx-aborting" {
        // Another write to the last key makes its shard refuse; the others prepare.
        db.put(&k[2], b"plain").unwrap();
    }
    let result = tx.commit();
    panic!("the failpoint {point} was not reached (commit returned {result:?})");
}

fn crash_at(point: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut child = child_command(
        "child_commit",
        &[
            (CHILD_ENV, dir.path().display().to_string()),
            (POINT_ENV, point.to_string()),
            ("RINGDB_FAILPOINT", point.to_string()),
        ],
    );
    let out = child.output().expect("run the child");
    let lines = marked_lines(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(lines, ["ready"], "the child got to its transaction");
    assert!(!out.status.success(), "the child must abort at {point}");
    dir
}

fn values(db: &Db) -> Vec<Vec<u8>> {
    keys(db).iter().map(|k| db.get(k).unwrap().expect("every key exists").to_vec()).collect()
}

#[test]
fn committed_once_every_participant_prepared() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    for point in ["tx-all-prepared", "tx-commit-sent-one"] {
        let dir = crash_at(point);
        for reopen in 0..2 {
            let db = Db::open(dir.path(), options()).unwrap();
            assert_eq!(values(&db), vec![b"after".to_vec(); 3], "{point}, reopen {reopen}");
            // The first open decides the prepared parts (at `tx-commit-sent-one` the part
            // told to commit decided itself if its marker reached the disk, which nothing
            // waits for); the second finds markers.
            let decided = db.stats().tx_in_doubt_committed;
            let expected = match (reopen, point) {
                (0, "tx-all-prepared") => 3..=3,
                (0, _) => 2..=3,
                _ => 0..=0,
            };
            assert!(
                expected.contains(&decided),
                "{point}, reopen {reopen}: {decided} in-doubt parts decided committed"
            );
            db.close().unwrap();
        }
        let db = Db::open(dir.path(), options()).unwrap();
        let k = keys(&db);
        db.transact(|tx| {
            for key in &k {
                assert_eq!(tx.get(key)?.as_deref(), Some(&b"after"[..]));
                tx.put(key, b"later")?;
            }
            Ok(())
        })
        .unwrap();
        db.checkpoint().unwrap();
        db.close().unwrap();
        let db = Db::open(dir.path(), options()).unwrap();
        assert_eq!(values(&db), vec![b"later".to_vec(); 3], "{point}: after a checkpoint and reopen");
    }
}

#[test]
fn absent_once_a_participant_refused() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = crash_at("tx-aborting");
    for reopen in 0..2 {
        let db = Db::open(dir.path(), options()).unwrap();
        let expected = vec![b"before".to_vec(), b"before".to_vec(), b"plain".to_vec()];
        assert_eq!(values(&db), expected, "reopen {reopen}");
        let aborted = db.stats().tx_in_doubt_aborted;
        assert_eq!(aborted, if reopen == 0 { 2 } else { 0 }, "reopen {reopen}: prepared parts decided aborted");
        db.close().unwrap();
    }
}
