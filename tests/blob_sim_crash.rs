//! Proves the blob log runs on the simulated disk: blobs appended, across segment
//! rotations, read back after a power cut that keeps every write and a reopen; and
//! after power cuts that keep none or a random subset of the unsynced writes, every
//! blob reported durable (`on_persist`) reads back intact, and no other blob reads
//! back as different bytes.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringdb::{BlobLog, BlobOptions, BlobPersistEvent, CrashMode, Durability, IoBackend, Location, SimDisk};

mod common;
use common::Rng;

fn blob(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

fn options(disk: &SimDisk) -> BlobOptions {
    BlobOptions::default().io_backend(IoBackend::Sim(disk.clone())).max_segment_bytes(1 << 20)
}

/// Appends `count` blobs of up to 96 KiB (enough for several 1 MiB segments).
fn append_all(log: &BlobLog, rng: &mut Rng, count: usize) -> Vec<(Location, Vec<u8>)> {
    let mut written = Vec::with_capacity(count);
    for _ in 0..count {
        let len = (rng.next_u64() % (96 << 10)) as usize;
        let data = blob(rng, len);
        let loc = log.append(&data).expect("append on the simulated disk");
        written.push((loc, data));
    }
    written
}

#[test]
fn a_crash_that_keeps_every_write_keeps_every_blob() {
    let seed = 0x0b10_b51e;
    println!("seed {seed:#x}");
    let disk = SimDisk::new(seed);
    let dir = Path::new("/db/blobs/main");
    let mut rng = Rng::new(seed);
    let log = BlobLog::open(dir, options(&disk)).expect("open on the simulated disk");
    let written = append_all(&log, &mut rng, 64);
    assert!(written.last().expect("blobs").0.segment > 0, "the blobs span segments");
    // A power cut while the log is open: its handles die, it is dropped unclosed.
    disk.crash_with(CrashMode::KeepAll, seed);
    drop(log);
    let log = BlobLog::open(dir, options(&disk)).expect("reopen after the crash");
    for (loc, data) in &written {
        let got = log.read(*loc).unwrap_or_else(|e| panic!("blob at {loc} after the crash: {e}"));
        assert!(got[..] == data[..], "blob at {loc} differs after the crash");
    }
    // The reopened log takes appends after the recovered ones.
    let more = append_all(&log, &mut rng, 4);
    for (loc, data) in more.iter().chain(&written) {
        assert!(log.read(*loc).expect("read")[..] == data[..], "blob at {loc} differs");
    }
    log.close().expect("close");
}

/// Whether a persist event covered `loc`.
fn persisted(events: &[BlobPersistEvent], loc: Location) -> bool {
    events.iter().any(|e| e.first.segment == loc.segment && e.first.offset <= loc.offset && loc.offset <= e.last.offset)
}

fn crash_keeps_persisted_blobs(seed: u64, mode: CrashMode) {
    println!("seed {seed:#x}, {mode:?}");
    let disk = SimDisk::new(seed);
    let dir = Path::new("/blobs");
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let periodic = Durability::Periodic { bytes: 4 << 20, items: 8, interval: Duration::from_secs(3600) };
    let opts = options(&disk).durability(periodic).on_persist(move |e| sink.lock().unwrap().push(e));
    let log = BlobLog::open(dir, opts).expect("open on the simulated disk");
    let mut rng = Rng::new(seed);
    // 8 blobs per flush: the last 3 are acknowledged but never written before the cut.
    let written = append_all(&log, &mut rng, 43);
    disk.crash_with(mode, seed);
    drop(log);
    let events = events.lock().unwrap().clone();
    let log = BlobLog::open(dir, options(&disk)).expect("reopen after the crash");
    let mut kept = 0;
    for (loc, data) in &written {
        match log.read(*loc) {
            Ok(got) => {
                assert!(got[..] == data[..], "blob at {loc} reads back as other bytes after the crash");
                kept += 1;
            }
            Err(e) => assert!(!persisted(&events, *loc), "durable blob at {loc} lost by the crash: {e}"),
        }
    }
    let durable = written.iter().filter(|(loc, _)| persisted(&events, *loc)).count();
    assert!(durable > 0, "no blob was reported durable: the test proves nothing");
    println!("{kept} of {} blobs kept, {durable} were durable", written.len());
    assert!(kept >= durable, "{kept} blobs kept, {durable} were durable");
    log.close().expect("close");
}

#[test]
fn a_crash_that_keeps_no_unsynced_write_keeps_the_durable_blobs() {
    crash_keeps_persisted_blobs(0x5eed_0001, CrashMode::KeepNone);
}

#[test]
fn a_crash_that_keeps_some_unsynced_writes_keeps_the_durable_blobs() {
    for seed in 0..8 {
        crash_keeps_persisted_blobs(0x5eed_1000 + seed, CrashMode::Random);
    }
}
