//! Proves blob integrity checks: a flipped byte is `Error::Corruption` naming the file
//! and the damaged frame's offset (other frames and blobs still read); a torn tail is
//! cut into a quarantine file on open and appends continue in a new segment (so no
//! location is handed out twice); damage followed by a later flush's records is
//! corruption on open, not silently cut.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ringdb::format::blob::{RECORD_HEADER_BYTES, encode_blob_record, encode_record, stamp_record};
use ringdb::{BlobLog, BlobOptions, Error, Location};

fn seg_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08x}.blob"))
}

fn flip(path: &Path, offset: u64) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, offset).unwrap();
    f.sync_all().unwrap();
}

fn quarantine_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("quarantine-"))
        .collect()
}

#[test]
fn a_flipped_byte_is_reported_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let options = || BlobOptions::default().frame_bytes(4096);
    let log = BlobLog::open(dir.path(), options()).unwrap();
    let a = log.append(&[1u8; 10_000]).unwrap();
    let b = log.append(&[2u8; 100]).unwrap();
    log.close().unwrap();
    // Damage the second frame of `a` (3 frames: meta is 32 + 3 * 8 bytes).
    let meta = (RECORD_HEADER_BYTES + 3 * 8) as u64;
    flip(&seg_path(dir.path(), a.segment), a.offset + meta + 4096 + 10);
    let log = BlobLog::open(dir.path(), options()).unwrap_err();
    // The damage is in the open segment with a later record after it: not a torn tail.
    assert!(matches!(log, Error::Corruption { .. }), "{log}");
    let ro = BlobLog::open_read_only(dir.path(), options()).unwrap();
    match ro.read(a) {
        Err(Error::Corruption { file, offset, what }) => {
            assert_eq!(file, seg_path(dir.path(), a.segment));
            assert_eq!(offset, a.offset + meta + 4096, "{what}");
            assert!(what.contains("frame 1"), "{what}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // Frames 0 and 2 of the same blob, and the other blob, still read.
    assert!(ro.read_range(a, 0..4096).unwrap().iter().all(|&x| x == 1));
    assert!(ro.read_range(a, 8192..10_000).unwrap().iter().all(|&x| x == 1));
    assert!(ro.read_range(a, 4000..4100).is_err());
    assert!(ro.read(b).unwrap().iter().all(|&x| x == 2));
}

#[test]
fn a_torn_tail_is_quarantined_and_appends_continue_in_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = BlobLog::open(dir.path(), BlobOptions::default()).unwrap();
    let kept: Vec<Location> = (0..5u8).map(|i| log.append(&vec![i; 3000]).unwrap()).collect();
    let end = kept[4].offset + 3000 + 40;
    log.close().unwrap();
    // The remains of a flush that was cut short: a record whose payload is half there.
    let blob = vec![9u8; 20_000];
    let frames: Vec<&[u8]> = blob.chunks(65_536).collect();
    let rec = encode_record(1, 16, 0, blob.len() as u64, &frames);
    let f = std::fs::OpenOptions::new().write(true).open(seg_path(dir.path(), 0)).unwrap();
    f.write_all_at(&rec[..rec.len() / 2], end).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let log = BlobLog::open(dir.path(), BlobOptions::default()).unwrap();
    let q = quarantine_files(dir.path());
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(std::fs::read(&q[0]).unwrap(), rec[..rec.len() / 2]);
    for (i, loc) in kept.iter().enumerate() {
        assert!(log.read(*loc).unwrap().iter().all(|&x| x == i as u8));
    }
    // The cut offsets are never handed out again: segment 0 is sealed where its records
    // end, and appends go to a new segment.
    let segments = log.segments().unwrap();
    assert_eq!((segments[0].segment, segments[0].end, segments[0].current), (0, end, false));
    let next = log.append(b"after the cut").unwrap();
    assert_eq!((next.segment, next.offset), (1, 4096), "appends continue in a new segment");
    assert_eq!(&*log.read(next).unwrap(), b"after the cut");
    log.close().unwrap();
}

#[test]
fn a_transaction_missing_its_last_record_is_cut_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = BlobLog::open(dir.path(), BlobOptions::default()).unwrap();
    let before = log.append(b"before the transaction").unwrap();
    log.close().unwrap();
    // As if a crash had stopped the write of a three-blob transaction before its last
    // record: the first two are whole, each saying how many of its transaction follow.
    let mut at = before.offset + encode_blob_record(b"before the transaction", 16, None).unwrap().len() as u64;
    let first = at;
    let f = std::fs::OpenOptions::new().write(true).open(seg_path(dir.path(), 0)).unwrap();
    for (left, byte) in [(2u32, 1u8), (1, 2)] {
        let mut rec = encode_blob_record(&vec![byte; 5000], 16, None).unwrap();
        stamp_record(&mut rec, 0, left, 7);
        f.write_all_at(&rec, at).unwrap();
        at += rec.len() as u64;
    }
    f.sync_all().unwrap();
    drop(f);
    let log = BlobLog::open(dir.path(), BlobOptions::default()).unwrap();
    assert_eq!(&*log.read(before).unwrap(), b"before the transaction");
    let partial = Location { segment: 0, offset: first, len: 5000 };
    assert!(log.read(partial).is_err(), "{partial} of the partial transaction was cut");
    assert_eq!(quarantine_files(dir.path()).len(), 1);
    assert_eq!(log.segments().unwrap()[0].end, first, "the segment ends before the transaction");
    let next = log.append(b"next").unwrap();
    assert_eq!(next.segment, 1, "appends continue in a new segment");
    log.close().unwrap();
}
