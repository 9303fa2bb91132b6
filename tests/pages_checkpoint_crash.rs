//! A crash at every step of a checkpoint (pages loaded, pages written, pages synced,
//! table synced, slot synced, extents freed) loses no acknowledged write, and leaks no
//! space for ever: the next checkpoints reclaim what the crashed one allocated.

mod common;

use std::collections::BTreeMap;

use common::{child_command, emit, marked_lines};
use ringdb::{Db, Options};

const CHILD_ENV: &str = "RINGDB_TEST_CKPT_CRASH_DIR";
const ROUND_ENV: &str = "RINGDB_TEST_CKPT_CRASH_ROUND";
const STEPS: [&str; 6] = [
    "checkpoint-pages-loaded",
    "checkpoint-pages-written",
    "checkpoint-pages-synced",
    "checkpoint-table-synced",
    "checkpoint-slot-synced",
    "checkpoint-extents-freed",
];

fn options() -> Options {
    Options::default()
        .shards(2)
        .page_records_max(4)
        .page_chunk_bytes(512)
        .cache_bytes(64 << 10)
        .wal_segment_bytes(128 << 10)
        // Checkpoints only when asked: the test decides where they crash.
        .checkpoint_wal_bytes(64 << 30)
}

/// The writes of round `round`: new keys, overwrites of shared keys (some growing into
/// chunks), and deletes.
fn writes(round: u64) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    for i in 0..120u64 {
        let key = format!("shared{:03}", (i * 7 + round) % 90).into_bytes();
        let len = ((i * 37 + round * 11) % 700) as usize;
        let mut value = format!("r{round}-i{i}-").into_bytes();
        value.resize(len.max(value.len()), b'a' + (i % 26) as u8);
        out.push((key, Some(value)));
        out.push((format!("r{round:02}-k{i:03}").into_bytes(), Some(vec![b'x'; (i % 50) as usize])));
        if i % 9 == 0 {
            out.push((format!("shared{:03}", (i + 3 * round) % 90).into_bytes(), None));
        }
    }
    out
}

/// Child mode: applies one round's writes (printing an ack after each), then
/// checkpoints, which aborts at the failpoint the parent chose.
#[test]
fn child_round() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let db = Db::open(&dir, options()).unwrap();
    for (i, (key, value)) in writes(round).into_iter().enumerate() {
        match value {
            Some(v) => db.put(&key, &v).unwrap(),
            None => db.delete(&key).unwrap(),
        }
        emit(&format!("ack {i}"));
    }
    db.checkpoint().unwrap();
    emit("checkpointed");
}

#[test]
fn a_crash_at_every_checkpoint_step_loses_nothing_and_leaks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut round = 0u64;
    for pass in 0..2 {
        for step in STEPS {
            round += 1;
            let output = child_command(
                "child_round",
                &[
                    (CHILD_ENV, dir.path().display().to_string()),
                    (ROUND_ENV, round.to_string()),
                    ("RINGDB_FAILPOINT", step.to_string()),
                ],
            )
            .output()
            .expect("run the child");
            let lines = marked_lines(&String::from_utf8_lossy(&output.stdout));
            assert!(!output.status.success(), "pass {pass}, {step}: the child must crash at the failpoint");
            assert!(!lines.iter().any(|l| l == "checkpointed"), "pass {pass}, {step}: the checkpoint finished");
            let acked = lines.iter().filter(|l| l.starts_with("ack ")).count();
            let all = writes(round);
            assert_eq!(acked, all.len(), "pass {pass}, {step}: every write was acknowledged before the checkpoint");
            for (key, value) in all {
                match value {
                    Some(v) => model.insert(key, v),
                    None => model.remove(&key),
                };
            }
            let db = Db::open(dir.path(), options()).unwrap_or_else(|e| panic!("reopen after a crash at {step}: {e}"));
            let got: BTreeMap<Vec<u8>, Vec<u8>> =
                db.scan(..).map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec()))).collect::<Result<_, _>>().unwrap();
            assert_eq!(got.len(), model.len(), "pass {pass}, crash at {step}: key count");
            assert!(got == model, "pass {pass}, crash at {step}: contents differ from the acknowledged writes");
            for (k, v) in model.iter().step_by(7) {
                assert_eq!(db.get(k).unwrap().as_deref(), Some(&v[..]), "get after a crash at {step}");
            }
            // Two checkpoints later, whatever the crashed one allocated is reclaimed.
            db.checkpoint().unwrap();
            db.checkpoint().unwrap();
            let stats = db.stats();
            let user: u64 = model.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
            assert!(
                stats.data_file_bytes <= 4 * user + 2 * (256 << 10),
                "after a crash at {step}: data file {} bytes for {} bytes of records",
                stats.data_file_bytes,
                user
            );
            db.close().unwrap();
        }
    }
}

const FAIL_ENV: &str = "RINGDB_TEST_CKPT_FAIL_DIR";

/// Child mode: writers run while a checkpoint fails with an injected I/O error (so a
/// log flush is usually in flight as it fails). The shard must stay up: writes are then
/// refused with `Poisoned`, none hangs, reads still serve what was acknowledged, and close
/// reports the poisoning. Prints how many writes each writer had acknowledged.
#[test]
fn child_failed_checkpoint() {
    let Ok(dir) = std::env::var(FAIL_ENV) else { return };
    let db = Db::open(&dir, options()).unwrap();
    for i in 0..200u32 {
        db.put(format!("before{i:03}").as_bytes(), vec![b'b'; (i % 900) as usize]).unwrap();
    }
    let acked: Vec<u32> = std::thread::scope(|s| {
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let db = db.clone();
                s.spawn(move || {
                    let mut i = 0u32;
                    loop {
                        match db.put(format!("w{w}-{i:05}").as_bytes(), b"x") {
                            Ok(()) => i += 1,
                            Err(e) => {
                                assert!(matches!(e, ringdb::Error::Poisoned { .. }), "{e}");
                                return i;
                            }
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(20));
        db.checkpoint().unwrap_err();
        emit("checkpoint failed");
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for i in 0..200u32 {
        let v = db.get(format!("before{i:03}").as_bytes()).unwrap();
        assert_eq!(v.map(|v| v.len()), Some((i % 900) as usize), "before{i:03} still reads");
    }
    emit("reads ok");
    assert!(db.close().is_err(), "close reports the poisoned shard");
    emit(&format!("acked {}", acked.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")));
}

#[test]
fn a_failed_checkpoint_poisons_writes_but_keeps_reads_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let output = child_command(
        "child_failed_checkpoint",
        &[(FAIL_ENV, dir.path().display().to_string()), ("RINGDB_FAILPOINT", "checkpoint-error-pages-written".into())],
    )
    .output()
    .expect("run the child");
    let lines = marked_lines(&String::from_utf8_lossy(&output.stdout));
    assert!(output.status.success(), "child failed: {lines:?}");
    assert_eq!(&lines[..2], ["checkpoint failed", "reads ok"]);
    let acked: Vec<u32> = lines[2].strip_prefix("acked ").unwrap().split(' ').map(|n| n.parse().unwrap()).collect();
    assert!(acked.iter().sum::<u32>() > 0, "the writers ran before the checkpoint failed");
    let db = Db::open(dir.path(), options()).unwrap();
    for i in 0..200u32 {
        let v = db.get(format!("before{i:03}").as_bytes()).unwrap();
        assert_eq!(v.map(|v| v.len()), Some((i % 900) as usize), "before{i:03} after reopen");
    }
    for (w, &n) in acked.iter().enumerate() {
        for i in 0..n {
            assert!(db.get(format!("w{w}-{i:05}").as_bytes()).unwrap().is_some(), "acknowledged w{w}-{i} lost");
        }
    }
    db.checkpoint().unwrap();
    db.close().unwrap();
}
