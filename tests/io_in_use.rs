//! Proves, from /proc/self, that the configured I/O is the I/O in use: with the default
//! backend every open log segment has O_DIRECT and each shard adds exactly one io_uring;
//! `direct_io(false)` drops O_DIRECT; `IoBackend::Portable` adds no io_uring; and closing
//! releases every ring and every file of the database.
//!
//! The tests in this file count the process's file descriptors, so they hold one lock
//! and run one at a time (other test files are other processes).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ringdb::{Db, IoBackend, Options, WriteBatch};

mod common;
use common::canonical;

static FD_LOCK: Mutex<()> = Mutex::new(());

/// (fd, link target) of every open file descriptor of this process.
fn fds() -> Vec<(u32, PathBuf)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd") {
        let entry = entry.unwrap();
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        // The directory's own fd may be gone by now; skip what cannot be read.
        if let Ok(target) = std::fs::read_link(entry.path()) {
            out.push((fd, target));
        }
    }
    out
}

fn io_uring_count() -> usize {
    fds().iter().filter(|(_, t)| t.as_os_str() == "anon_inode:[io_uring]").count()
}

/// The `flags:` of an fd, from /proc/self/fdinfo (octal there); None if it was closed
/// since it was listed.
fn fd_flags(fd: u32) -> Option<i32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    let line = info.lines().find(|l| l.starts_with("flags:")).expect("a flags line");
    Some(i32::from_str_radix(line["flags:".len()..].trim(), 8).expect("octal flags"))
}

/// fds open on `.log` files under `dir`, with their flags.
fn log_fds(dir: &Path) -> Vec<(PathBuf, i32)> {
    let dir = canonical(dir);
    fds()
        .into_iter()
        .filter(|(_, t)| t.starts_with(&dir) && t.extension().is_some_and(|e| e == "log"))
        .filter_map(|(fd, t)| fd_flags(fd).map(|flags| (t, flags)))
        .collect()
}

fn db_fds(dir: &Path) -> Vec<PathBuf> {
    let dir = canonical(dir);
    fds().into_iter().map(|(_, t)| t).filter(|t| t.starts_with(&dir)).collect()
}

fn write_some(db: &Db) {
    for i in 0..300u32 {
        db.put(i.to_le_bytes(), vec![b'x'; 700]).unwrap();
    }
    let mut batch = WriteBatch::new();
    batch.put(b"a", b"1").unwrap().delete(b"b").unwrap();
    db.write_batch(batch).unwrap();
}

fn has_o_direct(flags: i32) -> bool {
    flags & libc::O_DIRECT != 0
}

/// Opens with `options`, checks the io_uring count grew by `rings_per_shard` per shard
/// and every log segment fd's O_DIRECT flag is `direct`, before and after writes that
/// rotate segments; then closes and checks everything was released.
fn check(options: Options, rings_per_shard: usize, direct: bool) {
    let _serial = FD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let shards = 3;
    let rings_before = io_uring_count();
    let db = Db::open(dir.path(), options.shards(shards).wal_segment_bytes(64 << 10)).unwrap();
    assert_eq!(io_uring_count(), rings_before + rings_per_shard * shards, "io_uring fds after open");
    for round in 0..2 {
        let logs = log_fds(dir.path());
        assert!(logs.len() >= shards, "round {round}: at least one open segment per shard: {logs:?}");
        for (path, flags) in &logs {
            assert_eq!(has_o_direct(*flags), direct, "round {round}: {} flags {flags:o}", path.display());
        }
        write_some(&db);
    }
    assert!(db.stats().wal_segments_created >= 1, "the writes rotated segments");
    assert_eq!(io_uring_count(), rings_before + rings_per_shard * shards, "io_uring fds while running");
    db.close().unwrap();
    assert_eq!(io_uring_count(), rings_before, "close releases every ring");
    assert_eq!(db_fds(dir.path()), Vec::<PathBuf>::new(), "close releases every file of the database");
}

#[test]
fn uring_backend_with_o_direct() {
    check(Options::default(), 1, true);
}

#[test]
fn uring_backend_without_o_direct() {
    check(Options::default().direct_io(false), 1, false);
}

#[test]
fn portable_backend_uses_no_io_uring() {
    check(Options::default().io_backend(IoBackend::Portable), 0, true);
}
