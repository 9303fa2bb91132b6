//! Proves the blob log never loses an acknowledged blob silently and never hands out a
//! location twice (issue 13): on a log of 200 blobs of 20 KB in 1 MiB segments, a
//! deleted, truncated or damaged segment (open or sealed), or a deleted manifest, is
//! `Error::Corruption` naming the file on open and on read, never `InvalidArgument`
//! or another blob's bytes; `accept_lost_blobs` opens such a log with the lost blobs
//! reading as corruption; after a crash appends go to a new segment and the lost
//! blobs read as corruption until trimmed; a dropped segment is not corruption. Also
//! the blob log's own error messages (a failed write, a file for a directory, O_DIRECT
//! refused, a closed database) and a full disk, on which the log still opens (after
//! a clean close, a crash or a torn tail), reads and drops.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ringdb::{
    BlobLog, BlobOptions, CrashMode, Db, Durability, Error, IoBackend, Location, Options, SimDisk, SimFaults,
};

mod common;

const BLOBS: usize = 200;
const BLOB_BYTES: usize = 20_000;

fn seg_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08x}.blob"))
}

fn options() -> BlobOptions {
    BlobOptions::default().max_segment_bytes(1 << 20)
}

fn blob(i: usize) -> Vec<u8> {
    (0..BLOB_BYTES).map(|j| (i * 31 + j / 7) as u8).collect()
}

/// A closed log in `dir` holding the 200 blobs; returns their locations, in order.
fn filled(dir: &Path) -> Vec<Location> {
    let log = BlobLog::open(dir, options()).unwrap();
    let locs: Vec<Location> = (0..BLOBS).map(|i| log.append(&blob(i)).unwrap()).collect();
    assert!(locs.last().unwrap().segment >= 3, "the blobs span several segments");
    log.close().unwrap();
    locs
}

fn truncate(path: &Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
    f.sync_all().unwrap();
}

/// Asserts `result` is corruption in `file`, and returns its message.
fn corruption_in<T: std::fmt::Debug>(result: Result<T, Error>, file: &Path) -> String {
    match result {
        Err(Error::Corruption { file: f, what, .. }) => {
            assert_eq!(f, file, "{what}");
            what
        }
        other => panic!("expected corruption in {}, got {other:?}", file.display()),
    }
}

/// Every blob reads back as itself or as an error: never as other bytes.
fn no_blob_reads_as_another(log: &BlobLog, locs: &[Location]) -> usize {
    let mut intact = 0;
    for (i, loc) in locs.iter().enumerate() {
        if let Ok(got) = log.read(*loc) {
            assert!(got[..] == blob(i)[..], "blob {i} at {loc} reads back as other bytes");
            intact += 1;
        }
    }
    intact
}

#[test]
fn a_deleted_open_segment_is_corruption_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let locs = filled(dir.path());
    let open = locs.last().unwrap().segment;
    std::fs::remove_file(seg_path(dir.path(), open)).unwrap();
    let what = corruption_in(BlobLog::open(dir.path(), options()), &seg_path(dir.path(), open));
    assert!(what.contains("missing"), "{what}");
    let ro = BlobLog::open_read_only(dir.path(), options()).unwrap();
    let what = corruption_in(ro.read(*locs.last().unwrap()), &seg_path(dir.path(), open));
    assert!(what.contains("missing"), "{what}");
}

#[test]
fn a_truncated_open_segment_is_corruption_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let locs = filled(dir.path());
    let last = *locs.last().unwrap();
    let first_in_open = locs.iter().position(|l| l.segment == last.segment).unwrap();
    // Cut in the middle of the open segment's records.
    let cut = locs[first_in_open + 1].offset + 100;
    truncate(&seg_path(dir.path(), last.segment), cut);
    let what = corruption_in(BlobLog::open(dir.path(), options()), &seg_path(dir.path(), last.segment));
    assert!(what.contains("truncated"), "{what}");
    let ro = BlobLog::open_read_only(dir.path(), options()).unwrap();
    corruption_in(ro.read(last), &seg_path(dir.path(), last.segment));
    assert_eq!(no_blob_reads_as_another(&ro, &locs), first_in_open + 1, "blobs before the cut still read");
}

#[test]
fn a_flipped_last_record_of_a_closed_log_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let locs = filled(dir.path());
    let last = *locs.last().unwrap();
    let path = seg_path(dir.path(), last.segment);
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let mut b = [0u8; 1];
    let at = last.offset + 5000;
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], at).unwrap();
    f.sync_all().unwrap();
    drop(f);
    // The log was closed, so its last record was durable: the damage is not a torn write.
    let what = corruption_in(BlobLog::open(dir.path(), options()), &path);
    assert!(what.contains("durable"), "{what}");
    let ro = BlobLog::open_read_only(dir.path(), options()).unwrap();
    corruption_in(ro.read(last), &path);
    assert_eq!(no_blob_reads_as_another(&ro, &locs), BLOBS - 1);
}

#[test]
fn a_truncated_sealed_segment_is_corruption_on_open_and_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let locs = filled(dir.path());
    let path = seg_path(dir.path(), 1);
    let in_one: Vec<Location> = locs.iter().copied().filter(|l| l.segment == 1).collect();
    truncate(&path, in_one[2].offset);
    let what = corruption_in(BlobLog::open(dir.path(), options()), &path);
    assert!(what.contains("lost"), "{what}");
    let ro = BlobLog::open_read_only(dir.path(), options()).unwrap();
    // A blob wholly past the cut: its bytes are gone, which is not an invalid argument.
    let what = corruption_in(ro.read(*in_one.last().unwrap()), &path);
    assert!(what.contains("gone"), "{what}");
    assert_eq!(no_blob_reads_as_another(&ro, &locs), BLOBS - (in_one.len() - 2));
}

#[test]
fn a_deleted_sealed_segment_is_corruption_on_open_and_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let locs = filled(dir.path());
    let path = seg_path(dir.path(), 1);
    std::fs::remove_file(&path).unwrap();
    let what = corruption_in(BlobLog::open(dir.path(), options()), &path);
    assert!(what.contains("missing"), "{what}");
    let ro = BlobLog::open_read_only(dir.path(), options()).unwrap();
    let in_one = locs.iter().find(|l| l.segment == 1).unwrap();
    corruption_in(ro.read(*in_one), &path);
}

#[test]
fn a_missing_manifest_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path());
    let manifest = dir.path().join("SEGMENTS");
    std::fs::remove_file(&manifest).unwrap();
    let what = corruption_in(BlobLog::open(dir.path(), options()), &manifest);
    assert!(what.contains("manifest is missing"), "{what}");
}

#[test]
fn accept_lost_blobs_opens_a_damaged_log_whose_lost_blobs_read_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let locs = filled(dir.path());
    let last = *locs.last().unwrap();
    std::fs::remove_file(seg_path(dir.path(), 1)).unwrap();
    let first_in_open = locs.iter().position(|l| l.segment == last.segment).unwrap();
    truncate(&seg_path(dir.path(), last.segment), locs[first_in_open + 1].offset + 100);
    assert!(matches!(BlobLog::open(dir.path(), options()), Err(Error::Corruption { .. })));
    let log = BlobLog::open(dir.path(), options().accept_lost_blobs(true)).unwrap();
    let lost =
        |loc: &Location| loc.segment == 1 || (loc.segment == last.segment && loc.offset > locs[first_in_open].offset);
    let check = |log: &BlobLog| {
        for loc in locs.iter().filter(|l| lost(l)) {
            assert!(matches!(log.read(*loc), Err(Error::Corruption { .. })), "{loc}: {:?}", log.read(*loc));
        }
        assert_eq!(no_blob_reads_as_another(log, &locs), locs.iter().filter(|l| !lost(l)).count());
    };
    check(&log);
    let next = log.append(b"after the loss").unwrap();
    assert!(next.segment > last.segment, "{next}: appends go where no lost location points");
    log.close().unwrap();
    // The loss is recorded: the log opens without the option now, and says the same.
    let log = BlobLog::open(dir.path(), options().allow_overwrite(true)).unwrap();
    check(&log);
    assert_eq!(&*log.read(next).unwrap(), b"after the loss");
    // Dropping the lost segment forgets it: its blobs read as dropped.
    log.drop_segment(1).unwrap();
    let in_one = *locs.iter().find(|l| l.segment == 1).unwrap();
    assert!(matches!(log.read(in_one), Err(Error::InvalidArgument(_))), "{:?}", log.read(in_one));
    log.close().unwrap();
}

#[test]
fn a_dropped_segment_is_not_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let locs = filled(dir.path());
    let log = BlobLog::open(dir.path(), options().allow_overwrite(true)).unwrap();
    log.drop_segment(1).unwrap();
    let in_one = *locs.iter().find(|l| l.segment == 1).unwrap();
    assert!(matches!(log.read(in_one), Err(Error::InvalidArgument(_))), "{:?}", log.read(in_one));
    log.close().unwrap();
    let log = BlobLog::open(dir.path(), options()).unwrap();
    assert!(matches!(log.read(in_one), Err(Error::InvalidArgument(_))), "{:?}", log.read(in_one));
    let expected = BLOBS - locs.iter().filter(|l| l.segment == 1).count();
    assert_eq!(no_blob_reads_as_another(&log, &locs), expected);
    log.close().unwrap();
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!names.iter().any(|n| n.ends_with(".dropped")), "tombstones outlive the manifest write: {names:?}");
}

#[test]
fn a_clean_close_lets_the_next_open_continue_the_same_segment() {
    let dir = tempfile::tempdir().unwrap();
    let locs = filled(dir.path());
    let last = *locs.last().unwrap();
    let log = BlobLog::open(dir.path(), options()).unwrap();
    let next = log.append(b"after a clean close").unwrap();
    assert_eq!(next.segment, last.segment, "no segment is wasted after a clean close");
    assert!(next.offset > last.offset);
    log.close().unwrap();
}

/// After a power cut that loses unsynced appends (durability `None`), the blobs that
/// were acknowledged but lost read as errors, and no later append takes their
/// locations: each location names one blob for ever.
#[test]
fn a_crash_never_lets_a_lost_location_name_a_later_blob() {
    let seed = 0x0b10_dead;
    println!("seed {seed:#x}");
    let disk = SimDisk::new(seed);
    let dir = Path::new("/blobs");
    let opts = || options().io_backend(IoBackend::Sim(disk.clone()));
    let log = BlobLog::open(dir, opts().durability(Durability::None)).unwrap();
    let durable: Vec<Location> = (0..10).map(|i| log.append(&blob(i)).unwrap()).collect();
    log.sync().unwrap();
    let lost: Vec<Location> = (10..20).map(|i| log.append(&blob(i)).unwrap()).collect();
    disk.crash_with(CrashMode::KeepNone, seed);
    drop(log);
    let log = BlobLog::open(dir, opts()).unwrap();
    let sealed_bytes = disk.read_file(&seg_path(dir, 0)).unwrap().len();
    assert!(sealed_bytes < 1 << 20, "the sealed segment gives back its reserved space: {sealed_bytes}");
    let all: Vec<Location> = durable.iter().chain(&lost).copied().collect();
    assert_eq!(no_blob_reads_as_another(&log, &all), durable.len(), "the durable blobs, and only they, survive");
    for loc in &lost {
        assert!(matches!(log.read(*loc), Err(Error::Corruption { .. })), "{loc}: {:?}", log.read(*loc));
    }
    let later: Vec<Location> = (20..40).map(|i| log.append(&blob(i)).unwrap()).collect();
    for loc in &later {
        assert!(!lost.iter().any(|l| l.segment == loc.segment && l.offset == loc.offset), "{loc} was handed out twice");
    }
    for (i, loc) in later.iter().enumerate() {
        assert!(log.read(*loc).unwrap()[..] == blob(20 + i)[..]);
    }
    for loc in &lost {
        assert!(log.read(*loc).is_err(), "{loc} reads as a later blob");
    }
    log.close().unwrap();
}

/// After a crash, the blobs lost read as corruption; once the user trims that segment's
/// tail, everything past the trim reads as trimmed.
#[test]
fn an_rtrim_after_a_crash_turns_lost_blobs_into_trimmed_ones() {
    let disk = SimDisk::new(0x7e1a);
    let dir = Path::new("/blobs");
    let opts = || options().io_backend(IoBackend::Sim(disk.clone())).allow_overwrite(true);
    let log = BlobLog::open(dir, opts().durability(Durability::None)).unwrap();
    let kept: Vec<Location> = (0..5).map(|i| log.append(&blob(i)).unwrap()).collect();
    log.sync().unwrap();
    let lost: Vec<Location> = (5..8).map(|i| log.append(&blob(i)).unwrap()).collect();
    disk.crash_with(CrashMode::KeepNone, 1);
    drop(log);
    let log = BlobLog::open(dir, opts()).unwrap();
    assert!(matches!(log.read(lost[0]), Err(Error::Corruption { .. })), "{:?}", log.read(lost[0]));
    log.rtrim(0, kept[3].offset).unwrap();
    for loc in kept[3..].iter().chain(&lost) {
        assert!(matches!(log.read(*loc), Err(Error::InvalidArgument(_))), "{loc}: {:?}", log.read(*loc));
    }
    assert_eq!(no_blob_reads_as_another(&log, &kept), 3);
    log.close().unwrap();
    let log = BlobLog::open(dir, opts()).unwrap();
    assert!(matches!(log.read(lost[0]), Err(Error::InvalidArgument(_))), "{:?}", log.read(lost[0]));
    log.close().unwrap();
}

/// Full disk on the simulated disk: every write and allocation fails with ENOSPC.
fn full(disk: &SimDisk, on: bool) {
    disk.set_faults(SimFaults { enospc_ppm: if on { 1_000_000 } else { 0 }, ..SimFaults::default() });
}

#[test]
fn on_a_full_disk_the_log_reopens_reads_and_drops_and_names_itself() {
    let disk = SimDisk::new(0xf011);
    let dir = Path::new("/blobs");
    let opts = || options().io_backend(IoBackend::Sim(disk.clone())).allow_overwrite(true);
    let big = |i: usize| vec![i as u8; 300_000];
    let log = BlobLog::open(dir, opts()).unwrap();
    // Three blobs fill a segment: nine fill segments 0, 1 and 2.
    let locs: Vec<Location> = (0..9).map(|i| log.append(&big(i)).unwrap()).collect();
    assert_eq!(locs[8].segment, 2);
    full(&disk, true);
    let err = log.append(&big(9)).unwrap_err();
    assert_eq!(err.io_kind(), Some(std::io::ErrorKind::StorageFull), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("blob log") && !shown.contains("shard"), "{shown}");
    // The failure poisons nothing: reads work, and so does the next try.
    assert!(log.read(locs[0]).unwrap().iter().all(|&b| b == 0));
    assert_eq!(log.append(&big(9)).unwrap_err().io_kind(), Some(std::io::ErrorKind::StorageFull));
    log.close().unwrap();
    // Reopen on the still full disk: no new segment can be made, yet it opens.
    let log = BlobLog::open(dir, opts()).unwrap();
    for (i, loc) in locs.iter().enumerate() {
        assert!(log.read(*loc).unwrap()[..] == big(i)[..], "{loc}");
    }
    log.drop_segment(0).unwrap();
    assert!(matches!(log.read(locs[0]), Err(Error::InvalidArgument(_))));
    let err = log.append(&big(9)).unwrap_err();
    assert_eq!(err.io_kind(), Some(std::io::ErrorKind::StorageFull), "{err}");
    // Space again: the append goes to a segment no earlier location names.
    full(&disk, false);
    let loc = log.append(&big(9)).unwrap();
    assert!(loc.segment > 2, "{loc}");
    assert!(log.read(loc).unwrap()[..] == big(9)[..]);
    log.close().unwrap();
    let log = BlobLog::open(dir, opts()).unwrap();
    assert!(matches!(log.read(locs[0]), Err(Error::InvalidArgument(_))), "segment 0 stays dropped");
    assert!(log.read(locs[3]).unwrap()[..] == big(3)[..]);
    log.close().unwrap();
}

#[test]
fn a_cleanly_closed_log_reopens_on_a_full_disk() {
    let disk = SimDisk::new(0xc105e);
    let dir = Path::new("/blobs");
    let opts = || options().io_backend(IoBackend::Sim(disk.clone()));
    let log = BlobLog::open(dir, opts()).unwrap();
    let kept: Vec<Location> = (0..5).map(|i| log.append(&blob(i)).unwrap()).collect();
    log.close().unwrap();
    full(&disk, true);
    let log = BlobLog::open(dir, opts()).unwrap();
    for (i, loc) in kept.iter().enumerate() {
        assert!(log.read(*loc).unwrap()[..] == blob(i)[..]);
    }
    let err = log.append(b"no room").unwrap_err();
    assert_eq!(err.io_kind(), Some(std::io::ErrorKind::StorageFull), "{err}");
    full(&disk, false);
    let next = log.append(b"room again").unwrap();
    assert_eq!(next.segment, 1, "{next}");
    log.close().unwrap();
    let log = BlobLog::open(dir, opts()).unwrap();
    assert_eq!(&*log.read(next).unwrap(), b"room again");
    assert_eq!(no_blob_reads_as_another(&log, &kept), kept.len());
    log.close().unwrap();
}

#[test]
fn a_torn_tail_on_a_full_disk_still_opens_and_keeps_its_bytes() {
    let disk = SimDisk::new(0x7042);
    let dir = Path::new("/blobs");
    let opts = || options().io_backend(IoBackend::Sim(disk.clone()));
    let log = BlobLog::open(dir, opts()).unwrap();
    let kept: Vec<Location> = (0..5).map(|i| log.append(&blob(i)).unwrap()).collect();
    log.close().unwrap();
    // The remains of a torn flush after the records.
    let seg = seg_path(dir, 0);
    let mut bytes = disk.read_file(&seg).unwrap();
    let end = (kept[4].offset + BLOB_BYTES as u64 + 32 + 8).next_multiple_of(8) as usize;
    bytes[end..end + 100].fill(0xab);
    disk.write_file(&seg, &bytes);
    full(&disk, true);
    // No room to copy the tail to quarantine, seal the segment, or start another.
    let log = BlobLog::open(dir, opts()).unwrap();
    for (i, loc) in kept.iter().enumerate() {
        assert!(log.read(*loc).unwrap()[..] == blob(i)[..]);
    }
    assert_eq!(log.append(b"no room").unwrap_err().io_kind(), Some(std::io::ErrorKind::StorageFull));
    log.close().unwrap();
    assert!(disk.read_file(&seg).unwrap()[end..end + 100].iter().all(|&b| b == 0xab), "the torn bytes are kept");
    full(&disk, false);
    let log = BlobLog::open(dir, opts()).unwrap();
    let next = log.append(b"with room again").unwrap();
    assert_eq!(next.segment, 1, "the torn segment takes no appends");
    let quarantined = disk.files().iter().any(|p| p.to_string_lossy().contains("quarantine-00000000-"));
    assert!(quarantined, "with room again the tail is quarantined: {:?}", disk.files());
    for (i, loc) in kept.iter().enumerate() {
        assert!(log.read(*loc).unwrap()[..] == blob(i)[..]);
    }
    log.close().unwrap();
}

#[test]
fn a_failed_write_names_the_blob_log_not_a_shard() {
    let disk = SimDisk::new(0xe10);
    let log = BlobLog::open("/blobs", options().io_backend(IoBackend::Sim(disk.clone()))).unwrap();
    let kept = log.append(b"before the disk filled").unwrap();
    full(&disk, true);
    let err = log.append(b"no room").unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("blob log") && shown.contains("reopen"), "{shown}");
    assert!(!shown.contains("shard"), "{shown}");
    assert_eq!(err.io_kind(), Some(std::io::ErrorKind::StorageFull), "{err}");
    // The log refuses later writes with the same words, and still reads.
    full(&disk, false);
    assert_eq!(log.append(b"later").unwrap_err().to_string(), shown);
    assert_eq!(&*log.read(kept).unwrap(), b"before the disk filled");
}

#[test]
fn opening_a_file_as_a_blob_log_says_it_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    match BlobLog::open(&file, options()) {
        Err(Error::InvalidArgument(what)) => assert!(what.contains("is a file, not a directory"), "{what}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    match BlobLog::open(file.join("blobs"), options()) {
        Err(Error::InvalidArgument(what)) => assert!(what.contains("on its path is a file"), "{what}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn a_blob_log_of_a_closed_database_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default().shards(1)).unwrap();
    let other = db.clone();
    db.close().unwrap();
    assert!(matches!(other.blob_log("main", options()), Err(Error::Closed)));
}

const RAMFS_CHILD_ENV: &str = "RINGDB_TEST_BLOB_RAMFS_CHILD";

/// Child mode (only when `RINGDB_TEST_BLOB_RAMFS_CHILD` names a directory): in a private
/// mount namespace, mounts a ramfs (which refuses O_DIRECT) on it and opens a blob log
/// there.
#[test]
fn child_blob_log_on_ramfs() {
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
    let log_dir = Path::new(&dir).join("blobs");
    match BlobLog::open(&log_dir, options()) {
        Err(Error::InvalidArgument(what)) if what.contains("BlobOptions::direct_io(false)") => {}
        Err(other) => return common::emit(&format!("ramfs: failed {other}")),
        Ok(_) => return common::emit("ramfs: unavailable ramfs accepts O_DIRECT here"),
    }
    let log = BlobLog::open(&log_dir, options().direct_io(false)).unwrap();
    let loc = log.append(b"buffered").unwrap();
    assert_eq!(&*log.read(loc).unwrap(), b"buffered");
    log.close().unwrap();
    common::emit("ramfs: ok");
}

#[test]
fn o_direct_refused_names_blob_options() {
    use std::io::Read;
    let mount_point = tempfile::tempdir().unwrap();
    let mut child = common::child_command(
        "child_blob_log_on_ramfs",
        &[(RAMFS_CHILD_ENV, mount_point.path().display().to_string())],
    )
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
