//! Helpers shared by the integration tests: a seeded PRNG, child processes that re-run
//! the test binary, and a reader of log segments built on `ringdb::format`.
#![allow(dead_code)]

pub mod flush_kill;
pub mod sim;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use ringdb::format::record::{Decoded, RecordHeader, decode_record, record_bytes};
use ringdb::format::segment::SegmentHeader;

/// splitmix64: small, seedable, good enough to pick test inputs and kill points.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator for the tuple `parts`, independent of any other tuple's.
    pub fn for_parts(parts: &[u64]) -> Rng {
        let mut rng = Rng(0x005e_ed0f_419b_u64);
        for &p in parts {
            rng.0 ^= p;
            rng.next_u64();
        }
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// The seed in env `RINGDB_SEED`, or one from the clock. Printed either way, so a failure
/// can be replayed with `RINGDB_SEED=<seed>`.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("RINGDB_SEED") {
        Ok(s) => s.trim().parse().expect("RINGDB_SEED must be an unsigned integer"),
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos() as u64,
    };
    println!("{test}: seed {seed} (replay with RINGDB_SEED={seed})");
    seed
}

/// A command that re-runs this test binary with only the test `name` (exactly), with
/// its output uncaptured, and `env` set (child-mode tests do their work only when it is).
pub fn child_command(name: &str, env: &[(&str, String)]) -> Command {
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut cmd = Command::new(exe);
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    cmd
}

/// Marks the lines a child writes with [`emit`] (libtest may print a test's name just
/// before them on the same line).
pub const MARK: &str = "@@ ";

/// The lines of `out` written with [`emit`], without their mark.
pub fn marked_lines(out: &str) -> Vec<String> {
    out.lines().filter_map(|l| l.find(MARK).map(|at| l[at + MARK.len()..].to_string())).collect()
}

/// Starts a thread forwarding every complete line (one ending in '\n') of `stdout` that
/// was written with [`emit`], without its mark; a partial last line (the child was
/// killed while writing it) is dropped.
pub fn line_reader(stdout: ChildStdout) -> (mpsc::Receiver<String>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if buf.last() != Some(&b'\n') {
                        break;
                    }
                    buf.pop();
                    let line = String::from_utf8_lossy(&buf);
                    if let Some(at) = line.find(MARK) {
                        if tx.send(line[at + MARK.len()..].to_string()).is_err() {
                            break;
                        }
                    }
                }
            }
        }
    });
    (rx, handle)
}

/// Kills `child` with SIGKILL (failing if it already exited: it was meant to run until
/// killed) and reaps it.
pub fn sigkill(child: &mut Child) {
    if let Some(status) = child.try_wait().expect("try_wait on the child") {
        panic!("the child exited by itself before it was killed: {status}");
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    assert!(!status.success(), "a killed child cannot succeed");
}

/// Writes one line to stdout and flushes it, whole, under the stdout lock, so lines of
/// several threads never interleave and a line the parent reads was acknowledged first.
pub fn emit(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let mut whole = String::with_capacity(MARK.len() + line.len() + 1);
    whole.push_str(MARK);
    whole.push_str(line);
    whole.push('\n');
    out.write_all(whole.as_bytes()).and_then(|()| out.flush()).expect("stdout");
}

/// `<dir>/shard-NNN/wal`.
pub fn wal_dir(dir: &Path, shard: usize) -> PathBuf {
    dir.join(format!("shard-{shard:03}")).join("wal")
}

/// Log segments of one shard, in sequence order.
pub fn segments(dir: &Path, shard: usize) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(wal_dir(dir, shard))
        .expect("read the wal directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.len() == 20 && name.ends_with(".log")
        })
        .collect();
    out.sort();
    out
}

/// `quarantine-*.bin` files of one shard.
pub fn quarantine_files(dir: &Path, shard: usize) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(wal_dir(dir, shard))
        .expect("read the wal directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("quarantine-") && name.ends_with(".bin")
        })
        .collect();
    out.sort();
    out
}

/// A segment as read back: its bytes, block size, and (offset, header) of every record
/// up to the first position that is not a record.
pub struct ParsedSegment {
    pub bytes: Vec<u8>,
    pub block: usize,
    pub records: Vec<(usize, RecordHeader)>,
    /// Offset just past the last record.
    pub end: usize,
}

pub fn parse_segment(path: &Path) -> ParsedSegment {
    let bytes = std::fs::read(path).expect("read segment");
    let header = SegmentHeader::decode(&bytes).expect("segment header decodes");
    assert_eq!(header.segment_bytes, bytes.len() as u64, "segment size in header");
    let block = header.block_bytes as usize;
    let mut records = Vec::new();
    let mut at = block;
    while at < bytes.len() {
        match decode_record(&bytes[at..], bytes.len()) {
            Decoded::Record(h) => {
                records.push((at, h));
                at += record_bytes(h.body_len as usize);
            }
            Decoded::End => break,
            Decoded::Invalid(why) => panic!("{}: invalid record at offset {at}: {why}", path.display()),
        }
    }
    ParsedSegment { bytes, block, records, end: at }
}

/// Canonical form of a path, for comparing paths the engine reports with ours.
pub fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|e| panic!("canonicalize {}: {e}", path.display()))
}

/// The counters of a `Stats`, without its histograms (too long for a failure message).
pub fn counters(s: &ringdb::Stats) -> String {
    format!(
        "shards {} puts {} gets {} deletes {} batches {} write_bytes {} wal_batches {} wal_records {} \
         wal_bytes {} fsyncs {} segments_created {} recovered_records {} keys {}",
        s.shards,
        s.puts,
        s.gets,
        s.deletes,
        s.batches,
        s.write_bytes,
        s.wal_batches,
        s.wal_records,
        s.wal_bytes,
        s.fsyncs,
        s.wal_segments_created,
        s.recovered_records,
        s.keys
    )
}
