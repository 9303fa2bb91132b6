//! Proves `verify::check_dir` finds what is wrong in a directory, names the file and
//! offset, and calls damage exactly what an open refuses: damaged log records (before
//! a later flush, and in a segment before the tail), a torn log tail (which the next
//! open cuts), damaged and torn `MANIFEST` and `CHECKPOINT` slots, a missing shard
//! folder, a damaged sealed blob segment, and damaged and torn open blob segments; and
//! that a database closed cleanly under every durability mode has no finding. Two
//! differential tests flip random bits and compare the check's verdict with an open's.

use std::path::{Path, PathBuf};

use ringdb::format::record::{Decoded, decode_record, record_bytes};
use ringdb::verify::{Finding, Report, Severity, check_dir};
use ringdb::{BlobLog, BlobOptions, Db, Error, Options};

fn options() -> Options {
    Options::default().shards(1).wal_segment_bytes(64 << 10)
}

fn value(i: usize) -> Vec<u8> {
    format!("value {i} ").into_bytes().into_iter().cycle().take(700).collect()
}

/// A one-shard database whose log spans at least two segments.
fn make_db(dir: &Path, puts: usize) {
    let db = Db::open(dir, options()).unwrap();
    for i in 0..puts {
        db.put(format!("key:{i:04}").as_bytes(), &value(i)).unwrap();
    }
    db.close().unwrap();
}

fn check(dir: &Path) -> Report {
    let mut calls = 0u64;
    let report = check_dir(dir, |p| {
        assert!(p.bytes_done <= p.bytes_total, "progress never passes its total");
        calls += 1;
    })
    .unwrap();
    assert!(calls > 0, "progress was reported");
    report
}

fn findings(report: &Report, severity: Severity) -> Vec<&Finding> {
    report.findings.iter().filter(|f| f.severity == severity).collect()
}

/// Shard 0's log segments that hold records, in order.
fn log_segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir.join("shard-000/wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .filter(|p| {
            let bytes = std::fs::read(p).unwrap();
            let block = u32::from_le_bytes(bytes[32..36].try_into().unwrap()) as usize;
            bytes[block..].iter().any(|&b| b != 0)
        })
        .collect();
    out.sort();
    out
}

/// Offsets of the records of a log segment.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let block = u32::from_le_bytes(bytes[32..36].try_into().unwrap()) as usize;
    let mut at = block;
    let mut out = Vec::new();
    while let Decoded::Record(h) = decode_record(&bytes[at..], bytes.len()) {
        out.push(at);
        at += record_bytes(h.body_len as usize);
    }
    out
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x04;
    std::fs::write(path, bytes).unwrap();
}

fn assert_corruption_in<T>(result: Result<T, Error>, file: &Path) {
    match result {
        Err(Error::Corruption { file: f, .. }) => assert_eq!(f, file),
        Err(e) => panic!("expected corruption in {}, got {e}", file.display()),
        Ok(_) => panic!("expected corruption in {}, the open succeeded", file.display()),
    }
}

#[test]
fn a_clean_database_has_no_findings_and_lists_what_it_read() {
    let dir = tempfile::tempdir().unwrap();
    make_db(dir.path(), 200);
    let report = check(dir.path());
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert!(!report.is_damaged());
    assert_eq!(report.count(ringdb::verify::FileKind::Manifest), 1);
    assert!(report.count(ringdb::verify::FileKind::LogSegment) >= 2);
    assert_eq!(report.verified.iter().map(|f| f.records).sum::<u64>(), 200);
    assert_eq!(report.not_verified.len(), 1);
    assert!(report.not_verified[0].path.ends_with("shard-000/pages.dat"));
}

#[test]
fn a_bad_record_before_the_tail_segment_is_damage_and_open_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    make_db(dir.path(), 200);
    let segments = log_segments(dir.path());
    assert!(segments.len() >= 2, "the log spans segments");
    // The last record of the first segment: nothing follows it in its segment, but the
    // next segment holds records, so it cannot be a torn tail.
    let bytes = std::fs::read(&segments[0]).unwrap();
    let last = *record_offsets(&bytes).last().unwrap();
    flip(&segments[0], last + 40);

    let report = check(dir.path());
    let damage = findings(&report, Severity::Damage);
    assert_eq!(damage.len(), 1, "{:#?}", report.findings);
    assert_eq!((damage[0].file.as_path(), damage[0].offset), (segments[0].as_path(), last as u64));
    assert!(damage[0].what.contains("before the log's tail segment"), "{}", damage[0].what);
    assert!(findings(&report, Severity::Torn).is_empty());
    assert_corruption_in(Db::open(dir.path(), options()), &segments[0]);
}

#[test]
fn a_bad_record_followed_by_a_later_flush_is_damage_and_open_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    make_db(dir.path(), 20);
    let segment = &log_segments(dir.path())[0];
    let first = record_offsets(&std::fs::read(segment).unwrap())[0];
    flip(segment, first + 100);

    let report = check(dir.path());
    let damage = findings(&report, Severity::Damage);
    assert_eq!(damage.len(), 1, "{:#?}", report.findings);
    assert_eq!((damage[0].file.as_path(), damage[0].offset), (segment.as_path(), first as u64));
    assert!(damage[0].what.contains("a later flush follows"), "{}", damage[0].what);
    assert_corruption_in(Db::open(dir.path(), options()), segment);
}

#[test]
fn a_torn_tail_is_torn_and_the_next_open_cuts_it() {
    let dir = tempfile::tempdir().unwrap();
    make_db(dir.path(), 20);
    let segment = log_segments(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    let last = *record_offsets(&bytes).last().unwrap();
    // The last record damaged, nothing after it: the remains of the last flush.
    flip(&segment, last + 60);

    let report = check(dir.path());
    assert!(!report.is_damaged(), "{:#?}", report.findings);
    let torn = findings(&report, Severity::Torn);
    assert_eq!(torn.len(), 1, "{:#?}", report.findings);
    assert_eq!((torn[0].file.as_path(), torn[0].offset), (segment.as_path(), last as u64));

    let db = Db::open(dir.path(), options()).unwrap();
    assert_eq!(db.get(b"key:0019").unwrap(), None, "the torn record is cut");
    assert!(db.get(b"key:0018").unwrap().is_some());
    db.close().unwrap();
    let after = check(dir.path());
    assert!(findings(&after, Severity::Torn).is_empty() && !after.is_damaged(), "{:#?}", after.findings);
    let notes = findings(&after, Severity::Note);
    assert!(notes.iter().any(|f| f.file.file_name().unwrap().to_str().unwrap().starts_with("quarantine-")));
}

#[test]
fn manifest_and_checkpoint_slots_torn_or_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options()).unwrap();
    db.put(b"k", b"v").unwrap();
    db.checkpoint().unwrap();
    db.close().unwrap();
    let manifest = dir.path().join("MANIFEST");
    let checkpoint = dir.path().join("shard-000/CHECKPOINT");

    // Garbage in the manifest's unused slot: a torn slot write, the other slot serves.
    let mut bytes = std::fs::read(&manifest).unwrap();
    bytes[4096..4196].fill(0xab);
    std::fs::write(&manifest, &bytes).unwrap();
    let report = check(dir.path());
    let torn = findings(&report, Severity::Torn);
    assert!(!report.is_damaged(), "{:#?}", report.findings);
    assert_eq!((torn.len(), torn[0].file.as_path(), torn[0].offset), (1, manifest.as_path(), 4096));
    Db::open(dir.path(), options()).unwrap().close().unwrap();

    // Every written slot of the checkpoint damaged: no valid slot is left.
    let bytes = std::fs::read(&checkpoint).unwrap();
    for slot in [0, 4096] {
        if bytes[slot..slot + 4096].iter().any(|&b| b != 0) {
            flip(&checkpoint, slot + 30);
        }
    }
    let report = check(dir.path());
    let damage = findings(&report, Severity::Damage);
    assert_eq!(damage.len(), 1, "{:#?}", report.findings);
    assert_eq!(damage[0].file, checkpoint);
    assert!(Db::open(dir.path(), options()).is_err(), "open refuses a checkpoint with no valid slot");

    // The manifest's valid slot damaged too (and the other, had the open rewritten it).
    flip(&manifest, 20);
    flip(&manifest, 4096 + 20);
    let report = check(dir.path());
    assert!(findings(&report, Severity::Damage).iter().any(|f| f.file == manifest && f.what.contains("no valid")));
}

#[test]
fn a_missing_shard_folder_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    Db::open(dir.path(), options().shards(2)).unwrap().close().unwrap();
    std::fs::remove_dir_all(dir.path().join("shard-001")).unwrap();
    let report = check(dir.path());
    let damage = findings(&report, Severity::Damage);
    assert_eq!(damage.len(), 1, "{:#?}", report.findings);
    assert_eq!(damage[0].file, dir.path().join("shard-001"));
}

fn random_blob(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn blob_options() -> BlobOptions {
    BlobOptions::default().max_segment_bytes(1 << 20)
}

#[test]
fn blob_segments_sealed_damaged_and_open_torn_or_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let log = BlobLog::open(dir.path(), blob_options()).unwrap();
    let locs: Vec<_> = (0..8).map(|i| log.append(&random_blob(i, 300_000)).unwrap()).collect();
    log.close().unwrap();
    let report = check(dir.path());
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert!(report.count(ringdb::verify::FileKind::BlobSegment) >= 3);
    let segment = |s: u32| dir.path().join(format!("{s:08x}.blob"));

    // A sealed segment is trusted by open; check reads it and finds the flipped byte.
    let sealed = locs[0];
    assert_ne!(sealed.segment, locs[7].segment, "the first blob's segment is sealed");
    flip(&segment(sealed.segment), sealed.offset as usize + 1000);
    let report = check(dir.path());
    let damage = findings(&report, Severity::Damage);
    assert_eq!(damage.len(), 1, "{:#?}", report.findings);
    assert_eq!((damage[0].file.clone(), damage[0].offset), (segment(sealed.segment), sealed.offset));
    assert!(damage[0].what.contains("sealed segment"), "{}", damage[0].what);
    let log = BlobLog::open(dir.path(), blob_options()).unwrap();
    assert_corruption_in(log.read(sealed), &segment(sealed.segment));
    log.close().unwrap();
    flip(&segment(sealed.segment), sealed.offset as usize + 1000);

    // The open segment's last record damaged: a torn tail.
    let last = locs[7];
    flip(&segment(last.segment), last.offset as usize + 1000);
    let report = check(dir.path());
    let torn = findings(&report, Severity::Torn);
    assert!(!report.is_damaged(), "{:#?}", report.findings);
    assert_eq!((torn.len(), torn[0].file.clone(), torn[0].offset), (1, segment(last.segment), last.offset));
    flip(&segment(last.segment), last.offset as usize + 1000);

    // A record of the open segment followed by a later flush's record: damage.
    let earlier = locs[6];
    assert_eq!(earlier.segment, last.segment, "two blobs share the open segment");
    flip(&segment(earlier.segment), earlier.offset as usize + 1000);
    let report = check(dir.path());
    let damage = findings(&report, Severity::Damage);
    assert_eq!(damage.len(), 1, "{:#?}", report.findings);
    assert_eq!((damage[0].file.clone(), damage[0].offset), (segment(earlier.segment), earlier.offset));
    assert_corruption_in(BlobLog::open(dir.path(), blob_options()), &segment(earlier.segment));
}

#[test]
fn every_durability_mode_checks_clean_after_close() {
    let modes = [
        ringdb::Durability::Sync,
        ringdb::Durability::Periodic { bytes: 4096, items: 4, interval: std::time::Duration::from_millis(5) },
        ringdb::Durability::None,
    ];
    for mode in modes {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), options().shards(2).durability(mode)).unwrap();
        let acks: Vec<_> = (0..300).map(|i| db.put_async(format!("key:{i:04}").as_bytes(), &value(i))).collect();
        for ack in acks {
            ack.wait().unwrap();
        }
        db.flush().unwrap();
        db.close().unwrap();
        let report = check(dir.path());
        assert!(report.findings.is_empty(), "{mode:?}: {:#?}", report.findings);
        assert_eq!(report.verified.iter().map(|f| f.records).sum::<u64>(), 300, "{mode:?}: one record per put");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Bit flips anywhere in the log segments (records, padding, headers, the zeros after
/// the end, spare segments): the check calls the result damaged exactly when an open
/// refuses it, and names the file the open names. Prints its seed; `RINGDB_SEED=<n>`
/// replays it, `RINGDB_VERIFY_ROUNDS=<n>` runs more rounds than the 40 of CI.
#[test]
fn check_agrees_with_open_on_random_log_damage() {
    let seed: u64 = std::env::var("RINGDB_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("seed={seed}");
    let mut rng = seed | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let template = tempfile::tempdir().unwrap();
    let db = Db::open(template.path(), options().shards(2)).unwrap();
    for i in 0..150 {
        db.put(format!("key:{i:04}").as_bytes(), &value(i)).unwrap();
        if i == 60 {
            db.checkpoint().unwrap();
        }
    }
    let mut batch = ringdb::WriteBatch::new();
    for i in 0..6 {
        batch.put(format!("batch:{i}").as_bytes(), b"b").unwrap();
    }
    db.write_batch(batch).unwrap();
    db.close().unwrap();

    let rounds: u32 = std::env::var("RINGDB_VERIFY_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    let (mut damaged, mut clean) = (0, 0);
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        let mut segments: Vec<PathBuf> = ["shard-000/wal", "shard-001/wal"]
            .iter()
            .flat_map(|w| std::fs::read_dir(dir.path().join(w)).unwrap().map(|e| e.unwrap().path()))
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        segments.sort();
        for _ in 0..=next(2) {
            let file = &segments[next(segments.len() as u64) as usize];
            let mut bytes = std::fs::read(file).unwrap();
            let end = bytes.iter().rposition(|&b| b != 0).unwrap_or(0) + 256;
            let at = next(end.min(bytes.len()) as u64) as usize;
            bytes[at] ^= 1 << next(8);
            std::fs::write(file, bytes).unwrap();
        }
        let report = check(dir.path());
        let opened = Db::open(dir.path(), options().shards(0));
        let context = format!("seed={seed} round={round}: {:#?}", report.findings);
        match opened {
            Ok(db) => {
                db.close().unwrap();
                assert!(!report.is_damaged(), "open succeeded but check found damage; {context}");
                clean += 1;
            }
            Err(Error::Corruption { file, .. }) => {
                let damage = findings(&report, Severity::Damage);
                assert!(!damage.is_empty(), "open refused ({}) but check found no damage; {context}", file.display());
                assert!(
                    damage.iter().any(|f| f.file == file || file.starts_with(&f.file) || f.file.starts_with(&file)),
                    "open names {}, check does not; {context}",
                    file.display()
                );
                damaged += 1;
            }
            Err(e) => panic!("open failed otherwise: {e}; {context}"),
        }
    }
    println!("{damaged} damaged, {clean} opened");
}

/// Bit flips in a blob log's open segment (header block, records, transactions, the zeros
/// after the end): the check calls it damaged exactly when `BlobLog::open` refuses it.
/// (Sealed segments are not compared: an open trusts them, the check reads them.)
#[test]
fn check_agrees_with_blob_open_on_random_damage_to_the_open_segment() {
    let seed: u64 = std::env::var("RINGDB_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("seed={seed}");
    let mut rng = seed | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let template = tempfile::tempdir().unwrap();
    let log = BlobLog::open(template.path(), blob_options().compression(Some(3))).unwrap();
    for i in 0..12u64 {
        let len = [10, 3000, 70_000][i as usize % 3];
        if i % 4 == 3 {
            let mut txn = log.transaction();
            txn.append(&random_blob(i, len)).unwrap();
            txn.append(&vec![b'z'; len]).unwrap();
            txn.commit().unwrap();
        } else {
            log.append(&random_blob(i, len)).unwrap();
        }
    }
    let open_segment = log.current_segment();
    log.close().unwrap();

    let rounds: u32 = std::env::var("RINGDB_VERIFY_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    let (mut damaged, mut clean) = (0, 0);
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        let file = dir.path().join(format!("{open_segment:08x}.blob"));
        let mut bytes = std::fs::read(&file).unwrap();
        for _ in 0..=next(2) {
            let end = bytes.iter().rposition(|&b| b != 0).unwrap_or(0) + 256;
            let at = next(end.min(bytes.len()) as u64) as usize;
            bytes[at] ^= 1 << next(8);
        }
        std::fs::write(&file, bytes).unwrap();
        let report = check(dir.path());
        let context = format!("seed={seed} round={round}: {:#?}", report.findings);
        match BlobLog::open(dir.path(), blob_options()) {
            Ok(log) => {
                log.close().unwrap();
                assert!(!report.is_damaged(), "open succeeded but check found damage; {context}");
                clean += 1;
            }
            Err(e) => {
                assert!(report.is_damaged(), "open refused ({e}) but check found no damage; {context}");
                damaged += 1;
            }
        }
    }
    println!("{damaged} damaged, {clean} opened");
}
