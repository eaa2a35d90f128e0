//! The loss curves of every `loss-*.csv` in a folder, as one PNG: training loss
//! (thin, averaged over 20 steps) and validation loss (thick, with points).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

struct Curve {
    label: String,
    train: Vec<(f64, f64)>,
    valid: Vec<(f64, f64)>,
}

fn read(path: &Path) -> Result<Vec<(f64, f64, Option<f64>)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let num = |s: &str| {
                s.parse::<f64>()
                    .map_err(|e| format!("{}: `{line}`: {e}", path.display()))
            };
            if f.len() != 5 {
                return Err(format!("{}: `{line}`: expected 5 fields", path.display()));
            }
            let valid = if f[3].is_empty() {
                None
            } else {
                Some(num(f[3])?)
            };
            Ok((num(f[0])?, num(f[2])?, valid))
        })
        .collect()
}

fn curves(dir: &Path) -> Result<Vec<Curve>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("loss-") && n.ends_with(".csv"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no loss-*.csv in {}", dir.display()));
    }
    files
        .iter()
        .map(|path| {
            let rows = read(path)?;
            let label = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("run")
                .trim_start_matches("loss-")
                .to_string();
            let window = 20;
            let train = rows
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let from = i.saturating_sub(window - 1);
                    let mean =
                        rows[from..=i].iter().map(|r| r.1).sum::<f64>() / (i + 1 - from) as f64;
                    (r.0, mean)
                })
                .collect();
            let valid = rows.iter().filter_map(|r| r.2.map(|v| (r.0, v))).collect();
            Ok(Curve {
                label,
                train,
                valid,
            })
        })
        .collect()
}

/// Draw `dir`'s curves into `out`, in the TrueType `font` if given, else in the
/// DejaVu Sans built into the binary.
pub fn render(dir: &Path, out: &Path, font: Option<&Path>) -> Result<(), String> {
    let curves = curves(dir)?;
    let bytes: &'static [u8] = match font {
        Some(font) => {
            let bytes = std::fs::read(font)
                .map_err(|e| format!("font {}: {e} (pass --font FILE.ttf)", font.display()))?;
            Box::leak(bytes.into_boxed_slice())
        }
        None => dejavu::sans::regular(),
    };
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| "the font is not a TrueType font".to_string())?;
    let error = |e: &dyn std::fmt::Display| format!("plot {}: {e}", out.display());
    let last = curves
        .iter()
        .flat_map(|c| c.train.last().map(|p| p.0))
        .fold(1.0, f64::max);
    let all = || curves.iter().flat_map(|c| c.train.iter().chain(&c.valid));
    let lo = all().map(|p| p.1).fold(f64::INFINITY, f64::min);
    // The first steps sit near ln 256 = 5.5; the axis stops a little above the worst
    // validation loss so that the end of training is readable, and what lies above
    // it is left out rather than drawn along the edge.
    let hi = curves
        .iter()
        .flat_map(|c| c.valid.iter().map(|p| p.1))
        .fold(f64::NEG_INFINITY, f64::max)
        .max(lo)
        * 1.1;
    let below = |p: &&(f64, f64)| p.1 <= hi;
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
        .build_cartesian_2d(0f64..last, (lo * 0.95)..hi)
        .map_err(|e| error(&e))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(|e| error(&e))?;
    let colors = [
        RGBColor(200, 60, 40),
        RGBColor(40, 90, 200),
        RGBColor(40, 150, 70),
    ];
    for (c, color) in curves.iter().zip(colors.iter().cycle()) {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                c.train.iter().filter(below).copied(),
                color.mix(0.5),
            ))
            .map_err(|e| error(&e))?
            .label(format!("{} train (20-step mean)", c.label))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], color.mix(0.5)));
        chart
            .draw_series(LineSeries::new(
                c.valid.iter().filter(below).copied(),
                color.stroke_width(3),
            ))
            .map_err(|e| error(&e))?
            .label(format!("{} validation", c.label))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], color.stroke_width(3)));
        chart
            .draw_series(
                c.valid
                    .iter()
                    .filter(below)
                    .map(|&p| Circle::new(p, 4, color.filled())),
            )
            .map_err(|e| error(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(|e| error(&e))?;
    root.present().map_err(|e| error(&e))?;
    Ok(())
}
