//! Proves segment rotation at `max_segment_bytes` (with its event and sizes), and the
//! rules of `drop_segment`, `rtrim` and `ltrim`: refused without `allow_overwrite`, never
//! on the segment being written (drop), only at blob boundaries; untouched locations stay
//! valid, trimmed ones are refused, space comes back (holes in sealed segments, reuse in
//! the current one), and all of it holds after a reopen.

use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use ringdb::{BlobLog, BlobOptions, Location};

fn content(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j * 7) as u8).collect()
}

fn seg_path(dir: &std::path::Path, n: u32) -> std::path::PathBuf {
    dir.join(format!("{n:08x}.blob"))
}

#[test]
fn segments_rotate_and_report_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let rotations = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&rotations);
    let options = BlobOptions::default().max_segment_bytes(1 << 20).on_rotate(move |e| sink.lock().unwrap().push(e));
    let log = BlobLog::open(dir.path(), options).unwrap();
    let locs: Vec<Location> = (0..50).map(|i| log.append(&content(i, 100_000)).unwrap()).collect();
    let segments = log.segments().unwrap();
    assert!(segments.len() >= 5, "{segments:?}");
    let events = rotations.lock().unwrap().clone();
    assert_eq!(events.len(), segments.len() - 1);
    for (e, s) in events.iter().zip(&segments) {
        assert_eq!((e.sealed, e.next), (s.segment, s.segment + 1));
        assert_eq!(e.sealed_end, s.end);
        assert!(!s.current && s.end <= 1 << 20);
        // Sealed segments give back their unused reservation.
        assert!(std::fs::metadata(seg_path(dir.path(), s.segment)).unwrap().len() <= s.end.next_multiple_of(4096));
    }
    assert!(segments.last().unwrap().current);
    let live: u64 = segments.iter().map(|s| s.live_bytes()).sum();
    assert!((50 * 100_000..50 * 101_000).contains(&live), "{live}");
    for (i, loc) in locs.iter().enumerate() {
        assert!(log.read(*loc).unwrap()[..] == content(i as u64, 100_000)[..]);
    }
    log.close().unwrap();
    let log = BlobLog::open(dir.path(), BlobOptions::default().max_segment_bytes(1 << 20)).unwrap();
    assert_eq!(log.segments().unwrap(), segments);
    log.close().unwrap();
}

#[test]
fn drop_and_trim_follow_their_rules() {
    let dir = tempfile::tempdir().unwrap();
    let drops = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&drops);
    let options = || BlobOptions::default().max_segment_bytes(1 << 20);
    let log = BlobLog::open(dir.path(), options().on_drop(move |e| sink.lock().unwrap().push(e.segment))).unwrap();
    let locs: Vec<Location> = (0..40).map(|i| log.append(&content(i, 90_000)).unwrap()).collect();
    let read_ok = |log: &BlobLog, i: usize| log.read(locs[i]).map(|v| v[..] == content(i as u64, 90_000)[..]);
    let current = log.current_segment();
    assert!(current >= 3);

    // Guarded by allow_overwrite.
    let err = log.drop_segment(0).unwrap_err();
    assert!(err.to_string().contains("set_allow_overwrite"), "{err}");
    assert!(log.rtrim(1, locs[12].offset).is_err() && log.ltrim(1, locs[12].offset).is_err());
    log.set_allow_overwrite(true);

    // Drop: never the current segment, never twice.
    let err = log.drop_segment(current).unwrap_err();
    assert!(err.to_string().contains("being written"), "{err}");
    log.drop_segment(0).unwrap();
    assert_eq!(*drops.lock().unwrap(), vec![0]);
    assert!(!seg_path(dir.path(), 0).exists());
    assert!(log.read(locs[0]).is_err());
    assert!(log.drop_segment(0).is_err());
    assert!(log.segments().unwrap().iter().all(|s| s.segment != 0));

    // Offsets must be blob starts inside the live bytes.
    let in_seg1: Vec<usize> = (0..40).filter(|&i| locs[i].segment == 1).collect();
    assert!(in_seg1.len() >= 4);
    assert!(log.rtrim(1, locs[in_seg1[1]].offset + 8).is_err());
    assert!(log.rtrim(1, 1 << 30).is_err());

    // rtrim of a sealed segment: earlier blobs stay, later ones go, disk space comes back.
    let blocks_before = std::fs::metadata(seg_path(dir.path(), 1)).unwrap().blocks();
    let cut = in_seg1[1];
    log.rtrim(1, locs[cut].offset).unwrap();
    assert!(std::fs::metadata(seg_path(dir.path(), 1)).unwrap().blocks() < blocks_before);
    assert!(read_ok(&log, in_seg1[0]).unwrap());
    for &i in &in_seg1[1..] {
        assert!(log.read(locs[i]).is_err(), "blob {i} was trimmed");
    }
    let seg1 = log.segments().unwrap().into_iter().find(|s| s.segment == 1).unwrap();
    assert_eq!(seg1.end, locs[cut].offset);

    // ltrim of a sealed segment: later blobs keep their locations.
    let in_seg2: Vec<usize> = (0..40).filter(|&i| locs[i].segment == 2).collect();
    let keep = in_seg2[2];
    log.ltrim(2, locs[keep].offset).unwrap();
    for &i in &in_seg2 {
        assert_eq!(log.read(locs[i]).is_ok(), i >= keep, "blob {i} after ltrim");
    }
    for &i in in_seg2.iter().filter(|&&i| i >= keep) {
        assert!(read_ok(&log, i).unwrap());
    }
    let seg2 = log.segments().unwrap().into_iter().find(|s| s.segment == 2).unwrap();
    assert_eq!(seg2.data_start, locs[keep].offset);

    // rtrim of the current segment: the space is reused by the next append.
    let a = log.append(b"kept").unwrap();
    let b = log.append(b"trimmed").unwrap();
    let _c = log.append(b"trimmed too").unwrap();
    log.rtrim(a.segment, b.offset).unwrap();
    assert!(log.read(b).is_err());
    let d = log.append(b"reused").unwrap();
    assert_eq!((d.segment, d.offset), (b.segment, b.offset), "the trimmed space is reused");
    assert_eq!(&*log.read(a).unwrap(), b"kept");
    assert_eq!(&*log.read(d).unwrap(), b"reused");
    let segments = log.segments().unwrap();
    log.close().unwrap();

    // Everything holds after a reopen.
    let log = BlobLog::open(dir.path(), options()).unwrap();
    assert_eq!(log.segments().unwrap(), segments);
    assert_eq!(&*log.read(a).unwrap(), b"kept");
    assert_eq!(&*log.read(d).unwrap(), b"reused");
    assert!(read_ok(&log, in_seg1[0]).unwrap() && read_ok(&log, keep).unwrap());
    assert!(log.read(locs[in_seg2[0]]).is_err() && log.read(locs[cut]).is_err());
    // A new handle starts with overwrite off.
    assert!(log.drop_segment(1).is_err());
    log.close().unwrap();
}
