//! A run's results on disk and the summary of a folder of runs. Each run writes its
//! loss curve (`loss-LABEL.csv`) and its figures (`run-LABEL.txt`), so runs made by
//! separate processes (one per optimizer, for clean memory figures) are summarized
//! together: `summary.md`, `memory.csv` and the plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Device memory at one moment, three views.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// cubecl's bytes in use (live tensors and buffers).
    pub in_use: u64,
    /// cubecl's bytes reserved (its pools, in use or free).
    pub reserved: u64,
    /// The driver's total minus free: everything on the device (the CUDA context
    /// included).
    pub driver: u64,
}

impl Memory {
    pub fn max(self, other: Memory) -> Memory {
        Memory {
            in_use: self.in_use.max(other.in_use),
            reserved: self.reserved.max(other.reserved),
            driver: self.driver.max(other.driver),
        }
    }
}

/// One row of a loss curve.
pub struct Row {
    pub step: usize,
    pub lr: f64,
    pub train: f32,
    pub valid: Option<f32>,
    pub ms: f64,
}

pub struct RunResult {
    pub label: String,
    /// The configuration, in words (written in the summary's first line).
    pub setup: String,
    pub rows: Vec<Row>,
    pub params: usize,
    /// What the optimizer holds on the device: parameters, gradients, states.
    pub optimizer_bytes: Option<u64>,
    /// Each view's largest sample, after the forward pass, after the backward pass
    /// and after the step.
    pub peak: Option<Memory>,
    /// The most bytes in use right after a step (no activations alive).
    pub resident_bytes: Option<u64>,
    pub skipped: usize,
    pub seconds: f64,
}

impl RunResult {
    pub fn final_valid(&self) -> f32 {
        self.rows
            .iter()
            .rev()
            .find_map(|r| r.valid)
            .expect("the last step is evaluated")
    }

    /// The warm-up's length, from the setup's words.
    fn warmup(&self) -> usize {
        self.setup
            .split("warm-up ")
            .nth(1)
            .and_then(|rest| rest.split([',', ';']).next()?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The largest ratio of this run's training loss to `base`'s at the same step
    /// after the warm-up, and that step: a spike shows here even when the run
    /// recovers by its end.
    pub fn worst_train_ratio(&self, base: &RunResult) -> (f32, usize) {
        let warmup = self.warmup();
        self.rows
            .iter()
            .zip(&base.rows)
            .filter(|(r, _)| r.step > warmup)
            .map(|(r, b)| (r.train / b.train, r.step))
            .fold((0.0, 0), |worst, x| if x.0 > worst.0 { x } else { worst })
    }

    /// Mean training loss over the last 10% of steps.
    pub fn final_train(&self) -> f32 {
        let tail = (self.rows.len() / 10).max(1);
        let rows = &self.rows[self.rows.len() - tail..];
        rows.iter().map(|r| r.train).sum::<f32>() / rows.len() as f32
    }

    fn median_ms(&self) -> f64 {
        let mut ms: Vec<f64> = self.rows.iter().map(|r| r.ms).collect();
        ms.sort_by(f64::total_cmp);
        ms[ms.len() / 2]
    }

    /// The peaks in use, reserved and on the device, as bytes or empty.
    fn peak_fields(&self) -> [String; 3] {
        let p = self.peak;
        [
            field(p.map(|m| m.in_use)),
            field(p.map(|m| m.reserved)),
            field(p.map(|m| m.driver)),
        ]
    }

    /// `loss-LABEL.csv` and `run-LABEL.txt` in `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let mut csv = String::from("step,lr,train_loss,valid_loss,ms\n");
        for r in &self.rows {
            let valid = r.valid.map(|v| v.to_string()).unwrap_or_default();
            writeln!(csv, "{},{},{},{valid},{:.3}", r.step, r.lr, r.train, r.ms).unwrap();
        }
        let path = dir.join(format!("loss-{}.csv", self.label));
        std::fs::write(&path, csv)?;
        let [in_use, reserved, driver] = self.peak_fields();
        let figures = format!(
            "setup={}\nparams={}\noptimizer_bytes={}\npeak_in_use={in_use}\npeak_reserved={reserved}\npeak_driver={driver}\nresident_bytes={}\nskipped={}\nseconds={}\n",
            self.setup,
            self.params,
            field(self.optimizer_bytes),
            field(self.resident_bytes),
            self.skipped,
            self.seconds
        );
        std::fs::write(dir.join(format!("run-{}.txt", self.label)), figures)?;
        Ok(path)
    }

    /// The run `label` as [`Self::write`] left it in `dir`.
    pub fn read(dir: &Path, label: &str) -> Result<RunResult, String> {
        let path = dir.join(format!("run-{label}.txt"));
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .ok_or_else(|| format!("{}: no `{key}`", path.display()))
        };
        let number = |key: &str| -> Result<Option<u64>, String> {
            let v = get(key)?;
            match v.is_empty() {
                true => Ok(None),
                false => v
                    .parse()
                    .map(Some)
                    .map_err(|e| format!("{}: `{key}`: {e}", path.display())),
            }
        };
        let peak = match (
            number("peak_in_use")?,
            number("peak_reserved")?,
            number("peak_driver")?,
        ) {
            (Some(in_use), Some(reserved), Some(driver)) => Some(Memory {
                in_use,
                reserved,
                driver,
            }),
            _ => None,
        };
        Ok(RunResult {
            label: label.to_string(),
            setup: get("setup")?.to_string(),
            rows: read_rows(&dir.join(format!("loss-{label}.csv")))?,
            params: number("params")?.unwrap_or(0) as usize,
            optimizer_bytes: number("optimizer_bytes")?,
            peak,
            resident_bytes: number("resident_bytes")?,
            skipped: number("skipped")?.unwrap_or(0) as usize,
            seconds: get("seconds")?
                .parse()
                .map_err(|e| format!("{}: `seconds`: {e}", path.display()))?,
        })
    }
}

fn read_rows(path: &Path) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .skip(1)
        .map(|line| {
            let bad = |e: &dyn std::fmt::Display| format!("{}: `{line}`: {e}", path.display());
            let f: Vec<&str> = line.split(',').collect();
            if f.len() != 5 {
                return Err(bad(&"expected 5 fields"));
            }
            Ok(Row {
                step: f[0].parse().map_err(|e| bad(&e))?,
                lr: f[1].parse().map_err(|e| bad(&e))?,
                train: f[2].parse().map_err(|e| bad(&e))?,
                valid: match f[3] {
                    "" => None,
                    v => Some(v.parse().map_err(|e| bad(&e))?),
                },
                ms: f[4].parse().map_err(|e| bad(&e))?,
            })
        })
        .collect()
}

/// Every run in `dir`, in the order of `labels` where they are there, then the rest
/// by name.
pub fn read_all(dir: &Path, labels: &[&str]) -> Result<Vec<RunResult>, String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| Some(n.strip_prefix("run-")?.strip_suffix(".txt")?.to_string()))
        .collect();
    found.sort_by_key(|l| {
        (
            labels.iter().position(|k| k == l).unwrap_or(labels.len()),
            l.clone(),
        )
    });
    found.iter().map(|l| RunResult::read(dir, l)).collect()
}

/// A byte count as written in run files and CSVs: empty when not measured.
fn field(v: Option<u64>) -> String {
    v.map(|b| b.to_string()).unwrap_or_default()
}

fn bytes(b: Option<u64>) -> String {
    b.map_or("n/a".into(), |b| format!("{:.3} GB", b as f64 / 1e9))
}

/// The summary table of `runs`, and each run's final validation loss and peak
/// against `baseline`'s (by label) where that run is there.
pub fn summary(backend: &str, runs: &[RunResult], baseline: &str) -> String {
    let mut s = String::new();
    writeln!(s, "backend {backend}; {}", runs[0].setup).unwrap();
    for r in runs.iter().filter(|r| r.setup != runs[0].setup) {
        writeln!(s, "\n{} differs: {}", r.label, r.setup).unwrap();
    }
    writeln!(s).unwrap();
    writeln!(
        s,
        "| run | final valid loss | train loss, last 10% | skipped steps | optimizer bytes (params, grads, states) | per parameter | in use after a step (max) | peak in use (sampled) | peak reserved by cubecl | peak on the device (driver) | median ms/step | wall s |"
    )
    .unwrap();
    writeln!(s, "|{}", " --- |".repeat(12)).unwrap();
    for r in runs {
        let per = r.optimizer_bytes.map_or("n/a".into(), |b| {
            format!("{:.2}", b as f64 / r.params as f64)
        });
        writeln!(
            s,
            "| {} | {:.4} | {:.4} | {} | {} | {per} | {} | {} | {} | {} | {:.1} | {:.1} |",
            r.label,
            r.final_valid(),
            r.final_train(),
            r.skipped,
            bytes(r.optimizer_bytes),
            bytes(r.resident_bytes),
            bytes(r.peak.map(|m| m.in_use)),
            bytes(r.peak.map(|m| m.reserved)),
            bytes(r.peak.map(|m| m.driver)),
            r.median_ms(),
            r.seconds
        )
        .unwrap();
    }
    if runs.iter().all(|r| r.peak.is_none()) {
        writeln!(
            s,
            "\nMemory columns are n/a: no run measured device memory (the {backend} backend has none to read)."
        )
        .unwrap();
    }
    if backend == "cpu" {
        writeln!(
            s,
            "On the cpu backend flashopt steps on its CPU reference, an interpreter of the plan, one instruction at a time; its ms/step is not a speed figure (docs/GPU.md has the kernels' times)."
        )
        .unwrap();
    }
    let Some(base) = runs.iter().find(|r| r.label == baseline) else {
        return s;
    };
    writeln!(s).unwrap();
    for r in runs.iter().filter(|r| r.label != baseline) {
        let gap = (r.final_valid() / base.final_valid() - 1.0) * 100.0;
        let (ratio, step) = r.worst_train_ratio(base);
        write!(
            s,
            "- {}: final validation loss {gap:+.2}% relative to {baseline}'s; worst training loss after warm-up {ratio:.2}x {baseline}'s (step {step})",
            r.label
        )
        .unwrap();
        if let (Some(a), Some(b)) = (r.peak, base.peak) {
            let less = |x: u64, y: u64| (1.0 - x as f64 / y as f64) * 100.0;
            write!(
                s,
                "; peak {:.1}% below in use, {:.1}% below reserved, {:.1}% below on the device",
                less(a.in_use, b.in_use),
                less(a.reserved, b.reserved),
                less(a.driver, b.driver)
            )
            .unwrap();
        }
        writeln!(s, ".").unwrap();
    }
    s
}

/// `memory.csv`: each run's optimizer bytes and peaks, what the bar chart draws.
pub fn memory_csv(runs: &[RunResult]) -> String {
    let mut s = String::from("run,params,optimizer_bytes,peak_in_use,peak_reserved,peak_driver\n");
    for r in runs {
        let [in_use, reserved, driver] = r.peak_fields();
        let bytes = field(r.optimizer_bytes);
        writeln!(
            s,
            "{},{},{bytes},{in_use},{reserved},{driver}",
            r.label, r.params
        )
        .unwrap();
    }
    s
}
