//! The database directory: its lock, its manifest, and how folders are made.
//!
//! ```text
//! <dir>/LOCK                   flock(LOCK_EX) held while open; a second opener gets Error::Locked
//! <dir>/MANIFEST               format version and shard count (see format::manifest)
//! <dir>/shard-NNN/wal/*.log    each shard's log segments
//! ```
//! Folders are created 0700 and files 0600; every creation or rename is
//! followed by an fsync of the folder holding it.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::FORMAT_VERSION;
use crate::format::manifest::{Manifest, SLOT_BYTES, decode_file};
use crate::io::fs::{Fs, LockGuard, NodeKind, OpenFlags, sync_dir};

/// Creates `dir` (mode 0700) if it does not exist, and makes its entry durable.
pub fn create_dir(fs: &dyn Fs, dir: &Path) -> Result<()> {
    match fs.create_dir(dir) {
        Ok(()) => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(fs, parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            if fs.kind(dir).map_err(|e| Error::io("stat", dir.to_path_buf(), e))? == Some(NodeKind::Dir) {
                Ok(())
            } else {
                Err(Error::InvalidArgument(format!("{} exists and is not a directory", dir.display())))
            }
        }
        Err(e) => Err(Error::io("create directory", dir.to_path_buf(), e)),
    }
}

/// Creates `dir` and its missing parents, each made durable in its parent, so that a
/// database created just before a crash does not lose its own folder.
pub fn create_dir_all(fs: &dyn Fs, dir: &Path) -> Result<()> {
    if fs.kind(dir).map_err(|e| Error::io("stat", dir.to_path_buf(), e))? == Some(NodeKind::Dir) {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(fs, parent)?;
    }
    create_dir(fs, dir)
}

/// Takes the directory's lock, or fails with [`Error::Locked`].
pub fn lock(fs: &dyn Fs, dir: &Path) -> Result<LockGuard> {
    fs.lock(&dir.join("LOCK"))
}

/// Path of shard `id`'s folder.
pub fn shard_dir(dir: &Path, id: usize) -> PathBuf {
    dir.join(format!("shard-{id:03}"))
}

/// Whether shard `id`'s folder holds anything a shard writes (a data file, a checkpoint,
/// a log segment): a folder without any is what an interrupted creation leaves.
fn shard_holds_data(fs: &dyn Fs, dir: &Path, id: usize) -> Result<bool> {
    let shard = shard_dir(dir, id);
    let stat = |path: &Path| fs.kind(path).map_err(|e| Error::io("stat", path.to_path_buf(), e));
    if stat(&shard.join("pages.dat"))?.is_some() || stat(&shard.join("CHECKPOINT"))?.is_some() {
        return Ok(true);
    }
    let wal = shard.join("wal");
    if stat(&wal)?.is_none() {
        return Ok(false);
    }
    let names = fs.list_dir(&wal).map_err(|e| Error::io("list", wal.clone(), e))?;
    Ok(names.iter().any(|n| n.ends_with(".log")))
}

/// Reads the manifest, or creates it with `shards_wanted` shards (0: `default_shards`),
/// each shard's folder (and its `wal` folder) created before the manifest. Returns the
/// shard count. Once a manifest exists every shard's folder must: a missing one is
/// corruption (its keys are gone), never a new, empty shard.
pub fn open_manifest(fs: &dyn Fs, dir: &Path, shards_wanted: usize, default_shards: usize) -> Result<usize> {
    let path = dir.join("MANIFEST");
    match fs.open(&path, OpenFlags::EXISTING) {
        Ok(file) => {
            let len = file.len().map_err(|e| Error::io("stat", path.clone(), e))?;
            let mut bytes = vec![0u8; len.min(2 * SLOT_BYTES as u64) as usize];
            file.read_exact_at(&mut bytes, 0).map_err(|e| Error::io("read", path.clone(), e))?;
            let manifest =
                decode_file(&bytes).map_err(|what| Error::Corruption { file: path.clone(), offset: 0, what })?;
            if manifest.format_version != FORMAT_VERSION {
                return Err(Error::Incompatible(format!(
                    "{} has format version {}, this build reads {FORMAT_VERSION}",
                    path.display(),
                    manifest.format_version
                )));
            }
            let shards = manifest.shard_count as usize;
            if shards == 0 || shards > 1024 {
                return Err(Error::Corruption { file: path, offset: 12, what: format!("shard count {shards}") });
            }
            if shards_wanted != 0 && shards_wanted != shards {
                return Err(Error::Incompatible(format!(
                    "the database has {shards} shards, Options::shards asks for {shards_wanted} \
                     (the count is fixed at creation; pass 0 to use the recorded one)"
                )));
            }
            for id in 0..shards {
                let shard = shard_dir(dir, id);
                if fs.kind(&shard).map_err(|e| Error::io("stat", shard.clone(), e))? != Some(NodeKind::Dir) {
                    return Err(Error::Corruption {
                        file: shard,
                        offset: 0,
                        what: format!(
                            "shard {id}'s folder is missing (the MANIFEST records {shards} shards): \
                             its keys are lost; restore the folder from a backup"
                        ),
                    });
                }
            }
            Ok(shards)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            // Shard folders with data and no manifest: the manifest was lost. Empty ones
            // are what a creation interrupted before its manifest leaves.
            if shard_holds_data(fs, dir, 0)? {
                return Err(Error::Corruption {
                    file: path,
                    offset: 0,
                    what: "MANIFEST is missing but shard folders hold data".into(),
                });
            }
            let shards = if shards_wanted == 0 { default_shards.max(1) } else { shards_wanted };
            for id in 0..shards {
                let shard = shard_dir(dir, id);
                create_dir(fs, &shard)?;
                create_dir(fs, &shard.join("wal"))?;
            }
            let manifest = Manifest::new(u32::try_from(shards).expect("shards checked <= 1024"));
            let slot = manifest.encode().expect("an empty payload fits");
            let mut bytes = vec![0u8; 2 * SLOT_BYTES];
            bytes[..SLOT_BYTES].copy_from_slice(&slot);
            let tmp = dir.join("MANIFEST.tmp");
            {
                let file = fs.open(&tmp, OpenFlags::CREATE_NEW).map_err(|e| Error::io("create", tmp.clone(), e))?;
                file.write_all_at(&bytes, 0).map_err(|e| Error::io("write", tmp.clone(), e))?;
                file.sync_all().map_err(|e| Error::io("fsync", tmp.clone(), e))?;
            }
            fs.rename(&tmp, &path).map_err(|e| Error::io("rename", tmp.clone(), e))?;
            sync_dir(fs, dir)?;
            Ok(shards)
        }
        Err(e) => Err(Error::io("open", path, e)),
    }
}
