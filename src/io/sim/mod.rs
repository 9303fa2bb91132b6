//! The simulated disk: deterministic, in memory, fault-injecting.
//!
//! A [`SimDisk`] is a cloneable handle on an in-memory file system that
//! outlives any [`crate::Db`] opened on it (`IoBackend::Sim(disk)`), so a test
//! can open, crash and reopen. It keeps what the hardware keeps apart:
//!
//! - **Per file**, the bytes a read sees (`data`) and the bytes that survive a
//!   power cut (`durable`), plus the writes in between, in order (`unsynced`).
//!   `fdatasync`/`fsync` make all of them durable; a write with `RWF_DSYNC`
//!   makes itself durable (it is kept whole by any crash).
//! - **Per directory**, entry changes (create, rename, remove) are durable only
//!   after an fsync of that directory; until then they wait, in order, in
//!   `dir_ops`.
//!
//! [`SimDisk::crash`] is a power cut: each file keeps all, none, or a random
//! subset of its unsynced writes (applied in order over the durable bytes), and
//! a kept write may be torn at sector granularity ([`SECTOR_BYTES`]): some of
//! its sectors keep their old, stale contents. Pending directory changes keep a
//! prefix (a journaling file system commits them in order). Every handle opened
//! before the crash then fails with EIO, and locks are released.
//! [`SimDisk::crash_after_ops`] arms a power cut just before the n-th mutating
//! operation from now; from then on every operation fails with EIO until
//! [`SimDisk::crash`] is called.
//!
//! Faults ([`SimFaults`], rates in parts per million of operations): EIO on
//! read, write and sync; short reads and writes (on the shard's `Io`, where the
//! engine sees them as such; blocking helpers retry short transfers as the real
//! ones do); ENOSPC on writes and allocation; latency, as completions held back
//! to a later `wait`. A failed sync behaves as Linux does after an fsync error:
//! the file's unsynced writes are marked clean, a random subset of them having
//! reached the disk; reads still see them, a later sync does not write them,
//! and a crash loses the rest. [`SimDisk::flip_bits`] flips bits at rest.
//!
//! **Determinism.** Every decision comes from the seed and counters: a fault
//! from (seed, file number, that file's operation count), a crash from the
//! seed given to `crash`. File numbers are given in creation order. A
//! workload whose operations reach the disk in one order (one shard, one
//! client waiting for each answer) replays to the same bytes;
//! [`SimDisk::durable_hash`] and [`SimDisk::state_hash`] check it.

mod crash;
mod disk;
mod faults;
mod files;
mod io;

pub use crash::CrashMode;
pub use disk::{SECTOR_BYTES, SimDisk, SimStats};
pub use faults::SimFaults;
pub use io::SimIo;

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::io::fs::{Fs, OpenFlags};

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn unsynced_writes_and_names_are_lost_by_a_crash_that_keeps_nothing() {
        let disk = SimDisk::new(1);
        disk.create_dir(&p("/d")).unwrap();
        disk.sync_dir(&p("/")).unwrap();
        let f = disk.open(&p("/d/a"), OpenFlags::CREATE).unwrap();
        f.write_all_at(b"durable", 0).unwrap();
        f.sync_data().unwrap();
        disk.sync_dir(&p("/d")).unwrap();
        f.write_all_at(b"VOLATILE", 0).unwrap();
        let g = disk.open(&p("/d/b"), OpenFlags::CREATE).unwrap();
        g.write_all_at(b"x", 0).unwrap();
        g.sync_data().unwrap();
        // `b`'s data is durable but its name is not.
        disk.crash_with(CrashMode::KeepNone, 7);
        assert_eq!(disk.read_file(&p("/d/a")).unwrap(), b"durable");
        assert!(disk.read_file(&p("/d/b")).is_none());
        // Handles from before the crash are dead.
        assert!(f.read_exact_at(&mut [0u8; 1], 0).is_err());
    }

    #[test]
    fn a_crash_that_keeps_all_keeps_everything() {
        let disk = SimDisk::new(2);
        let f = disk.open(&p("/a"), OpenFlags::CREATE).unwrap();
        f.write_all_at(&[7u8; 2048], 0).unwrap();
        disk.crash_with(CrashMode::KeepAll, 1);
        assert_eq!(disk.read_file(&p("/a")).unwrap(), vec![7u8; 2048]);
    }

    #[test]
    fn torn_writes_keep_whole_sectors_of_old_or_new_bytes() {
        let mut torn_seen = false;
        for seed in 0..64 {
            let disk = SimDisk::new(seed);
            let f = disk.open(&p("/a"), OpenFlags::CREATE).unwrap();
            f.write_all_at(&[1u8; 4096], 0).unwrap();
            f.sync_data().unwrap();
            disk.sync_dir(&p("/")).unwrap();
            f.write_all_at(&[2u8; 4096], 0).unwrap();
            disk.crash_with(CrashMode::Random, seed);
            let data = disk.read_file(&p("/a")).unwrap();
            assert_eq!(data.len(), 4096);
            for sector in data.chunks(SECTOR_BYTES) {
                assert!(sector.iter().all(|&b| b == sector[0]), "a sector mixes old and new bytes");
            }
            torn_seen |= data.chunks(SECTOR_BYTES).any(|s| s[0] == 1) && data.chunks(SECTOR_BYTES).any(|s| s[0] == 2);
        }
        assert!(torn_seen, "64 random crashes never tore a write");
    }

    #[test]
    fn a_failed_sync_loses_the_writes_for_good() {
        // After EIO from fsync, a later successful fsync does not make the lost writes
        // durable (Linux marks the pages clean).
        let mut lost = false;
        for seed in 0..16 {
            let disk = SimDisk::new(seed);
            let f = disk.open(&p("/a"), OpenFlags::CREATE).unwrap();
            disk.sync_dir(&p("/")).unwrap();
            for i in 0..8u8 {
                f.write_all_at(&[i + 1; 512], u64::from(i) * 512).unwrap();
            }
            disk.fail_syncs("/a", 1);
            assert!(f.sync_data().is_err());
            f.sync_data().unwrap();
            assert_eq!(disk.read_file(&p("/a")).unwrap().len(), 4096, "reads still see the writes");
            disk.crash_with(CrashMode::KeepAll, seed);
            let data = disk.read_file(&p("/a")).unwrap();
            lost |= data.chunks(512).any(|s| s[0] == 0);
        }
        assert!(lost, "a failed sync never lost a write");
    }

    #[test]
    fn same_seed_same_faults() {
        let run = |seed| {
            let disk = SimDisk::new(seed);
            disk.set_faults(SimFaults { write_eio_ppm: 200_000, sync_eio_ppm: 200_000, ..SimFaults::default() });
            let f = disk.open(&p("/a"), OpenFlags::CREATE).unwrap();
            let mut results = Vec::new();
            for i in 0..64u64 {
                results.push(f.write_all_at(&[i as u8; 1024], i * 1024).is_ok());
                results.push(f.sync_data().is_ok());
            }
            (results, disk.state_hash())
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5).0, run(6).0);
    }

    #[test]
    fn an_armed_crash_freezes_the_disk() {
        let disk = SimDisk::new(3);
        let f = disk.open(&p("/a"), OpenFlags::CREATE).unwrap();
        disk.crash_after_ops(2);
        f.write_all_at(b"one", 0).unwrap();
        assert!(f.write_all_at(b"two", 0).is_err());
        assert!(disk.frozen());
        assert!(disk.open(&p("/b"), OpenFlags::CREATE).is_err());
        disk.crash_with(CrashMode::KeepNone, 0);
        assert!(!disk.frozen());
        // The file's name was never synced.
        assert!(disk.read_file(&p("/a")).is_none());
    }

    #[test]
    fn a_read_only_handle_reads_but_changes_nothing() {
        let disk = SimDisk::new(4);
        let f = disk.open(&p("/a"), OpenFlags::CREATE).unwrap();
        f.write_all_at(b"bytes", 0).unwrap();
        let r = disk.open(&p("/a"), OpenFlags::READ_ONLY).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(r.read_at(&mut buf, 0).unwrap(), 5, "a read stops at the end of the file");
        assert_eq!(&buf[..5], b"bytes");
        assert!(r.write_all_at(b"x", 0).is_err());
        assert!(r.set_len(0).is_err());
        assert!(r.punch_hole(0, 5).is_err());
        assert_eq!(disk.read_file(&p("/a")).unwrap(), b"bytes");
    }
}
