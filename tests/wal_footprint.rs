//! Proves a new database takes little disk and its log grows as it is used: a new
//! database of two shards with default options holding one key takes at most 16 MiB on
//! disk (64 MiB segments used to make it 256 MiB); segments grow from 64 KiB by four up to
//! `Options::wal_segment_bytes`, a log that rotated many times recovers every record and
//! keeps growing from its tail's size after a reopen; a record of the largest size the
//! largest segment holds is accepted on a new database, whose segments are still small;
//! and a power cut at any step of growing segments (a spare replaced by one sized for a
//! large record included), on the simulated disk, loses no acknowledged write.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ringdb::format::record::HEADER_BYTES;
use ringdb::format::segment::SegmentHeader;
use ringdb::{Ack, Db, Error, IoBackend, Options, SimDisk, WriteBatch};

mod common;
use common::{Rng, counters, seed, segments};

/// Bytes the files under `path` take on disk (`du`): allocated 512-byte units, not lengths.
fn disk_bytes(path: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += meta.blocks() * 512;
        if meta.is_dir() {
            total += disk_bytes(&entry.path());
        }
    }
    total
}

/// The size and block size each log segment of `shard` records in its header, in order.
fn segment_sizes(dir: &Path, shard: usize) -> Vec<(u64, u32)> {
    segments(dir, shard)
        .iter()
        .map(|path| {
            let bytes = std::fs::read(path).unwrap();
            let header = SegmentHeader::decode(&bytes).unwrap();
            assert_eq!(
                header.segment_bytes,
                bytes.len() as u64,
                "{}: the header gives the file's size",
                path.display()
            );
            (header.segment_bytes, header.block_bytes)
        })
        .collect()
}

#[test]
fn a_new_database_holding_one_key_takes_at_most_16_mib() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default().shards(2)).unwrap();
    db.put(b"the key", b"the value").unwrap();
    // Closing waits for the spare segments prepared ahead, so all files are whole.
    db.close().unwrap();
    let used = disk_bytes(dir.path());
    assert!(used <= 16 << 20, "a new database holding one key takes {used} bytes on disk");
    for shard in 0..2 {
        let sizes: Vec<u64> = segment_sizes(dir.path(), shard).iter().map(|s| s.0).collect();
        assert_eq!(sizes, [64 << 10, 256 << 10], "shard {shard}: the first segment and its spare");
    }

    let db = Db::open(dir.path(), Options::default()).unwrap();
    assert_eq!(db.get(b"the key").unwrap().as_deref(), Some(&b"the value"[..]));
    db.close().unwrap();
    let used = disk_bytes(dir.path());
    assert!(used <= 16 << 20, "reopened, the database takes {used} bytes on disk");
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn value(i: usize, round: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-{round}-").into_bytes();
    v.resize(1000 + i % 48, b'a' + (round % 26) as u8);
    v
}

/// Puts keys `0..n` with the values of `round`, many acknowledgements waited for at once.
fn write_round(db: &Db, n: usize, round: usize) {
    let mut acks: Vec<Ack> = Vec::new();
    for i in 0..n {
        acks.push(db.put_async(key(i), value(i, round)));
        if acks.len() == 256 {
            acks.drain(..).try_for_each(Ack::wait).unwrap();
        }
    }
    acks.into_iter().try_for_each(Ack::wait).unwrap();
}

fn check_round(db: &Db, n: usize, round: usize) {
    for i in 0..n {
        let got = db.get(key(i)).unwrap();
        assert!(
            got.as_deref() == Some(&value(i, round)[..]),
            "key {i} after round {round}: {:?}",
            got.map(|v| v.len())
        );
    }
}

#[test]
fn segments_grow_to_the_largest_size_and_a_reopened_log_recovers_everything() {
    const LARGEST: u64 = 4 << 20;
    const KEYS: usize = 24_000;
    let dir = tempfile::tempdir().unwrap();
    // No checkpoint runs, so every segment stays on disk and every record is replayed.
    let options = || {
        Options::default()
            .shards(2)
            .wal_segment_bytes(LARGEST)
            .checkpoint_wal_bytes(1 << 30)
            .checkpoint_interval(std::time::Duration::from_secs(24 * 3600))
            .cache_bytes(1 << 30)
    };
    let db = Db::open(dir.path(), options()).unwrap();
    write_round(&db, KEYS, 0);
    let stats = db.stats();
    assert_eq!(stats.wal_records, KEYS as u64, "{}", counters(&stats));
    db.close().unwrap();
    for shard in 0..2 {
        let sizes = segment_sizes(dir.path(), shard);
        let bytes: Vec<u64> = sizes.iter().map(|s| s.0).collect();
        // About 12 MiB of log per shard: 64 KiB, 256 KiB, 1 MiB, then 4 MiB segments (the
        // last one the spare, prepared ahead).
        assert!(bytes.len() >= 6, "shard {shard}: segments {bytes:?}");
        assert_eq!(bytes[..4], [64 << 10, 256 << 10, 1 << 20, LARGEST], "shard {shard}: the first sizes");
        assert!(bytes[4..].iter().all(|&b| b == LARGEST), "shard {shard}: segments stop growing at the largest size");
    }

    let db = Db::open(dir.path(), options()).unwrap();
    assert_eq!(db.stats().recovered_records, KEYS as u64, "every record of every segment is replayed");
    check_round(&db, KEYS, 0);
    // The log continues from its tail segment's size: the segments made now are full size.
    write_round(&db, KEYS / 2, 1);
    db.close().unwrap();
    for shard in 0..2 {
        let sizes = segment_sizes(dir.path(), shard);
        assert!(sizes[4..].iter().all(|s| s.0 == LARGEST), "shard {shard}: after reopening, segments {sizes:?}");
    }

    let db = Db::open(dir.path(), options()).unwrap();
    assert_eq!(db.stats().recovered_records, (KEYS + KEYS / 2) as u64);
    check_round(&db, KEYS / 2, 1);
    for i in KEYS / 2..KEYS {
        assert!(db.get(key(i)).unwrap().as_deref() == Some(&value(i, 0)[..]), "key {i} keeps its first value");
    }
    db.close().unwrap();
}

/// Largest record body a log whose largest segment is `segment_bytes` holds: the segment
/// less its header block and one record header, rounded down to the record alignment.
fn body_bytes_max(segment_bytes: u64, block_bytes: u32) -> usize {
    (segment_bytes as usize - block_bytes as usize - HEADER_BYTES) & !7
}

/// A batch whose encoded body is exactly `body` bytes: ops of 8 bytes of header, the
/// key and the value, values at most `VALUE_BYTES_MAX`.
fn batch_of(body: usize) -> (WriteBatch, Vec<(Vec<u8>, usize)>) {
    let mut batch = WriteBatch::new();
    let mut expected = Vec::new();
    let mut left = body;
    for i in 0.. {
        let key = format!("big{i}").into_bytes();
        let overhead = 8 + key.len();
        let rest = left - overhead;
        // Leave room for one more op (at least its header and key) unless this is the last.
        let len = if rest <= ringdb::VALUE_BYTES_MAX { rest } else { ringdb::VALUE_BYTES_MAX.min(rest - 64) };
        batch.put(&key, vec![b'0' + i as u8; len]).unwrap();
        expected.push((key, len));
        left -= overhead + len;
        if left == 0 {
            break;
        }
    }
    (batch, expected)
}

#[test]
fn a_record_of_the_largest_size_is_accepted_on_a_new_database() {
    let dir = tempfile::tempdir().unwrap();
    // Defaults (64 MiB segments), but no checkpoint: it would delete the segments looked at.
    let options = || {
        Options::default()
            .shards(1)
            .checkpoint_wal_bytes(1 << 30)
            .checkpoint_interval(std::time::Duration::from_secs(24 * 3600))
            .cache_bytes(1 << 30)
    };
    let db = Db::open(dir.path(), options()).unwrap();
    let (first_bytes, block) = segment_sizes(dir.path(), 0)[0];
    assert_eq!(first_bytes, 64 << 10, "a new log starts small");
    // The limit is what a 64 MiB segment (the default) holds, as before segments grew.
    let max = body_bytes_max(64 << 20, block);

    let (too_large, _) = batch_of(max + 1);
    match db.write_batch(too_large) {
        Err(Error::BatchTooLarge { bytes, max: limit }) => assert_eq!((bytes, limit), (max + 1, max)),
        other => panic!("expected BatchTooLarge, got {other:?}"),
    }
    // A record larger than the spare segment (256 KiB) gets a segment sized to hold it.
    db.put(b"middle", vec![b'm'; 300 << 10]).unwrap();
    let (largest, expected) = batch_of(max);
    db.write_batch(largest).unwrap();
    db.put(b"after", b"small").unwrap();
    db.close().unwrap();
    let sizes: Vec<u64> = segment_sizes(dir.path(), 0).iter().map(|s| s.0).collect();
    assert_eq!(sizes[..3], [64 << 10, 512 << 10, 64 << 20], "segments sized for the records: {sizes:?}");

    let db = Db::open(dir.path(), options()).unwrap();
    assert_eq!(db.stats().recovered_records, 3, "the refused batch never reached the log");
    assert_eq!(db.get(b"middle").unwrap().map(|v| v.len()), Some(300 << 10));
    for (key, len) in &expected {
        let got = db.get(key).unwrap().expect("every op of the largest batch is there");
        assert_eq!(got.len(), *len);
        assert!(got.iter().all(|&b| b == got[0]), "the value of {key:?} is whole");
    }
    assert_eq!(db.get(b"after").unwrap().as_deref(), Some(&b"small"[..]));
    db.close().unwrap();
}

/// Sizes of the puts of the power-cut test: mostly small, some larger than a 64 KiB
/// segment, some larger than the 256 KiB spare (whose segment is replaced).
fn crash_value(i: usize) -> Vec<u8> {
    let len = match i % 16 {
        5 => 100 << 10,
        1 | 11 => 300 << 10,
        _ => 200 + 37 * (i % 50),
    };
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(len, b'a' + (i % 26) as u8);
    v
}

/// Opens a one-shard database on `disk` with 1 MiB segments and no checkpoint, and puts
/// keys from 0 one at a time until `puts` succeeded or a put fails; returns how many
/// succeeded (each acknowledged durable).
fn crash_workload(disk: &SimDisk, puts: usize) -> usize {
    let options = Options::default()
        .io_backend(IoBackend::Sim(disk.clone()))
        .shards(1)
        .pin_threads(false)
        .wal_segment_bytes(1 << 20)
        .checkpoint_wal_bytes(1 << 30)
        .checkpoint_interval(std::time::Duration::from_secs(24 * 3600));
    let Ok(db) = Db::open("/db", options) else { return 0 };
    let acknowledged = (0..puts).take_while(|&i| db.put(key(i), crash_value(i)).is_ok()).count();
    drop(db);
    acknowledged
}

#[test]
fn a_power_cut_while_segments_grow_loses_no_acknowledged_write() {
    const PUTS: usize = 120;
    let base_seed = seed("a_power_cut_while_segments_grow_loses_no_acknowledged_write");
    // A run without a power cut counts the disk's mutating operations, so cuts fall
    // anywhere in the workload, segment creations and replacements included.
    let dry = SimDisk::new(base_seed);
    assert_eq!(crash_workload(&dry, PUTS), PUTS);
    let operations = dry.stats().mutations;
    let options = |disk: &SimDisk| {
        Options::default()
            .io_backend(IoBackend::Sim(disk.clone()))
            .shards(1)
            .pin_threads(false)
            .wal_segment_bytes(1 << 20)
    };
    let db = Db::open("/db", options(&dry)).unwrap();
    assert_eq!(db.stats().recovered_records, PUTS as u64);
    db.close().unwrap();
    let sizes: Vec<u64> = dry
        .files()
        .iter()
        .filter_map(|p| {
            let bytes = dry.read_file(p)?;
            p.extension().is_some_and(|e| e == "log").then(|| SegmentHeader::decode(&bytes).unwrap().segment_bytes)
        })
        .collect();
    assert!(sizes.contains(&(512 << 10)), "a spare was replaced by a segment sized for a record: {sizes:?}");

    // Put 1 (300 KiB) finds the 64 KiB first segment full and the 256 KiB spare too small:
    // the first 16 runs cut the power at each operation from there on.
    let before_replacement = {
        let disk = SimDisk::new(base_seed);
        assert_eq!(crash_workload(&disk, 1), 1);
        disk.stats().mutations
    };
    let mut rng = Rng::new(base_seed);
    for run in 0..64 {
        let run_seed = rng.next_u64();
        let disk = SimDisk::new(run_seed);
        let cut = if run < 16 { before_replacement + run } else { rng.range(1, operations) };
        disk.crash_after_ops(cut);
        let acknowledged = crash_workload(&disk, PUTS);
        disk.crash(run_seed);
        let db = Db::open("/db", options(&disk))
            .unwrap_or_else(|e| panic!("run {run} (seed {base_seed}): open after a power cut: {e}"));
        let present: Vec<bool> = (0..PUTS).map(|i| db.get(key(i)).unwrap().is_some()).collect();
        let kept = present.iter().take_while(|&&p| p).count();
        assert!(kept >= acknowledged, "run {run} (seed {base_seed}): {kept} puts kept, {acknowledged} acknowledged");
        assert!(kept <= acknowledged + 1, "run {run} (seed {base_seed}): only the put that failed may be there too");
        assert!(present[kept..].iter().all(|&p| !p), "run {run} (seed {base_seed}): the puts kept are a prefix");
        for i in 0..kept {
            assert!(db.get(key(i)).unwrap().as_deref() == Some(&crash_value(i)[..]), "run {run}: key {i}");
        }
        db.close().unwrap();
    }
}
