//! Train a GPT-style language model with burn, with flashopt's fused 24-bit AdamW
//! (bf16 parameters + int8 corrections, int8 moments) and with burn's AdamW: same
//! seed, same initial weights, same batches, same learning rate schedule. Writes each
//! run's loss curve and figures, a summary of every run in the folder, and plots of
//! the losses and of peak memory.
//!
//! ```text
//! # the measured runs (CUDA; docs/TRAINING.md)
//! cargo run --release --example train -- --backend cuda --config small --out runs/train
//! # 353M parameters, one process per run so each starts with an empty device
//! for r in flashopt-bf16-bounded flashopt-bounded flashopt-bf16 burn-bf16 flashopt burn-fp32; do
//!   cargo run --release --example train -- --backend cuda --config gpt350m --runs $r --out runs/gpt350m
//! done
//! # the tiny configuration CI runs on the CPU (burn's NdArray backend, flashopt's
//! # CPU reference)
//! cargo run --release --example train -- --backend cpu --config tiny --out /tmp/train
//! # summary and plots of runs made elsewhere
//! cargo run --release --example train -- --plot-only runs/train
//! ```

mod adapter_check;
mod data;
mod model;
mod plot;
mod runs;

use std::path::PathBuf;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use flashopt::optimizers::{AdamW, BoundedAdamW};
use flashopt::{MasterMode, PlanConfig};
use indicatif::{ProgressBar, ProgressStyle};

use data::Rng;
use model::{Gpt, GptConfig, causal_mask};
use runs::{Memory, Row, RunResult};

/// The run every other is compared with, and the order of runs in summaries.
const BASELINE: &str = "burn-fp32";
const LABELS: [&str; 6] = [
    "flashopt",
    "flashopt-bounded",
    "flashopt-bf16",
    "flashopt-bf16-bounded",
    "burn-fp32",
    "burn-bf16",
];

/// Everything the runs share.
#[derive(Clone, Copy, Debug)]
struct Setup {
    name: &'static str,
    model: GptConfig,
    batch: usize,
    steps: usize,
    peak_lr: f64,
    warmup: usize,
    eval_every: usize,
    eval_batches: usize,
    seed: u64,
}

impl Setup {
    fn named(name: &str) -> Option<Setup> {
        let model = |d_model, layers, heads, context| GptConfig {
            vocab: 256,
            d_model,
            layers,
            heads,
            context,
        };
        Some(match name {
            // 10.9M parameters.
            "small" => Setup {
                name: "small",
                model: model(384, 6, 6, 256),
                batch: 32,
                steps: 1500,
                peak_lr: 1e-3,
                warmup: 150,
                eval_every: 100,
                eval_batches: 8,
                seed: 2026,
            },
            // A few seconds on two CPU cores: keeps the example from rotting in CI.
            "tiny" => Setup {
                name: "tiny",
                model: model(32, 2, 2, 32),
                batch: 4,
                steps: 30,
                peak_lr: 3e-3,
                warmup: 5,
                eval_every: 10,
                eval_batches: 2,
                seed: 2026,
            },
            // 353M parameters, a small batch: parameters and optimizer state, not
            // activations, dominate the memory (docs/TRAINING.md).
            "gpt350m" => Setup {
                name: "gpt350m",
                model: model(1024, 28, 16, 256),
                batch: 4,
                steps: 200,
                peak_lr: 3e-4,
                warmup: 20,
                eval_every: 50,
                eval_batches: 4,
                seed: 2026,
            },
            _ => return None,
        })
    }

    /// The runs a backend makes of this configuration unless `--runs` says.
    fn default_runs(&self, backend: &str) -> Vec<&'static str> {
        match (backend, self.name) {
            ("cuda", "gpt350m") => LABELS.to_vec(),
            _ => vec!["flashopt", BASELINE],
        }
    }

    fn describe(&self, params: usize) -> String {
        format!(
            "config {}; model: {} layers, d_model {}, {} heads, context {}, {params} parameters; batch {}, {} steps, peak lr {}, warm-up {}, seed {}",
            self.name,
            self.model.layers,
            self.model.d_model,
            self.model.heads,
            self.model.context,
            self.batch,
            self.steps,
            self.peak_lr,
            self.warmup,
            self.seed
        )
    }

    /// Linear warm-up, then cosine decay to a tenth of the peak.
    fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.peak_lr * (step + 1) as f64 / self.warmup as f64;
        }
        let progress = (step - self.warmup) as f64 / (self.steps - self.warmup).max(1) as f64;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.peak_lr * (0.1 + 0.9 * cosine)
    }

    fn adamw(&self) -> AdamW {
        AdamW {
            lr: self.peak_lr,
            b1: 0.9,
            b2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
            ..AdamW::default()
        }
    }

    /// [`Self::adamw`] with each step capped at exact Adam's largest.
    fn bounded_adamw(&self) -> BoundedAdamW {
        let a = self.adamw();
        BoundedAdamW {
            lr: a.lr,
            b1: a.b1,
            b2: a.b2,
            eps: a.eps,
            weight_decay: a.weight_decay,
            ..BoundedAdamW::default()
        }
    }

    fn burn_adamw(&self) -> AdamWConfig {
        AdamWConfig::new()
            .with_beta_1(0.9)
            .with_beta_2(0.99)
            .with_epsilon(1e-8)
            .with_weight_decay(0.1)
    }
}

/// The optimizer a run steps with: `(model, applied)` from `(lr, model, grads)`.
type StepFn<'a, M> = dyn FnMut(f64, M, GradientsParams) -> (M, bool) + 'a;

/// The training loop every run shares. `memory` reads the device's memory.
fn train<B: AutodiffBackend>(
    label: &str,
    setup: &Setup,
    device: &B::Device,
    model: Gpt<B>,
    step: &mut StepFn<'_, Gpt<B>>,
    memory: &dyn Fn() -> Option<Memory>,
) -> (Gpt<B>, RunResult) {
    let (train_text, valid_text) = data::split();
    let t = setup.model.context;
    let mask = causal_mask::<B>(t, device);
    let valid_mask = causal_mask::<B::InnerBackend>(t, device);
    let mut batches = Rng::new(setup.seed ^ 0xba7c);
    let bar = ProgressBar::new(setup.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>9} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    let mut rows = Vec::with_capacity(setup.steps);
    let mut model = model;
    let mut peak = None::<Memory>;
    let mut resident = None::<u64>;
    let mut note_memory = |after_step: bool| {
        if let Some(now) = memory() {
            peak = Some(peak.map_or(now, |p| p.max(now)));
            if after_step {
                resident = Some(resident.map_or(now.in_use, |p| p.max(now.in_use)));
            }
        }
    };
    let mut skipped = 0;
    let start = Instant::now();
    for i in 0..setup.steps {
        let step_start = Instant::now();
        let (x, y) = data::batch::<B>(train_text, &mut batches, setup.batch, t, device);
        let loss = model.loss(x, y, mask.clone());
        note_memory(false);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        note_memory(false);
        let lr = setup.lr(i);
        let (next, applied) = step(lr, model, grads);
        model = next;
        skipped += usize::from(!applied);
        let train_loss: f32 = loss.into_scalar().to_string().parse().expect("a number");
        note_memory(true);
        let ms = step_start.elapsed().as_secs_f64() * 1e3;
        let last = i + 1 == setup.steps;
        let valid = (i % setup.eval_every == setup.eval_every - 1 || last).then(|| {
            let inner = model.valid();
            let mut rng = Rng::new(setup.seed ^ 0x7a11d);
            let sum: f32 = (0..setup.eval_batches)
                .map(|_| {
                    let (x, y) = data::batch::<B::InnerBackend>(
                        valid_text,
                        &mut rng,
                        setup.batch,
                        t,
                        device,
                    );
                    let l = inner.loss(x, y, valid_mask.clone()).into_scalar();
                    l.to_string().parse::<f32>().expect("a number")
                })
                .sum();
            sum / setup.eval_batches as f32
        });
        bar.set_message(match valid {
            Some(v) => format!("loss {train_loss:.4} valid {v:.4}"),
            None => format!("loss {train_loss:.4}"),
        });
        bar.inc(1);
        rows.push(Row {
            step: i + 1,
            lr,
            train: train_loss,
            valid,
            ms,
        });
    }
    bar.finish();
    let params = flashopt_burn::params::describe(&model)
        .iter()
        .map(|p| p.len())
        .sum();
    let result = RunResult {
        label: label.to_string(),
        setup: setup.describe(params),
        rows,
        params,
        optimizer_bytes: None,
        peak,
        resident_bytes: resident,
        skipped,
        seconds: start.elapsed().as_secs_f64(),
    };
    (model, result)
}

/// Runs on burn's NdArray backend, flashopt on its CPU reference (activations f32).
fn run_cpu(setup: &Setup, which: &[&str]) -> Vec<RunResult> {
    type B = burn::backend::Autodiff<burn::backend::NdArray>;
    let device = Default::default();
    let none = || None;
    let mut out = Vec::new();
    for &label in which {
        let model = Gpt::<B>::new(&setup.model, setup.seed, &device);
        let result = match label {
            "flashopt" => {
                let config = PlanConfig::bf16(MasterMode::Int8);
                let (mut opt, model) =
                    flashopt_burn::HostOptimizer::new(&setup.adamw(), config, model)
                        .expect("flashopt takes the model");
                let mut step = |lr: f64, m: Gpt<B>, g: GradientsParams| {
                    let (m, outcome) = opt.step(lr, m, g).expect("flashopt step");
                    (m, outcome.applied())
                };
                train(label, setup, &device, model, &mut step, &none).1
            }
            BASELINE => {
                let mut adamw = setup.burn_adamw().init::<B, Gpt<B>>();
                let mut step =
                    |lr: f64, m: Gpt<B>, g: GradientsParams| (adamw.step(lr, m, g), true);
                train(label, setup, &device, model, &mut step, &none).1
            }
            other => unknown_run(other, &["flashopt", BASELINE]),
        };
        out.push(result);
    }
    out
}

fn unknown_run(label: &str, known: &[&str]) -> ! {
    eprintln!("--runs: `{label}` is not one of {known:?}");
    std::process::exit(2)
}

/// Runs on burn's CUDA backend, flashopt in place on burn's buffers: `flashopt` and
/// `burn-fp32` compute in f32 (flashopt's bf16 parameters cast where used),
/// `flashopt-bf16` and `burn-bf16` in bf16 (burn's AdamW then keeps bf16 moments).
fn run_cuda(setup: &Setup, which: &[&str]) -> Vec<RunResult> {
    use burn::tensor::bf16;
    which
        .iter()
        .map(|&label| match label {
            "flashopt" => cuda_run::<f32, _>(label, setup, Some(&setup.adamw())),
            "flashopt-bounded" => cuda_run::<f32, _>(label, setup, Some(&setup.bounded_adamw())),
            "flashopt-bf16" => cuda_run::<bf16, _>(label, setup, Some(&setup.adamw())),
            "flashopt-bf16-bounded" => {
                cuda_run::<bf16, _>(label, setup, Some(&setup.bounded_adamw()))
            }
            BASELINE => cuda_run::<f32, _>(label, setup, None::<&AdamW>),
            "burn-bf16" => cuda_run::<bf16, _>(label, setup, None::<&AdamW>),
            other => unknown_run(other, &LABELS),
        })
        .collect()
}

/// One run on burn's CUDA backend computing in `F`, with the flashopt optimizer
/// `flashopt` (24-bit master) or, given none, burn's AdamW.
fn cuda_run<F: flashopt_burn::cuda::FloatElement, S: flashopt::OptimizerSpec>(
    label: &str,
    setup: &Setup,
    flashopt: Option<&S>,
) -> RunResult {
    use burn::tensor::backend::Backend as _;
    use flashopt_burn::cuda::CudaAutodiff;
    use flashopt_cubecl::cubecl::Runtime;
    use flashopt_cubecl::cubecl::cuda::{CudaDevice, CudaRuntime};
    type B<F> = CudaAutodiff<F, i32, u8>;
    let device = CudaDevice::default();
    let client = CudaRuntime::client(&device);
    // The driver reports on the current context: cubecl's, the device's primary one.
    let context = cudarc::driver::CudaContext::new(0).expect("CUDA context");
    let memory = || {
        B::<F>::sync(&device).ok()?;
        let usage = client.memory_usage().ok()?;
        context.bind_to_thread().ok()?;
        let (free, total) = cudarc::driver::result::mem_get_info().ok()?;
        Some(Memory {
            in_use: usage.bytes_in_use,
            reserved: usage.bytes_reserved,
            driver: (total - free) as u64,
        })
    };
    let show = |when: &str| {
        if let Some(m) = memory() {
            let gb = |b: u64| b as f64 / 1e9;
            println!(
                "{label}: memory {when}: in use {:.3} GB, reserved by cubecl {:.3} GB, on the device {:.3} GB",
                gb(m.in_use),
                gb(m.reserved),
                gb(m.driver)
            );
        }
    };
    let model = Gpt::<B<F>>::new(&setup.model, setup.seed, &device);
    show("after building the model");
    // What building left in cubecl's pools is returned to the driver before
    // training, so each run's peaks are its training's.
    let cleanup = |when: &str| {
        show(when);
        client.memory_cleanup();
        show("after memory_cleanup");
    };
    if let Some(spec) = flashopt {
        let config = PlanConfig::bf16(MasterMode::Int8);
        let (mut opt, model) = flashopt_burn::CudaOptimizer::new(spec, config, model)
            .expect("flashopt takes the model");
        cleanup("after flashopt took the model");
        let bytes = opt.optimizer().device_bytes() as u64;
        let mut step = |lr: f64, m: Gpt<B<F>>, g: GradientsParams| {
            let (m, outcome) = opt.step::<F, i32, u8, _>(lr, m, g).expect("flashopt step");
            (m, outcome.applied())
        };
        let mut result = train(label, setup, &device, model, &mut step, &memory).1;
        result.optimizer_bytes = Some(bytes);
        result
    } else {
        let mut adamw = setup.burn_adamw().init::<B<F>, Gpt<B<F>>>();
        cleanup("before training");
        let mut step = |lr: f64, m: Gpt<B<F>>, g: GradientsParams| (adamw.step(lr, m, g), true);
        let mut result = train(label, setup, &device, model, &mut step, &memory).1;
        // burn's AdamW holds parameters, gradients and two moments, all in `F`
        // (computed from the dtype, not read from burn).
        let per_value = std::mem::size_of::<F>() as u64;
        result.optimizer_bytes = Some(4 * per_value * result.params as u64);
        result
    }
}

/// `summary.md`, `memory.csv` and the plots of every run in `out`; fails when a
/// flashopt run's final validation loss is more than 2% above the baseline's.
fn summarize(out: &std::path::Path, backend: &str, font: Option<&std::path::Path>) -> bool {
    let runs = runs::read_all(out, &LABELS).expect("read the runs");
    if runs.is_empty() {
        eprintln!("no run-*.txt in {}", out.display());
        return false;
    }
    let text = runs::summary(backend, &runs, BASELINE);
    print!("{text}");
    std::fs::write(out.join("summary.md"), &text).expect("write the summary");
    std::fs::write(out.join("memory.csv"), runs::memory_csv(&runs)).expect("write memory.csv");
    for (what, drawn) in [
        ("loss.png", plot::render(&runs, &out.join("loss.png"), font)),
        (
            "memory.png",
            plot::render_memory(&runs, &out.join("memory.png"), font),
        ),
    ] {
        match drawn {
            Ok(()) => println!("wrote {}", out.join(what).display()),
            Err(e) => println!("no {what} ({e})"),
        }
    }
    let Some(base) = runs.iter().find(|r| r.label == BASELINE) else {
        return true;
    };
    let mut ok = true;
    for r in runs.iter().filter(|r| r.label.starts_with("flashopt")) {
        // No loss of quality: at most 2% above the baseline (below is fine).
        let gap = r.final_valid() / base.final_valid() - 1.0;
        if !(r.final_valid().is_finite() && gap <= 0.02) {
            eprintln!(
                "FAILED: {}'s final validation loss is more than 2% above {BASELINE}'s",
                r.label
            );
            ok = false;
        }
    }
    ok
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let font = value("--font").map(PathBuf::from);
    if let Some(dir) = value("--plot-only") {
        let dir = PathBuf::from(dir);
        let backend = value("--backend").unwrap_or_else(|| "cuda".into());
        let ok = summarize(&dir, &backend, font.as_deref());
        std::process::exit(if ok { 0 } else { 1 });
    }
    if let Some(steps) = value("--check-adapter") {
        let ok = adapter_check::check_adapter(steps.parse().expect("--check-adapter STEPS"));
        println!("adapter check: {}", if ok { "passed" } else { "FAILED" });
        std::process::exit(if ok { 0 } else { 1 });
    }
    let backend = value("--backend").unwrap_or_else(|| "cpu".into());
    let config = value("--config").unwrap_or_else(|| "tiny".into());
    let mut setup = Setup::named(&config).unwrap_or_else(|| {
        eprintln!("--config: `small`, `gpt350m` or `tiny`, got `{config}`");
        std::process::exit(2)
    });
    if let Some(steps) = value("--steps") {
        setup.steps = steps.parse().expect("--steps N");
        setup.warmup = setup.warmup.min(setup.steps / 2).max(1);
    }
    let which = value("--runs");
    let which: Vec<&str> = match &which {
        Some(list) => list.split(',').collect(),
        None => setup.default_runs(&backend),
    };
    let out = PathBuf::from(value("--out").unwrap_or_else(|| "target/train".into()));
    std::fs::create_dir_all(&out).expect("create the output folder");
    let runs = match backend.as_str() {
        "cpu" => run_cpu(&setup, &which),
        "cuda" => run_cuda(&setup, &which),
        other => {
            eprintln!("--backend: `cuda` or `cpu`, got `{other}`");
            std::process::exit(2)
        }
    };
    for r in &runs {
        let path = r.write(&out).expect("write the run");
        println!("wrote {}", path.display());
    }
    // Every run in the folder, those of earlier processes (`--runs`) included.
    if !summarize(&out, &backend, font.as_deref()) {
        std::process::exit(1);
    }
}
