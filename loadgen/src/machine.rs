//! What the run happened on: kernel, CPUs, and the filesystem under the database.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// The machine and filesystem a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// CPUs this process may run on.
    pub cpus: usize,
    /// CPU model name from /proc/cpuinfo, if it names one.
    pub cpu_model: Option<String>,
    /// Filesystem type of the database directory (`ext4`, `xfs`, `tmpfs`, ...).
    pub fs_type: String,
    /// Device (or source) of that filesystem.
    pub fs_device: String,
    /// Mount point of that filesystem.
    pub fs_mount: String,
}

impl Machine {
    /// Describes this machine and the filesystem holding `dir` (which must exist).
    pub fn probe(dir: &Path) -> Machine {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string());
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        });
        let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let (fs_device, fs_mount, fs_type) = std::fs::read_to_string("/proc/self/mounts")
            .ok()
            .and_then(|mounts| mount_of(&mounts, &canonical))
            .unwrap_or_else(|| ("unknown".into(), "unknown".into(), "unknown".into()));
        Machine { kernel, cpus, cpu_model, fs_type, fs_device, fs_mount }
    }
}

/// Bytes written to the block device behind `fs_device` since boot (sectors written in
/// `/sys/class/block/<dev>/stat`, times 512), or `None` if it is not a block device.
pub fn device_write_bytes(fs_device: &str) -> Option<u64> {
    let dev = Path::new(fs_device);
    if !fs_device.starts_with("/dev/") {
        return None;
    }
    let real = dev.canonicalize().ok()?;
    let name = real.file_name()?.to_str()?.to_string();
    let stat = std::fs::read_to_string(format!("/sys/class/block/{name}/stat")).ok()?;
    let sectors: u64 = stat.split_whitespace().nth(6)?.parse().ok()?;
    Some(sectors * 512)
}

/// The (device, mount point, type) of the mount with the longest mount point that is a
/// prefix of `path`; of equal mount points the last one listed (it shadows the others).
fn mount_of(mounts: &str, path: &Path) -> Option<(String, String, String)> {
    let mut best: Option<(usize, String, String, String)> = None;
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(device), Some(mount), Some(fs_type)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let mount = unescape(mount);
        let mount_path = PathBuf::from(&mount);
        if !path.starts_with(&mount_path) {
            continue;
        }
        let depth = mount_path.components().count();
        if best.as_ref().is_none_or(|b| depth >= b.0) {
            best = Some((depth, unescape(device), mount, fs_type.to_string()));
        }
    }
    best.map(|(_, device, mount, fs_type)| (device, mount, fs_type))
}

/// Undoes the octal escapes (`\040` for a space) of /proc/self/mounts.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let n = (bytes[i + 1] - b'0') as u32 * 64 + (bytes[i + 2] - b'0') as u32 * 8 + (bytes[i + 3] - b'0') as u32;
            out.push(n as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
tmpfs /tmp tmpfs rw 0 0
/dev/vdb /var/tmp xfs rw 0 0
/dev/vdc /var/tmp xfs rw 0 0
/dev/vdd /mnt/with\\040space ext4 rw 0 0
";

    #[test]
    fn picks_the_longest_mount_point() {
        let m = |p: &str| mount_of(MOUNTS, Path::new(p)).map(|(d, m, t)| format!("{d} {m} {t}"));
        assert_eq!(m("/work/x").as_deref(), Some("/dev/vda / ext4"));
        assert_eq!(m("/tmp/db").as_deref(), Some("tmpfs /tmp tmpfs"));
        assert_eq!(m("/tmpfoo").as_deref(), Some("/dev/vda / ext4"));
        assert_eq!(m("/var/tmp/db").as_deref(), Some("/dev/vdc /var/tmp xfs"));
        assert_eq!(m("/mnt/with space/db").as_deref(), Some("/dev/vdd /mnt/with space ext4"));
    }
}
