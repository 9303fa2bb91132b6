//! `ringdb`: look into a ringdb directory from the shell, without writing a program.
//!
//! `stats`, `dump`, `get`, `put` and `delete` open the database through the library
//! (`Db::open`, so they recover it as any open does and need the directory's lock);
//! `check` reads the files without opening the database (`ringdb::verify`). Exit codes:
//! 0 success, 1 failure (an error, damage found, a missing key), 2 a usage error.

mod bytes;
mod report;

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use ringdb::{Db, IoBackend, Options};

/// Page cache for the commands that open a database: they read each value once at most.
const CACHE_BYTES: u64 = 16 << 20;

const EXAMPLES: &str = "\
Examples:
  ringdb check /var/lib/app/db              verify every log segment, checkpoint and blob segment
  ringdb stats /var/lib/app/db --json       key count, index memory, data file sizes
  ringdb dump /var/lib/app/db --prefix 'user:'
  ringdb get /var/lib/app/db 'user:1'
  ringdb put /var/lib/app/db 'user:1' 'alice\\x00'
  ringdb delete /var/lib/app/db 'user:1'

Keys and values are typed and printed as Rust byte-string escapes (\\n \\t \\\\ \\xNN ...),
so what `dump` prints can be pasted back. --json output gives bytes as lower-case hex.
Exit status: 0 success, 1 failure (error, damage, missing key), 2 usage error.";

const OPENS: &str = "\
This command opens the database with the library, as a program would: it takes the
directory's lock (it fails if a process has the database open) and recovers it (a torn
log tail is moved to a quarantine file). Use `ringdb check` to look without changing
anything.";

#[derive(Parser)]
#[command(name = "ringdb", version, about = "Look into a ringdb database: statistics, contents, point reads and writes, an offline integrity check", after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Bytes given on the command line (escapes undone, see `bytes::unescape`).
#[derive(Clone)]
struct Arg(Vec<u8>);

fn parse_bytes(text: &str) -> Result<Arg, String> {
    bytes::unescape(text).map(Arg)
}

#[derive(Subcommand)]
enum Command {
    /// Print the database's statistics: keys, index memory, pages, data file and log sizes.
    #[command(after_help = format!("{OPENS}\n\nExample:\n  ringdb stats /var/lib/app/db --json"))]
    Stats {
        /// The database directory.
        dir: PathBuf,
        /// One JSON object instead of `name value` lines.
        #[arg(long)]
        json: bool,
    },
    /// Print every key and value in key order, one `KEY<TAB>VALUE` line each, escaped.
    #[command(after_help = format!(
        "{OPENS}\n\nTyped tables' records are not listed (their keys are reserved).\n\n\
         Examples:\n  ringdb dump /var/lib/app/db\n  ringdb dump /var/lib/app/db --prefix 'user:' --json"
    ))]
    Dump {
        /// The database directory.
        dir: PathBuf,
        /// Only keys starting with these bytes (escapes allowed).
        #[arg(long, value_parser = parse_bytes)]
        prefix: Option<Arg>,
        /// JSON Lines: one `{"key": hex, "value": hex}` object per line.
        #[arg(long)]
        json: bool,
    },
    /// Print the value of KEY (escaped, then a newline); exit 1 if it is absent.
    #[command(after_help = format!("{OPENS}\n\nExamples:\n  ringdb get /var/lib/app/db 'user:1'\n  ringdb get /var/lib/app/db 'img:7' --raw > img.png"))]
    Get {
        /// The database directory.
        dir: PathBuf,
        /// The key (escapes allowed).
        #[arg(value_parser = parse_bytes)]
        key: Arg,
        /// Write the value's bytes as they are, with no escaping and no newline.
        #[arg(long)]
        raw: bool,
    },
    /// Set KEY to VALUE; durable when the command exits 0.
    #[command(after_help = format!("{OPENS}\n\nExample:\n  ringdb put /var/lib/app/db 'user:1' 'alice'"))]
    Put {
        /// The database directory.
        dir: PathBuf,
        /// The key (escapes allowed).
        #[arg(value_parser = parse_bytes)]
        key: Arg,
        /// The value (escapes allowed).
        #[arg(value_parser = parse_bytes)]
        value: Arg,
    },
    /// Delete KEY (absent or not); durable when the command exits 0.
    #[command(after_help = format!("{OPENS}\n\nExample:\n  ringdb delete /var/lib/app/db 'user:1'"))]
    Delete {
        /// The database directory.
        dir: PathBuf,
        /// The key (escapes allowed).
        #[arg(value_parser = parse_bytes)]
        key: Arg,
    },
    /// Verify MANIFEST, checkpoints, every log record and blob segment, changing nothing.
    #[command(after_help = "\
Reads the files with plain reads and checks them with the library's decoders; it opens
nothing for writing and takes no lock, so run it on a database no process has open (a
log being written can look torn). DIR is a database, or a blob log's own folder.
Checked: MANIFEST; each shard's CHECKPOINT slots; every log segment (header, every
record's checksums and encoding, LSN continuity within and across segments, the log
resuming after the checkpoint); blob segments (headers, state slots, every record's
checksums, zstd frames). Not checked in this version: the pages in pages.dat.

Findings: `damage` (the database will refuse to open or lost data: exit 1), `torn`
(the remains of an interrupted write that the next open repairs: exit 0), `note`.

Examples:
  ringdb check /var/lib/app/db
  ringdb check /var/lib/app/db/blobs/images --json")]
    Check {
        /// The database directory, or a blob log's folder.
        dir: PathBuf,
        /// One JSON object: verified files, files not verified, findings, `damaged`.
        #[arg(long)]
        json: bool,
    },
}

/// Why a command failed (exit 1).
enum Failure {
    /// A message for stderr.
    Message(String),
    /// Writing to stdout failed.
    Output(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Output(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        // A reader that stopped reading (`ringdb dump DIR | head`) is not a failure.
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Output(e)) => {
            eprintln!("ringdb: writing the output failed: {e}");
            ExitCode::FAILURE
        }
        Err(Failure::Message(message)) => {
            eprintln!("ringdb: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode, Failure> {
    let mut out = BufWriter::new(io::stdout().lock());
    let code = match command {
        Command::Stats { dir, json } => {
            let db = open_db(&dir)?;
            report::write_stats(&mut out, &db.stats(), json)?;
            close(db)?;
            ExitCode::SUCCESS
        }
        Command::Dump { dir, prefix, json } => {
            let db = open_db(&dir)?;
            dump(&mut out, &db, &prefix.map_or_else(Vec::new, |p| p.0), json)?;
            close(db)?;
            ExitCode::SUCCESS
        }
        Command::Get { dir, key, raw } => get(&mut out, &dir, &key.0, raw)?,
        Command::Put { dir, key, value } => {
            let db = open_db(&dir)?;
            db.put(&key.0, &value.0).map_err(|e| Failure::Message(format!("put failed: {e}")))?;
            close(db)?;
            ExitCode::SUCCESS
        }
        Command::Delete { dir, key } => {
            let db = open_db(&dir)?;
            db.delete(&key.0).map_err(|e| Failure::Message(format!("delete failed: {e}")))?;
            close(db)?;
            ExitCode::SUCCESS
        }
        Command::Check { dir, json } => check(&mut out, &dir, json)?,
    };
    out.flush()?;
    Ok(code)
}

/// Opens an existing database, falling back to the portable backend where io_uring is
/// refused and to buffered I/O where O_DIRECT is: an operator's tool should work
/// wherever the data is, and both fallbacks keep every write durable.
fn open_db(dir: &Path) -> Result<Db, Failure> {
    if !dir.join("MANIFEST").is_file() {
        return Err(Failure::Message(format!(
            "{} is not a ringdb database: it has no MANIFEST (this command creates no database)",
            dir.display()
        )));
    }
    let segment_bytes = log_segment_bytes(dir);
    let (mut portable, mut buffered) = (false, false);
    // At most one fallback of each kind, so at most three attempts.
    loop {
        let backend = if portable { IoBackend::Portable } else { IoBackend::Uring };
        let mut options =
            Options::default().pin_threads(false).cache_bytes(CACHE_BYTES).io_backend(backend).direct_io(!buffered);
        if let Some(bytes) = segment_bytes {
            options = options.wal_segment_bytes(bytes);
        }
        match Db::open(dir, options) {
            Ok(db) => return Ok(db),
            Err(ringdb::Error::IoUringUnavailable { .. }) if !portable => portable = true,
            Err(ringdb::Error::DirectIoUnsupported { .. }) if !buffered => buffered = true,
            Err(e) => return Err(Failure::Message(format!("cannot open {}: {e}", dir.display()))),
        }
    }
}

/// The size of the database's log segments, read from the header of one of shard 0's
/// segments, so that the segments this open prepares match the ones the database's own
/// program makes (the size is an option of each open, not recorded in the MANIFEST).
/// `None` when no segment header can be read: the default size is used.
fn log_segment_bytes(dir: &Path) -> Option<u64> {
    let wal = dir.join("shard-000").join("wal");
    let entries = std::fs::read_dir(&wal).ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_str().and_then(ringdb::format::segment::parse_file_name).is_none() {
            continue;
        }
        let mut head = [0u8; ringdb::format::segment::HEADER_BYTES];
        let read = std::fs::File::open(entry.path()).and_then(|mut f| io::Read::read_exact(&mut f, &mut head));
        if read.is_ok() {
            if let Ok(header) = ringdb::format::segment::SegmentHeader::decode(&head) {
                let accepted = ringdb::WAL_SEGMENT_BYTES_MIN..=ringdb::WAL_SEGMENT_BYTES_MAX;
                return Some(header.segment_bytes).filter(|b| accepted.contains(b));
            }
        }
    }
    None
}

/// Closes the database, so every write is flushed and the shards stop.
fn close(db: Db) -> Result<(), Failure> {
    db.close().map_err(|e| Failure::Message(format!("closing the database failed: {e}")))
}

fn dump(out: &mut impl Write, db: &Db, prefix: &[u8], json: bool) -> Result<(), Failure> {
    for entry in db.scan_prefix(prefix) {
        let (key, value) = entry.map_err(|e| Failure::Message(format!("reading failed: {e}")))?;
        if json {
            let line = serde_json::json!({ "key": bytes::hex(&key), "value": bytes::hex(&value) });
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{}\t{}", bytes::escape(&key), bytes::escape(&value))?;
        }
    }
    Ok(())
}

fn get(out: &mut impl Write, dir: &Path, key: &[u8], raw: bool) -> Result<ExitCode, Failure> {
    let db = open_db(dir)?;
    let value = db.get(key).map_err(|e| Failure::Message(format!("get failed: {e}")))?;
    close(db)?;
    let Some(value) = value else {
        return Err(Failure::Message(format!("key \"{}\" not found in {}", bytes::escape(key), dir.display())));
    };
    if raw {
        out.write_all(&value)?;
    } else {
        writeln!(out, "{}", bytes::escape(&value))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn check(out: &mut impl Write, dir: &Path, json: bool) -> Result<ExitCode, Failure> {
    let bar = io::stderr().is_terminal().then(|| {
        let style =
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {wide_msg}").expect("the template is valid");
        ProgressBar::new(0).with_style(style)
    });
    let result = ringdb::verify::check_dir(dir, |p| {
        if let Some(bar) = &bar {
            bar.set_length(p.bytes_total);
            bar.set_position(p.bytes_done);
            bar.set_message(p.file.display().to_string());
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = result.map_err(|e| Failure::Message(format!("cannot check {}: {e}", dir.display())))?;
    report::write_check(out, &report, json)?;
    Ok(if report.is_damaged() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
