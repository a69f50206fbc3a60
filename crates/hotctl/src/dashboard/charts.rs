//! Charts as SVG text, drawn on the server by plotters (no script, nothing fetched). Only
//! numbers and times go into a chart; key text stays in the HTML around it, where the
//! template escapes it.

use plotters::prelude::*;

use super::history::Range;

/// A count-over-time chart with axes: the history page.
pub fn series(points: &[(i64, u64)], range: Range) -> String {
    draw(points, range, (1040, 320), true)
}

/// A trend line without axes: one per key on the hot-keys page.
pub fn sparkline(points: &[(i64, u64)], range: Range) -> String {
    draw(points, range, (120, 28), false)
}

fn draw(points: &[(i64, u64)], range: Range, size: (u32, u32), axes: bool) -> String {
    let mut svg = String::new();
    // Drawing into a String fails only on arithmetic plotters cannot lay out (an empty
    // range); the page then shows no chart rather than an error.
    if let Err(e) = plot(&mut svg, points, range, size, axes) {
        tracing::debug!(error = %e, "chart not drawn");
        svg.clear();
    }
    svg
}

fn plot(
    svg: &mut String,
    points: &[(i64, u64)],
    range: Range,
    size: (u32, u32),
    axes: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, size).into_drawing_area();
    let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1);
    let x = range.from_ms..range.to_ms.max(range.from_ms + 1);
    let y = 0u64..max + max / 10 + 1;
    let line = RGBColor(0xd9, 0x48, 0x1c);
    if axes {
        root.fill(&WHITE)?;
        let span = range.to_ms - range.from_ms;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d(x, y)?;
        chart
            .configure_mesh()
            .x_labels(7)
            .y_labels(6)
            .x_label_formatter(&|ms| time_label(*ms, span))
            .light_line_style(RGBColor(0xee, 0xee, 0xee))
            .draw()?;
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            line.stroke_width(2),
        ))?;
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 2, line.filled())))?;
    } else {
        let mut chart = ChartBuilder::on(&root).margin(2).build_cartesian_2d(x, y)?;
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            line.stroke_width(1),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// `HH:MM` (UTC) on a chart of a day or less, `MM-DD HH:MM` on a longer one.
fn time_label(ms: i64, span_ms: i64) -> String {
    let stamp = utc(ms);
    if span_ms <= 24 * 3600 * 1000 {
        stamp[11..16].to_string()
    } else {
        stamp[5..16].replace('T', " ")
    }
}

/// RFC 3339 UTC seconds (`2026-11-30T09:08:26Z`).
pub fn utc(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_an_svg_with_a_polyline() {
        let range = Range {
            from_ms: 0,
            to_ms: 60_000,
        };
        let svg = series(&[(0, 5), (30_000, 9), (60_000, 7)], range);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("<polyline"), "{svg}");
    }

    #[test]
    fn labels_show_the_time_or_also_the_day() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(time_label(3_600_000, 3_600_000), "01:00");
        assert_eq!(time_label(3_600_000, 7 * 86_400_000), "01-01 01:00");
    }
}
