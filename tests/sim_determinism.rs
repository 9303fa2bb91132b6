//! The simulated disk replays: one shard, one client waiting for each answer, the same
//! seed gives the same disk image to the byte (current and durable bytes, names, what is
//! unsynced), through checkpoints, log rotations, injected latency, an armed power cut
//! and a reopen; another seed gives another image.

mod common;

use std::path::Path;

use common::Rng;
use ringdb::{Db, IoBackend, Options, SimDisk, SimFaults, WriteBatch};

fn run(seed: u64) -> (u64, u64, ringdb::SimStats) {
    let disk = SimDisk::new(seed);
    disk.set_faults(SimFaults { latency_ppm: 100_000, ..SimFaults::default() });
    let opts = Options::default()
        .io_backend(IoBackend::Sim(disk.clone()))
        .shards(1)
        .pin_threads(false)
        .wal_segment_bytes(64 << 10)
        .checkpoint_wal_bytes(64 << 10)
        .page_chunk_bytes(512);
    let dir = Path::new("/db");
    let mut rng = Rng::new(seed);
    for cycle in 0..3 {
        let db = Db::open(dir, opts.clone()).unwrap();
        if cycle == 1 {
            disk.crash_after_ops(rng.range(50, 150));
        }
        for i in 0..150u64 {
            let k = format!("k{}", rng.range(0, 40)).into_bytes();
            let v = vec![b'a' + (i % 26) as u8; rng.range(0, 1500) as usize];
            let result = match rng.range(0, 9) {
                0 => db.delete(&k),
                1 => {
                    let mut batch = WriteBatch::new();
                    batch.put(&k, &v).unwrap().put(b"other", &v).unwrap();
                    db.write_batch(batch)
                }
                2 => db.checkpoint(),
                _ => db.put(&k, &v),
            };
            if result.is_err() {
                assert!(disk.frozen(), "seed {seed}: an error without a power cut: {result:?}");
                break;
            }
        }
        drop(db);
        if cycle == 1 {
            disk.crash(seed);
        }
    }
    (disk.state_hash(), disk.durable_hash(), disk.stats())
}

#[test]
fn same_seed_same_disk_image() {
    let seed = common::seed("same_seed_same_disk_image");
    let first = run(seed);
    let second = run(seed);
    assert_eq!(first, second, "seed {seed}: two runs left different disks");
    assert!(first.2.crashes == 1 && first.2.faults > 0, "{:?}", first.2);
    let other = run(seed ^ 0x5eed);
    assert_ne!(first.0, other.0, "two seeds left the same disk");
}
