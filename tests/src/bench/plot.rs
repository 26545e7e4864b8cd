//! PNG charts for docs/benchmarks.md (plotters, DejaVu Sans from the system for text).

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

static FONT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Registers a system TrueType font for labels; false when none is installed (charts are then
/// drawn without text).
fn font() -> bool {
    *FONT.get_or_init(|| {
        let candidates = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
        ];
        for path in candidates {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// One line of a chart.
pub struct Series {
    /// Legend.
    pub name: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
}

/// A line chart of `series` into `out` (800×480 PNG).
pub fn lines(out: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> anyhow::Result<()> {
    let text = font();
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.1).max(1e-3);
    let root = BitMapBackend::new(out, (800, 480)).into_drawing_area();
    root.fill(&WHITE).context("chart background")?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(16).x_label_area_size(40).y_label_area_size(60);
    if text {
        builder.caption(title, ("sans-serif", 22));
    }
    let mut chart = builder
        .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - pad).max(0.0)..y1 + pad)
        .context("chart axes")?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc(x_label).y_desc(y_label);
    } else {
        mesh.disable_x_mesh().disable_y_mesh();
    }
    mesh.draw().context("chart mesh")?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let drawn = chart
            .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
            .context("chart series")?;
        if text {
            drawn
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        chart
            .draw_series(s.points.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .context("chart points")?;
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .context("chart legend")?;
    }
    root.present().context("writing the chart")?;
    Ok(())
}
