//! Proves the blob log's manifest and recovery are crash-safe: on the simulated disk, a
//! workload of appends (across rotations), syncs, drops and clean reopens is cut by
//! power cuts at random operations, in the workload and in recovery itself, cycle
//! after cycle, with durability `Sync`, `Periodic` and `None`. Every open after a cut
//! succeeds (no false corruption), every durable blob of a segment not dropped reads
//! back intact, a blob acknowledged but not yet durable reads back intact or as
//! corruption (never as other bytes) and stays so, a dropped segment reads as an
//! invalid argument, and no location is ever handed out twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ringdb::{BlobLog, BlobOptions, Durability, Error, IoBackend, Location, SimDisk};

mod common;
use common::Rng;

/// What a blob acknowledged under `None` may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Synced (or `Sync`): must read back intact.
    Durable,
    /// Not yet synced: a power cut decides.
    Pending,
    /// Lost in a power cut: must read as corruption for ever.
    Lost,
}

/// What the test knows of the log: every acknowledged blob and its fate, and the drops.
#[derive(Default)]
struct Model {
    durability: Option<Durability>,
    blobs: BTreeMap<(u32, u64), (Location, Vec<u8>, Fate)>,
    dropped: BTreeSet<u32>,
    /// Drops whose outcome a power cut left unknown.
    maybe_dropped: BTreeSet<u32>,
}

fn options(disk: &SimDisk, model: &Model) -> BlobOptions {
    BlobOptions::default()
        .io_backend(IoBackend::Sim(disk.clone()))
        .max_segment_bytes(1 << 20)
        .allow_overwrite(true)
        .durability(model.durability.unwrap_or(Durability::Sync))
}

/// Opens the log, with a power cut armed at a random early operation half the time;
/// retries after each cut until an open succeeds on a live disk.
fn open_through_cuts(disk: &SimDisk, dir: &Path, model: &Model, rng: &mut Rng) -> Result<BlobLog, String> {
    for _ in 0..20 {
        if rng.range(0, 1) == 0 {
            disk.crash_after_ops(rng.range(1, 30));
        }
        match BlobLog::open(dir, options(disk, model)) {
            Ok(log) if !disk.frozen() => {
                disk.disarm();
                return Ok(log);
            }
            Ok(log) => {
                drop(log);
                disk.crash(rng.next_u64());
            }
            Err(_) if disk.frozen() => {
                disk.crash(rng.next_u64());
            }
            Err(e) => return Err(format!("open after a power cut failed: {e}")),
        }
    }
    disk.disarm();
    BlobLog::open(dir, options(disk, model)).map_err(|e| format!("open failed: {e}"))
}

/// Checks every blob the model holds against the log just opened after a power cut;
/// settles the fate of the pending ones (what an open finds, it has made durable).
fn check(log: &BlobLog, model: &mut Model) -> Result<(), String> {
    for (loc, data, fate) in model.blobs.values_mut() {
        let got = log.read(*loc);
        let dropped = model.dropped.contains(&loc.segment);
        let maybe = model.maybe_dropped.contains(&loc.segment);
        match (got, *fate) {
            (Ok(v), Fate::Durable | Fate::Pending) if !dropped && v[..] == data[..] => *fate = Fate::Durable,
            (Ok(_), _) if !dropped => return Err(format!("{loc} reads back as other bytes")),
            (Err(Error::InvalidArgument(_)), _) if dropped || maybe => {}
            (Err(Error::Corruption { .. }), Fate::Pending | Fate::Lost) => *fate = Fate::Lost,
            (other, _) => return Err(format!("{loc} (dropped: {dropped}, maybe: {maybe}, {fate:?}): {other:?}")),
        }
    }
    Ok(())
}

/// Everything acknowledged in this run is durable now (a sync or a close returned).
fn settle(model: &mut Model) {
    model.blobs.values_mut().filter(|b| b.2 == Fate::Pending).for_each(|b| b.2 = Fate::Durable);
}

/// One cycle of work: appends, now and then a drop of the oldest sealed segment or a
/// clean reopen. Stops at the first error (a power cut).
fn work(log: BlobLog, disk: &SimDisk, dir: &Path, model: &mut Model, rng: &mut Rng) -> Option<BlobLog> {
    let mut log = log;
    for _ in 0..rng.range(10, 40) {
        match rng.range(0, 19) {
            0 => {
                let current = log.current_segment();
                let oldest = log.segments().ok()?.into_iter().find(|s| s.segment != current)?.segment;
                match log.drop_segment(oldest) {
                    Ok(()) => {
                        model.dropped.insert(oldest);
                    }
                    Err(_) => {
                        model.maybe_dropped.insert(oldest);
                        return None;
                    }
                }
            }
            1 => {
                log.close().ok()?;
                settle(model);
                log = BlobLog::open(dir, options(disk, model)).ok()?;
            }
            2 => {
                log.sync().ok()?;
                settle(model);
            }
            _ => {
                let len = rng.range(0, 60_000) as usize;
                let data = rng.bytes(len);
                let loc = log.append(&data).ok()?;
                let key = (loc.segment, loc.offset);
                assert!(!model.blobs.contains_key(&key), "{loc} was handed out twice");
                let fate = if model.durability == Some(Durability::Sync) { Fate::Durable } else { Fate::Pending };
                model.blobs.insert(key, (loc, data, fate));
            }
        }
    }
    Some(log)
}

fn run(seed: u64) -> Result<(), String> {
    println!("seed {seed:#x} (replay with this seed in run())");
    let disk = SimDisk::new(seed);
    let dir = Path::new("/blobs");
    let mut rng = Rng::new(seed);
    let durability = match seed % 3 {
        0 => Durability::Sync,
        1 => Durability::Periodic { bytes: 256 << 10, items: 8, interval: std::time::Duration::from_secs(3600) },
        _ => Durability::None,
    };
    println!("{durability:?}");
    let mut model = Model { durability: Some(durability), ..Model::default() };
    for cycle in 0..12 {
        let log = open_through_cuts(&disk, dir, &model, &mut rng).map_err(|e| format!("cycle {cycle}: {e}"))?;
        check(&log, &mut model).map_err(|e| format!("cycle {cycle}: {e}"))?;
        if rng.range(0, 3) != 0 {
            disk.crash_after_ops(rng.range(1, 200));
        }
        let left = work(log, &disk, dir, &mut model, &mut rng);
        drop(left);
        disk.disarm();
        disk.crash(rng.next_u64());
    }
    let log = open_through_cuts(&disk, dir, &model, &mut rng)?;
    check(&log, &mut model)?;
    println!(
        "{} blobs, {} dropped, {} maybe, segment {}",
        model.blobs.len(),
        model.dropped.len(),
        model.maybe_dropped.len(),
        log.current_segment()
    );
    log.close().map_err(|e| e.to_string())
}

#[test]
fn power_cuts_never_make_a_false_corruption_nor_a_reused_location() {
    for seed in 0..24 {
        if let Err(e) = run(0xb10b_c0de + seed) {
            panic!("seed {:#x}: {e}", 0xb10b_c0de + seed);
        }
    }
}
