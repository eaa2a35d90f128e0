//! The host side: tables and a plot from `flashopt.csv` (written by `run`) and
//! `reference.csv` (written by scripts/bench_reference.py).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use flashopt::optimizers::AdamW;
use flashopt::{MasterMode, OptimizerSpec, PlanConfig};
use plotters::prelude::*;

use crate::run::CSV_HEADER;
use crate::workloads;

/// Bytes torch's fused fp32 AdamW moves per parameter: reads p, g, m, v; writes p, m, v
/// (half as many with bf16 parameters, gradients and states).
const TORCH_ADAMW_BYTES: f64 = 28.0;

struct Row {
    fields: BTreeMap<String, String>,
}

impl Row {
    fn get(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or("")
    }

    fn num(&self, key: &str) -> Result<f64, String> {
        self.get(key)
            .parse()
            .map_err(|_| format!("column `{key}` is not a number: `{}`", self.get(key)))
    }
}

/// A row's arithmetic; files written before the column hold exact rows only.
fn arithmetic(r: &Row) -> &str {
    match r.get("arithmetic") {
        "" => "exact",
        a => a,
    }
}

/// Rows of a small CSV file (no quoting: the benchmark writes none) and its `# k=v`
/// comment lines.
fn read_csv(path: &Path) -> Result<(Vec<Row>, BTreeMap<String, String>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut notes = BTreeMap::new();
    // (1-based line number, text) of the data lines; `# k=v` lines are notes.
    let mut lines = text.lines().enumerate().filter_map(|(i, l)| {
        if let Some((k, v)) = l.strip_prefix("# ").and_then(|c| c.split_once('=')) {
            notes.insert(k.to_string(), v.to_string());
            None
        } else {
            (!l.trim().is_empty()).then_some((i + 1, l))
        }
    });
    let header: Vec<String> = lines
        .next()
        .ok_or_else(|| format!("{}: empty", path.display()))?
        .1
        .split(',')
        .map(String::from)
        .collect();
    let mut rows = Vec::new();
    for (number, line) in lines {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != header.len() {
            return Err(format!(
                "{} line {}: {} cells, the header has {}",
                path.display(),
                number,
                cells.len(),
                header.len()
            ));
        }
        rows.push(Row {
            fields: header
                .iter()
                .cloned()
                .zip(cells.into_iter().map(String::from))
                .collect(),
        });
    }
    Ok((rows, notes))
}

/// The markdown report of a results directory; with `plot`, also the PNG.
/// `font`: a TrueType file for the plot, or `None` for the DejaVu Sans built in.
pub fn report(dir: &Path, plot: Option<&Path>, font: Option<&Path>) -> Result<String, String> {
    // Every flashopt*.csv of the directory (a run may be split over several commands);
    // flashopt-sweep.csv holds the kernel-shape sweep and feeds only its own table.
    let mut ours = Vec::new();
    let mut sweep_rows = Vec::new();
    let mut notes = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("flashopt") && n.ends_with(".csv"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{}: no flashopt*.csv", dir.display()));
    }
    for file in &files {
        let (rows, n) = read_csv(file)?;
        if file.file_name().is_some_and(|n| n == "flashopt-sweep.csv") {
            sweep_rows.extend(rows);
        } else {
            ours.extend(rows);
            notes.extend(n);
        }
    }
    // Files written before the `arithmetic` column hold exact rows only.
    let required = CSV_HEADER.split(',').filter(|k| *k != "arithmetic");
    if ours
        .first()
        .is_some_and(|r| !required.clone().all(|k| r.fields.contains_key(k)))
    {
        return Err("flashopt.csv: unexpected columns".into());
    }
    let (approximate, mut ours): (Vec<Row>, Vec<Row>) = ours
        .into_iter()
        .partition(|r| arithmetic(r) == "approximate");
    // Rows in the order of `workloads::all()`, each workload's rows as measured.
    let all = workloads::all();
    let names: Vec<&str> = all.iter().map(|w| w.name).collect();
    let workload = |name: &str| all.iter().find(|w| w.name == name).expect("known workload");
    ours.sort_by_key(|r| names.iter().position(|w| *w == r.get("workload")));
    let copy: f64 = notes
        .get("copy_gbps")
        .ok_or("flashopt.csv: no `# copy_gbps=` line")?
        .parse()
        .map_err(|_| "flashopt.csv: bad copy_gbps")?;
    let reference_path = dir.join("reference.csv");
    let (theirs, ref_notes) = if reference_path.exists() {
        read_csv(&reference_path)?
    } else {
        (Vec::new(), BTreeMap::new())
    };
    let default_lanes = flashopt_cubecl::codegen::bindings::KernelShape::default()
        .lanes_per_unit()
        .to_string();
    let mut out = String::new();
    writeln!(out, "Copy ceiling (read + write): {copy:.0} GB/s\n").unwrap();
    writeln!(
        out,
        "| optimizer | master | workload | ms | GB/s (byte model) | % of copy | device B/param |"
    )
    .unwrap();
    writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |").unwrap();
    for r in ours
        .iter()
        .filter(|r| r.get("lanes_per_unit") == default_lanes)
    {
        writeln!(
            out,
            "| {} | {} | {} | {:.3} | {:.0} | {:.1}% | {:.2} |",
            r.get("optimizer"),
            r.get("master"),
            r.get("workload"),
            r.num("ms")?,
            r.num("model_gbps")?,
            r.num("pct_of_copy")?,
            r.num("device_bytes_per_param")?
        )
        .unwrap();
    }

    if !sweep_rows.is_empty() {
        writeln!(out, "\nKernel shape (flashopt-sweep.csv):\n").unwrap();
        writeln!(
            out,
            "| optimizer | master | workload | arithmetic | lanes per unit | ms | % of copy |"
        )
        .unwrap();
        writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |").unwrap();
        let mut sweep: Vec<&Row> = sweep_rows.iter().collect();
        sweep.sort_by_key(|r| {
            (
                r.get("workload").to_string(),
                r.get("optimizer").to_string(),
                r.get("master").to_string(),
                arithmetic(r),
                r.get("lanes_per_unit").parse::<usize>().unwrap_or(0),
            )
        });
        for r in sweep {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.3} | {:.1}% |",
                r.get("optimizer"),
                r.get("master"),
                r.get("workload"),
                arithmetic(r),
                r.get("lanes_per_unit"),
                r.num("ms")?,
                r.num("pct_of_copy")?
            )
            .unwrap();
        }
    }

    // A 24-bit row of the default shape among `rows` (the exact or the approximate ones).
    let ms_in = |rows: &[Row], opt: &str, workload: &str| -> Option<f64> {
        rows.iter()
            .find(|r| {
                r.get("optimizer") == opt
                    && r.get("master") == "24"
                    && r.get("workload") == workload
                    && r.get("lanes_per_unit") == default_lanes
            })
            .and_then(|r| r.num("ms").ok())
    };
    let ours_ms = |opt: &str, workload: &str| ms_in(&ours, opt, workload);
    if !approximate.is_empty() {
        writeln!(
            out,
            "\nOpt-in approximate divisions and square roots (`Arithmetic::Approximate`):\n"
        )
        .unwrap();
        writeln!(
            out,
            "| optimizer | master | workload | lanes per unit | exact ms | approximate ms | % of copy | exact / approximate |"
        )
        .unwrap();
        writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- |").unwrap();
        for r in &approximate {
            let exact = ours.iter().chain(&sweep_rows).find(|e| {
                arithmetic(e) == "exact"
                    && ["optimizer", "master", "workload", "lanes_per_unit"]
                        .iter()
                        .all(|k| e.get(k) == r.get(k))
            });
            let exact_ms = exact.and_then(|e| e.num("ms").ok());
            let ms = r.num("ms")?;
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {ms:.3} | {:.1}% | {} |",
                r.get("optimizer"),
                r.get("master"),
                r.get("workload"),
                r.get("lanes_per_unit"),
                exact_ms.map_or("-".into(), |e| format!("{e:.3}")),
                r.num("pct_of_copy")?,
                exact_ms.map_or("-".into(), |e| format!("{:.2}x", e / ms)),
            )
            .unwrap();
        }
    }

    // An empty `master` matches any (flashoptim's rows are all 24-bit).
    let theirs_ms = |implementation: &str, opt: &str, master: &str, workload: &str| {
        theirs
            .iter()
            .find(|r| {
                r.get("impl") == implementation
                    && r.get("optimizer") == opt
                    && r.get("workload") == workload
                    && (master.is_empty() || r.get("master") == master)
            })
            .and_then(|r| r.num("ms").ok())
    };
    if !theirs.is_empty() {
        if let Some(v) = ref_notes.get("versions") {
            writeln!(out, "\nReference versions: {v}").unwrap();
        }
        writeln!(out, "\n| optimizer | workload | flashopt ms | flashoptim ms | flashoptim / flashopt | torch fp32 fused ms | torch fp32 / flashopt | torch bf16 fused ms | torch bf16 / flashopt |").unwrap();
        writeln!(
            out,
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        )
        .unwrap();
        for opt in ["AdamW", "Lion", "SGD"] {
            for w in &names {
                let Some(a) = ours_ms(opt, w) else { continue };
                let b = theirs_ms("flashoptim", opt, "", w);
                let c = theirs_ms("torch", opt, "fp32", w);
                let d = theirs_ms("torch", opt, "bf16", w);
                let cell = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.3}"));
                let ratio = |x: Option<f64>| x.map_or("-".into(), |x| format!("{:.2}x", x / a));
                writeln!(
                    out,
                    "| {opt}-24 | {w} | {a:.3} | {} | {} | {} | {} | {} | {} |",
                    cell(b),
                    ratio(b),
                    cell(c),
                    ratio(c),
                    cell(d),
                    ratio(d)
                )
                .unwrap();
            }
        }
    }
    if let Some(plot) = plot {
        let plan = AdamW::plan(PlanConfig::bf16(MasterMode::Int8)).map_err(|e| e.to_string())?;
        let model_gbps = |ms: f64, name: &str| -> f64 {
            let bytes: u64 = workload(name)
                .tensors
                .iter()
                .map(|&shape| plan.bytes_for(shape))
                .map(|(r, w)| r + w)
                .sum();
            bytes as f64 / (ms * 1e-3) / 1e9
        };
        let mut series: Vec<(&str, RGBColor, Vec<Option<f64>>)> = vec![(
            "flashopt AdamW-24 (one launch)",
            RGBColor(31, 119, 180),
            names
                .iter()
                .map(|w| ours_ms("AdamW", w).map(|ms| model_gbps(ms, w)))
                .collect(),
        )];
        let approximate_gbps: Vec<Option<f64>> = names
            .iter()
            .map(|w| ms_in(&approximate, "AdamW", w).map(|ms| model_gbps(ms, w)))
            .collect();
        if approximate_gbps.iter().any(Option::is_some) {
            series.push((
                "flashopt AdamW-24, opt-in approximate / and sqrt",
                RGBColor(23, 190, 207),
                approximate_gbps,
            ));
        }
        if !theirs.is_empty() {
            series.push((
                "flashoptim 0.1.4 FlashAdamW-24",
                RGBColor(255, 127, 14),
                names
                    .iter()
                    .map(|w| theirs_ms("flashoptim", "AdamW", "", w).map(|ms| model_gbps(ms, w)))
                    .collect(),
            ));
            for (label, color, master, bytes) in [
                (
                    "torch AdamW fp32 fused (28 B/param)",
                    RGBColor(44, 160, 44),
                    "fp32",
                    TORCH_ADAMW_BYTES,
                ),
                (
                    "torch AdamW bf16 fused (14 B/param)",
                    RGBColor(148, 103, 189),
                    "bf16",
                    TORCH_ADAMW_BYTES / 2.0,
                ),
            ] {
                let values: Vec<Option<f64>> = names
                    .iter()
                    .map(|w| {
                        let params = workload(w).params();
                        theirs_ms("torch", "AdamW", master, w)
                            .map(|ms| bytes * params as f64 / (ms * 1e-3) / 1e9)
                    })
                    .collect();
                if values.iter().any(Option::is_some) {
                    series.push((label, color, values));
                }
            }
        }
        // The device as the reference run named it (`versions=... / NVIDIA H200`).
        let device = ref_notes
            .get("versions")
            .and_then(|v| v.rsplit(" / ").next())
            .unwrap_or("CUDA GPU");
        draw(plot, font, device, &names, &series, copy)?;
    }
    Ok(out)
}

fn draw(
    path: &Path,
    font: Option<&Path>,
    device: &str,
    names: &[&str],
    series: &[(&str, RGBColor, Vec<Option<f64>>)],
    copy: f64,
) -> Result<(), String> {
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
    let error = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let root = BitMapBackend::new(path, (1200, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(&e))?;
    let n = names.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Optimizer step, effective GB/s ({device})"),
            ("sans-serif", 26),
        )
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..n - 0.5, 0f64..copy * 1.1)
        .map_err(|e| error(&e))?;
    let labels: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(names.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_desc("GB/s (each implementation's own bytes per step)")
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(|e| error(&e))?;
    let width = 0.8 / series.len() as f64;
    for (k, (label, color, values)) in series.iter().enumerate() {
        let color = *color;
        chart
            .draw_series(values.iter().enumerate().filter_map(|(i, v)| {
                v.map(|v| {
                    let x0 = i as f64 - 0.4 + k as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], color.filled())
                })
            }))
            .map_err(|e| error(&e))?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    chart
        .draw_series(LineSeries::new(
            [(-0.5, copy), (n - 0.5, copy)],
            BLACK.stroke_width(2),
        ))
        .map_err(|e| error(&e))?
        .label(format!("device-to-device copy, {copy:.0} GB/s"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], BLACK.stroke_width(2)));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("flashopt-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
        dir
    }

    #[test]
    fn ratios_compare_step_times_of_the_same_workload() {
        let ours = format!(
            "# copy_gbps=3000.0\n{CSV_HEADER}\n\
             AdamW,24,268M,268435456,1,4,2.0000,1000.0,33.33,7.250,exact\n\
             AdamW,24,GPT-2 124M,124439808,148,4,1.0000,1000.0,33.33,7.250,exact\n"
        );
        let theirs = "# versions=test\nimpl,optimizer,master,workload,params,ms\n\
             flashoptim,AdamW,24,268M,268435456,3.0000\n\
             torch,AdamW,fp32,GPT-2 124M,124439808,1.5000\n\
             torch,AdamW,bf16,GPT-2 124M,124439808,0.5000\n";
        let dir = scratch(
            "ratios",
            &[("flashopt.csv", &ours), ("reference.csv", theirs)],
        );
        let plot = dir.join("gbps.png");
        let text = report(&dir, Some(&plot), None).unwrap();
        // Drawn in the built-in font, whatever fonts this machine has.
        let png = std::fs::read(&plot).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{}",
            png.len()
        );
        assert!(
            text.contains("| AdamW-24 | 268M | 2.000 | 3.000 | 1.50x | - | - | - | - |"),
            "{text}"
        );
        assert!(
            text.contains(
                "| AdamW-24 | GPT-2 124M | 1.000 | - | - | 1.500 | 1.50x | 0.500 | 0.50x |"
            ),
            "{text}"
        );
        assert!(text.contains("Copy ceiling (read + write): 3000 GB/s"));
    }

    #[test]
    fn approximate_rows_get_their_own_table_beside_the_exact_ones() {
        // The first file predates the `arithmetic` column: its rows are exact.
        let old_header = CSV_HEADER.trim_end_matches(",arithmetic");
        let exact = format!(
            "# copy_gbps=3000.0\n{old_header}\n\
             AdamW,24,268M,268435456,1,4,2.0000,1000.0,33.33,7.250\n"
        );
        let approximate = format!(
            "# copy_gbps=3000.0\n{CSV_HEADER}\n\
             AdamW,24,268M,268435456,1,4,1.0000,2000.0,66.67,7.250,approximate\n"
        );
        let dir = scratch(
            "approximate",
            &[
                ("flashopt.csv", &exact),
                ("flashopt-approximate.csv", &approximate),
            ],
        );
        let text = report(&dir, None, None).unwrap();
        assert!(
            text.contains("| AdamW | 24 | 268M | 4 | 2.000 | 1.000 | 66.7% | 2.00x |"),
            "{text}"
        );
        // The main table keeps the exact row alone.
        assert!(text.contains("| AdamW | 24 | 268M | 2.000 |"), "{text}");
        assert!(!text.contains("| AdamW | 24 | 268M | 1.000 |"), "{text}");
    }

    #[test]
    fn a_short_row_names_its_file_and_line() {
        let ours = format!("# copy_gbps=3000.0\n{CSV_HEADER}\nAdamW,24,268M\n");
        let dir = scratch("short", &[("flashopt.csv", &ours)]);
        let err = report(&dir, None, None).unwrap_err();
        assert!(
            err.contains("flashopt.csv line 3: 3 cells, the header has 11"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_copy_ceiling_is_an_error() {
        let ours = format!("{CSV_HEADER}\n");
        let dir = scratch("nocopy", &[("flashopt.csv", &ours)]);
        let err = report(&dir, None, None).unwrap_err();
        assert!(err.contains("copy_gbps"), "{err}");
    }
}
