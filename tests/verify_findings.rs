//! Proves `verify::check_dir` finds what is wrong in a directory, names the file and
//! offset, and calls damage exactly what an open refuses: damaged log records (before
//! a later flush, and in a segment before the tail), a torn log tail (which the next
//! open cuts), damaged and torn `MANIFEST` and `CHECKPOINT` slots, a missing shard
//! folder, a damaged sealed blob segment, damaged and torn open blob segments, and the
//! blob log's manifest rules (`blob_manifest`: what `BlobLog::open` refuses is damage);
//! and that a database closed cleanly under every durability mode has no finding. Two
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
        db.put(format!("key:{i:04}").as_bytes(), value(i)).unwrap();
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

fn segment_path(dir: &Path, s: u32) -> PathBuf {
    dir.join(format!("{s:08x}.blob"))
}

/// A blob log of 8 blobs of 300 KB in 1 MiB segments (two sealed, one open), closed cleanly.
fn make_blob_log(dir: &Path) -> Vec<ringdb::Location> {
    let log = BlobLog::open(dir, blob_options()).unwrap();
    let locs: Vec<_> = (0..8).map(|i| log.append(&random_blob(i, 300_000)).unwrap()).collect();
    log.close().unwrap();
    locs
}

/// The image a crash leaves of a blob log: `dir` copied to `to` while the log is open.
fn copy_while_open(dir: &Path, to: &Path, log: &BlobLog) {
    log.sync().unwrap();
    copy_dir(dir, to);
}

#[test]
fn blob_segments_sealed_damaged_and_open_torn_or_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let locs = make_blob_log(dir.path());
    let report = check(dir.path());
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert!(report.count(ringdb::verify::FileKind::BlobSegment) >= 3);
    assert_eq!(report.count(ringdb::verify::FileKind::BlobManifest), 1);
    let segment = |s: u32| segment_path(dir.path(), s);

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

    // After a clean close the manifest knows every record of the open segment durable: its
    // last record damaged is damage, not a torn tail.
    let last = locs[7];
    flip(&segment(last.segment), last.offset as usize + 1000);
    let report = check(dir.path());
    let damage = findings(&report, Severity::Damage);
    assert_eq!(damage.len(), 1, "{:#?}", report.findings);
    assert_eq!((damage[0].file.clone(), damage[0].offset), (segment(last.segment), last.offset));
    assert!(damage[0].what.contains("durable up to offset"), "{}", damage[0].what);
    assert!(findings(&report, Severity::Torn).is_empty(), "{:#?}", report.findings);
    assert_corruption_in(BlobLog::open(dir.path(), blob_options()), &segment(last.segment));
    flip(&segment(last.segment), last.offset as usize + 1000);

    // A crash image: two blobs appended past the end the manifest knows durable.
    let log = BlobLog::open(dir.path(), blob_options()).unwrap();
    let more: Vec<_> = (8..10).map(|i| log.append(&random_blob(i, 20_000)).unwrap()).collect();
    assert_eq!(more[0].segment, last.segment, "a clean close lets the log continue its open segment");
    let crashed = tempfile::tempdir().unwrap();
    copy_while_open(dir.path(), crashed.path(), &log);
    log.close().unwrap();
    let report = check(crashed.path());
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    let segment = |s: u32| segment_path(crashed.path(), s);

    // Its last record damaged: a torn tail, which the next open cuts.
    flip(&segment(more[1].segment), more[1].offset as usize + 1000);
    let report = check(crashed.path());
    let torn = findings(&report, Severity::Torn);
    assert!(!report.is_damaged(), "{:#?}", report.findings);
    assert_eq!((torn.len(), torn[0].file.clone(), torn[0].offset), (1, segment(more[1].segment), more[1].offset));
    flip(&segment(more[1].segment), more[1].offset as usize + 1000);

    // A record past the durable end followed by a later flush's record: damage.
    flip(&segment(more[0].segment), more[0].offset as usize + 1000);
    let report = check(crashed.path());
    let damage = findings(&report, Severity::Damage);
    assert_eq!(damage.len(), 1, "{:#?}", report.findings);
    assert_eq!((damage[0].file.clone(), damage[0].offset), (segment(more[0].segment), more[0].offset));
    assert!(damage[0].what.contains("a later flush follows"), "{}", damage[0].what);
    assert_corruption_in(BlobLog::open(crashed.path(), blob_options()), &segment(more[0].segment));
    flip(&segment(more[0].segment), more[0].offset as usize + 1000);

    // Undamaged, the crash image opens: the open segment is sealed where its records end
    // and the range a crash may have taken is recorded, which the check notes.
    BlobLog::open(crashed.path(), blob_options()).unwrap().close().unwrap();
    let report = check(crashed.path());
    assert!(!report.is_damaged() && findings(&report, Severity::Torn).is_empty(), "{:#?}", report.findings);
    let notes = findings(&report, Severity::Note);
    assert!(
        notes.len() == 1 && notes[0].file == segment(last.segment) && notes[0].what.contains("were lost"),
        "{:#?}",
        report.findings
    );
}

/// The blob log's manifest (`SEGMENTS`) and its rules: each case changes a cleanly closed
/// log as an operator, a disk or a crash could, and the check's verdict is compared with
/// what `BlobLog::open` (without `accept_lost_blobs`) does.
mod blob_manifest {
    use super::*;
    use ringdb::format::blob::{BlobManifest, MANIFEST_SLOT_ALIGN};

    /// Makes a log, changes it with `change`, checks it; asserts the check reports damage in
    /// `damaged` (and the open refuses naming it), or no damage (and the open succeeds).
    fn case(change: impl FnOnce(&Path, &[ringdb::Location]), damaged: Option<&dyn Fn(&Path) -> PathBuf>) -> Report {
        let dir = tempfile::tempdir().unwrap();
        let locs = make_blob_log(dir.path());
        change(dir.path(), &locs);
        let report = check(dir.path());
        match damaged {
            Some(file) => {
                let file = file(dir.path());
                let damage = findings(&report, Severity::Damage);
                assert!(
                    damage.iter().any(|f| f.file == file),
                    "no damage in {}: {:#?}",
                    file.display(),
                    report.findings
                );
                assert_corruption_in(BlobLog::open(dir.path(), blob_options()), &file);
            }
            None => {
                assert!(!report.is_damaged(), "{:#?}", report.findings);
                BlobLog::open(dir.path(), blob_options()).unwrap().close().unwrap();
                let after = check(dir.path());
                assert!(!after.is_damaged(), "after the open: {:#?}", after.findings);
            }
        }
        report
    }

    fn manifest(dir: &Path) -> PathBuf {
        dir.join("SEGMENTS")
    }

    fn truncate(path: &Path, len: u64) {
        std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
    }

    fn the_damage(report: &Report) -> &Finding {
        let damage = findings(report, Severity::Damage);
        assert_eq!(damage.len(), 1, "{:#?}", report.findings);
        damage[0]
    }

    #[test]
    fn a_missing_manifest_where_segments_carry_its_mark_is_damage() {
        let report = case(|dir, _| std::fs::remove_file(manifest(dir)).unwrap(), Some(&manifest));
        assert!(the_damage(&report).what.contains("manifest is missing"), "{:#?}", report.findings);
    }

    #[test]
    fn a_listed_segment_missing_is_damage() {
        let report = case(|dir, _| std::fs::remove_file(segment_path(dir, 1)).unwrap(), Some(&|d| segment_path(d, 1)));
        assert!(the_damage(&report).what.contains("is missing"), "{:#?}", report.findings);
    }

    #[test]
    fn a_sealed_segment_shorter_than_its_end_is_damage() {
        let report =
            case(|dir, locs| truncate(&segment_path(dir, 0), locs[1].offset + 4096), Some(&|d| segment_path(d, 0)));
        let damage = findings(&report, Severity::Damage);
        assert!(damage.iter().any(|f| f.what.contains("truncated")), "{:#?}", report.findings);
    }

    #[test]
    fn open_segment_records_ending_before_the_durable_end_are_damage() {
        // The last record zeroed: the records end cleanly, but short of what was durable.
        let report = case(
            |dir, locs| {
                let last = locs[7];
                let path = segment_path(dir, last.segment);
                let mut bytes = std::fs::read(&path).unwrap();
                bytes[last.offset as usize..].fill(0);
                std::fs::write(&path, bytes).unwrap();
            },
            Some(&|d| segment_path(d, 2)),
        );
        assert!(the_damage(&report).what.contains("durable up to offset"), "{:#?}", report.findings);
    }

    #[test]
    fn an_open_segment_truncated_into_its_records_is_damage() {
        let report = case(
            |dir, locs| truncate(&segment_path(dir, locs[7].segment), locs[7].offset + 100),
            Some(&|d| segment_path(d, 2)),
        );
        let damage = findings(&report, Severity::Damage);
        assert!(damage.iter().any(|f| f.what.contains("truncated")), "{:#?}", report.findings);
    }

    #[test]
    fn a_segment_the_manifest_does_not_list_below_its_next_number_is_damage() {
        // Segment 0 dropped, then its file put back: a restored file.
        let report = case(
            |dir, _| {
                let kept = std::fs::read(segment_path(dir, 0)).unwrap();
                let log = BlobLog::open(dir, blob_options().allow_overwrite(true)).unwrap();
                log.drop_segment(0).unwrap();
                log.close().unwrap();
                std::fs::write(segment_path(dir, 0), kept).unwrap();
            },
            Some(&|d| segment_path(d, 0)),
        );
        assert!(the_damage(&report).what.contains("not in the log's manifest"), "{:#?}", report.findings);
    }

    #[test]
    fn a_segment_past_the_next_number_is_adopted_and_noted() {
        // The manifest as a crash leaves it right after a segment's creation: not listed yet.
        let report = case(
            |dir, locs| {
                let path = manifest(dir);
                let bytes = std::fs::read(&path).unwrap();
                let mut m = BlobManifest::newest(&bytes).unwrap();
                let open = m.entries.pop().unwrap();
                assert_eq!(open.segment, locs[7].segment);
                m.next_segment = open.segment;
                let slot = bytes.len() / 2;
                let encoded = m.encode(slot);
                std::fs::write(&path, [encoded.clone(), encoded].concat()).unwrap();
            },
            None,
        );
        let notes = findings(&report, Severity::Note);
        assert!(notes.len() == 1 && notes[0].what.contains("open adopts it"), "{:#?}", report.findings);
    }

    #[test]
    fn manifest_slots_torn_or_damaged() {
        // One slot damaged: the other serves, and the next write replaces the bad one.
        let report = case(|dir, _| flip(&manifest(dir), 40), None);
        let torn = findings(&report, Severity::Torn);
        assert_eq!(torn.len(), 1, "{:#?}", report.findings);
        assert!(torn[0].file.ends_with("SEGMENTS") && torn[0].offset == 0, "{:#?}", report.findings);
        // Both damaged: no valid slot.
        let report = case(
            |dir, _| {
                flip(&manifest(dir), 40);
                flip(&manifest(dir), MANIFEST_SLOT_ALIGN + 40);
            },
            Some(&manifest),
        );
        assert!(the_damage(&report).what.contains("no valid slot"), "{:#?}", report.findings);
    }

    #[test]
    fn tombstones_and_leftovers_are_notes() {
        // A drop a crash interrupted (tombstone made, segment not yet removed), and a
        // manifest rewrite a crash interrupted: open finishes or removes both.
        let report = case(
            |dir, _| {
                std::fs::write(dir.join("00000000.dropped"), b"").unwrap();
                std::fs::write(dir.join("SEGMENTS.tmp"), b"partial").unwrap();
            },
            None,
        );
        let notes = findings(&report, Severity::Note);
        assert_eq!(notes.len(), 2, "{:#?}", report.findings);
        assert!(notes.iter().any(|f| f.file.ends_with("00000000.blob") && f.what.contains("dropped")));
        assert!(notes.iter().any(|f| f.file.ends_with("SEGMENTS.tmp")));
        assert!(!report.verified.iter().any(|f| f.path.ends_with("00000000.blob")), "a dropped segment is not read");
        // The tombstone alone (the segment removed, the manifest not yet rewritten).
        let report = case(
            |dir, _| {
                std::fs::write(dir.join("00000000.dropped"), b"").unwrap();
                std::fs::remove_file(segment_path(dir, 0)).unwrap();
            },
            None,
        );
        let notes = findings(&report, Severity::Note);
        assert!(notes.len() == 1 && notes[0].file.ends_with("00000000.dropped"), "{:#?}", report.findings);
    }

    #[test]
    fn a_segment_listed_as_lost_is_damage_though_the_log_opens() {
        let dir = tempfile::tempdir().unwrap();
        make_blob_log(dir.path());
        std::fs::remove_file(segment_path(dir.path(), 1)).unwrap();
        assert_corruption_in(BlobLog::open(dir.path(), blob_options()), &segment_path(dir.path(), 1));
        BlobLog::open(dir.path(), blob_options().accept_lost_blobs(true)).unwrap().close().unwrap();
        let report = check(dir.path());
        let damage = the_damage(&report);
        assert_eq!(damage.file, segment_path(dir.path(), 1));
        assert!(damage.what.contains("listed as lost"), "{}", damage.what);
        // The loss is recorded, so the log opens without the option; the check still says
        // its blobs are gone.
        BlobLog::open(dir.path(), blob_options()).unwrap().close().unwrap();
        assert!(check(dir.path()).is_damaged());
    }

    #[test]
    fn a_folder_with_only_a_manifest_is_a_blob_log_whose_segments_are_missing() {
        let dir = tempfile::tempdir().unwrap();
        make_blob_log(dir.path());
        for s in 0..3 {
            std::fs::remove_file(segment_path(dir.path(), s)).unwrap();
        }
        let report = check(dir.path());
        assert_eq!(findings(&report, Severity::Damage).len(), 3, "{:#?}", report.findings);
        assert!(matches!(BlobLog::open(dir.path(), blob_options()), Err(Error::Corruption { .. })));
    }
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
        let acks: Vec<_> = (0..300).map(|i| db.put_async(format!("key:{i:04}").as_bytes(), value(i))).collect();
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
        db.put(format!("key:{i:04}").as_bytes(), value(i)).unwrap();
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
/// after the end) and in its manifest, of a log closed cleanly (every record known
/// durable) and of the images a crash leaves (records past the durable end, written under
/// `Sync` or under `None`): the check
/// calls it damaged exactly when `BlobLog::open` refuses it. (Sealed segments are not
/// compared: an open trusts them, the check reads them.)
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
    let append = |log: &BlobLog, i: u64| {
        let len = [10, 3000, 70_000][i as usize % 3];
        if i % 4 == 3 {
            let mut txn = log.transaction();
            txn.append(&random_blob(i, len)).unwrap();
            txn.append(&vec![b'z'; len]).unwrap();
            txn.commit().unwrap();
        } else {
            log.append(&random_blob(i, len)).unwrap();
        }
    };
    let closed = tempfile::tempdir().unwrap();
    let log = BlobLog::open(closed.path(), blob_options().compression(Some(3))).unwrap();
    (0..12).for_each(|i| append(&log, i));
    log.close().unwrap();
    // Crash images: under `Sync`, and under `None`, whose records are flagged unsynced and
    // so prove no later flush.
    let mut open_segment = 0;
    let crashed = [ringdb::Durability::Sync, ringdb::Durability::None].map(|durability| {
        let crashed = tempfile::tempdir().unwrap();
        let live = tempfile::tempdir().unwrap();
        copy_dir(closed.path(), live.path());
        let log = BlobLog::open(live.path(), blob_options().compression(Some(3)).durability(durability)).unwrap();
        for i in 12..20 {
            append(&log, i);
            // One flush per append under `None` too.
            log.sync().unwrap();
        }
        open_segment = log.current_segment();
        copy_while_open(live.path(), crashed.path(), &log);
        log.close().unwrap();
        crashed
    });

    let rounds: u32 = std::env::var("RINGDB_VERIFY_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    let (mut damaged, mut torn, mut clean) = (0, 0, 0);
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let template = match round % 3 {
            0 => closed.path(),
            n => crashed[n as usize - 1].path(),
        };
        copy_dir(template, dir.path());
        let segment = dir.path().join(format!("{open_segment:08x}.blob"));
        let manifest = dir.path().join("SEGMENTS");
        let mut bytes = std::fs::read(&segment).unwrap();
        let mut slots = std::fs::read(&manifest).unwrap();
        for _ in 0..=next(2) {
            if next(4) == 0 {
                // Within a manifest slot's entries (the rest of a slot is never read).
                let at = (slots.len() / 2) * next(2) as usize + next(128) as usize;
                slots[at] ^= 1 << next(8);
            } else {
                let end = bytes.iter().rposition(|&b| b != 0).unwrap_or(0) + 256;
                let at = next(end.min(bytes.len()) as u64) as usize;
                bytes[at] ^= 1 << next(8);
            }
        }
        std::fs::write(&segment, bytes).unwrap();
        std::fs::write(&manifest, slots).unwrap();
        let report = check(dir.path());
        let context = format!("seed={seed} round={round}: {:#?}", report.findings);
        match BlobLog::open(dir.path(), blob_options()) {
            Ok(log) => {
                log.close().unwrap();
                assert!(!report.is_damaged(), "open succeeded but check found damage; {context}");
                if findings(&report, Severity::Torn).is_empty() {
                    clean += 1;
                } else {
                    torn += 1;
                }
            }
            Err(Error::Corruption { file, .. }) => {
                let damage = findings(&report, Severity::Damage);
                assert!(!damage.is_empty(), "open refused ({}) but check found no damage; {context}", file.display());
                assert!(
                    damage.iter().any(|f| f.file == file),
                    "open names {}, check does not; {context}",
                    file.display()
                );
                damaged += 1;
            }
            Err(e) => panic!("open failed otherwise: {e}; {context}"),
        }
    }
    println!("{damaged} damaged, {torn} torn, {clean} opened clean");
}
