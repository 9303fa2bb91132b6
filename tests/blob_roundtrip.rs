//! Proves blobs of sizes 0, 1, 4095, 4096, 4097, 1 MiB and 64 MiB read back byte for
//! byte (whole and by range at every frame and block boundary), before and after a
//! reopen, under every durability mode, and from a log opened through a `Db`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringdb::{BlobLog, BlobOptions, Db, Durability, Location, Options};

mod common;
use common::Rng;

const SIZES: [usize; 7] = [0, 1, 4095, 4096, 4097, 1 << 20, 64 << 20];

fn blob(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Offsets worth cutting a range at: 0, the end, and both sides of every frame and
/// 4 KiB block boundary (sampled for large blobs).
fn cuts(len: u64, frame: u64) -> Vec<u64> {
    let mut out = vec![0, 1, len.saturating_sub(1), len];
    for unit in [4096, frame] {
        let mut b = unit;
        let mut n = 0;
        while b < len && n < 24 {
            out.extend([b - 1, b, b + 1]);
            b += unit * if len > (4 << 20) { 97 } else { 1 };
            n += 1;
        }
    }
    out.retain(|&c| c <= len);
    out.sort_unstable();
    out.dedup();
    out
}

fn check_ranges(log: &BlobLog, loc: Location, data: &[u8], frame: u64) {
    let len = data.len() as u64;
    let cuts = cuts(len, frame);
    // Every pair of cuts up to three frames apart, plus the whole blob and the halves
    // before and after the first and last few cuts (long reads stay few).
    let mut pairs = vec![(0, len)];
    for (i, &a) in cuts.iter().enumerate() {
        pairs.extend(cuts[i..].iter().filter(|&&b| b - a <= 3 * frame).map(|&b| (a, b)));
        if i < 3 || i + 3 >= cuts.len() {
            pairs.extend([(0, a), (a, len)]);
        }
    }
    for (a, b) in pairs {
        let got = log.read_range(loc, a..b).unwrap_or_else(|e| panic!("range {a}..{b} of {loc}: {e}"));
        assert!(got[..] == data[a as usize..b as usize], "range {a}..{b} of {loc} differs");
    }
}

#[test]
fn sizes_round_trip_whole_and_by_range_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = || BlobOptions::default().frame_bytes(16 << 10);
    let log = BlobLog::open(dir.path(), options()).unwrap();
    let mut written = Vec::new();
    for (i, &len) in SIZES.iter().enumerate() {
        let data = blob(i as u64, len);
        let loc = log.append(&data).unwrap();
        assert_eq!(loc.len, len as u64);
        assert_eq!(Location::from_bytes(&loc.to_bytes()), loc);
        assert!(log.read(loc).unwrap()[..] == data[..], "size {len}");
        check_ranges(&log, loc, &data, 16 << 10);
        written.push((loc, data));
    }
    assert!(log.read_range(written[2].0, 0..5000).is_err(), "a range past the blob's end is refused");
    log.close().unwrap();
    let log = BlobLog::open(dir.path(), options()).unwrap();
    for (loc, data) in &written {
        assert!(log.read(*loc).unwrap()[..] == data[..], "after reopen: {loc}");
    }
    // A location that names no blob is refused, not misread.
    let (loc, _) = written[3];
    let wrong = Location { len: loc.len + 1, ..loc };
    assert!(log.read(wrong).is_err());
    let inside = Location { offset: loc.offset + 8, ..loc };
    assert!(log.read(inside).is_err());
    log.close().unwrap();
}

#[test]
fn every_durability_mode_reads_its_acknowledged_blobs_and_reports_persistence() {
    for durability in [
        Durability::Sync,
        Durability::Periodic { bytes: 1 << 20, items: 50, interval: Duration::from_millis(20) },
        Durability::None,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let options = BlobOptions::default().durability(durability).on_persist(move |e| sink.lock().unwrap().push(e));
        let log = BlobLog::open(dir.path(), options).unwrap();
        let mut locs = Vec::new();
        for i in 0..200u64 {
            let data = blob(i, (i as usize * 37) % 5000);
            let loc = log.append(&data).unwrap();
            // Readable at once, whether or not it reached the file yet.
            assert!(log.read(loc).unwrap()[..] == data[..], "{durability:?}: blob {i}");
            locs.push((loc, data));
        }
        log.sync().unwrap();
        let persisted: Vec<_> = events.lock().unwrap().clone();
        let last = locs.last().unwrap().0;
        assert!(
            persisted.iter().any(|e| e.first <= last && last <= e.last),
            "{durability:?}: the last blob was reported durable"
        );
        for e in &persisted {
            assert!(e.first <= e.last);
        }
        log.close().unwrap();
        let log = BlobLog::open(dir.path(), BlobOptions::default()).unwrap();
        for (loc, data) in &locs {
            assert!(log.read(*loc).unwrap()[..] == data[..], "{durability:?}: {loc} after reopen");
        }
        log.close().unwrap();
    }
}

#[test]
fn a_db_opens_named_blob_logs_beside_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default().shards(1)).unwrap();
    let log = db.blob_log("images", BlobOptions::default()).unwrap();
    let loc = log.append(b"png bytes").unwrap();
    db.put(b"image:1", loc.to_bytes()).unwrap();
    let stored = db.get(b"image:1").unwrap().unwrap();
    let loc2 = Location::from_bytes(stored[..].try_into().unwrap());
    assert_eq!(&*log.read(loc2).unwrap(), b"png bytes");
    assert!(dir.path().join("blobs/images").is_dir());
    assert!(db.blob_log("images", BlobOptions::default()).is_err(), "one writer per named log");
    assert!(db.blob_log("../escape", BlobOptions::default()).is_err());
    log.close().unwrap();
    db.close().unwrap();
}

#[test]
fn closed_and_read_only_handles_refuse_writes() {
    let dir = tempfile::tempdir().unwrap();
    let log = BlobLog::open(dir.path(), BlobOptions::default()).unwrap();
    let loc = log.append(b"x").unwrap();
    let clone = log.clone();
    let ro = BlobLog::open_read_only(dir.path(), BlobOptions::default()).unwrap();
    assert_eq!(&*ro.read(loc).unwrap(), b"x");
    let err = ro.append(b"y").unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    log.close().unwrap();
    assert!(matches!(clone.append(b"z"), Err(ringdb::Error::Closed)));
}

#[test]
fn the_portable_backend_and_buffered_io_work_alike() {
    let dir = tempfile::tempdir().unwrap();
    let options = || BlobOptions::default().io_backend(ringdb::IoBackend::Portable).direct_io(false).zero_fill(true);
    let log = BlobLog::open(dir.path(), options().max_segment_bytes(1 << 20)).unwrap();
    let mut written = Vec::new();
    for i in 0..30u64 {
        let data = blob(i, (i as usize * 40_503) % 300_000);
        written.push((log.append(&data).unwrap(), data));
    }
    let mut txn = log.batch();
    txn.append(b"a").unwrap().append(b"b").unwrap();
    let locs = txn.commit().unwrap();
    assert_eq!(locs.len(), 2);
    assert!(log.segments().unwrap().len() > 2);
    log.close().unwrap();
    let log = BlobLog::open(dir.path(), options()).unwrap();
    for (loc, data) in &written {
        assert!(log.read(*loc).unwrap()[..] == data[..]);
        check_ranges(&log, *loc, data, 64 << 10);
    }
    assert_eq!(&*log.read(locs[1]).unwrap(), b"b");
    log.close().unwrap();
}
