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
//! for r in flashopt-bf16 flashopt burn-fp32 flashopt-bf16-flashoptim; do
//!   cargo run --release --example train -- --backend cuda --config gpt350m --runs $r --out runs/gpt350m
//! done
//! # the tiny configuration CI runs on the CPU (burn's NdArray backend, flashopt's
//! # CPU reference)
//! cargo run --release --example train -- --backend cpu --config tiny --out /tmp/train
//! # summary and plots of runs made elsewhere
//! cargo run --release --example train -- --plot-only runs/train
//! # a loss spike traced: the optimizer's inputs and outputs at step 27, the
//! # elements in `state_health`'s failure state after every step, then the capture
//! # replayed on the CPU reference (scripts/flashoptim_replay.py steps it with
//! # flashoptim); docs/TRAINING.md
//! cargo run --release --example train -- --backend cuda --config gpt350m --runs flashopt-bf16-flashoptim \
//!   --stop-after 45 --capture runs/capture --capture-steps 27 --health-every 1 --out runs/diag
//! cargo run --release --example train -- --replay runs/capture
//! ```
//!
//! `--seed N` changes the seed (weights and batches); the loss is computed in f32
//! unless `--bf16-loss` keeps it in the compute dtype (bf16 on the bf16 runs).
//! `--optimizer lion|sgd|lamb|cautious_adamw|adafactor|adafactor_momentum|adam_mini|muon` steps the flashopt
//! runs with another rule instead of AdamW (their learning rates derived from AdamW's,
//! `optimizer::Rule::peak_lr`);
//! `--clip MAX_NORM` clips the global gradient norm. A folder with a `flashopt-fp32`
//! run (the same rule with f32 parameters and states) gates the others against it:
//!
//! ```text
//! for r in flashopt-fp32 flashopt-bf16 flashopt-bf16-32; do
//!   cargo run --release --example train -- --backend cuda --config small --optimizer lion \
//!     --clip 1 --runs $r --out runs/small-lion
//! done
//! ```

mod adapter_check;
mod capture;
mod cli;
mod data;
mod model;
mod momentum_error;
mod optimizer;
mod plot;
mod runs;

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use flashopt::OptimizerSpec;
use flashopt::optimizers::AdamW;
use indicatif::{ProgressBar, ProgressStyle};

use data::Rng;
use flashopt_burn::{BurnError, Host};
use model::{Gpt, GptConfig, causal_mask};
use optimizer::{Compute, Rule, RunKind, RunOptimizer, Stepper};
use runs::{Memory, Row, RunResult};

/// The run every other is compared with: the same rule in fp32 where the folder has
/// it, else burn's fp32 AdamW.
const REFERENCE: &str = "flashopt-fp32";
const BASELINE: &str = "burn-fp32";
/// Runs of earlier versions, read (never run) when summarizing their folders: the
/// step cap was `BoundedAdamW` then, and AdamW was flashoptim's arithmetic.
const EARLIER_LABELS: [&str; 2] = ["flashopt-bounded", "flashopt-bf16-bounded"];

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
    /// Log-softmax and loss in the backend's float type (bf16 on the bf16 backend)
    /// instead of f32, as standard mixed precision computes them.
    bf16_loss: bool,
    /// End the run after this many steps (diagnostics: no summary is written).
    stop_after: Option<usize>,
    /// The flashopt runs' rule (`--optimizer`); burn's runs are AdamW.
    rule: Rule,
    /// Clip the global gradient norm to this before each step (`--clip`).
    clip: Option<f64>,
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
                bf16_loss: false,
                stop_after: None,
                rule: Rule::AdamW,
                clip: None,
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
                bf16_loss: false,
                stop_after: None,
                rule: Rule::AdamW,
                clip: None,
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
                bf16_loss: false,
                stop_after: None,
                rule: Rule::AdamW,
                clip: None,
            },
            _ => return None,
        })
    }

    /// The runs a backend makes of this configuration unless `--runs` says.
    fn default_runs(&self, backend: &str) -> Vec<&'static str> {
        match (backend, self.name) {
            ("cuda", "gpt350m") => vec![
                "flashopt",
                "flashopt-flashoptim",
                "flashopt-bf16",
                "flashopt-bf16-flashoptim",
                BASELINE,
                "burn-bf16",
            ],
            _ => vec!["flashopt", BASELINE],
        }
    }

    fn describe(&self, params: usize) -> String {
        format!(
            "config {}; model: {} layers, d_model {}, {} heads, context {}, {params} parameters; batch {}, {} steps, peak lr {}, warm-up {}, seed {}; log-softmax and loss in {}; flashopt: {}; {}",
            self.name,
            self.model.layers,
            self.model.d_model,
            self.model.heads,
            self.model.context,
            self.batch,
            self.steps,
            self.peak_lr,
            self.warmup,
            self.seed,
            if self.bf16_loss {
                "the compute dtype"
            } else {
                "f32"
            },
            self.rule.describe(),
            match self.clip {
                Some(max) => format!("gradients clipped to global norm {max}"),
                None => "no gradient clipping".into(),
            }
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

    /// The shipped AdamW with this configuration's hyper-parameters.
    fn adamw(&self) -> AdamW {
        Rule::adamw(self.peak_lr, true)
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

/// A one-element tensor's value, read in its own dtype and widened to f32 (not
/// through the backend's float element, which would round an f32 loss to bf16).
fn scalar_f32<B: burn::tensor::backend::Backend>(t: burn::tensor::Tensor<B, 1>) -> f32 {
    t.into_data()
        .iter::<f32>()
        .next()
        .expect("a one-element tensor")
}

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
        let loss = model.loss(x, y, mask.clone(), setup.bf16_loss);
        note_memory(false);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        note_memory(false);
        let lr = setup.lr(i);
        let (next, applied) = step(lr, model, grads);
        model = next;
        skipped += usize::from(!applied);
        // Read in the loss's own dtype (f32 unless the loss is in bf16).
        let train_loss = scalar_f32(loss);
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
                    scalar_f32(inner.loss(x, y, valid_mask.clone(), setup.bf16_loss))
                })
                .sum();
            sum / setup.eval_batches as f32
        });
        bar.set_message(match valid {
            Some(v) => format!("loss {train_loss:.4} valid {v:.4}"),
            None => format!("loss {train_loss:.4}"),
        });
        // The bar draws nothing when stderr is not a terminal (a job's log): a line at
        // every evaluation then says how far a run got, and how fast.
        if let (Some(v), true) = (valid, bar.is_hidden()) {
            println!(
                "{label}: step {}/{}: train {train_loss:.4}, valid {v:.4}, {:.1} s",
                i + 1,
                setup.steps,
                start.elapsed().as_secs_f64()
            );
        }
        bar.inc(1);
        rows.push(Row {
            step: i + 1,
            lr,
            train: train_loss,
            valid,
            ms,
        });
        if setup.stop_after == Some(i + 1) {
            break;
        }
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

/// The run `label` names, or the reason it cannot run, and exit.
fn parse_run(label: &str, setup: &Setup) -> RunKind {
    RunKind::parse(label, setup.rule, setup.clip).unwrap_or_else(|e| {
        eprintln!("--runs: {e}");
        std::process::exit(2)
    })
}

/// A run on burn's NdArray backend, flashopt on its CPU reference (activations f32).
fn run_cpu(setup: &Setup, label: &str, diag: &capture::Diagnostics) -> RunResult {
    type B = burn::backend::Autodiff<burn::backend::NdArray>;
    let device = Default::default();
    let model = Gpt::<B>::new(&setup.model, setup.seed, &device);
    match parse_run(label, setup).stepper {
        Stepper::Flashopt {
            storage,
            flashoptim,
        } => {
            let host = HostRun {
                label,
                setup,
                diag,
                model,
                device: &device,
            };
            optimizer::with_optimizer(setup.rule, setup.peak_lr, storage, flashoptim, host)
        }
        Stepper::Burn => {
            let mut adamw = setup.burn_adamw().init::<B, Gpt<B>>();
            let mut step = |lr: f64, m: Gpt<B>, g: GradientsParams| (adamw.step(lr, m, g), true);
            train(label, setup, &device, model, &mut step, &|| None).1
        }
    }
}

/// One step of `opt`, the diagnostics (`--capture`, `--health-every`) reading it where
/// it is one optimizer, `--momentum-error-every` its Muon half.
fn probed_step<B: AutodiffBackend, P: flashopt_burn::BackendPlacement<B>>(
    opt: &mut RunOptimizer<P>,
    probe: &mut capture::Probe<'_>,
    lr: f64,
    model: Gpt<B>,
    grads: GradientsParams,
) -> (Gpt<B>, bool) {
    if let Some(o) = opt.probed() {
        probe.before_step::<B, _, _>(o.optimizer(), &model, &grads, lr);
    }
    if let Some(muon) = opt.muon() {
        probe.before_muon_step::<B, _, _>(muon.optimizer(), &model, &grads);
    }
    let (model, applied) = opt.step(lr, model, grads);
    if let Some(o) = opt.probed() {
        probe.after_step(o.optimizer());
    }
    if let Some(muon) = opt.muon() {
        probe.after_muon_step(muon.optimizer());
    }
    (model, applied)
}

/// A flashopt optimizer put over a model, and the model holding its parameters.
type Built<P, M> = Result<(RunOptimizer<P>, M), BurnError>;

/// One flashopt run on the CPU reference.
struct HostRun<'a, B: AutodiffBackend> {
    label: &'a str,
    setup: &'a Setup,
    diag: &'a capture::Diagnostics,
    model: Gpt<B>,
    device: &'a B::Device,
}

impl<B: AutodiffBackend> HostRun<'_, B> {
    /// Trains with the optimizer `build` puts over the model.
    fn train(self, build: impl FnOnce(Gpt<B>) -> Built<Host, Gpt<B>>) -> RunResult {
        let (mut opt, model) = build(self.model).expect("flashopt takes the model");
        opt.set_grad_clipping(self.setup.clip)
            .expect("--clip: a positive, finite norm");
        let mut probe = capture::Probe::new(self.diag);
        let mut step = |lr: f64, m: Gpt<B>, g: GradientsParams| {
            probed_step::<B, _>(&mut opt, &mut probe, lr, m, g)
        };
        let result = train(
            self.label,
            self.setup,
            self.device,
            model,
            &mut step,
            &|| None,
        )
        .1;
        probe.finish(self.label);
        result
    }
}

impl<B: AutodiffBackend> optimizer::WithOptimizer for HostRun<'_, B> {
    type Output = RunResult;

    fn run<S: OptimizerSpec>(self, spec: &S, config: flashopt::PlanConfig) -> RunResult {
        self.train(|model| RunOptimizer::one::<B, _, _>(spec, config, model))
    }

    fn run_split<S: OptimizerSpec, T: OptimizerSpec>(
        self,
        matrices: &S,
        others: &T,
        config: flashopt::PlanConfig,
    ) -> RunResult {
        self.train(|model| RunOptimizer::split::<B, _, _, _>(matrices, others, config, model))
    }
}

/// A run on burn's CUDA backend, flashopt in place on burn's buffers, computing in f32
/// (flashopt's bf16 parameters cast where used) or in bf16 (burn's AdamW then keeps
/// bf16 moments); the label says which (`optimizer::RUNS`).
fn run_cuda(setup: &Setup, label: &str, diag: &capture::Diagnostics) -> RunResult {
    use burn::tensor::bf16;
    let kind = parse_run(label, setup);
    match (kind.stepper, kind.compute) {
        (Stepper::Burn, Compute::F32) => cuda_run::<f32>(label, setup, None, diag),
        (Stepper::Burn, Compute::Bf16) => cuda_run::<bf16>(label, setup, None, diag),
        (
            Stepper::Flashopt {
                storage,
                flashoptim,
            },
            compute,
        ) => {
            let (rule, lr) = (setup.rule, setup.peak_lr);
            match compute {
                Compute::F32 => {
                    let run = CudaRun::<f32>::new(label, setup, diag);
                    optimizer::with_optimizer(rule, lr, storage, flashoptim, run)
                }
                Compute::Bf16 => {
                    let run = CudaRun::<bf16>::new(label, setup, diag);
                    optimizer::with_optimizer(rule, lr, storage, flashoptim, run)
                }
            }
        }
    }
}

/// One flashopt run on burn's CUDA backend computing in `F`.
struct CudaRun<'a, F> {
    label: &'a str,
    setup: &'a Setup,
    diag: &'a capture::Diagnostics,
    float: std::marker::PhantomData<F>,
}

impl<'a, F> CudaRun<'a, F> {
    fn new(label: &'a str, setup: &'a Setup, diag: &'a capture::Diagnostics) -> Self {
        CudaRun {
            label,
            setup,
            diag,
            float: std::marker::PhantomData,
        }
    }
}

impl<F: flashopt_burn::cuda::FloatElement> optimizer::WithOptimizer for CudaRun<'_, F> {
    type Output = RunResult;

    fn run<S: OptimizerSpec>(self, spec: &S, config: flashopt::PlanConfig) -> RunResult {
        let build = |model| RunOptimizer::one::<CudaB<F>, _, _>(spec, config, model);
        cuda_run::<F>(self.label, self.setup, Some(&build), self.diag)
    }

    fn run_split<S: OptimizerSpec, T: OptimizerSpec>(
        self,
        matrices: &S,
        others: &T,
        config: flashopt::PlanConfig,
    ) -> RunResult {
        let build =
            |model| RunOptimizer::split::<CudaB<F>, _, _, _>(matrices, others, config, model);
        cuda_run::<F>(self.label, self.setup, Some(&build), self.diag)
    }
}

/// burn's CUDA autodiff backend computing in `F`.
type CudaB<F> = flashopt_burn::cuda::CudaAutodiff<F, i32, u8>;

/// Puts a flashopt optimizer over a model on burn's CUDA backend.
type BuildCuda<'a, F> = dyn Fn(
        Gpt<CudaB<F>>,
    ) -> Built<flashopt_burn::Cube<flashopt_cubecl::cubecl::cuda::CudaRuntime>, Gpt<CudaB<F>>>
    + 'a;

/// One run on burn's CUDA backend computing in `F`, with the flashopt optimizer
/// `flashopt` builds or, given none, burn's AdamW.
fn cuda_run<F: flashopt_burn::cuda::FloatElement>(
    label: &str,
    setup: &Setup,
    flashopt: Option<&BuildCuda<'_, F>>,
    diag: &capture::Diagnostics,
) -> RunResult {
    use burn::tensor::backend::Backend as _;
    use flashopt_cubecl::cubecl::Runtime;
    use flashopt_cubecl::cubecl::cuda::{CudaDevice, CudaRuntime};
    type B<F> = CudaB<F>;
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
    if let Some(build) = flashopt {
        let (mut opt, model) = build(model).expect("flashopt takes the model");
        opt.set_grad_clipping(setup.clip)
            .expect("--clip: a positive, finite norm");
        cleanup("after flashopt took the model");
        let bytes: u64 = opt
            .parts()
            .iter()
            .map(|o| o.optimizer().device_bytes() as u64)
            .sum();
        let mut probe = capture::Probe::new(diag);
        let mut step = |lr: f64, m: Gpt<B<F>>, g: GradientsParams| {
            probed_step::<B<F>, _>(&mut opt, &mut probe, lr, m, g)
        };
        let mut result = train(label, setup, &device, model, &mut step, &memory).1;
        result.optimizer_bytes = Some(bytes);
        probe.finish(label);
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
/// flashopt run's final validation loss is more than 1% above the baseline's or its
/// training loss after the warm-up ever exceeds 1.5 times the baseline's.
fn summarize(out: &std::path::Path, backend: &str, font: Option<&std::path::Path>) -> bool {
    let mut labels = optimizer::labels();
    labels.extend(EARLIER_LABELS);
    let runs = runs::read_all(out, &labels).expect("read the runs");
    if runs.is_empty() {
        eprintln!("no run-*.txt in {}", out.display());
        return false;
    }
    let baseline = match runs.iter().any(|r| r.label == REFERENCE) {
        true => REFERENCE,
        false => BASELINE,
    };
    let text = runs::summary(backend, &runs, baseline);
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
    let Some(base) = runs.iter().find(|r| r.label == baseline) else {
        return true;
    };
    let mut ok = true;
    // flashoptim's arithmetic (`-flashoptim`) is run to show its failure, not gated.
    let gated = |r: &&runs::RunResult| {
        r.label.starts_with("flashopt") && !r.label.ends_with("-flashoptim") && r.label != baseline
    };
    for r in runs.iter().filter(gated) {
        // As good as the optimizer in fp32: at most 1% above its final validation loss
        // (below is fine), and no training loss after the warm-up over 1.5 times its own.
        let gap = r.final_valid() / base.final_valid() - 1.0;
        let (ratio, step) = r.worst_train_ratio(base);
        if !(r.final_valid().is_finite() && gap <= 0.01) {
            eprintln!(
                "FAILED: {}'s final validation loss is more than 1% above {baseline}'s",
                r.label
            );
            ok = false;
        }
        if ratio.is_nan() || ratio > 1.5 {
            eprintln!(
                "FAILED: {}'s training loss at step {step} is {ratio:.2} times {baseline}'s",
                r.label
            );
            ok = false;
        }
    }
    ok
}

fn main() {
    use clap::Parser as _;
    let args = cli::Args::parse();
    let font = args.font.as_deref();
    if let Some(dir) = &args.plot_only {
        let backend = args.backend.unwrap_or(cli::Backend::Cuda).name();
        let ok = summarize(dir, backend, font);
        std::process::exit(if ok { 0 } else { 1 });
    }
    if let Some(dir) = &args.replay {
        let ok = capture::replay(dir);
        std::process::exit(if ok { 0 } else { 1 });
    }
    if let Some(steps) = args.check_adapter {
        let ok = adapter_check::check_adapter(steps);
        println!("adapter check: {}", if ok { "passed" } else { "FAILED" });
        std::process::exit(if ok { 0 } else { 1 });
    }
    let backend = args.backend.unwrap_or(cli::Backend::Cpu);
    let mut setup = Setup::named(args.config.name()).expect("every configuration has a setup");
    if let Some(steps) = args.steps {
        setup.steps = steps;
        setup.warmup = setup.warmup.min(setup.steps / 2).max(1);
    }
    if let Some(seed) = args.seed {
        setup.seed = seed;
    }
    setup.bf16_loss = args.bf16_loss;
    setup.rule = args.optimizer;
    setup.peak_lr = args
        .peak_lr
        .unwrap_or_else(|| setup.rule.peak_lr(setup.peak_lr));
    setup.clip = args.clip;
    setup.stop_after = args.stop_after;
    let which: Vec<&str> = match args.runs.is_empty() {
        false => args.runs.iter().map(String::as_str).collect(),
        true => setup.default_runs(backend.name()),
    };
    let out = args.out.clone();
    std::fs::create_dir_all(&out).expect("create the output folder");
    let capture = args.capture.clone().map(|dir| {
        std::fs::create_dir_all(&dir).expect("create the capture folder");
        capture::Capture {
            dir,
            steps: args.capture_steps.clone(),
        }
    });
    if args.momentum_error_every.is_some() && setup.rule != Rule::Muon {
        eprintln!("--momentum-error-every compares Muon's momentum: it needs --optimizer muon");
        std::process::exit(2)
    }
    let diag = capture::Diagnostics {
        capture,
        health_every: args.health_every,
        momentum_error_every: args.momentum_error_every.map(|n| n as usize),
        out: out.clone(),
    };
    // Every label checked before the first run starts.
    for &label in &which {
        let kind = parse_run(label, &setup);
        if backend == cli::Backend::Cpu && kind.compute != Compute::F32 {
            eprintln!("--runs: `{label}` computes in bf16, which the cpu backend does not");
            std::process::exit(2)
        }
    }
    // Each run's files are written as soon as it ends: a process killed later (a
    // device command's limit) keeps the runs it finished.
    for &label in &which {
        let r = match backend {
            cli::Backend::Cpu => run_cpu(&setup, label, &diag),
            cli::Backend::Cuda => run_cuda(&setup, label, &diag),
        };
        if setup.stop_after.is_some() {
            println!("{}: stopped after step {}", r.label, r.rows.len());
        } else {
            let path = r.write(&out).expect("write the run");
            println!("wrote {}", path.display());
        }
    }
    if setup.stop_after.is_some() {
        return;
    }
    // Every run in the folder, those of earlier processes (`--runs`) included.
    if !summarize(&out, backend.name(), font) {
        std::process::exit(1);
    }
}
