//! Offline verification of a database directory or a blob log, without opening it.
//!
//! [`check_dir`] reads every file it knows with `std::fs` (read-only opens; nothing is
//! created, locked, repaired or removed) and decodes it with `format`, the decoders the
//! engine itself uses. It checks:
//!
//! - `MANIFEST`: a valid slot, the format version this build reads, a shard count in
//!   range, and a shard folder for every shard;
//! - each shard's `CHECKPOINT` slots (magic, checksum, version, shard number);
//! - each shard's log segments (`wal/*.log`, in `log`): the header block, every record's
//!   header and body checksums and op encoding, LSN continuity within and across
//!   segments, and that the log resumes right after the checkpoint. A bad position is
//!   told apart as recovery does (`docs/FORMAT.md`, "How the log is read back"): a
//!   **torn tail** (the remains of the last flush, which the next open moves to a
//!   quarantine file) or **damage** (before the tail segment, or followed by a later
//!   synced flush);
//! - the blob logs (`blob`): `<dir>/blobs/<name>/` of a database, or `<dir>` itself when
//!   it holds a blob log's manifest (`SEGMENTS`) or `*.blob` segments and no `MANIFEST`:
//!   the manifest's slots, and what it says must exist checked as `BlobLog::open` checks
//!   it (every listed segment there and long enough, no unlisted one below its next
//!   number, the manifest itself where segments carry its mark, drop tombstones); each
//!   segment's header and state slots, every record's header, frame index and frame
//!   checksums (zstd frames decompressed to their stated size), sealed segments whole up
//!   to their end, the open segment's records reaching the end the manifest knows
//!   durable and its tail told apart as torn or damaged like the blob log's own recovery
//!   does.
//!
//! The paged store's `pages.dat` is **not** verified in this version: its format is being
//! replaced. Each one is listed in [`Report::not_verified`] with that reason.
//!
//! Run it on a directory no process has open: a log being written may show a tail that
//! looks torn. Memory: a log segment is read whole, as recovery reads it; a blob segment
//! is read a window at a time (1 MiB, or one frame if larger).

#![forbid(unsafe_code)]

mod blob;
mod wal;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{FORMAT_VERSION, checkpoint, manifest};

/// Why `pages.dat` files are listed as not verified.
pub const PAGES_NOT_VERIFIED: &str = "page verification is not in this version (the paged store's format is changing)";

/// Most shards a manifest may name (as `Options::shards` accepts).
const SHARDS_MAX: u32 = 1024;

/// What kind of file was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// The database's `MANIFEST`.
    Manifest,
    /// A shard's `CHECKPOINT` slots.
    Checkpoint,
    /// A log segment of a shard (`wal/*.log`).
    LogSegment,
    /// A blob log segment (`*.blob`).
    BlobSegment,
    /// A blob log's manifest (`SEGMENTS`).
    BlobManifest,
}

impl FileKind {
    /// Lower-case name, with underscores (`log_segment`).
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Manifest => "manifest",
            FileKind::Checkpoint => "checkpoint",
            FileKind::LogSegment => "log_segment",
            FileKind::BlobSegment => "blob_segment",
            FileKind::BlobManifest => "blob_manifest",
        }
    }
}

/// A file that was read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedFile {
    /// Its path (under the directory given to [`check_dir`]).
    pub path: PathBuf,
    /// What it is.
    pub kind: FileKind,
    /// Its size in bytes.
    pub bytes: u64,
    /// Valid records found in it (log and blob segments; 0 for the others).
    pub records: u64,
}

/// A file that was found but not verified, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotVerified {
    /// Its path.
    pub path: PathBuf,
    /// Why it was not verified.
    pub why: String,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Something worth knowing that is not wrong: a leftover temporary file, a
    /// quarantine file from an earlier repair, a file this version does not know.
    Note,
    /// The remains of an interrupted write that the next open repairs: a torn log tail
    /// (moved to a quarantine file), a torn slot beside a valid one. Expected after a
    /// crash; no acknowledged write is lost.
    Torn,
    /// Bytes that fail their checks where a crash cannot explain them, or a missing
    /// file: the database (or blob log) will refuse to open, or has lost data (a bad
    /// record in a sealed blob segment, which an open trusts; a blob segment the log's
    /// manifest lists as lost).
    Damage,
}

impl Severity {
    /// Lower-case name (`note`, `torn`, `damage`).
    pub fn name(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Torn => "torn",
            Severity::Damage => "damage",
        }
    }
}

/// One thing found wrong, or worth knowing, at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// The file (or folder) concerned.
    pub file: PathBuf,
    /// Byte offset in `file` (0 when the finding is about the whole file).
    pub offset: u64,
    /// What was found.
    pub what: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} at offset {}: {}", self.severity.name(), self.file.display(), self.offset, self.what)
    }
}

/// What [`check_dir`] read and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Every file read and checked, in the order checked.
    pub verified: Vec<VerifiedFile>,
    /// Files found but not checked, with the reason (every `pages.dat`).
    pub not_verified: Vec<NotVerified>,
    /// Everything found, in the order found.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether any finding is [`Severity::Damage`].
    pub fn is_damaged(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Damage)
    }

    /// Files verified of one kind.
    pub fn count(&self, kind: FileKind) -> usize {
        self.verified.iter().filter(|f| f.kind == kind).count()
    }

    fn add(&mut self, severity: Severity, file: &Path, offset: u64, what: impl Into<String>) {
        self.findings.push(Finding { severity, file: file.to_path_buf(), offset, what: what.into() });
    }
}

/// Where a check is, for a progress bar: bytes read so far of the bytes to read.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The file being read.
    pub file: &'a Path,
    /// Bytes read so far, over every file.
    pub bytes_done: u64,
    /// Bytes of every file to read (known before the first read).
    pub bytes_total: u64,
}

/// Counts bytes read and tells the caller's progress callback.
pub(crate) struct Meter<'f> {
    callback: &'f mut dyn FnMut(&Progress<'_>),
    bytes_done: u64,
    bytes_total: u64,
}

impl Meter<'_> {
    /// `bytes` more of `file` were read.
    pub(crate) fn advance(&mut self, file: &Path, bytes: u64) {
        self.bytes_done = (self.bytes_done + bytes).min(self.bytes_total);
        (self.callback)(&Progress { file, bytes_done: self.bytes_done, bytes_total: self.bytes_total });
    }
}

/// Verifies the database or blob log in `dir` without opening it (see the module docs),
/// calling `progress` as bytes are read. Damage is reported in the [`Report`], not as
/// an error; `Err` means the check itself could not run: `dir` is missing or holds
/// neither a `MANIFEST` nor a blob log (`Error::InvalidArgument`), or a read failed
/// (`Error::Io`).
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let db = ringdb::Db::open(dir.path(), ringdb::Options::default().shards(1))?;
/// db.put(b"k", b"v")?;
/// db.close()?;
/// let report = ringdb::verify::check_dir(dir.path(), |_| {})?;
/// assert!(!report.is_damaged());
/// assert_eq!(report.count(ringdb::verify::FileKind::Manifest), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check_dir(dir: impl AsRef<Path>, mut progress: impl FnMut(&Progress<'_>)) -> Result<Report> {
    let dir = dir.as_ref();
    let meta = std::fs::metadata(dir).map_err(|e| Error::io("stat", dir.to_path_buf(), e))?;
    if !meta.is_dir() {
        return Err(Error::InvalidArgument(format!("{} is not a directory", dir.display())));
    }
    let mut report = Report::default();
    let manifest_path = dir.join("MANIFEST");
    if manifest_path.exists() {
        let plan = plan_database(dir, &mut report)?;
        let mut meter = Meter { callback: &mut progress, bytes_done: 0, bytes_total: plan.bytes_total };
        check_database(&plan, &mut report, &mut meter)?;
    } else if blob::is_log(dir)? {
        let bytes_total = blob::log_bytes(dir)?;
        let mut meter = Meter { callback: &mut progress, bytes_done: 0, bytes_total };
        blob::check_log(dir, &mut report, &mut meter)?;
    } else {
        return Err(Error::InvalidArgument(format!(
            "{} is neither a ringdb database (no MANIFEST) nor a blob log (no SEGMENTS, no *.blob segments)",
            dir.display()
        )));
    }
    Ok(report)
}

/// The files of a database, found before any is read (so progress knows the total).
struct Plan {
    /// Shard folders that exist, by shard number, for the shards the manifest names (or
    /// every `shard-NNN` folder when the manifest cannot be read).
    shards: Vec<(u32, PathBuf)>,
    /// Blob log folders under `blobs/`.
    blob_logs: Vec<PathBuf>,
    bytes_total: u64,
}

/// Reads the manifest (small) and lists the database's folders.
fn plan_database(dir: &Path, report: &mut Report) -> Result<Plan> {
    let manifest = dir.join("MANIFEST");
    let shard_count = check_manifest(&manifest, report)?;
    let mut shards = Vec::new();
    let mut bytes_total = 0;
    for (name, path) in list_dir(dir)? {
        if let Some(id) = name.strip_prefix("shard-").and_then(|n| n.parse::<u32>().ok()) {
            if shard_count.is_none_or(|count| id < count) {
                bytes_total += shard_bytes(&path)?;
                shards.push((id, path));
            } else {
                report.add(Severity::Note, &path, 0, "a shard folder beyond the manifest's shard count (not read)");
            }
        } else if name == "MANIFEST.tmp" {
            report.add(Severity::Note, &path, 0, "a manifest of an interrupted creation (open rewrites it)");
        } else if !["LOCK", "MANIFEST", "blobs"].contains(&name.as_str()) {
            report.add(Severity::Note, &path, 0, "a file this version does not know (not read)");
        }
    }
    shards.sort();
    for id in 0..shard_count.unwrap_or(0) {
        if !shards.iter().any(|(s, _)| *s == id) {
            report.add(Severity::Damage, &dir.join(format!("shard-{id:03}")), 0, "the shard's folder is missing");
        }
    }
    let mut blob_logs = Vec::new();
    let blobs = dir.join("blobs");
    if blobs.is_dir() {
        for (_, path) in list_dir(&blobs)? {
            if path.is_dir() {
                bytes_total += blob::log_bytes(&path)?;
                blob_logs.push(path);
            } else {
                report.add(Severity::Note, &path, 0, "a file where blob log folders live (not read)");
            }
        }
    }
    Ok(Plan { shards, blob_logs, bytes_total })
}

/// Checks every shard and blob log of a planned database.
fn check_database(plan: &Plan, report: &mut Report, meter: &mut Meter<'_>) -> Result<()> {
    debug_assert!(report.count(FileKind::Manifest) == 1, "the manifest is checked once, by the plan");
    for (id, shard_dir) in &plan.shards {
        let checkpoint_lsn = check_checkpoint(&shard_dir.join("CHECKPOINT"), *id, report, meter)?;
        let pages = shard_dir.join("pages.dat");
        if pages.exists() {
            report.not_verified.push(NotVerified { path: pages, why: PAGES_NOT_VERIFIED.to_string() });
        }
        for (name, path) in list_dir(shard_dir)? {
            if !["wal", "pages.dat", "CHECKPOINT"].contains(&name.as_str()) {
                report.add(Severity::Note, &path, 0, "a file this version does not know (not read)");
            }
        }
        let wal_dir = shard_dir.join("wal");
        if wal_dir.is_dir() {
            wal::check_log(&wal_dir, *id, checkpoint_lsn, report, meter)?;
        } else {
            report.add(Severity::Damage, &wal_dir, 0, "the shard's log folder is missing");
        }
    }
    for log_dir in &plan.blob_logs {
        if blob::is_log(log_dir)? {
            blob::check_log(log_dir, report, meter)?;
        } else {
            report.add(Severity::Note, log_dir, 0, "a blob log folder with neither a manifest nor segments");
        }
    }
    Ok(())
}

/// Checks the manifest; returns its shard count if it has a valid slot.
fn check_manifest(path: &Path, report: &mut Report) -> Result<Option<u32>> {
    let bytes = read_file(path)?;
    report.verified.push(VerifiedFile {
        path: path.to_path_buf(),
        kind: FileKind::Manifest,
        bytes: bytes.len() as u64,
        records: 0,
    });
    let expected = 2 * manifest::SLOT_BYTES;
    if bytes.len() != expected {
        report.add(Severity::Damage, path, 0, format!("{} bytes, {expected} expected", bytes.len()));
    }
    let manifest = match manifest::decode_file(&bytes) {
        Ok(m) => m,
        Err(why) => {
            report.add(Severity::Damage, path, 0, why);
            return Ok(None);
        }
    };
    torn_slots(path, &bytes, manifest::SLOT_BYTES, |slot| manifest::Manifest::decode(slot).err(), report);
    if manifest.format_version != FORMAT_VERSION {
        let what = format!("format version {}, this build reads {FORMAT_VERSION}", manifest.format_version);
        report.add(Severity::Damage, path, 8, what);
        return Ok(None);
    }
    if !(1..=SHARDS_MAX).contains(&manifest.shard_count) {
        report.add(
            Severity::Damage,
            path,
            12,
            format!("shard count {} is outside 1..={SHARDS_MAX}", manifest.shard_count),
        );
        return Ok(None);
    }
    Ok(Some(manifest.shard_count))
}

/// Reports each non-zero slot of a two-slot file that does not decode, when another slot
/// does (the caller has found one valid): the remains of an interrupted slot write.
fn torn_slots(
    path: &Path,
    bytes: &[u8],
    slot_bytes: usize,
    invalid: impl Fn(&[u8]) -> Option<String>,
    report: &mut Report,
) {
    for (i, slot) in bytes.chunks(slot_bytes).take(2).enumerate() {
        if slot.iter().all(|&b| b == 0) {
            continue;
        }
        if let Some(why) = invalid(slot) {
            let what = format!("slot {i} is not valid ({why}); the other slot is used");
            report.add(Severity::Torn, path, (i * slot_bytes) as u64, what);
        }
    }
}

/// Checks a shard's `CHECKPOINT` (absent until the first checkpoint); returns the LSN the
/// newest valid slot covers (0 without a checkpoint).
fn check_checkpoint(path: &Path, shard: u32, report: &mut Report, meter: &mut Meter<'_>) -> Result<u64> {
    if !path.exists() {
        return Ok(0);
    }
    let bytes = read_file(path)?;
    meter.advance(path, bytes.len() as u64);
    report.verified.push(VerifiedFile {
        path: path.to_path_buf(),
        kind: FileKind::Checkpoint,
        bytes: bytes.len() as u64,
        records: 0,
    });
    let (newest, why) = checkpoint::newest_slot(&bytes);
    let Some(slot) = newest else {
        if bytes.iter().any(|&b| b != 0) {
            report.add(Severity::Damage, path, 0, format!("no valid checkpoint slot ({})", why.join("; ")));
        }
        return Ok(0);
    };
    torn_slots(path, &bytes, checkpoint::SLOT_BYTES, |s| checkpoint::Slot::decode(s).err(), report);
    if slot.shard != shard {
        report.add(Severity::Damage, path, 12, format!("the checkpoint names shard {}, not {shard}", slot.shard));
    }
    Ok(slot.checkpoint_lsn)
}

/// The entries of a folder, sorted by name, with their paths.
fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let read = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir.to_path_buf(), e))?;
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| Error::io("list", dir.to_path_buf(), e))?;
        out.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
    }
    out.sort();
    Ok(out)
}

/// A whole file.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io("read", path.to_path_buf(), e))
}

/// Size of a file.
fn file_bytes(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path).map_err(|e| Error::io("stat", path.to_path_buf(), e))?.len())
}

/// Bytes a shard's check reads: its `CHECKPOINT` and its log segments.
fn shard_bytes(shard_dir: &Path) -> Result<u64> {
    let mut total = 0;
    let checkpoint = shard_dir.join("CHECKPOINT");
    if checkpoint.exists() {
        total += file_bytes(&checkpoint)?;
    }
    let wal = shard_dir.join("wal");
    if wal.is_dir() {
        for (name, path) in list_dir(&wal)? {
            if crate::format::segment::parse_file_name(&name).is_some() {
                total += file_bytes(&path)?;
            }
        }
    }
    Ok(total)
}
