//! Proves a torn log tail (garbage after the last record, a last record cut short by
//! zeros, garbage past a gap of zeros, in a first or a later segment) is cut on open: the
//! records before it are all there, the cut bytes are kept in a `quarantine-*.bin` file,
//! the segment is clean from the cut on, and later opens and writes are normal.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ringdb::format::record::{HEADER_BYTES, record_bytes};
use ringdb::{Db, Options};

mod common;
use common::{ParsedSegment, Rng, parse_segment, quarantine_files, segments};

fn options(segment_bytes: u64) -> Options {
    Options::default().shards(1).wal_segment_bytes(segment_bytes)
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}-{}", "v".repeat(40 + i % 300)).into_bytes()
}

/// Writes keys `from..to` one acknowledged put at a time, then closes.
fn write_keys(dir: &Path, segment_bytes: u64, from: usize, to: usize) {
    let db = Db::open(dir, options(segment_bytes)).unwrap();
    for i in from..to {
        db.put(key(i), value(i)).unwrap();
    }
    db.close().unwrap();
}

/// Opens, checks keys `0..present` hold their values and `absent` keys are missing, and
/// returns the number of records replayed.
fn check_keys(dir: &Path, segment_bytes: u64, present: usize, absent: &[usize]) -> u64 {
    let db = Db::open(dir, options(segment_bytes)).expect("open after a torn tail");
    for i in 0..present {
        assert_eq!(db.get(key(i)).unwrap().map(Vec::from), Some(value(i)), "key {i}");
    }
    for &i in absent {
        assert_eq!(db.get(key(i)).unwrap(), None, "key {i} was cut with the tail");
    }
    let replayed = db.stats().recovered_records;
    db.close().unwrap();
    replayed
}

/// The last segment holding records, parsed.
fn tail_segment(dir: &Path) -> (PathBuf, ParsedSegment) {
    segments(dir, 0)
        .into_iter()
        .map(|p| {
            let parsed = parse_segment(&p);
            (p, parsed)
        })
        .rfind(|(_, parsed)| !parsed.records.is_empty())
        .expect("a segment with records")
}

fn nonzero_garbage(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.range(1, 255) as u8).collect()
}

/// After a torn tail was cut at `cut` in `segment`: exactly one quarantine file, holding
/// `expected`; the segment keeps every byte before `cut` and is zero after it.
fn check_cut(dir: &Path, segment: &Path, before: &[u8], cut: usize, expected: &[u8]) -> PathBuf {
    let quarantined = quarantine_files(dir, 0);
    assert_eq!(quarantined.len(), 1, "one quarantine file: {quarantined:?}");
    let saved = std::fs::read(&quarantined[0]).unwrap();
    assert_eq!(saved.len(), expected.len(), "quarantine file length");
    assert!(saved == expected, "the quarantine file holds the cut bytes");
    let after = std::fs::read(segment).unwrap();
    assert_eq!(after.len(), before.len(), "the segment keeps its size");
    assert!(after[..cut] == before[..cut], "bytes before the cut are untouched");
    assert!(after[cut..].iter().all(|&b| b == 0), "the segment is zero from the cut on");
    quarantined[0].clone()
}

/// Second half of every case: reopening is clean (no new quarantine, same contents),
/// new writes work and survive another reopen.
fn reopen_then_write(dir: &Path, segment_bytes: u64, present: usize, quarantine: &Path) {
    let saved = std::fs::read(quarantine).unwrap();
    let replayed = check_keys(dir, segment_bytes, present, &[]);
    assert_eq!(replayed, present as u64, "a clean reopen replays every record");
    assert_eq!(quarantine_files(dir, 0), vec![quarantine.to_path_buf()], "no new quarantine file");
    assert!(std::fs::read(quarantine).unwrap() == saved, "the quarantine file is left alone");

    write_keys(dir, segment_bytes, present, present + 50);
    let replayed = check_keys(dir, segment_bytes, present + 50, &[]);
    assert_eq!(replayed, present as u64 + 50);
    assert_eq!(quarantine_files(dir, 0).len(), 1);
}

#[test]
fn garbage_after_the_last_record_is_cut() {
    let seed = common::seed("garbage_after_the_last_record_is_cut");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = 256 << 10;
    let n = 120;
    write_keys(dir.path(), segment_bytes, 0, n);
    let (segment, parsed) = tail_segment(dir.path());
    assert_eq!(parsed.records.len(), n, "all records in one segment");

    let len = rng.range(1, 700) as usize;
    let garbage = nonzero_garbage(&mut rng, len);
    let file = std::fs::OpenOptions::new().write(true).open(&segment).unwrap();
    file.write_all_at(&garbage, parsed.end as u64).unwrap();
    file.sync_all().unwrap();
    drop(file);

    let replayed = check_keys(dir.path(), segment_bytes, n, &[]);
    assert_eq!(replayed, n as u64);
    let quarantine = check_cut(dir.path(), &segment, &parsed.bytes, parsed.end, &garbage);
    reopen_then_write(dir.path(), segment_bytes, n, &quarantine);
}

#[test]
fn last_record_cut_short_by_zeros_is_cut() {
    let seed = common::seed("last_record_cut_short_by_zeros_is_cut");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = 256 << 10;
    let n = 80;
    write_keys(dir.path(), segment_bytes, 0, n);
    let (segment, parsed) = tail_segment(dir.path());
    let (last_at, last) = *parsed.records.last().unwrap();
    let last_len = record_bytes(last.body_len as usize);
    assert_eq!(last_at + last_len, parsed.end);

    // Zero the record from somewhere inside its body to its end, as a write that reached
    // the disk only in part would leave it.
    // The zeroed part always takes the body's last byte, which is non-zero ('v').
    let body_end = last_at + HEADER_BYTES + last.body_len as usize;
    assert_ne!(parsed.bytes[body_end - 1], 0);
    let zero_from = rng.range((last_at + HEADER_BYTES) as u64, body_end as u64 - 1) as usize;
    let file = std::fs::OpenOptions::new().write(true).open(&segment).unwrap();
    file.write_all_at(&vec![0u8; parsed.end - zero_from], zero_from as u64).unwrap();
    file.sync_all().unwrap();
    drop(file);
    let mut torn = parsed.bytes.clone();
    torn[zero_from..parsed.end].fill(0);
    let last_nonzero = torn.iter().rposition(|&b| b != 0).unwrap();
    let expected = torn[last_at..=last_nonzero].to_vec();

    let replayed = check_keys(dir.path(), segment_bytes, n - 1, &[n - 1]);
    assert_eq!(replayed, n as u64 - 1, "the torn record is not replayed");
    let quarantine = check_cut(dir.path(), &segment, &torn, last_at, &expected);
    reopen_then_write(dir.path(), segment_bytes, n - 1, &quarantine);
}

#[test]
fn garbage_past_a_gap_of_zeros_is_cut() {
    let seed = common::seed("garbage_past_a_gap_of_zeros_is_cut");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = 256 << 10;
    let n = 60;
    write_keys(dir.path(), segment_bytes, 0, n);
    let (segment, parsed) = tail_segment(dir.path());

    let gap = rng.range(64, 9000) as usize;
    let len = rng.range(1, 64) as usize;
    let garbage = nonzero_garbage(&mut rng, len);
    let file = std::fs::OpenOptions::new().write(true).open(&segment).unwrap();
    file.write_all_at(&garbage, (parsed.end + gap) as u64).unwrap();
    file.sync_all().unwrap();
    drop(file);
    let mut torn = parsed.bytes.clone();
    torn[parsed.end + gap..parsed.end + gap + garbage.len()].copy_from_slice(&garbage);
    let expected = torn[parsed.end..parsed.end + gap + garbage.len()].to_vec();

    let replayed = check_keys(dir.path(), segment_bytes, n, &[]);
    assert_eq!(replayed, n as u64);
    let quarantine = check_cut(dir.path(), &segment, &torn, parsed.end, &expected);
    reopen_then_write(dir.path(), segment_bytes, n, &quarantine);
}

#[test]
fn torn_tail_in_a_later_segment_is_cut() {
    let seed = common::seed("torn_tail_in_a_later_segment_is_cut");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    // The smallest segments: a few dozen records each, so the log spans several.
    let segment_bytes = ringdb::WAL_SEGMENT_BYTES_MIN;
    let n = 800;
    write_keys(dir.path(), segment_bytes, 0, n);
    let with_records: Vec<PathBuf> =
        segments(dir.path(), 0).into_iter().filter(|p| !parse_segment(p).records.is_empty()).collect();
    assert!(with_records.len() >= 3, "the log spans several segments: {with_records:?}");
    let (segment, parsed) = tail_segment(dir.path());
    assert_eq!(segment, *with_records.last().unwrap());

    // Tear the last record: keep its header and part of its body, then garbage.
    let (last_at, last) = *parsed.records.last().unwrap();
    let body_len = last.body_len as usize;
    let keep = rng.range(HEADER_BYTES as u64 + 1, (HEADER_BYTES + body_len - 1) as u64) as usize;
    let mut garbage = nonzero_garbage(&mut rng, 200);
    // The first garbage byte lands in the body and must change it.
    let original = parsed.bytes[last_at + keep];
    if garbage[0] == original {
        garbage[0] = garbage[0].wrapping_add(1).max(1);
    }
    let file = std::fs::OpenOptions::new().write(true).open(&segment).unwrap();
    file.write_all_at(&garbage, (last_at + keep) as u64).unwrap();
    file.sync_all().unwrap();
    drop(file);
    let mut torn = parsed.bytes.clone();
    torn[last_at + keep..last_at + keep + garbage.len()].copy_from_slice(&garbage);
    // The cut runs from the torn record to the last non-zero byte of the segment (the
    // garbage may end before the record's own last bytes).
    let last_nonzero = torn.iter().rposition(|&b| b != 0).unwrap();
    let expected = torn[last_at..=last_nonzero].to_vec();

    let replayed = check_keys(dir.path(), segment_bytes, n - 1, &[n - 1]);
    assert_eq!(replayed, n as u64 - 1);
    let quarantine = check_cut(dir.path(), &segment, &torn, last_at, &expected);
    // Earlier segments are untouched.
    for earlier in &with_records[..with_records.len() - 1] {
        assert!(!parse_segment(earlier).records.is_empty());
    }
    reopen_then_write(dir.path(), segment_bytes, n - 1, &quarantine);
}
