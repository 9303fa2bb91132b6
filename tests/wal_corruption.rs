//! Proves damage before the log's tail is reported, not cut: a bit flipped in an early
//! record of the tail segment (with later flushes after it), in a record of a segment
//! that is not the last (its middle or its last record), in a record header or in a
//! segment header makes `Db::open` fail with `Error::Corruption` naming the segment file
//! and the damaged record's offset, and leaves every log file as it was.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ringdb::format::record::HEADER_BYTES;
use ringdb::{Db, Error, Options};

mod common;
use common::{Rng, canonical, parse_segment, quarantine_files, segments, wal_dir};

fn options(shards: usize, segment_bytes: u64) -> Options {
    Options::default().shards(shards).wal_segment_bytes(segment_bytes)
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}-{}", "v".repeat(100 + i % 200)).into_bytes()
}

/// Writes `n` keys one acknowledged put at a time (so each record is its own flush).
fn write_keys(dir: &Path, shards: usize, segment_bytes: u64, n: usize) {
    let db = Db::open(dir, options(shards, segment_bytes)).unwrap();
    for i in 0..n {
        db.put(key(i), value(i)).unwrap();
    }
    db.close().unwrap();
}

/// Every file of every shard's log directory, with its bytes.
fn snapshot(dir: &Path, shards: usize) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for shard in 0..shards {
        for entry in std::fs::read_dir(wal_dir(dir, shard)).unwrap() {
            let path = entry.unwrap().path();
            out.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    out
}

/// A log segment holding no record: a valid header, then zeros.
fn is_empty_segment(bytes: &[u8]) -> bool {
    match ringdb::format::segment::SegmentHeader::decode(bytes) {
        Ok(h) => bytes[h.block_bytes as usize..].iter().all(|&b| b == 0),
        Err(_) => false,
    }
}

fn flip_bit(path: &Path, offset: usize, bit: u8) {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset as u64).unwrap();
    byte[0] ^= 1 << bit;
    file.write_all_at(&byte, offset as u64).unwrap();
    file.sync_all().unwrap();
}

/// Opens and expects `Error::Corruption` at `file`/`offset`; checks the open changed no
/// log file (no cut, no quarantine) and that a second attempt reports the same.
fn expect_corruption(dir: &Path, shards: usize, segment_bytes: u64, file: &Path, offset: usize) {
    let before = snapshot(dir, shards);
    for attempt in 0..2 {
        match Db::open(dir, options(shards, segment_bytes)) {
            Err(Error::Corruption { file: got_file, offset: got_offset, what }) => {
                assert_eq!(canonical(&got_file), canonical(file), "attempt {attempt}: corrupt file ({what})");
                assert_eq!(got_offset, offset as u64, "attempt {attempt}: corrupt offset ({what})");
                let shown = Error::Corruption { file: got_file, offset: got_offset, what }.to_string();
                assert!(shown.contains(&offset.to_string()), "the message names the offset: {shown}");
            }
            Err(other) => panic!("attempt {attempt}: expected Corruption at {offset}, got {other:?}"),
            Ok(db) => {
                let stats = db.stats();
                panic!(
                    "attempt {attempt}: open succeeded over a corrupt record at {} offset {offset} \
                     (replayed {} records)",
                    file.display(),
                    stats.recovered_records
                );
            }
        }
        for shard in 0..shards {
            assert!(quarantine_files(dir, shard).is_empty(), "corruption is not quarantined as a torn tail");
        }
        // Every file holding records is byte for byte as it was; only empty spare
        // segments (a header and zeros) may have been removed or prepared again.
        let after = snapshot(dir, shards);
        for (path, bytes) in &before {
            match after.get(path) {
                Some(now) => assert!(now == bytes, "{} was changed by a failed open", path.display()),
                None => assert!(is_empty_segment(bytes), "{} was removed by a failed open", path.display()),
            }
        }
        for (path, bytes) in &after {
            if !before.contains_key(path) {
                assert!(is_empty_segment(bytes), "{} was created by a failed open", path.display());
            }
        }
    }
}

/// Segments of `shard` that hold records, with their record offsets.
fn segments_with_records(dir: &Path, shard: usize) -> Vec<(PathBuf, Vec<usize>)> {
    segments(dir, shard)
        .into_iter()
        .map(|p| {
            let offsets = parse_segment(&p).records.iter().map(|(at, _)| *at).collect::<Vec<_>>();
            (p, offsets)
        })
        .filter(|(_, offsets)| !offsets.is_empty())
        .collect()
}

#[test]
fn flipped_bit_early_in_the_tail_segment() {
    let seed = common::seed("flipped_bit_early_in_the_tail_segment");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = 1 << 20;
    write_keys(dir.path(), 1, segment_bytes, 200);
    let segs = segments_with_records(dir.path(), 0);
    assert_eq!(segs.len(), 1, "one segment holds every record");
    let (segment, offsets) = &segs[0];
    assert_eq!(offsets.len(), 200);

    // A record early in the log, with many later records (later flushes) after it.
    let index = rng.range(0, 20) as usize;
    let at = offsets[index];
    let body_len = parse_segment(segment).records[index].1.body_len as usize;
    let byte = at + HEADER_BYTES + rng.range(0, body_len as u64 - 1) as usize;
    flip_bit(segment, byte, rng.range(0, 7) as u8);
    expect_corruption(dir.path(), 1, segment_bytes, segment, at);
}

#[test]
fn flipped_bit_in_a_record_header() {
    let seed = common::seed("flipped_bit_in_a_record_header");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = 1 << 20;
    write_keys(dir.path(), 1, segment_bytes, 100);
    let (segment, offsets) = segments_with_records(dir.path(), 0).remove(0);
    let index = rng.range(1, 50) as usize;
    let at = offsets[index];
    // Any header bit: crc, body length, lsn, group lsn, kind, op count.
    let byte = at + rng.range(0, HEADER_BYTES as u64 - 1) as usize;
    flip_bit(&segment, byte, rng.range(0, 7) as u8);
    expect_corruption(dir.path(), 1, segment_bytes, &segment, at);
}

#[test]
fn flipped_bit_in_a_segment_that_is_not_the_last() {
    let seed = common::seed("flipped_bit_in_a_segment_that_is_not_the_last");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = ringdb::WAL_SEGMENT_BYTES_MIN;
    write_keys(dir.path(), 1, segment_bytes, 600);
    let segs = segments_with_records(dir.path(), 0);
    assert!(segs.len() >= 3, "the log spans several segments: {}", segs.len());

    // A record in the middle of a segment before the tail segment.
    let which = rng.range(0, segs.len() as u64 - 2) as usize;
    let (segment, offsets) = &segs[which];
    let index = rng.range(1, offsets.len() as u64 - 2) as usize;
    let at = offsets[index];
    flip_bit(segment, at + HEADER_BYTES + 3, rng.range(0, 7) as u8);
    expect_corruption(dir.path(), 1, segment_bytes, segment, at);
}

#[test]
fn flipped_bit_in_the_last_record_of_a_segment_that_is_not_the_last() {
    let seed = common::seed("flipped_bit_in_the_last_record_of_a_segment_that_is_not_the_last");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = ringdb::WAL_SEGMENT_BYTES_MIN;
    write_keys(dir.path(), 1, segment_bytes, 400);
    let segs = segments_with_records(dir.path(), 0);
    assert!(segs.len() >= 2, "the log spans several segments: {}", segs.len());
    // The last record of the first segment looks like a torn tail of that segment, but
    // the log goes on in the next one: it is corruption.
    let (segment, offsets) = &segs[0];
    let at = *offsets.last().unwrap();
    flip_bit(segment, at + HEADER_BYTES + 1, rng.range(0, 7) as u8);
    expect_corruption(dir.path(), 1, segment_bytes, segment, at);
}

#[test]
fn flipped_bit_in_one_shard_of_several() {
    let seed = common::seed("flipped_bit_in_one_shard_of_several");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = 1 << 20;
    write_keys(dir.path(), 3, segment_bytes, 300);
    let shard = rng.range(0, 2) as usize;
    let (segment, offsets) = segments_with_records(dir.path(), shard).remove(0);
    assert!(offsets.len() > 20, "keys spread over the shards");
    let at = offsets[rng.range(0, 10) as usize];
    flip_bit(&segment, at + HEADER_BYTES + 9, rng.range(0, 7) as u8);
    expect_corruption(dir.path(), 3, segment_bytes, &segment, at);
}

#[test]
fn flipped_bit_in_a_segment_header() {
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = 1 << 20;
    write_keys(dir.path(), 1, segment_bytes, 10);
    let (segment, _) = segments_with_records(dir.path(), 0).remove(0);
    // The shard field of the header (covered by the header's crc).
    flip_bit(&segment, 12, 0);
    expect_corruption(dir.path(), 1, segment_bytes, &segment, 0);
}
