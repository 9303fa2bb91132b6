//! Proves bad input and a bad environment give the documented errors and write nothing:
//! oversized keys, values and batches, bad paths and options, a locked directory (from
//! this process and from another), use after close, a changed shard count, a filesystem
//! that refuses O_DIRECT; and that the portable I/O backend works end to end.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use ringdb::format::record::HEADER_BYTES;
use ringdb::format::segment::SegmentHeader;
use ringdb::{Db, Durability, Error, IoBackend, KEY_BYTES_MAX, Options, VALUE_BYTES_MAX, WriteBatch};

mod common;
use common::{child_command, counters, segments};

/// Small segments keep opening (a zero-filled segment and a spare per shard) cheap.
fn opts() -> Options {
    Options::default().wal_segment_bytes(1 << 20)
}

fn get(db: &Db, key: &[u8]) -> Option<Vec<u8>> {
    db.get(key).unwrap().map(Vec::from)
}

#[test]
fn oversized_keys_and_values_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Big enough for one record holding a value of exactly VALUE_BYTES_MAX.
    let db = Db::open(dir.path(), Options::default().shards(1).wal_segment_bytes(40 << 20)).unwrap();
    let long_key = vec![b'k'; KEY_BYTES_MAX + 1];
    let key_err = |r: Result<(), Error>| match r {
        Err(Error::KeyTooLarge { len, max }) => assert_eq!((len, max), (KEY_BYTES_MAX + 1, KEY_BYTES_MAX)),
        other => panic!("expected KeyTooLarge, got {other:?}"),
    };
    key_err(db.put(&long_key, b"v"));
    key_err(db.put_async(&long_key, b"v").wait());
    key_err(db.delete(&long_key));
    key_err(db.get(&long_key).map(|_| ()));
    key_err(db.multi_get(&[&b"fine"[..], &long_key[..]]).map(|_| ()));
    let mut batch = WriteBatch::new();
    batch.put(b"in-batch", b"ok").unwrap();
    key_err(batch.put(&long_key, b"v").map(|_| ()));
    key_err(batch.delete(&long_key).map(|_| ()));
    assert_eq!(batch.len(), 1, "a refused op adds nothing to the batch");

    let big_value = vec![b'v'; VALUE_BYTES_MAX + 1];
    let value_err = |r: Result<(), Error>| match r {
        Err(Error::ValueTooLarge { len, max }) => assert_eq!((len, max), (VALUE_BYTES_MAX + 1, VALUE_BYTES_MAX)),
        other => panic!("expected ValueTooLarge, got {other:?}"),
    };
    value_err(db.put(b"big", &big_value));
    value_err(db.put_async(b"big", &big_value).wait());
    value_err(batch.put(b"big", &big_value).map(|_| ()));
    assert_eq!(batch.len(), 1);
    assert!(KEY_BYTES_MAX + 1 > 0 && format!("{}", Error::KeyTooLarge { len: 1, max: 0 }).contains("key"));

    let stats = db.stats();
    assert_eq!((stats.puts, stats.deletes, stats.batches, stats.wal_records), (0, 0, 0, 0), "{}", counters(&stats));
    assert_eq!(get(&db, b"big"), None);

    // The limits themselves are accepted.
    let max_key = vec![b'K'; KEY_BYTES_MAX];
    db.put(&max_key, b"longest key").unwrap();
    assert_eq!(get(&db, &max_key).as_deref(), Some(&b"longest key"[..]));
    let max_value: Vec<u8> = (0..VALUE_BYTES_MAX).map(|i| (i % 251) as u8).collect();
    db.put(b"largest value", &max_value).unwrap();
    assert!(get(&db, b"largest value") == Some(max_value.clone()));
    db.write_batch(batch).unwrap();
    assert_eq!(db.stats().wal_records, 3);
    db.close().unwrap();

    let db = Db::open(dir.path(), Options::default().wal_segment_bytes(40 << 20)).unwrap();
    assert_eq!(db.stats().recovered_records, 3, "only the accepted writes reached the log");
    assert_eq!(get(&db, &max_key).as_deref(), Some(&b"longest key"[..]));
    assert!(get(&db, b"largest value") == Some(max_value));
    assert_eq!(get(&db, b"in-batch").as_deref(), Some(&b"ok"[..]));
    assert_eq!(get(&db, b"big"), None);
    db.close().unwrap();
}

#[test]
fn bad_paths_are_invalid_arguments() {
    match Db::open("", opts()) {
        Err(Error::InvalidArgument(_)) => {}
        other => panic!("empty path: expected InvalidArgument, got {:?}", other.err()),
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a database").unwrap();
    match Db::open(&file, opts()) {
        Err(Error::InvalidArgument(what)) => assert!(what.contains("a-file"), "{what}"),
        other => panic!("regular file: expected InvalidArgument, got {:?}", other.err()),
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a database", "the file is left alone");
    // A path under a regular file cannot be created.
    assert!(Db::open(file.join("sub"), opts()).is_err());
}

#[test]
fn bad_options_are_invalid_arguments_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let bad = [
        ("shards above 1024", opts().shards(1025)),
        ("segment below the minimum", opts().wal_segment_bytes(ringdb::WAL_SEGMENT_BYTES_MIN - 1)),
        ("segment above the maximum", opts().wal_segment_bytes(ringdb::WAL_SEGMENT_BYTES_MAX + 1)),
        ("ring entries not a power of two", opts().ring_entries(100)),
        ("queue depth zero", opts().queue_depth(0)),
        ("group commit bytes too small", opts().group_commit_bytes_max(100)),
        ("group commit batches too few", opts().group_commit_batches_max(1)),
        (
            "periodic with zero items",
            opts().durability(Durability::Periodic { bytes: 1, items: 0, interval: Duration::from_millis(1) }),
        ),
        (
            "periodic with zero interval",
            opts().durability(Durability::Periodic { bytes: 1, items: 1, interval: Duration::ZERO }),
        ),
    ];
    for (what, options) in bad {
        match Db::open(&path, options) {
            Err(Error::InvalidArgument(_)) => {}
            other => panic!("{what}: expected InvalidArgument, got {:?}", other.err()),
        }
        assert!(!path.exists(), "{what}: nothing is created for invalid options");
    }
}

#[test]
fn second_open_in_this_process_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts().shards(2)).unwrap();
    db.put(b"k", b"v").unwrap();
    match Db::open(dir.path(), opts()) {
        Err(Error::Locked { path }) => assert_eq!(path, dir.path().join("LOCK")),
        other => panic!("expected Locked, got {:?}", other.err()),
    }
    // The refused open disturbed nothing.
    db.put(b"k2", b"v2").unwrap();
    assert_eq!(get(&db, b"k").as_deref(), Some(&b"v"[..]));
    db.close().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    assert_eq!(get(&db, b"k2").as_deref(), Some(&b"v2"[..]));
    db.close().unwrap();
}

const LOCK_CHILD_ENV: &str = "RINGDB_TEST_LOCK_CHILD";

/// Child mode (only when `RINGDB_TEST_LOCK_CHILD` names a directory): tries to open it
/// and reports the outcome on stdout.
#[test]
fn child_tries_to_open() {
    let Ok(dir) = std::env::var(LOCK_CHILD_ENV) else { return };
    let line = match Db::open(&dir, opts()) {
        Ok(db) => {
            let value = db.get(b"from-parent").unwrap().map(Vec::from);
            db.close().unwrap();
            format!("open: ok {}", String::from_utf8_lossy(&value.unwrap_or_default()))
        }
        Err(Error::Locked { path }) => format!("open: locked {}", path.display()),
        Err(e) => format!("open: error {e}"),
    };
    common::emit(&line);
}

fn run_lock_child(dir: &Path) -> String {
    let mut child = child_command("child_tries_to_open", &[(LOCK_CHILD_ENV, dir.display().to_string())])
        .spawn()
        .expect("spawn the test binary as a child");
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}\n{out}");
    common::marked_lines(&out)
        .into_iter()
        .find(|l| l.starts_with("open: "))
        .unwrap_or_else(|| panic!("no result from the child:\n{out}"))
}

#[test]
fn open_from_another_process_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts().shards(2)).unwrap();
    db.put(b"from-parent", b"hello").unwrap();
    let line = run_lock_child(dir.path());
    assert_eq!(line, format!("open: locked {}", dir.path().join("LOCK").display()));
    db.close().unwrap();
    // Once closed, the other process opens it and sees the data.
    assert_eq!(run_lock_child(dir.path()), "open: ok hello");
}

#[test]
fn closed_handles_answer_closed() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts().shards(2)).unwrap();
    db.put(b"k", b"v").unwrap();
    let clone = db.clone();
    let another = clone.clone();
    db.close().unwrap();
    let closed = |what: &str, r: Result<(), Error>| match r {
        Err(Error::Closed) => {}
        other => panic!("{what} after close: expected Closed, got {other:?}"),
    };
    closed("put", clone.put(b"k", b"v2"));
    closed("put_async", clone.put_async(b"k", b"v2").wait());
    closed("delete", clone.delete(b"k"));
    closed("get", clone.get(b"k").map(|_| ()));
    closed("multi_get", clone.multi_get(&[b"k"]).map(|_| ()));
    let mut batch = WriteBatch::new();
    batch.put(b"k", b"v3").unwrap();
    closed("write_batch", clone.write_batch(batch));
    closed("empty write_batch", clone.write_batch(WriteBatch::new()));
    closed("flush", clone.flush());
    closed("flush_async", another.flush_async().wait());
    closed("second close", clone.close());
    drop(another);
    // Nothing written after close reached the log.
    let db = Db::open(dir.path(), opts()).unwrap();
    assert_eq!(get(&db, b"k").as_deref(), Some(&b"v"[..]));
    assert_eq!(db.stats().recovered_records, 1);
    db.close().unwrap();
}

#[test]
fn reopening_with_another_shard_count_is_incompatible() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts().shards(2)).unwrap();
    db.put(b"k", b"v").unwrap();
    db.close().unwrap();
    for shards in [1, 3, 8] {
        match Db::open(dir.path(), opts().shards(shards)) {
            Err(Error::Incompatible(what)) => assert!(what.contains('2'), "{what}"),
            other => panic!("shards({shards}): expected Incompatible, got {:?}", other.err()),
        }
    }
    for shards in [0, 2] {
        let db = Db::open(dir.path(), opts().shards(shards)).unwrap();
        assert_eq!(db.shard_count(), 2);
        assert_eq!(get(&db, b"k").as_deref(), Some(&b"v"[..]));
        db.close().unwrap();
    }
}

#[test]
fn portable_backend_round_trip_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let portable = || opts().shards(3).io_backend(IoBackend::Portable).wal_segment_bytes(128 << 10);
    let db = Db::open(dir.path(), portable()).unwrap();
    let value = |i: usize| format!("portable-{i}-{}", "p".repeat(100 + i % 500)).into_bytes();
    std::thread::scope(|s| {
        for t in 0..4 {
            let db = db.clone();
            s.spawn(move || {
                for i in (t..2000).step_by(4) {
                    db.put(format!("k{i}").as_bytes(), value(i)).unwrap();
                }
            });
        }
    });
    let mut batch = WriteBatch::new();
    batch.put(b"k0", b"batch").unwrap().delete(b"k1").unwrap();
    db.write_batch(batch).unwrap();
    db.delete(b"k2").unwrap();
    db.flush().unwrap();
    let stats = db.stats();
    assert_eq!(stats.puts, 2000, "{}", counters(&stats));
    assert!(stats.wal_segments_created >= 1, "segments rotate: {}", counters(&stats));
    db.close().unwrap();

    let check = |db: &Db| {
        assert_eq!(get(db, b"k0").as_deref(), Some(&b"batch"[..]));
        assert_eq!(get(db, b"k1"), None);
        assert_eq!(get(db, b"k2"), None);
        for i in 3..2000 {
            assert_eq!(get(db, format!("k{i}").as_bytes()), Some(value(i)), "k{i}");
        }
    };
    let db = Db::open(dir.path(), portable()).unwrap();
    check(&db);
    db.put(b"after", b"portable reopen").unwrap();
    db.close().unwrap();
    // The log format does not depend on the backend.
    let db = Db::open(dir.path(), opts().io_backend(IoBackend::Uring)).unwrap();
    check(&db);
    assert_eq!(get(&db, b"after").as_deref(), Some(&b"portable reopen"[..]));
    db.close().unwrap();
}

/// Largest record body a segment of this log holds: the segment less its header block
/// and one record header, rounded down to the record alignment.
fn body_bytes_max(dir: &Path) -> usize {
    let segment = &segments(dir, 0)[0];
    let bytes = std::fs::read(segment).unwrap();
    let header = SegmentHeader::decode(&bytes).unwrap();
    (header.segment_bytes as usize - header.block_bytes as usize - HEADER_BYTES) & !7
}

#[test]
fn batch_too_large_for_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = ringdb::WAL_SEGMENT_BYTES_MIN;
    let db = Db::open(dir.path(), Options::default().shards(1).wal_segment_bytes(segment_bytes)).unwrap();
    db.put(b"before", b"x").unwrap();
    let max = body_bytes_max(dir.path());
    // One op is 8 bytes of header, the key, the value.
    let key = b"key";
    let value_for = |body: usize| vec![b'b'; body - 8 - key.len()];

    // Two ops whose body is one byte over the largest.
    let small_op = 8 + b"small".len() + 1;
    let mut batch = WriteBatch::new();
    batch.put(b"small", b"s").unwrap().put(key, value_for(max + 1 - small_op)).unwrap();
    match db.write_batch(batch) {
        Err(Error::BatchTooLarge { bytes, max: limit }) => {
            assert_eq!((bytes, limit), (max + 1, max));
            let shown = Error::BatchTooLarge { bytes, max: limit }.to_string();
            assert!(shown.contains("Options::wal_segment_bytes"), "{shown}");
        }
        other => panic!("expected BatchTooLarge, got {other:?}"),
    }
    assert_eq!(get(&db, b"small"), None, "no op of a refused batch is applied");
    assert_eq!(get(&db, key), None);
    // A single put too large for a segment is refused the same way.
    match db.put(key, vec![b'p'; max]) {
        Err(Error::BatchTooLarge { .. }) => {}
        other => panic!("expected BatchTooLarge for a put, got {other:?}"),
    }

    // A batch of exactly the largest body fits, and the log goes on normally after it.
    let mut batch = WriteBatch::new();
    batch.put(key, value_for(max)).unwrap();
    db.write_batch(batch).unwrap();
    db.put(b"after", b"y").unwrap();
    assert_eq!(get(&db, key).map(|v| v.len()), Some(max - 8 - key.len()));
    db.close().unwrap();

    let db = Db::open(dir.path(), Options::default().wal_segment_bytes(segment_bytes)).unwrap();
    assert_eq!(db.stats().recovered_records, 3);
    assert_eq!(get(&db, b"before").as_deref(), Some(&b"x"[..]));
    assert_eq!(get(&db, b"after").as_deref(), Some(&b"y"[..]));
    assert_eq!(get(&db, key).map(|v| v.len()), Some(max - 8 - key.len()));
    assert_eq!(get(&db, b"small"), None);
    db.close().unwrap();
}

/// A batch whose part on one shard is too large is refused whole: the error is an input
/// error, known before anything is written, so no part of the batch may be applied.
#[test]
fn batch_too_large_on_one_shard_writes_no_part_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = ringdb::WAL_SEGMENT_BYTES_MIN;
    let db = Db::open(dir.path(), Options::default().shards(2).wal_segment_bytes(segment_bytes)).unwrap();
    let max = body_bytes_max(dir.path());
    let keys: Vec<String> = (0..64).map(|i| format!("key{i}")).collect();
    let on_0 = keys.iter().find(|k| db.shard_of(k.as_bytes()) == 0).unwrap();
    let on_1 = keys.iter().find(|k| db.shard_of(k.as_bytes()) == 1).unwrap();
    let mut batch = WriteBatch::new();
    batch.put(on_0.as_bytes(), b"small part").unwrap().put(on_1.as_bytes(), vec![b'x'; max + 1]).unwrap();
    match db.write_batch(batch) {
        Err(Error::BatchTooLarge { .. }) => {}
        other => panic!("expected BatchTooLarge, got {other:?}"),
    }
    assert_eq!(get(&db, on_0.as_bytes()), None, "the refused batch's part on shard 0 was applied");
    db.close().unwrap();
    let db = Db::open(dir.path(), Options::default().wal_segment_bytes(segment_bytes)).unwrap();
    assert_eq!(get(&db, on_0.as_bytes()), None, "the refused batch's part on shard 0 reached the log");
    db.close().unwrap();
}

/// Whether `fs` is mounted at `mount_point`, per /proc/mounts.
fn mounted_as(mount_point: &str, fs: &str) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 2 && f[1] == mount_point && f[2] == fs
            })
        })
        .unwrap_or(false)
}

/// Whether the filesystem holding `dir` lets a file be opened with O_DIRECT.
fn accepts_o_direct(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join("o_direct_probe");
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// On a filesystem that refuses O_DIRECT: open fails with DirectIoUnsupported naming the
/// fix; with `direct_io(false)` the database works and keeps its data.
fn check_direct_io_refused(dir: &Path) -> Result<(), String> {
    match Db::open(dir, opts().shards(2)) {
        Err(e @ Error::DirectIoUnsupported { .. }) => {
            let shown = e.to_string();
            if !shown.contains("Options::direct_io(false)") {
                return Err(format!("message does not name Options::direct_io(false): {shown}"));
            }
        }
        Err(other) => return Err(format!("expected DirectIoUnsupported, got {other:?}")),
        Ok(_) => return Err("open with O_DIRECT succeeded on a filesystem that refuses it".into()),
    }
    let db = Db::open(dir, opts().direct_io(false)).map_err(|e| format!("direct_io(false): {e}"))?;
    db.put(b"k", b"buffered").map_err(|e| e.to_string())?;
    db.close().map_err(|e| e.to_string())?;
    let db = Db::open(dir, opts().direct_io(false)).map_err(|e| format!("reopen: {e}"))?;
    let got = db.get(b"k").map_err(|e| e.to_string())?.map(Vec::from);
    db.close().map_err(|e| e.to_string())?;
    if got.as_deref() != Some(&b"buffered"[..]) {
        return Err(format!("value after reopen: {got:?}"));
    }
    Ok(())
}

const RAMFS_CHILD_ENV: &str = "RINGDB_TEST_RAMFS_CHILD";

/// Child mode (only when `RINGDB_TEST_RAMFS_CHILD` names a directory): in a private mount
/// namespace, mounts a ramfs (which refuses O_DIRECT) on it and runs the check there.
#[test]
fn child_direct_io_on_ramfs() {
    let Ok(dir) = std::env::var(RAMFS_CHILD_ENV) else { return };
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    // SAFETY: plain system calls with valid NUL-terminated strings; this child process
    // exists only to run them.
    let setup = unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            Err("unshare(CLONE_NEWNS)")
        } else if libc::mount(
            c("none").as_ptr(),
            c("/").as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            Err("mount --make-rprivate /")
        } else if libc::mount(c("ramfs").as_ptr(), c(&dir).as_ptr(), c("ramfs").as_ptr(), 0, std::ptr::null()) != 0 {
            Err("mount ramfs")
        } else {
            Ok(())
        }
    };
    if let Err(what) = setup {
        common::emit(&format!("ramfs: unavailable {what}: {}", std::io::Error::last_os_error()));
        return;
    }
    let db_dir = Path::new(&dir).join("db");
    std::fs::create_dir(&db_dir).unwrap();
    if accepts_o_direct(&db_dir) {
        common::emit("ramfs: unavailable ramfs accepts O_DIRECT here");
        return;
    }
    match check_direct_io_refused(&db_dir) {
        Ok(()) => common::emit("ramfs: ok"),
        Err(e) => common::emit(&format!("ramfs: failed {e}")),
    }
}

#[test]
fn direct_io_refused_by_the_filesystem() {
    let shm = Path::new("/dev/shm");
    let mut checked = false;
    if mounted_as("/dev/shm", "tmpfs") {
        let dir = tempfile::tempdir_in(shm).unwrap();
        if accepts_o_direct(dir.path()) {
            // tmpfs takes O_DIRECT since Linux 6.6: then ringdb must simply work there.
            println!("note: tmpfs at /dev/shm accepts O_DIRECT on this kernel; checking ringdb works on it");
            let db = Db::open(dir.path(), opts().shards(2)).expect("O_DIRECT open on a tmpfs that accepts it");
            db.put(b"k", b"on tmpfs").unwrap();
            db.close().unwrap();
            let db = Db::open(dir.path(), opts()).unwrap();
            assert_eq!(get(&db, b"k").as_deref(), Some(&b"on tmpfs"[..]));
            db.close().unwrap();
        } else {
            check_direct_io_refused(dir.path()).unwrap();
            checked = true;
        }
    } else {
        println!("note: /dev/shm is not a tmpfs here; skipping the tmpfs case");
    }
    if !checked {
        // A ramfs refuses O_DIRECT on every kernel; mount one in a child's own namespace.
        let mount_point = tempfile::tempdir().unwrap();
        let mut child =
            child_command("child_direct_io_on_ramfs", &[(RAMFS_CHILD_ENV, mount_point.path().display().to_string())])
                .spawn()
                .unwrap();
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "ramfs child failed: {status}\n{out}");
        let line = common::marked_lines(&out)
            .into_iter()
            .find(|l| l.starts_with("ramfs: "))
            .unwrap_or_else(|| panic!("no result:\n{out}"));
        if let Some(why) = line.strip_prefix("ramfs: unavailable ") {
            println!("note: skipping the O_DIRECT refusal check: no filesystem here refuses O_DIRECT ({why})");
        } else {
            assert_eq!(line, "ramfs: ok");
        }
    }
}
