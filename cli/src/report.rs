//! What `stats` and `check` print, for humans and as JSON.

use std::io::{self, Write};

use ringdb::Stats;
use ringdb::verify::{FileKind, Report, Severity};
use serde_json::{Map, Value, json};

/// The figures `stats` prints: what the directory holds and what its open found. The
/// activity counters of `Stats` (puts, gets, flushes, latencies) are left out: they
/// count since open, and this open did nothing else. So is `wal_segments`, which a shard
/// publishes after its first flush, not at open.
fn stats_figures(stats: &Stats) -> Vec<(&'static str, Value)> {
    vec![
        ("shards", json!(stats.shards)),
        ("keys", json!(stats.keys)),
        ("memtable_keys", json!(stats.memtable_keys)),
        ("index_bytes", json!(stats.index_bytes)),
        ("dirty_bytes", json!(stats.dirty_bytes)),
        ("pages", json!(stats.pages)),
        ("live_bytes", json!(stats.live_bytes)),
        ("data_file_bytes", json!(stats.data_file_bytes)),
        ("space_amplification", json!(round2(stats.space_amplification()))),
        ("recovered_records", json!(stats.recovered_records)),
        ("recovery_us", json!(stats.recovery_us)),
        ("tx_in_doubt_committed", json!(stats.tx_in_doubt_committed)),
        ("tx_in_doubt_aborted", json!(stats.tx_in_doubt_aborted)),
    ]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `name value` lines, or one JSON object.
pub fn write_stats(out: &mut impl Write, stats: &Stats, json: bool) -> io::Result<()> {
    let figures = stats_figures(stats);
    if json {
        let object: Map<String, Value> = figures.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        return writeln!(out, "{}", Value::Object(object));
    }
    for (name, value) in figures {
        writeln!(out, "{name:<22} {value}")?;
    }
    Ok(())
}

/// The check's report: every file verified, every file not verified and why, every
/// finding, and the verdict.
pub fn write_check(out: &mut impl Write, report: &Report, json: bool) -> io::Result<()> {
    if json {
        return writeln!(out, "{}", check_json(report));
    }
    writeln!(out, "verified {} files:", report.verified.len())?;
    for file in &report.verified {
        let records = match file.kind {
            FileKind::LogSegment | FileKind::BlobSegment => format!("{} records", file.records),
            _ => String::new(),
        };
        writeln!(out, "  {:<13} {:>12} bytes {:>14}  {}", file.kind.name(), file.bytes, records, file.path.display())?;
    }
    if !report.not_verified.is_empty() {
        writeln!(out, "not verified {} files:", report.not_verified.len())?;
        for file in &report.not_verified {
            writeln!(out, "  {}: {}", file.path.display(), file.why)?;
        }
    }
    let count = |s: Severity| report.findings.iter().filter(|f| f.severity == s).count();
    if !report.findings.is_empty() {
        writeln!(out, "findings:")?;
        for finding in &report.findings {
            writeln!(out, "  {finding}")?;
        }
    }
    let verdict = if report.is_damaged() { "DAMAGED" } else { "clean" };
    writeln!(
        out,
        "{verdict}: {} damage, {} torn, {} notes",
        count(Severity::Damage),
        count(Severity::Torn),
        count(Severity::Note)
    )
}

fn check_json(report: &Report) -> Value {
    let verified: Vec<Value> = report
        .verified
        .iter()
        .map(|f| json!({ "path": f.path.display().to_string(), "kind": f.kind.name(), "bytes": f.bytes, "records": f.records }))
        .collect();
    let not_verified: Vec<Value> =
        report.not_verified.iter().map(|f| json!({ "path": f.path.display().to_string(), "why": f.why })).collect();
    let findings: Vec<Value> = report
        .findings
        .iter()
        .map(|f| json!({ "severity": f.severity.name(), "file": f.file.display().to_string(), "offset": f.offset, "what": f.what }))
        .collect();
    json!({
        "damaged": report.is_damaged(),
        "verified": verified,
        "not_verified": not_verified,
        "findings": findings,
    })
}
