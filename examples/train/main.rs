//! Train a small GPT-style language model with burn, once with flashopt's fused
//! 24-bit AdamW (bf16 parameters + int8 corrections, int8 moments) and once with
//! burn's fp32 AdamW: same seed, same initial weights, same batches, same learning
//! rate schedule. Writes each run's loss curve as CSV, a summary, and (where a font
//! is found) a PNG plot.
//!
//! ```text
//! # the measured run (CUDA; docs/TRAINING.md)
//! cargo run --release --example train -- --backend cuda --config small --out runs/train
//! # the tiny configuration CI runs on the CPU (burn's NdArray backend, flashopt's
//! # CPU reference)
//! cargo run --release --example train -- --backend cpu --config tiny --out /tmp/train
//! # plot CSVs written elsewhere
//! cargo run --release --example train -- --plot-only runs/train
//! ```

mod data;
mod model;
mod plot;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
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

/// Everything both runs share.
#[derive(Clone, Copy, Debug)]
struct Setup {
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
                model: model(32, 2, 2, 32),
                batch: 4,
                steps: 30,
                peak_lr: 3e-3,
                warmup: 5,
                eval_every: 10,
                eval_batches: 2,
                seed: 2026,
            },
            _ => return None,
        })
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

    fn burn_adamw(&self) -> AdamWConfig {
        AdamWConfig::new()
            .with_beta_1(0.9)
            .with_beta_2(0.99)
            .with_epsilon(1e-8)
            .with_weight_decay(0.1)
    }
}

/// One row of a loss curve.
struct Row {
    step: usize,
    lr: f64,
    train: f32,
    valid: Option<f32>,
    ms: f64,
}

struct RunResult {
    label: String,
    rows: Vec<Row>,
    params: usize,
    optimizer_bytes: Option<u64>,
    peak_bytes: Option<u64>,
    /// The most bytes in use right after a step (no activations alive).
    resident_bytes: Option<u64>,
    skipped: usize,
    seconds: f64,
}

impl RunResult {
    fn final_valid(&self) -> f32 {
        self.rows
            .iter()
            .rev()
            .find_map(|r| r.valid)
            .expect("the last step is evaluated")
    }

    /// Mean training loss over the last 10% of steps.
    fn final_train(&self) -> f32 {
        let tail = (self.rows.len() / 10).max(1);
        let rows = &self.rows[self.rows.len() - tail..];
        rows.iter().map(|r| r.train).sum::<f32>() / rows.len() as f32
    }

    fn write_csv(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let mut csv = String::from("step,lr,train_loss,valid_loss,ms\n");
        for r in &self.rows {
            let valid = r.valid.map(|v| v.to_string()).unwrap_or_default();
            writeln!(csv, "{},{},{},{valid},{:.3}", r.step, r.lr, r.train, r.ms).unwrap();
        }
        let path = dir.join(format!("loss-{}.csv", self.label));
        std::fs::write(&path, csv)?;
        Ok(path)
    }
}

/// The optimizer a run steps with: `(model, applied)` from `(lr, model, grads)`.
type StepFn<'a, M> = dyn FnMut(f64, M, GradientsParams) -> (M, bool) + 'a;

/// The training loop both runs share. `memory` reads the device's bytes in use.
fn train<B: AutodiffBackend>(
    label: &str,
    setup: &Setup,
    device: &B::Device,
    model: Gpt<B>,
    step: &mut StepFn<'_, Gpt<B>>,
    memory: &dyn Fn() -> Option<u64>,
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
    let mut peak = None::<u64>;
    let mut resident = None::<u64>;
    let mut note_memory = |after_step: bool| {
        if let Some(bytes) = memory() {
            peak = Some(peak.map_or(bytes, |p| p.max(bytes)));
            if after_step {
                resident = Some(resident.map_or(bytes, |p| p.max(bytes)));
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
    let result = RunResult {
        label: label.to_string(),
        rows,
        params: flashopt_burn::params::describe(&model)
            .iter()
            .map(|p| p.len())
            .sum(),
        optimizer_bytes: None,
        peak_bytes: peak,
        resident_bytes: resident,
        skipped,
        seconds: start.elapsed().as_secs_f64(),
    };
    (model, result)
}

/// Both runs on burn's NdArray backend, flashopt on its CPU reference.
fn run_cpu(setup: &Setup) -> Vec<RunResult> {
    type B = burn::backend::Autodiff<burn::backend::NdArray>;
    let device = Default::default();
    let none = || None;

    let model = Gpt::<B>::new(&setup.model, setup.seed, &device);
    let (mut opt, model) = flashopt_burn::HostOptimizer::new(
        &setup.adamw(),
        PlanConfig::bf16(MasterMode::Int8),
        model,
    )
    .expect("flashopt takes the model");
    let mut step = |lr: f64, m: Gpt<B>, g: GradientsParams| {
        let (m, outcome) = opt.step(lr, m, g).expect("flashopt step");
        (m, outcome.applied())
    };
    let (_, flash) = train("flashopt", setup, &device, model, &mut step, &none);

    let model = Gpt::<B>::new(&setup.model, setup.seed, &device);
    let mut adamw = setup.burn_adamw().init::<B, Gpt<B>>();
    let mut step = |lr: f64, m: Gpt<B>, g: GradientsParams| (adamw.step(lr, m, g), true);
    let (_, fp32) = train("burn-fp32", setup, &device, model, &mut step, &none);
    vec![flash, fp32]
}

/// Both runs on burn's CUDA backend, flashopt in place on burn's buffers.
fn run_cuda(setup: &Setup) -> Vec<RunResult> {
    use burn::tensor::backend::Backend as _;
    use flashopt_burn::cuda::CudaAutodiff;
    use flashopt_cubecl::cubecl::Runtime;
    use flashopt_cubecl::cubecl::cuda::{CudaDevice, CudaRuntime};
    type B = CudaAutodiff<f32, i32, u8>;
    let device = CudaDevice::default();
    let client = CudaRuntime::client(&device);
    let memory = || {
        B::sync(&device).ok()?;
        client.memory_usage().ok().map(|u| u.bytes_in_use)
    };

    let model = Gpt::<B>::new(&setup.model, setup.seed, &device);
    let (mut opt, model) = flashopt_burn::CudaOptimizer::new(
        &setup.adamw(),
        PlanConfig::bf16(MasterMode::Int8),
        model,
    )
    .expect("flashopt takes the model");
    let bytes = opt.optimizer().device_bytes() as u64;
    let mut step = |lr: f64, m: Gpt<B>, g: GradientsParams| {
        let (m, outcome) = opt
            .step::<f32, i32, u8, _>(lr, m, g)
            .expect("flashopt step");
        (m, outcome.applied())
    };
    let (model, mut flash) = train("flashopt", setup, &device, model, &mut step, &memory);
    flash.optimizer_bytes = Some(bytes);
    drop(model);
    drop(opt);

    let model = Gpt::<B>::new(&setup.model, setup.seed, &device);
    let mut adamw = setup.burn_adamw().init::<B, Gpt<B>>();
    let mut step = |lr: f64, m: Gpt<B>, g: GradientsParams| (adamw.step(lr, m, g), true);
    let (_, mut fp32) = train("burn-fp32", setup, &device, model, &mut step, &memory);
    // burn's AdamW holds f32 parameters, gradients and two f32 moments.
    fp32.optimizer_bytes = Some(16 * fp32.params as u64);
    vec![flash, fp32]
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
        if step == 1 {
            let (a, b) = (grad_values(&on_device, &g1), grad_values(&on_host, &g3));
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
            let client = gpu.client();
            let mut cpu = CpuOptimizer::for_spec(&setup.adamw(), config).expect("cpu");
            for (info, v) in flashopt_burn::params::collect::<B, _>(&fresh()) {
                cpu.add_tensor(&info.name, &v).expect("add");
            }
            cpu.set_learning_rate(1e-3).expect("lr");
            let all = client.read_one_unchecked(gpu.grad_buffer().clone());
            let grads: Vec<Vec<half::bf16>> = (0..gpu.tensor_count())
                .map(|i| {
                    let range = gpu.tensor_range(flashopt::TensorId(i));
                    all[range.start * 2..range.end * 2]
                        .chunks_exact(2)
                        .map(|b| half::bf16::from_le_bytes([b[0], b[1]]))
                        .collect()
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

fn summary(setup: &Setup, backend: &str, runs: &[RunResult]) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "backend {backend}; model: {} layers, d_model {}, {} heads, context {}, {} parameters; batch {}, {} steps, peak lr {}, warm-up {}, seed {}",
        setup.model.layers,
        setup.model.d_model,
        setup.model.heads,
        setup.model.context,
        runs[0].params,
        setup.batch,
        setup.steps,
        setup.peak_lr,
        setup.warmup,
        setup.seed
    )
    .unwrap();
    writeln!(s).unwrap();
    writeln!(
        s,
        "| run | final valid loss | train loss, last 10% | skipped steps | optimizer bytes (params, grads, states) | per parameter | bytes in use after a step (max) | peak bytes in use (sampled) | median ms/step | wall s |"
    )
    .unwrap();
    writeln!(
        s,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    .unwrap();
    for r in runs {
        let mut ms: Vec<f64> = r.rows.iter().map(|r| r.ms).collect();
        ms.sort_by(f64::total_cmp);
        let opt = r.optimizer_bytes.map_or("n/a".into(), |b| b.to_string());
        let per = r.optimizer_bytes.map_or("n/a".into(), |b| {
            format!("{:.2}", b as f64 / r.params as f64)
        });
        let peak = r.peak_bytes.map_or("n/a".into(), |b| b.to_string());
        let resident = r.resident_bytes.map_or("n/a".into(), |b| b.to_string());
        writeln!(
            s,
            "| {} | {:.4} | {:.4} | {} | {opt} | {per} | {resident} | {peak} | {:.1} | {:.1} |",
            r.label,
            r.final_valid(),
            r.final_train(),
            r.skipped,
            ms[ms.len() / 2],
            r.seconds
        )
        .unwrap();
    }
    let (flash, fp32) = (&runs[0], &runs[1]);
    let gap = (flash.final_valid() / fp32.final_valid() - 1.0) * 100.0;
    writeln!(
        s,
        "\nflashopt's final validation loss is {gap:+.2}% relative to fp32 AdamW's (target: within 2%)."
    )
    .unwrap();
    s
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
        plot::render(&dir, &dir.join("loss.png"), font.as_deref()).expect("plot");
        println!("wrote {}", dir.join("loss.png").display());
        return;
    }
    if let Some(steps) = value("--check-adapter") {
        let ok = check_adapter(steps.parse().expect("--check-adapter STEPS"));
        println!("adapter check: {}", if ok { "passed" } else { "FAILED" });
        std::process::exit(if ok { 0 } else { 1 });
    }
    let backend = value("--backend").unwrap_or_else(|| "cpu".into());
    let config = value("--config").unwrap_or_else(|| "tiny".into());
    let mut setup = Setup::named(&config).unwrap_or_else(|| {
        eprintln!("--config: `small` or `tiny`, got `{config}`");
        std::process::exit(2)
    });
    if let Some(steps) = value("--steps") {
        setup.steps = steps.parse().expect("--steps N");
        setup.warmup = setup.warmup.min(setup.steps / 2).max(1);
    }
    let out = PathBuf::from(value("--out").unwrap_or_else(|| "target/train".into()));
    std::fs::create_dir_all(&out).expect("create the output folder");
    let runs = match backend.as_str() {
        "cpu" => run_cpu(&setup),
        "cuda" => run_cuda(&setup),
        other => {
            eprintln!("--backend: `cuda` or `cpu`, got `{other}`");
            std::process::exit(2)
        }
    };
    for r in &runs {
        let path = r.write_csv(&out).expect("write the CSV");
        println!("wrote {}", path.display());
    }
    let text = summary(&setup, &backend, &runs);
    print!("{text}");
    std::fs::write(out.join("summary.md"), &text).expect("write the summary");
    match plot::render(&out, &out.join("loss.png"), font.as_deref()) {
        Ok(()) => println!("wrote {}", out.join("loss.png").display()),
        Err(e) => println!("no plot ({e}); render it elsewhere with --plot-only"),
    }
    let gap = runs[0].final_valid() / runs[1].final_valid() - 1.0;
    if !(runs[0].final_valid().is_finite() && gap.abs() <= 0.02) {
        eprintln!("FAILED: flashopt's final validation loss is not within 2% of fp32 AdamW's");
        std::process::exit(1);
    }
}
