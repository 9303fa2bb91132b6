//! The blob log's manifest (`SEGMENTS`) and drop tombstones: what must exist.
//!
//! A crash never removes or shortens a segment file: a segment is renamed into
//! place whole (`storage::segment`), and a sealed one is shortened only after its
//! end is in its header. So a segment that is gone, or shorter than its records
//! were known to reach, was damaged, and open reports it as [`Error::Corruption`]
//! instead of continuing without it. The manifest ([`BlobManifest`], layout in
//! `format::blob`) lists every segment that must exist with the end its records
//! are known to reach on stable storage, and the next segment number, which only
//! grows: a segment number is never created twice, so a [`super::Location`]
//! cannot name two blobs.
//!
//! It is written when the layout changes: a segment is created (before anything
//! is appended to it), sealed or cut short (`rtrim`), and when the log opens and
//! closes (the open segment's synced end). Each write overwrites the older of its
//! two slots in place and `fdatasync`s, so on a full disk it needs no new space;
//! only a manifest that outgrows its slots is rewritten whole (temporary file,
//! rename, folder sync).
//!
//! Dropping a segment writes nothing, so it works on a full disk: it creates the
//! empty file `%08x.dropped` (a tombstone) and syncs the folder, then removes the
//! segment. A listed segment with a tombstone was dropped; the next manifest
//! write leaves it out, and then the tombstones go.

#![forbid(unsafe_code)]

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::blob::{BlobManifest, MANIFEST_ENTRY_BYTES, MANIFEST_SLOT_ALIGN};
use crate::io::fs::{Fs, OpenFlags, sync_dir};

/// File name of the manifest in a blob log's folder.
pub const MANIFEST_NAME: &str = "SEGMENTS";

/// Path of the manifest of the log in `dir`.
pub fn manifest_path(dir: &Path) -> PathBuf {
    dir.join(MANIFEST_NAME)
}

/// Path of the tombstone of segment `segment` in `dir`.
pub fn tombstone_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join(format!("{segment:08x}.dropped"))
}

/// Segment number of a tombstone's file name, if it is one.
fn parse_tombstone(name: &str) -> Option<u32> {
    let hex = name.strip_suffix(".dropped")?;
    if hex.len() != 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// The manifest as the writer holds it: its contents and its slot size on disk.
#[derive(Debug, Clone)]
pub struct ManifestFile {
    /// What it says (as last written, or about to be).
    pub manifest: BlobManifest,
    /// Bytes of each slot on disk (0: no file yet).
    pub slot_bytes: usize,
}

/// Reads the manifest of the log in `dir`: `None` if there is none, [`Error::Corruption`]
/// if neither slot is valid.
pub fn load(fs: &dyn Fs, dir: &Path) -> Result<Option<ManifestFile>> {
    let path = manifest_path(dir);
    let file = match fs.open(&path, OpenFlags::READ_ONLY) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let len = file.len().map_err(|e| Error::io("stat", path.clone(), e))?;
    // A manifest of a billion segments would be 24 GB: refuse sizes no log reaches.
    let len = usize::try_from(len).ok().filter(|&l| l <= 1 << 30).ok_or_else(|| Error::Corruption {
        file: path.clone(),
        offset: 0,
        what: format!("blob log manifest of {len} bytes is larger than any log needs"),
    })?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0).map_err(|e| Error::io("read", path.clone(), e))?;
    let manifest = BlobManifest::newest(&bytes).map_err(|what| Error::Corruption { file: path, offset: 0, what })?;
    Ok(Some(ManifestFile { manifest, slot_bytes: len / 2 }))
}

/// Writes `mf.manifest` with its generation advanced: in place into the older slot when
/// it fits, else as a new file with larger slots. Durable on return.
pub fn store(fs: &dyn Fs, dir: &Path, mf: &mut ManifestFile) -> Result<()> {
    let mut next = mf.manifest.clone();
    next.generation += 1;
    let path = manifest_path(dir);
    if mf.slot_bytes >= next.encoded_bytes() {
        let slot = next.encode(mf.slot_bytes);
        let at = (mf.slot_bytes * next.slot_index()) as u64;
        let file = fs.open(&path, OpenFlags::EXISTING).map_err(|e| Error::io("open", path.clone(), e))?;
        file.write_all_at(&slot, at).map_err(|e| Error::io("write blob log manifest", path.clone(), e))?;
        file.sync_data().map_err(|e| Error::io("fdatasync", path.clone(), e))?;
    } else {
        // Room for twice the entries, so the file is rewritten whole only now and then.
        let room = next.encoded_bytes() + next.entries.len() * MANIFEST_ENTRY_BYTES;
        let slot_bytes = room.next_multiple_of(MANIFEST_SLOT_ALIGN).max(mf.slot_bytes);
        let slot = next.encode(slot_bytes);
        let tmp = dir.join(format!("{MANIFEST_NAME}.tmp"));
        let file = fs.open(&tmp, OpenFlags::CREATE_NEW).map_err(|e| Error::io("create", tmp.clone(), e))?;
        // Both slots hold this state, so both are written (no unwritten extents) and
        // later in-place writes need no new space.
        let written = file
            .write_all_at(&slot, 0)
            .and_then(|()| file.write_all_at(&slot, slot_bytes as u64))
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = fs.remove_file(&tmp);
            return Err(Error::io("write blob log manifest", tmp, e));
        }
        fs.rename(&tmp, &path).map_err(|e| Error::io("rename", tmp.clone(), e))?;
        sync_dir(fs, dir)?;
        mf.slot_bytes = slot_bytes;
    }
    mf.manifest = next;
    Ok(())
}

/// Segment numbers with a tombstone in `dir`, ascending.
pub fn tombstones(fs: &dyn Fs, dir: &Path) -> Result<Vec<u32>> {
    let names = fs.list_dir(dir).map_err(|e| Error::io("list", dir.to_path_buf(), e))?;
    let mut out: Vec<u32> = names.iter().filter_map(|n| parse_tombstone(n)).collect();
    out.sort_unstable();
    Ok(out)
}

/// Whether segment `segment` of the log in `dir` has a tombstone.
pub fn has_tombstone(fs: &dyn Fs, dir: &Path, segment: u32) -> bool {
    matches!(fs.kind(&tombstone_path(dir, segment)), Ok(Some(_)))
}

/// Leaves a durable tombstone for `segment` (see the module docs).
pub fn bury(fs: &dyn Fs, dir: &Path, segment: u32) -> Result<()> {
    let path = tombstone_path(dir, segment);
    fs.open(&path, OpenFlags::CREATE).map_err(|e| Error::io("create", path, e))?;
    sync_dir(fs, dir)
}

/// Removes the tombstones of `segments` once the manifest no longer lists them.
pub fn remove_tombstones(fs: &dyn Fs, dir: &Path, segments: &[u32]) -> Result<()> {
    if segments.is_empty() {
        return Ok(());
    }
    for &n in segments {
        let path = tombstone_path(dir, n);
        match fs.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", path, e)),
        }
    }
    sync_dir(fs, dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::blob::ManifestEntry;
    use crate::io::fs::RealFs;

    #[test]
    fn stores_in_place_and_grows_when_the_slots_are_full() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs;
        assert!(load(&fs, dir.path()).unwrap().is_none());
        let mut mf = ManifestFile { manifest: BlobManifest::default(), slot_bytes: 0 };
        store(&fs, dir.path(), &mut mf).unwrap();
        let len = || std::fs::metadata(manifest_path(dir.path())).unwrap().len();
        assert_eq!(len(), 8192, "two 4 KiB slots");
        let entry =
            |segment| ManifestEntry { segment, sealed: true, closed: false, lost: false, end: 4096, cut_end: 0 };
        mf.manifest.entries = (0..100).map(entry).collect();
        mf.manifest.next_segment = 100;
        store(&fs, dir.path(), &mut mf).unwrap();
        assert_eq!(len(), 8192, "100 entries fit in place");
        assert_eq!(load(&fs, dir.path()).unwrap().unwrap().manifest, mf.manifest);
        mf.manifest.entries = (0..1000).map(entry).collect();
        mf.manifest.next_segment = 1000;
        store(&fs, dir.path(), &mut mf).unwrap();
        assert!(len() > 2 * 24 * 1000, "rewritten with larger slots");
        let loaded = load(&fs, dir.path()).unwrap().unwrap();
        assert_eq!((loaded.manifest, loaded.slot_bytes), (mf.manifest.clone(), mf.slot_bytes));
        assert_eq!(mf.manifest.generation, 3);
        mf.manifest.entries.truncate(10);
        store(&fs, dir.path(), &mut mf).unwrap();
        assert_eq!(load(&fs, dir.path()).unwrap().unwrap().manifest.entries.len(), 10);
        // Damage to the newer slot leaves the older one (a growth writes both slots).
        let at = (mf.slot_bytes * mf.manifest.slot_index() + 40) as u64;
        let f = std::fs::OpenOptions::new().write(true).open(manifest_path(dir.path())).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[0xff], at).unwrap();
        let older = load(&fs, dir.path()).unwrap().unwrap().manifest;
        assert_eq!((older.generation, older.entries.len()), (3, 1000));
    }

    #[test]
    fn tombstones_are_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs;
        bury(&fs, dir.path(), 7).unwrap();
        bury(&fs, dir.path(), 3).unwrap();
        assert_eq!(tombstones(&fs, dir.path()).unwrap(), vec![3, 7]);
        assert!(has_tombstone(&fs, dir.path(), 7) && !has_tombstone(&fs, dir.path(), 4));
        remove_tombstones(&fs, dir.path(), &[3, 7]).unwrap();
        assert!(tombstones(&fs, dir.path()).unwrap().is_empty());
    }
}
