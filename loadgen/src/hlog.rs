//! `--hlog FILE`: HdrHistogram interval logs (the format of Java's `HistogramLogWriter`,
//! readable by HistogramLogAnalyzer and `HistogramLogProcessor`).

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};

use crate::workload::{BoxError, IntervalHistogram};

/// One phase's intervals, and when the phase started.
pub struct PhaseLog<'a> {
    pub name: &'a str,
    pub started: SystemTime,
    /// Offset of the phase's start from the log's base time.
    pub offset: Duration,
    pub intervals: &'a [IntervalHistogram],
}

/// Writes every interval histogram (values in nanoseconds), tagged `<phase>/<op>`, with
/// timestamps in seconds since the first phase's start (the log's BaseTime).
pub fn write(path: &Path, phases: &[PhaseLog<'_>]) -> Result<(), BoxError> {
    let file = std::fs::File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let base = phases.first().map_or_else(SystemTime::now, |p| p.started);
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment(&format!("ringdb loadgen {}: client-side latency in nanoseconds", env!("CARGO_PKG_VERSION")))
            .add_comment("tags are <phase>/<operation>; MaxValueDivisor 1e6 shows max in milliseconds")
            .with_start_time(base)
            .with_base_time(base)
            .with_max_value_divisor(1_000_000.0)
            .begin_log_with(&mut out, &mut serializer)?;
        for phase in phases {
            for iv in phase.intervals {
                let tag = format!("{}/{}", phase.name, iv.op.name());
                log.write_histogram(&iv.histogram, phase.offset + iv.start, iv.length, Tag::new(&tag))
                    .map_err(|e| format!("write {}: {e}", path.display()))?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Op, new_histogram};
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    #[test]
    fn the_log_reads_back() {
        let mut h = new_histogram();
        for v in [1_000, 2_000, 3_000] {
            h.record(v).expect("in range");
        }
        let intervals = vec![
            IntervalHistogram {
                start: Duration::ZERO,
                length: Duration::from_secs(1),
                op: Op::Read,
                histogram: h.clone(),
            },
            IntervalHistogram {
                start: Duration::from_secs(1),
                length: Duration::from_secs(1),
                op: Op::Update,
                histogram: h,
            },
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.hlog");
        let phase =
            PhaseLog { name: "ycsb-a", started: SystemTime::now(), offset: Duration::ZERO, intervals: &intervals };
        write(&path, &[phase]).expect("written");
        let bytes = std::fs::read(&path).expect("read");
        let mut tags = Vec::new();
        for entry in IntervalLogIterator::new(&bytes) {
            if let LogEntry::Interval(iv) = entry.expect("parses") {
                let mut raw = base64_decode(iv.encoded_histogram());
                let h: hdrhistogram::Histogram<u64> =
                    Deserializer::new().deserialize(&mut raw.as_slice()).expect("histogram decodes");
                assert_eq!(h.len(), 3);
                tags.push((iv.tag().map(|t| t.as_str().to_string()), iv.start_timestamp().as_secs()));
                raw.clear();
            }
        }
        assert_eq!(tags, [(Some("ycsb-a/read".to_string()), 0), (Some("ycsb-a/update".to_string()), 1)]);
    }

    /// Standard base64 (the interval log's encoding of each histogram).
    fn base64_decode(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        };
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in s.bytes().filter(|&c| c != b'=') {
            acc = (acc << 6) | u32::from(val(c));
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }
}
