//! Proves the one-writer rule across processes: a second process opening the same blob
//! log for writing is refused with `Error::Locked`, and a process that opens it
//! read-only reads everything the writer persisted, in sealed segments and in the one
//! being written, while the writer keeps running.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use ringdb::{BlobLog, BlobOptions, Error, Location};

mod common;
use common::{Rng, child_command, emit, marked_lines};

const MODE_ENV: &str = "RINGDB_TEST_BLOB_PROC_MODE";
const DIR_ENV: &str = "RINGDB_TEST_BLOB_PROC_DIR";
const LOCS_ENV: &str = "RINGDB_TEST_BLOB_PROC_LOCS";

fn content(i: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::for_parts(&[i, 99]);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

fn options() -> BlobOptions {
    BlobOptions::default().max_segment_bytes(1 << 20)
}

/// Child mode: either tries to open the log for writing, or reads it read-only.
#[test]
fn child_process() {
    let Ok(mode) = std::env::var(MODE_ENV) else { return };
    let dir = std::env::var(DIR_ENV).unwrap();
    match mode.as_str() {
        "writer" => match BlobLog::open(&dir, options()) {
            Ok(_) => emit("opened"),
            Err(Error::Locked { path }) => emit(&format!("locked {}", path.display())),
            Err(e) => emit(&format!("error {e}")),
        },
        "reader" => {
            let log = BlobLog::open_read_only(&dir, options()).unwrap();
            let segments = log.segments().unwrap();
            emit(&format!("segments {}", segments.len()));
            let mut ok = 0;
            for (i, text) in std::env::var(LOCS_ENV).unwrap().split(',').enumerate() {
                let loc: Location = text.parse().unwrap();
                match log.read(loc) {
                    Ok(v) if v[..] == content(i as u64, loc.len as usize)[..] => ok += 1,
                    Ok(_) => emit(&format!("differs {loc}")),
                    Err(e) => emit(&format!("failed {loc}: {e}")),
                }
            }
            emit(&format!("read {ok}"));
            // A read-only handle never writes.
            match log.append(b"no") {
                Err(Error::InvalidArgument(_)) => emit("append refused"),
                other => emit(&format!("append answered {other:?}")),
            }
        }
        other => panic!("unknown mode {other}"),
    }
}

fn run_child(env: &[(&str, String)]) -> Vec<String> {
    let mut cmd = child_command("child_process", env);
    cmd.stdout(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "child failed: {out:?}");
    marked_lines(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn a_second_writer_process_is_refused() {
    if std::env::var(MODE_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = BlobLog::open(dir.path(), options()).unwrap();
    log.append(b"held").unwrap();
    let env = [(MODE_ENV, "writer".to_string()), (DIR_ENV, dir.path().display().to_string())];
    let lines = run_child(&env);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("locked ") && lines[0].ends_with("LOCK"), "{lines:?}");
    // In-process too: a second handle is refused while the first is open.
    assert!(matches!(BlobLog::open(dir.path(), options()), Err(Error::Locked { .. })));
    log.close().unwrap();
    // Once the writer closed, another process may write.
    assert_eq!(run_child(&env), vec!["opened".to_string()]);
}

#[test]
fn a_reader_process_reads_what_the_writer_persisted() {
    if std::env::var(MODE_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = BlobLog::open(dir.path(), options()).unwrap();
    let mut locs = Vec::new();
    for i in 0..40u64 {
        let len = [0, 1, 4096, 70_000, 300_000][i as usize % 5];
        locs.push(log.append(&content(i, len)).unwrap());
    }
    assert!(log.segments().unwrap().len() >= 3, "the blobs span sealed segments and the open one");
    assert!(locs.last().unwrap().segment == log.current_segment());
    let text: Vec<String> = locs.iter().map(ToString::to_string).collect();
    let env =
        [(MODE_ENV, "reader".to_string()), (DIR_ENV, dir.path().display().to_string()), (LOCS_ENV, text.join(","))];
    // The writer stays open (and keeps appending) while the reader process runs.
    let mut child = {
        let mut cmd = child_command("child_process", &env);
        cmd.stdout(Stdio::piped());
        cmd.spawn().unwrap()
    };
    for i in 40..60u64 {
        log.append(&content(i, 1000)).unwrap();
    }
    let stdout = child.stdout.take().unwrap();
    let lines: Vec<String> = BufReader::new(stdout).lines().map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success());
    let lines = marked_lines(&lines.join("\n"));
    let segments = log.segments().unwrap().len();
    assert!(lines[0].starts_with("segments "), "{lines:?}");
    assert!(lines[0]["segments ".len()..].parse::<usize>().unwrap() <= segments);
    assert_eq!(lines[1], format!("read {}", locs.len()), "{lines:?}");
    assert_eq!(lines[2], "append refused");
    log.close().unwrap();
}
