//! `--plot FILE.svg`: latency by percentile for each operation, and throughput over time.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::workload::BoxError;

/// One line of the latency chart: a label and a histogram in nanoseconds.
pub struct LatencySeries<'a> {
    pub label: String,
    pub histogram: &'a Histogram<u64>,
}

/// One line of the throughput chart: a label and (seconds, ops/s) points.
pub struct ThroughputSeries<'a> {
    pub label: String,
    pub points: &'a [(f64, f64)],
}

/// Percentile axis position: the number of nines, -log10(1 - q).
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-12).log10()
}

fn percentile_label(x: &f64) -> String {
    let q = 100.0 * (1.0 - 10f64.powf(-x));
    if *x < 0.5 {
        format!("{q:.0}%")
    } else {
        let digits = (x.round() as usize).saturating_sub(2);
        format!("{q:.digits$}%")
    }
}

/// Writes the SVG: latency percentiles on top (log latency over the number of nines, as
/// HdrHistogram's plotter draws them), throughput over time below.
pub fn write_svg(
    path: &Path,
    title: &str,
    latency: &[LatencySeries<'_>],
    throughput: &[ThroughputSeries<'_>],
) -> Result<(), BoxError> {
    let root = SVGBackend::new(path, (1000, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (top, bottom) = root.split_vertically(540);

    // Latency by percentile.
    let max_nines =
        latency.iter().map(|s| (s.histogram.len().max(10) as f64).log10().min(5.0)).fold(2.0f64, f64::max).ceil();
    let mut lines = Vec::new();
    let (mut lo, mut hi) = (f64::MAX, 0.0f64);
    for s in latency {
        if s.histogram.is_empty() {
            continue;
        }
        let steps = (max_nines * 40.0) as usize;
        let points: Vec<(f64, f64)> = (0..=steps)
            .map(|i| {
                let q = 1.0 - 10f64.powf(-max_nines * i as f64 / steps as f64);
                let v = if i == steps { s.histogram.max() } else { s.histogram.value_at_quantile(q) };
                (nines(q), (v as f64 / 1000.0).max(0.001))
            })
            .collect();
        for p in &points {
            lo = lo.min(p.1);
            hi = hi.max(p.1);
        }
        lines.push((s.label.clone(), points));
    }
    if lines.is_empty() {
        (lo, hi) = (1.0, 10.0);
    }
    let mut chart = ChartBuilder::on(&top)
        .caption("client-side latency by percentile", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..max_nines, (lo * 0.8..hi * 1.25).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_labels(max_nines as usize + 1)
        .x_label_formatter(&percentile_label)
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()?;
    for (i, (label, points)) in lines.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    // Throughput over time.
    let t_max = throughput.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(1.0f64, f64::max);
    let y_max = throughput.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("throughput over time", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the phase start")
        .y_desc("ops/s")
        .y_label_formatter(&|v| if *v >= 1e6 { format!("{:.2}M", v / 1e6) } else { format!("{:.0}k", v / 1e3) })
        .draw()?;
    for (i, s) in throughput.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut points = vec![(0.0, s.points.first().map_or(0.0, |p| p.1))];
        points.extend_from_slice(s.points);
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels() {
        assert_eq!(percentile_label(&0.0), "0%");
        assert_eq!(percentile_label(&1.0), "90%");
        assert_eq!(percentile_label(&2.0), "99%");
        assert_eq!(percentile_label(&3.0), "99.9%");
        assert_eq!(percentile_label(&4.0), "99.99%");
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
    }
}
