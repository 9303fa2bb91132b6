//! The built `loadgen` binary: flags, exit codes, every workload, the JSON, the plot and
//! the interval log.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_loadgen");

fn loadgen(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run loadgen")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a short workload in a fresh directory with `--json` and returns the document.
fn run_json(engine: &str, workload: &str, extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("out.json");
    let mut args = vec![
        "--engine",
        engine,
        "--workload",
        workload,
        "--dir",
        dir.path().to_str().expect("utf-8 path"),
        "--keys",
        "2000",
        "--ops",
        "300",
        "--threads",
        "2",
        "--read-threads",
        "2",
        "--shards",
        "2",
        "--json",
        json.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    let out = loadgen(&args);
    assert!(out.status.success(), "loadgen {args:?} failed: {}", stderr(&out));
    let text = std::fs::read_to_string(&json).expect("json written");
    serde_json::from_str(&text).expect("json parses")
}

fn check_latency(l: &Value, what: &str) {
    for field in ["p50", "p90", "p99", "p999", "p9999", "max", "mean", "count"] {
        assert!(l[field].is_number(), "{what}: latency field {field} missing in {l}");
    }
    assert!(l["count"].as_u64().expect("count") > 0, "{what}: no operations recorded");
    assert!(l["p50"].as_f64() <= l["p99"].as_f64() && l["p99"].as_f64() <= l["max"].as_f64(), "{what}: {l}");
}

/// The operation names each workload reports.
const WORKLOADS: [(&str, &[&str]); 11] = [
    ("fill-seq", &["put"]),
    ("fill-random", &["put"]),
    ("read-random", &["get"]),
    ("update", &["get", "put"]),
    ("mixed", &["get"]),
    ("a", &["read", "update"]),
    ("b", &["read", "update"]),
    ("c", &["read"]),
    ("d", &["read", "insert"]),
    ("e", &["insert", "scan"]),
    ("f", &["read", "read-modify-write", "update"]),
];

fn run_every_workload(engine: &str) {
    for (workload, ops) in WORKLOADS {
        let doc = run_json(engine, workload, &[]);
        assert_eq!(doc["workload"], workload);
        assert_eq!(doc["engine"], engine);
        assert_eq!(doc["ops"], 300, "{workload}");
        assert!(doc["seconds"].as_f64().expect("seconds") > 0.0);
        assert!(doc["throughput_ops"].as_f64().expect("throughput") > 0.0);
        let latency = doc["latency_us"].as_object().expect("latency_us object");
        let mut names: Vec<&str> = latency.keys().map(String::as_str).collect();
        names.sort_unstable();
        let (mut expected, mut got) = (ops.to_vec(), names.clone());
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected, "{engine} {workload}: operations");
        for name in names {
            check_latency(&latency[name], &format!("{engine} {workload} {name}"));
        }
        let phases = doc["phases"].as_array().expect("phases");
        assert_eq!(phases.len(), if workload == "mixed" { 2 } else { 1 });
        let last = phases.last().expect("a phase");
        assert!(last["throughput_series"].is_array());
        assert!(doc["machine"]["kernel"].is_string());
        assert!(doc["config"]["keys"].as_u64() == Some(2000));
        if engine == "ringdb" {
            let e = &last["engine_stats"];
            assert!(e["wal_batches"].is_u64() && e["fsyncs"].is_u64(), "{e}");
            assert!(e["cache_hits"].is_u64() && e["cache_misses"].is_u64() && e["checkpoints"].is_u64(), "{e}");
            assert!(e["cache_hit_ratio"].is_null() || e["cache_hit_ratio"].is_f64());
        } else {
            assert!(last["engine_stats"].is_null());
        }
        if workload.len() == 1 && workload != "c" && workload != "e" || workload == "read-random" {
            assert!(last["found"].as_u64().expect("found") > 0, "{workload}: no lookup found its key");
        }
        if workload == "e" {
            assert!(last["scanned_records"].as_u64().expect("scanned") > 0);
        }
        if workload == "d" || workload == "e" {
            assert!(last["inserted"].as_u64().is_some());
        }
    }
}

#[test]
fn every_workload_runs_on_ringdb() {
    run_every_workload("ringdb");
}

#[test]
fn every_workload_runs_on_the_compiled_peers() {
    let peers = [
        ("fjall", cfg!(feature = "fjall")),
        ("redb", cfg!(feature = "redb")),
        ("sled", cfg!(feature = "sled")),
        ("lmdb", cfg!(feature = "lmdb")),
        ("rocksdb", cfg!(any(feature = "rocksdb", feature = "rocksdb-system"))),
    ];
    for (engine, built) in peers {
        if built {
            run_every_workload(engine);
        }
    }
}

#[test]
fn help_lists_the_workloads_and_engines() {
    let out = loadgen(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["fill-seq", "read-random", "--rate", "--hlog", "--plot", "--engine", "rocksdb", "lmdb", "--cache"] {
        assert!(text.contains(word), "--help lacks {word}");
    }
}

fn assert_usage_error(args: &[&str], needle: &str) {
    let out = loadgen(args);
    assert_eq!(out.status.code(), Some(2), "loadgen {args:?} should exit 2; stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(needle), "loadgen {args:?}: stderr lacks {needle:?}: {err}");
    assert!(out.stdout.is_empty(), "loadgen {args:?} printed a report");
}

#[test]
fn bad_flags_exit_2_with_a_clear_error() {
    assert_usage_error(&["--workload", "g"], "invalid value 'g' for '--workload");
    assert_usage_error(&["--no-such-flag"], "unexpected argument '--no-such-flag'");
    assert_usage_error(&["--threads", "many"], "invalid value 'many' for '--threads");
    assert_usage_error(&["--threads", "0"], "--threads");
    assert_usage_error(&["--keys", "0"], "--keys must be at least 1");
    assert_usage_error(&["--value-size", "200-100"], "MIN is above MAX");
    assert_usage_error(&["--value-size", "big"], "is not N or MIN-MAX");
    assert_usage_error(&["--rate=0"], "--rate must be a positive");
    assert_usage_error(&["--duration", "0"], "--duration must be a positive");
    assert_usage_error(&["--ops", "0"], "--ops must be at least 1");
    assert_usage_error(&["--cache", "12X"], "unknown size suffix");
    assert_usage_error(&["--cache", "1K"], "--cache for ringdb must be in 64K..=1T");
    assert_usage_error(&["--plot", "out.png"], "only SVG");
    assert_usage_error(&["--durability", "maybe"], "invalid value 'maybe' for '--durability");
    assert_usage_error(&["--engine", "mysql"], "invalid value 'mysql' for '--engine");
    if !cfg!(feature = "fjall") {
        assert_usage_error(&["--engine", "fjall"], "--features fjall");
    }
}

#[test]
fn hlog_and_plot_are_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hlog, svg) = (dir.path().join("run.hlog"), dir.path().join("run.svg"));
    let out = loadgen(&[
        "--workload",
        "mixed",
        "--dir",
        dir.path().to_str().expect("utf-8"),
        "--keys",
        "1000",
        "--duration",
        "0.3",
        "--interval",
        "0.1",
        "--threads",
        "2",
        "--hlog",
        hlog.to_str().expect("utf-8"),
        "--plot",
        svg.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = std::fs::read_to_string(&hlog).expect("hlog written");
    assert!(log.contains("#[BaseTime:"));
    assert!(log.contains("Tag=fill-random/put,") && log.contains("Tag=read-random/get,"), "{log}");
    // Intervals of 0.1 s over two 0.3 s phases.
    assert!(log.lines().filter(|l| l.starts_with("Tag=")).count() >= 4, "{log}");
    let plot = std::fs::read_to_string(&svg).expect("svg written");
    assert!(plot.starts_with("<svg") && plot.contains("throughput over time") && plot.contains("percentile"));
    let report = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "micros/op;",
        "ops/sec;",
        "[OVERALL], Throughput(ops/sec)",
        "[GET], 99thPercentileLatency(us)",
        "1/(1-Percentile)",
    ] {
        assert!(report.contains(needle), "report lacks {needle}: {report}");
    }
    assert!(!Path::new(&dir.path().join("nothing")).exists());
}

#[test]
fn rate_limits_an_open_loop_run() {
    // 400 ops at 2000 ops/s take at least 0.2 s, however fast the engine is.
    let doc = run_json("ringdb", "c", &["--rate", "2000", "--ops", "400"]);
    let seconds = doc["seconds"].as_f64().expect("seconds");
    assert!(seconds >= 0.18, "open loop ran too fast: {seconds} s");
    assert!(doc["throughput_ops"].as_f64().expect("throughput") < 2300.0);
    assert_eq!(doc["config"]["rate"], 2000.0);
    assert_eq!(doc["phases"][0]["target_rate"], 2000.0);
}

#[test]
fn value_size_ranges_are_accepted() {
    let doc = run_json("ringdb", "fill-random", &["--value-size", "10-300", "--cache", "64M"]);
    assert_eq!(doc["config"]["value_size"], "10-300");
    assert_eq!(doc["config"]["cache_bytes"], 64u64 << 20);
    assert_eq!(doc["config"]["cache_applied"], true);
    let user = doc["phases"][0]["user_bytes"].as_u64().expect("user_bytes");
    // 300 puts of 16-byte keys and 10..=300-byte values.
    assert!(user > 300 * (16 + 10) && user < 300 * (16 + 300), "{user}");
}
