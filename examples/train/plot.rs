//! Plots of a folder of runs: the loss curves, training loss (thin, averaged over 20
//! steps) and validation loss (thick, with points), and a bar chart of memory.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::runs::RunResult;

const COLORS: [RGBColor; 6] = [
    RGBColor(200, 60, 40),
    RGBColor(40, 90, 200),
    RGBColor(40, 150, 70),
    RGBColor(150, 90, 170),
    RGBColor(230, 150, 30),
    RGBColor(90, 90, 90),
];

struct Curve {
    label: String,
    train: Vec<(f64, f64)>,
    valid: Vec<(f64, f64)>,
}

/// Each run's training loss (averaged over the last 20 steps) and validation loss.
fn curves(runs: &[RunResult]) -> Vec<Curve> {
    runs.iter()
        .map(|run| {
            let rows = &run.rows;
            let window = 20;
            let train = rows
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let from = i.saturating_sub(window - 1);
                    let sum: f64 = rows[from..=i].iter().map(|r| f64::from(r.train)).sum();
                    (r.step as f64, sum / (i + 1 - from) as f64)
                })
                .collect();
            let valid = rows
                .iter()
                .filter_map(|r| r.valid.map(|v| (r.step as f64, f64::from(v))))
                .collect();
            Curve {
                label: run.label.clone(),
                train,
                valid,
            }
        })
        .collect()
}

/// Register `font` (a TrueType file), or the DejaVu Sans built into the binary, as
/// the plots' sans-serif, once.
fn register_font(font: Option<&Path>) -> Result<(), String> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes: &'static [u8] = match font {
                Some(font) => {
                    let bytes = std::fs::read(font).map_err(|e| {
                        format!("font {}: {e} (pass --font FILE.ttf)", font.display())
                    })?;
                    Box::leak(bytes.into_boxed_slice())
                }
                None => dejavu::sans::regular(),
            };
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| "the font is not a TrueType font".to_string())
        })
        .clone()
}

/// Draw the runs' loss curves into `out`, in the TrueType `font` if given, else in the
/// DejaVu Sans built into the binary. The loss axis holds every
/// point (the first steps near ln 256 = 5.5, spikes, the end of training); runs that
/// end alike stay visible: every other run's validation curve is dashed, and each
/// run's points have their own marker.
pub fn render(runs: &[RunResult], out: &Path, font: Option<&Path>) -> Result<(), String> {
    let curves = curves(runs);
    register_font(font)?;
    let error = |e: &dyn std::fmt::Display| format!("plot {}: {e}", out.display());
    let last = curves
        .iter()
        .flat_map(|c| c.train.last().map(|p| p.0))
        .fold(1.0, f64::max);
    let all = || curves.iter().flat_map(|c| c.train.iter().chain(&c.valid));
    let finite = |p: &&(f64, f64)| p.1.is_finite();
    let lo = all()
        .filter(finite)
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min);
    let hi = all()
        .filter(finite)
        .map(|p| p.1)
        .fold(f64::NEG_INFINITY, f64::max);
    if !(lo.is_finite() && hi.is_finite()) {
        return Err("no finite loss to plot".into());
    }
    let root = BitMapBackend::new(out, (1100, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "GPT on the KJV Pentateuch: loss (nats per byte)",
            ("sans-serif", 24),
        )
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..last, (lo - 0.05 * (hi - lo))..(hi + 0.05 * (hi - lo)))
        .map_err(|e| error(&e))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        // Steps are whole numbers: a fractional tick label is dropped.
        .x_label_formatter(&|x| match x.fract() == 0.0 {
            true => format!("{x:.0}"),
            false => String::new(),
        })
        .y_label_formatter(&|y| format!("{y:.2}"))
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(|e| error(&e))?;
    for (i, (c, color)) in curves.iter().zip(COLORS.iter().cycle()).enumerate() {
        let color = *color;
        let train = c.train.iter().filter(finite).copied();
        let valid = || c.valid.iter().filter(finite).copied();
        chart
            .draw_series(LineSeries::new(train, color.mix(0.5)))
            .map_err(|e| error(&e))?
            .label(format!("{} train (20-step mean)", c.label))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], color.mix(0.5)));
        let thick = color.stroke_width(3);
        let legend = chart
            .draw_series(DashedLineSeries::new(
                valid(),
                if i % 2 == 0 { 1000 } else { 10 },
                if i % 2 == 0 { 0 } else { 6 },
                thick,
            ))
            .map_err(|e| error(&e))?;
        legend
            .label(format!("{} validation", c.label))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], thick));
        let marker = |p: (f64, f64)| -> DynElement<'static, BitMapBackend<'_>, (f64, f64)> {
            match i % 3 {
                0 => Circle::new(p, 5, color.filled()).into_dyn(),
                1 => TriangleMarker::new(p, 7, color.filled()).into_dyn(),
                _ => Cross::new(p, 6, color.stroke_width(2)).into_dyn(),
            }
        };
        chart
            .draw_series(valid().map(marker))
            .map_err(|e| error(&e))?;
    }
    finish(chart, &root, out)
}

/// A bar chart of each run's memory in GB: what its optimizer holds, and the peaks of
/// the three views (cubecl in use, cubecl reserved, the driver's).
pub fn render_memory(runs: &[RunResult], out: &Path, font: Option<&Path>) -> Result<(), String> {
    let runs: Vec<&RunResult> = runs.iter().filter(|r| r.peak.is_some()).collect();
    if runs.is_empty() {
        return Err("no run measured device memory".into());
    }
    register_font(font)?;
    let gb = |b: Option<u64>| b.map_or(0.0, |b| b as f64 / 1e9);
    let bars: Vec<[f64; 4]> = runs
        .iter()
        .map(|r| {
            let p = r.peak.expect("filtered");
            [
                gb(r.optimizer_bytes),
                gb(Some(p.in_use)),
                gb(Some(p.reserved)),
                gb(Some(p.driver)),
            ]
        })
        .collect();
    let names = [
        "optimizer (params, grads, states)",
        "peak in use (cubecl)",
        "peak reserved (cubecl)",
        "peak on the device (driver)",
    ];
    let top = bars.iter().flatten().fold(0.0f64, |a, &b| a.max(b)) * 1.15;
    let error = |e: &dyn std::fmt::Display| format!("plot {}: {e}", out.display());
    let root = BitMapBackend::new(out, (1100, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(&e))?;
    let n = runs.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Device memory per run, {} parameters (GB)", runs[0].params),
            ("sans-serif", 24),
        )
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, 0f64..top)
        .map_err(|e| error(&e))?;
    let labels: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            match (x - x.floor() - 0.5).abs() < 1e-6 && i < n {
                true => labels[i].clone(),
                false => String::new(),
            }
        })
        .y_desc("GB")
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(|e| error(&e))?;
    let width = 0.8 / names.len() as f64;
    for (k, (name, color)) in names.iter().zip(COLORS).enumerate() {
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                let x = i as f64 + 0.1 + k as f64 * width;
                Rectangle::new([(x, 0.0), (x + width * 0.9, b[k])], color.filled())
            }))
            .map_err(|e| error(&e))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    finish(chart, &root, out)
}

/// The legend in the upper right, then the file written.
fn finish<'a, 'b: 'a, X: Ranged, Y: Ranged>(
    mut chart: ChartContext<'a, BitMapBackend<'b>, Cartesian2d<X, Y>>,
    root: &DrawingArea<BitMapBackend<'b>, Shift>,
    out: &Path,
) -> Result<(), String> {
    let error = |e: &dyn std::fmt::Display| format!("plot {}: {e}", out.display());
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(|e| error(&e))?;
    root.present().map_err(|e| error(&e))
}
