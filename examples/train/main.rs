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
//! for r in flashopt-bf16 burn-bf16 flashopt burn-fp32; do
//!   cargo run --release --example train -- --backend cuda --config gpt350m --runs $r --out runs/gpt350m
//! done
//! # the tiny configuration CI runs on the CPU (burn's NdArray backend, flashopt's
//! # CPU reference)
//! cargo run --release --example train -- --backend cpu --config tiny --out /tmp/train
//! # summary and plots of runs made elsewhere
//! cargo run --release --example train -- --plot-only runs/train
//! ```

mod bounded;
mod data;
mod model;
mod plot;
mod runs;

use std::path::PathBuf;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use flashopt::Optimizer as _;
use flashopt::optimizers::AdamW;
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

    /// [`Self::adamw`] with the update clamped to exact Adam's bound.
    fn bounded_adamw(&self) -> bounded::BoundedAdamW {
        let a = self.adamw();
        bounded::BoundedAdamW {
            lr: a.lr,
            b1: a.b1,
            b2: a.b2,
            eps: a.eps,
            weight_decay: a.weight_decay,
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

/// The CUDA adapter against the CPU reference adapter, both stepping the same model
/// on burn's CUDA backend with bf16 parameters (the host adapter writes its back as
/// bf16 tensors): the two models are the same computation, so the parameters must
/// agree bit for bit after every step. A second CUDA adapter on a second copy of the
/// model shows that burn's backward pass is deterministic, which the comparison
/// needs.
fn check_adapter(steps: usize) -> bool {
    use flashopt_burn::cuda::CudaAutodiff;
    use flashopt_cubecl::cubecl::cuda::CudaDevice;
    type B = CudaAutodiff<f32, i32, u8>;
    let setup = Setup::named("tiny").expect("tiny");
    let device = CudaDevice::default();
    let config = PlanConfig::bf16(MasterMode::Int8);
    let fresh = || Gpt::<B>::new(&setup.model, setup.seed, &device);
    let (mut cuda, mut on_device) =
        flashopt_burn::CudaOptimizer::new(&setup.adamw(), config, fresh()).expect("cuda adapter");
    let (mut cuda2, mut on_device2) =
        flashopt_burn::CudaOptimizer::new(&setup.adamw(), config, fresh()).expect("cuda adapter");
    let (mut host, on_host) =
        flashopt_burn::HostOptimizer::new(&setup.adamw(), config, fresh()).expect("host adapter");
    let mut on_host = host.set_module_dtype::<B, _>(Some(burn::tensor::FloatDType::BF16), on_host);
    let values = |m: &Gpt<B>| flashopt_burn::params::collect::<B, _>(m);
    // (identical elements, elements, tensors that differ)
    let compare = |a: &Gpt<B>, b: &Gpt<B>| {
        let (a, b) = (values(a), values(b));
        let mut same = 0;
        let mut differing = Vec::new();
        for ((info, x), (_, y)) in a.iter().zip(&b) {
            let s = x
                .iter()
                .zip(y)
                .filter(|(p, q)| p.to_bits() == q.to_bits())
                .count();
            if s < x.len() {
                differing.push(format!("{} ({} of {})", info.name, x.len() - s, x.len()));
            }
            same += s;
        }
        let total: usize = a.iter().map(|(_, v)| v.len()).sum();
        (same, total, differing)
    };
    let (train_text, _) = data::split();
    let mask = causal_mask::<B>(setup.model.context, &device);
    let mut rng = Rng::new(1);
    let (same, total, _) = compare(&on_device, &on_host);
    let mut exact = same == total;
    println!("adapter check: initial parameters: {same} of {total} equal");
    for step in 1..=steps {
        let (x, y) = data::batch::<B>(
            train_text,
            &mut rng,
            setup.batch,
            setup.model.context,
            &device,
        );
        let grads = |m: &Gpt<B>| {
            GradientsParams::from_grads(m.loss(x.clone(), y.clone(), mask.clone()).backward(), m)
        };
        if step == 1 {
            let (a, b) = (cast_values(&on_device), cast_values(&on_host));
            let differing: Vec<String> = a
                .iter()
                .zip(&b)
                .enumerate()
                .filter(|(_, (x, y))| x != y)
                .map(|(i, (x, y))| {
                    let n = x
                        .iter()
                        .zip(y.iter())
                        .filter(|(p, q)| p.to_bits() != q.to_bits())
                        .count();
                    format!("#{i} ({n} of {})", x.len())
                })
                .collect();
            println!("  parameters cast to f32 on the device that differ: {differing:?}");
        }
        let (g1, g2, g3) = (grads(&on_device), grads(&on_device2), grads(&on_host));
        // The gradients the CUDA adapter's step reads where burn left them.
        let device_grads = grad_values(&on_device, &g1);
        if step == 1 {
            let (a, b) = (&device_grads, grad_values(&on_host, &g3));
            let differing: Vec<String> = a
                .iter()
                .zip(&b)
                .filter(|(x, y)| x.1 != y.1)
                .map(|(x, y)| {
                    let n =
                        x.1.iter()
                            .zip(&y.1)
                            .filter(|(p, q)| p.to_bits() != q.to_bits())
                            .count();
                    format!("{} ({n} of {})", x.0, x.1.len())
                })
                .collect();
            println!(
                "  step 1 gradients that differ, CUDA model vs CPU-reference model: {differing:?}"
            );
        }
        on_device = cuda
            .step::<f32, i32, u8, _>(1e-3, on_device, g1)
            .expect("cuda step")
            .0;
        if step == 1 {
            // The kernel alone: the CPU reference fed the gradients the GPU read.
            use flashopt::runtime::CpuOptimizer;
            let gpu = cuda.optimizer();
            let mut cpu = CpuOptimizer::for_spec(&setup.adamw(), config).expect("cpu");
            for (info, v) in flashopt_burn::params::collect::<B, _>(&fresh()) {
                cpu.add_tensor(&info.name, &v).expect("add");
            }
            cpu.set_learning_rate(1e-3).expect("lr");
            // bf16 gradients (the parameters' dtype), read as f32: exact. A parameter
            // without one steps with zeros, as the adapter does.
            let grads: Vec<Vec<half::bf16>> = device_grads
                .iter()
                .enumerate()
                .map(|(i, (_, g))| match g.is_empty() {
                    true => vec![half::bf16::ZERO; cpu.tensor_info(flashopt::TensorId(i)).len],
                    false => g.iter().map(|&x| half::bf16::from_f32(x)).collect(),
                })
                .collect();
            let bufs: Vec<flashopt::GradBuf<'_>> =
                grads.iter().map(|g| flashopt::GradBuf::Bf16(g)).collect();
            cpu.step(&bufs).expect("cpu step");
            let same = gpu
                .download()
                .iter()
                .enumerate()
                .filter(|(i, (_, t))| t == cpu.tensor(flashopt::TensorId(*i)))
                .count();
            println!(
                "  the GPU state after step 1 equals the CPU reference stepped with the GPU's gradients in {same} of {} tensors",
                gpu.tensor_count()
            );
        }
        on_device2 = cuda2
            .step::<f32, i32, u8, _>(1e-3, on_device2, g2)
            .expect("cuda step")
            .0;
        on_host = host.step(1e-3, on_host, g3).expect("host step").0;
        let (same, total, differing) = compare(&on_device, &on_host);
        let (same2, _, differing2) = compare(&on_device, &on_device2);
        println!(
            "adapter check: step {step}: CUDA adapter vs CPU-reference adapter {same} of {total} bit-identical; CUDA adapter vs itself on a second copy {same2} of {total}"
        );
        if step == 1 {
            println!("  tensors that differ, CUDA vs CPU reference: {differing:?}");
            println!("  tensors that differ between the two CUDA runs: {differing2:?}");
        }
        exact &= same == total;
    }
    exact
}

/// Each parameter as the model's forward pass sees it: cast to f32 on the device.
fn cast_values<B: AutodiffBackend>(model: &Gpt<B>) -> Vec<Vec<f32>> {
    struct Visit(Vec<Vec<f32>>);
    impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for Visit {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
        ) {
            let v = param.val().cast(burn::tensor::FloatDType::F32).into_data();
            self.0
                .push(v.convert::<f32>().into_vec::<f32>().expect("f32"));
        }
    }
    let mut visit = Visit(Vec::new());
    burn::module::Module::visit(model, &mut visit);
    visit.0
}

/// Each parameter's gradient (name, values as f32) in visiting order.
fn grad_values<B: AutodiffBackend>(
    model: &Gpt<B>,
    grads: &GradientsParams,
) -> Vec<(String, Vec<f32>)> {
    struct Visit<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        names: std::vec::IntoIter<String>,
        out: Vec<(String, Vec<f32>)>,
        backend: std::marker::PhantomData<B>,
    }
    impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for Visit<'_, B> {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
        ) {
            let name = self.names.next().expect("one name per parameter");
            let values = self
                .grads
                .get::<B::InnerBackend, D>(param.id)
                .map(|g| {
                    g.into_data()
                        .convert::<f32>()
                        .into_vec::<f32>()
                        .expect("f32")
                })
                .unwrap_or_default();
            self.out.push((name, values));
        }
    }
    let names: Vec<String> = flashopt_burn::params::describe(model)
        .into_iter()
        .map(|p| p.name)
        .collect();
    let mut visit = Visit::<B> {
        grads,
        names: names.into_iter(),
        out: Vec::new(),
        backend: std::marker::PhantomData,
    };
    burn::module::Module::visit(model, &mut visit);
    visit.out
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
        let ok = check_adapter(steps.parse().expect("--check-adapter STEPS"));
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
