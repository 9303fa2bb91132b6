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
            assert!(
                stats.data_file_bytes <= 2 * stats.page_bytes + 2 * (256 << 10),
                "after a crash at {step}: data file {} bytes for {} page bytes",
                stats.data_file_bytes,
                stats.page_bytes
            );
            db.close().unwrap();
        }
    }
}
