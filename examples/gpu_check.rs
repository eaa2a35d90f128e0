//! GPU correctness: every shipped optimizer and master mode, stepped on the GPU with
//! ONE launch for all tensors, against the CPU reference interpreter.
//!
//! ```text
//! cargo build --release --example gpu_check     # here
//! ./gpu_check [out.md]                           # on the GPU machine (CUDA)
//! ```
//!
//! For each configuration: tensors of 1, 31, 32, 33, 4099 and 1M+17 elements (and
//! GPT-2 124M's 148 tensors for three optimizers) get random parameters and states
//! (two CPU steps from random gradients), are uploaded with every padding byte
//! poisoned (0xFF: NaN parameters and scales), and take three more steps on both
//! sides with the same random gradients. Every element is compared after every step.

use std::fmt::Write as _;
use std::time::Instant;

use flashopt::ir::codec::master::log_scale;
use flashopt::ir::interp::{self, CorrectionData, GradBuf, HostTensor, ParamData, StateData};
use flashopt::ir::{HyperValues, OptimizerDef, Plan, compile};
use flashopt::optimizers::{Adam, AdamW, Lion, Sgd, SgdW};
use flashopt::runtime::{CpuOptimizer, GpuOptimizer, StepOutcome};
use flashopt::{FloatDtype, MasterMode, OptimizerSpec, PlanConfig};
use flashopt_cubecl::cubecl::Runtime;
use flashopt_cubecl::cubecl::client::ComputeClient;
use flashopt_cubecl::cubecl::cuda::CudaRuntime;
use flashopt_cubecl::cubecl::{self, prelude::*};
use flashopt_cubecl::define::KernelShape;
use half::{bf16, f16};

struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        let (u1, u2) = (self.uniform().max(1e-300), self.uniform());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
    fn normals(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * scale).collect()
    }
}

enum Grad {
    Bf16(Vec<bf16>),
    F16(Vec<f16>),
    F32(Vec<f32>),
}
impl Grad {
    fn new(dtype: FloatDtype, v: &[f32]) -> Grad {
        match dtype {
            FloatDtype::Bf16 => Grad::Bf16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
            FloatDtype::F16 => Grad::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            FloatDtype::F32 => Grad::F32(v.to_vec()),
        }
    }
    fn buf(&self) -> GradBuf<'_> {
        match self {
            Grad::Bf16(v) => GradBuf::Bf16(v),
            Grad::F16(v) => GradBuf::F16(v),
            Grad::F32(v) => GradBuf::F32(v),
        }
    }
}

#[derive(Default)]
struct Tally {
    elements: u64,
    exact: u64,
    close: u64,
    worst: String,
}

/// Compare one tensor element by element: `exact` when every stored bit agrees,
/// `close` when the master weight is within one correction step (one narrow ULP
/// without corrections, 4 f32 ULPs for f32) and every state code within one code of
/// the same-or-adjacent f16 scale (4 ULPs for plain states).
fn compare(plan: &Plan, gpu: &HostTensor, cpu: &HostTensor, tally: &mut Tally, label: &str) {
    let (gm, cm) = (gpu.master_f32(), cpu.master_f32());
    let (gp, cp) = (gpu.param_f32(), cpu.param_f32());
    let narrow_bits = |t: &HostTensor, i: usize| match &t.param {
        ParamData::Bf16(v) => v[i].to_bits(),
        ParamData::F16(v) => v[i].to_bits(),
        ParamData::F32(_) => 0,
    };
    let cfg = plan.config;
    for i in 0..cm.len() {
        let mut exact = gm[i].to_bits() == cm[i].to_bits() && gp[i].to_bits() == cp[i].to_bits();
        let tol = match (cfg.param, cfg.master) {
            (FloatDtype::F32, _) => 4.0 * f32::EPSILON * cm[i].abs().max(f32::MIN_POSITIVE),
            (d, MasterMode::None) => 2f32.powi(log_scale(narrow_bits(cpu, i), d) + 1),
            (d, m) => {
                2f32.powi(log_scale(narrow_bits(cpu, i), d)) / m.code_max().unwrap()
                    + 2.0 * f32::EPSILON * cm[i].abs()
            }
        };
        let mut close = (gm[i] - cm[i]).abs() <= tol || (gm[i].is_nan() && cm[i].is_nan());
        for (gs, cs) in gpu.states.iter().zip(&cpu.states) {
            let g = i / 32;
            let (same, near) = match (gs, cs) {
                (
                    StateData::Int8 {
                        codes: a,
                        scales: sa,
                    },
                    StateData::Int8 {
                        codes: b,
                        scales: sb,
                    },
                ) => (
                    a[i] == b[i] && sa[g].to_bits() == sb[g].to_bits(),
                    (i16::from(a[i]) - i16::from(b[i])).abs() <= 1
                        && sa[g].to_bits().abs_diff(sb[g].to_bits()) <= 1,
                ),
                (
                    StateData::Uint8 {
                        codes: a,
                        scales: sa,
                    },
                    StateData::Uint8 {
                        codes: b,
                        scales: sb,
                    },
                ) => (
                    a[i] == b[i] && sa[g].to_bits() == sb[g].to_bits(),
                    a[i].abs_diff(b[i]) <= 1 && sa[g].to_bits().abs_diff(sb[g].to_bits()) <= 1,
                ),
                (StateData::Bf16(a), StateData::Bf16(b)) => {
                    (a[i] == b[i], a[i].to_bits().abs_diff(b[i].to_bits()) <= 1)
                }
                (StateData::F32(a), StateData::F32(b)) => {
                    (a[i] == b[i], a[i].to_bits().abs_diff(b[i].to_bits()) <= 4)
                }
                _ => (false, false),
            };
            exact &= same;
            close &= near;
        }
        if let (CorrectionData::Int8(a), CorrectionData::Int8(b)) =
            (&gpu.correction, &cpu.correction)
        {
            exact &= a[i] == b[i];
        }
        if let (CorrectionData::Int16(a), CorrectionData::Int16(b)) =
            (&gpu.correction, &cpu.correction)
        {
            exact &= a[i] == b[i];
        }
        tally.elements += 1;
        tally.exact += u64::from(exact);
        tally.close += u64::from(close || exact);
        if !(close || exact) && tally.worst.is_empty() {
            tally.worst = format!("{label}[{i}]: gpu master {:e}, cpu {:e}", gm[i], cm[i]);
        }
    }
}

fn run_config<S: OptimizerSpec>(
    client: &flashopt_cubecl::cubecl::client::ComputeClient<CudaRuntime>,
    spec: &S,
    config: PlanConfig,
    lengths: &[(String, usize)],
    seed: u64,
) -> Tally {
    run_groups::<S>(
        client,
        vec![spec.hyper_values().expect("valid")],
        config,
        lengths,
        seed,
        false,
    )
}

/// Tensor `i` belongs to parameter group `i % groups.len()`.
fn run_groups<S: OptimizerSpec>(
    client: &flashopt_cubecl::cubecl::client::ComputeClient<CudaRuntime>,
    groups: Vec<HyperValues>,
    config: PlanConfig,
    lengths: &[(String, usize)],
    seed: u64,
    release: bool,
) -> Tally {
    println!(
        "... {} {config}, {} tensors, {} parameter group(s)",
        S::NAME,
        lengths.len(),
        groups.len()
    );
    let def: OptimizerDef = S::definition();
    let plan = compile(&def, config).expect("compiles");
    let group_of = |i: usize| i % groups.len();
    let mut rng = Rng(seed | 1);
    let mut cpu: Vec<HostTensor> = lengths
        .iter()
        .map(|(_, n)| HostTensor::from_f32(&plan, &rng.normals(*n, 0.5)))
        .collect();
    let grads = |rng: &mut Rng| -> Vec<Grad> {
        lengths
            .iter()
            .map(|(_, n)| Grad::new(config.grad, &rng.normals(*n, 0.02)))
            .collect()
    };
    let cpu_step = |cpu: &mut Vec<HostTensor>, g: &[Grad], t: u64| {
        for (i, (tensor, g)) in cpu.iter_mut().zip(g).enumerate() {
            let scalars = plan.kernel_scalars(&groups[group_of(i)], t).unwrap();
            interp::run(&plan, &scalars, tensor.buffers(g.buf())).unwrap();
        }
    };
    for t in 1..=2 {
        let g = grads(&mut rng);
        cpu_step(&mut cpu, &g, t);
    }
    let named = lengths
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.clone(), group_of(i), cpu[i].clone()))
        .collect();
    let mut gpu =
        GpuOptimizer::from_host_grouped(client.clone(), plan.clone(), groups.clone(), named, 0xFF)
            .unwrap();
    gpu.set_kernel_shape(kernel_shape());
    gpu.set_steps_taken(2);
    let mut tally = Tally::default();
    for t in 3..=5 {
        let g = grads(&mut rng);
        cpu_step(&mut cpu, &g, t);
        let bufs: Vec<GradBuf<'_>> = g.iter().map(Grad::buf).collect();
        gpu.write_grads(&bufs).unwrap();
        if release {
            // Gradient release: one launch per tensor, as its gradient arrives.
            for id in 0..lengths.len() {
                gpu.step_tensor(flashopt::TensorId(id)).unwrap();
            }
            gpu.finish_step();
        } else {
            gpu.step().unwrap();
        }
        for ((name, got), want) in gpu.download().iter().zip(&cpu) {
            compare(&plan, got, want, &mut tally, &format!("{name} t={t}"));
        }
    }
    tally
}

/// GPT-2 124M's 148 parameter tensors (public config: 12 layers, d=768, vocab 50257, ctx 1024).
fn gpt2_shapes() -> Vec<(String, usize)> {
    let d = 768;
    let mut out = vec![
        ("wte".to_string(), 50257 * d),
        ("wpe".to_string(), 1024 * d),
    ];
    for l in 0..12 {
        for (name, n) in [
            ("ln_1.weight", d),
            ("ln_1.bias", d),
            ("attn.c_attn.weight", d * 3 * d),
            ("attn.c_attn.bias", 3 * d),
            ("attn.c_proj.weight", d * d),
            ("attn.c_proj.bias", d),
            ("ln_2.weight", d),
            ("ln_2.bias", d),
            ("mlp.c_fc.weight", d * 4 * d),
            ("mlp.c_fc.bias", 4 * d),
            ("mlp.c_proj.weight", 4 * d * d),
            ("mlp.c_proj.bias", d),
        ] {
            out.push((format!("h.{l}.{name}"), n));
        }
    }
    out.push(("ln_f.weight".to_string(), d));
    out.push(("ln_f.bias".to_string(), d));
    out
}

/// 1000 AdamW-24 steps of least squares on the GPU and on the CPU reference.
fn toy_problem(client: &flashopt_cubecl::cubecl::client::ComputeClient<CudaRuntime>) -> String {
    let (samples, features) = (256usize, 64usize);
    let mut rng = Rng(99);
    let x: Vec<f32> = (0..samples * features).map(|_| rng.normal()).collect();
    let w_true: Vec<f32> = (0..features).map(|_| rng.normal()).collect();
    let y: Vec<f32> = (0..samples)
        .map(|i| (0..features).map(|j| x[i * features + j] * w_true[j]).sum())
        .collect();
    let loss_grad = |w: &[f32]| -> (f32, Vec<f32>) {
        let mut g = vec![0.0f32; features];
        let mut loss = 0.0;
        for i in 0..samples {
            let r: f32 = (0..features)
                .map(|j| x[i * features + j] * w[j])
                .sum::<f32>()
                - y[i];
            loss += r * r / samples as f32;
            for j in 0..features {
                g[j] += 2.0 * r * x[i * features + j] / samples as f32;
            }
        }
        (loss, g)
    };
    let spec = AdamW {
        lr: 1e-2,
        weight_decay: 0.0,
        ..AdamW::default()
    };
    let plan = AdamW::plan(PlanConfig::bf16(MasterMode::Int8)).unwrap();
    let hyper = spec.hyper_values().unwrap();
    let init = vec![0.0f32; features];
    let mut cpu = HostTensor::from_f32(&plan, &init);
    let mut gpu = GpuOptimizer::from_host(
        client.clone(),
        plan.clone(),
        hyper.clone(),
        vec![("w".into(), cpu.clone())],
    )
    .unwrap();
    gpu.set_kernel_shape(kernel_shape());
    let (mut cpu_loss, mut gpu_loss) = (0.0, 0.0);
    for t in 1..=1000u64 {
        let (l, g) = loss_grad(&cpu.param_f32());
        cpu_loss = l;
        let g: Vec<bf16> = g.iter().map(|&v| bf16::from_f32(v)).collect();
        interp::run(
            &plan,
            &plan.kernel_scalars(&hyper, t).unwrap(),
            cpu.buffers(GradBuf::Bf16(&g)),
        )
        .unwrap();
        let w = gpu.download().remove(0).1;
        let (l, g) = loss_grad(&w.param_f32());
        gpu_loss = l;
        let g: Vec<bf16> = g.iter().map(|&v| bf16::from_f32(v)).collect();
        gpu.write_grads(&[GradBuf::Bf16(&g)]).unwrap();
        gpu.step().unwrap();
    }
    let w = gpu.download().remove(0).1;
    let diff = w
        .master_f32()
        .iter()
        .zip(cpu.master_f32())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    format!(
        "least squares, AdamW-24 bf16, 1000 steps: final loss GPU {gpu_loss:.6e}, CPU {cpu_loss:.6e}; max |master GPU - CPU| {diff:.3e}"
    )
}

/// Checkpoints, non-finite gradients and the numerics check on the GPU, against the
/// CPU reference. Returns the report lines and whether everything held.
fn guards(client: &ComputeClient<CudaRuntime>) -> (String, bool) {
    let dir = std::env::temp_dir().join(format!("flashopt-guards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lens = [1usize, 33, 4099];
    let spec = AdamW {
        lr: 1e-2,
        weight_decay: 0.1,
        ..AdamW::default()
    };
    let config = PlanConfig::bf16(MasterMode::Int8);
    let plan = AdamW::plan(config).unwrap();
    let mut rng = Rng(0x5eed);
    let inits: Vec<Vec<f32>> = lens.iter().map(|&n| rng.normals(n, 0.5)).collect();
    let mut cpu = CpuOptimizer::for_spec(&spec, config).unwrap();
    for (i, init) in inits.iter().enumerate() {
        cpu.add_tensor(&format!("t{i}"), init).unwrap();
    }
    let tensors = inits
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("t{i}"), HostTensor::from_f32(&plan, v)))
        .collect();
    let mut gpu = GpuOptimizer::from_host(
        client.clone(),
        plan.clone(),
        spec.hyper_values().unwrap(),
        tensors,
    )
    .unwrap();
    gpu.set_kernel_shape(kernel_shape());
    let grads = |rng: &mut Rng| -> Vec<Vec<bf16>> {
        lens.iter()
            .map(|&n| {
                rng.normals(n, 0.02)
                    .iter()
                    .map(|&x| bf16::from_f32(x))
                    .collect()
            })
            .collect()
    };
    let step_both =
        |cpu: &mut CpuOptimizer, gpu: &mut GpuOptimizer<CudaRuntime>, g: &[Vec<bf16>]| {
            let bufs: Vec<GradBuf<'_>> = g.iter().map(|g| GradBuf::Bf16(g)).collect();
            gpu.write_grads(&bufs).unwrap();
            (cpu.step(&bufs).unwrap(), gpu.step().unwrap())
        };
    let same = |cpu: &CpuOptimizer, gpu: &GpuOptimizer<CudaRuntime>| -> bool {
        gpu.download()
            .iter()
            .enumerate()
            .all(|(i, (_, t))| t == cpu.tensor(flashopt::TensorId(i)))
            && cpu.steps_taken() == gpu.steps_taken()
    };
    let mut lines = Vec::new();
    let mut ok = true;
    let mut check = |what: &str, held: bool| {
        ok &= held;
        lines.push(format!("- {what}: {}", if held { "yes" } else { "NO" }));
    };
    for _ in 0..2 {
        let g = grads(&mut rng);
        step_both(&mut cpu, &mut gpu, &g);
    }
    check(
        "GPU state after 2 steps equals the CPU reference, bit for bit",
        same(&cpu, &gpu),
    );

    // A NaN and an infinity among the gradients: both sides skip, nothing changes.
    let mut g = grads(&mut rng);
    g[2][17] = bf16::NAN;
    g[0][0] = bf16::INFINITY;
    let (c, d) = step_both(&mut cpu, &mut gpu, &g);
    check(
        &format!("a step with non-finite gradients is skipped on both ({d:?})"),
        !c.applied() && c == d,
    );
    check("the skipped step changed nothing", same(&cpu, &gpu));

    // Checkpoints: the GPU file loads into the CPU reference and into a fresh GPU
    // optimizer; all three continue alike.
    let path = dir.join("adamw24.safetensors");
    let bytes = gpu.save(&path).unwrap();
    let mut from_file = CpuOptimizer::for_spec(&spec, config).unwrap();
    for (i, &n) in lens.iter().enumerate() {
        from_file
            .add_tensor(&format!("t{i}"), &vec![0.0; n])
            .unwrap();
    }
    from_file.load(&path).unwrap();
    check(
        &format!("the GPU checkpoint ({bytes} bytes) loads into the CPU reference unchanged"),
        same(&from_file, &gpu),
    );
    let zeros = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("t{i}"), HostTensor::from_f32(&plan, &vec![0.0; n])))
        .collect();
    let mut gpu2 = GpuOptimizer::from_host(
        client.clone(),
        plan.clone(),
        spec.hyper_values().unwrap(),
        zeros,
    )
    .unwrap();
    gpu2.load(&path).unwrap();
    let g = grads(&mut rng);
    step_both(&mut cpu, &mut gpu, &g);
    step_both(&mut from_file, &mut gpu2, &g);
    check(
        "after one more step: reloaded GPU = original GPU = CPU reference",
        same(&cpu, &gpu) && same(&cpu, &gpu2) && same(&from_file, &gpu2),
    );
    let lion = dir.join("lion.safetensors");
    let mut l = CpuOptimizer::for_spec(&Lion::default(), config).unwrap();
    for (i, &n) in lens.iter().enumerate() {
        l.add_tensor(&format!("t{i}"), &vec![0.0; n]).unwrap();
    }
    l.save(&lion).unwrap();
    let before = gpu2.download();
    let refused = gpu2.load(&lion).map_err(|e| e.to_string());
    check(
        &format!("a Lion checkpoint is refused by the GPU AdamW ({refused:?}) and changes nothing"),
        refused.is_err() && gpu2.download() == before,
    );

    // check_numerics: the same warnings from the device's parameters as from the CPU's.
    cpu.set_hyper("lr", 1e-7).unwrap();
    gpu.set_hyper("lr", 1e-7).unwrap();
    let (c, d) = (
        cpu.check_numerics(0.1).unwrap(),
        gpu.check_numerics(0.1).unwrap(),
    );
    check(
        &format!(
            "check_numerics at lr 1e-7 warns about {} tensor(s) on both",
            d.len()
        ),
        !c.is_empty() && c == d,
    );
    let _ = std::fs::remove_dir_all(&dir);
    let (clip_lines, clip_ok) = clipping(client);
    lines.push(clip_lines);
    ok &= clip_ok;
    (lines.join("\n"), ok)
}

/// Writes one gradient value on the device, as a trainer's backward pass would:
/// nothing on the host sees it.
#[cube(launch)]
fn poke<F: Float>(grad: &mut Array<F>, index: usize, value: f32) {
    if ABSOLUTE_POS == 0 {
        grad[index] = F::cast_from(value);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Global-norm clipping and the device scan of gradients: against the CPU reference
/// with poisoned padding, a NaN written on the device, and what each costs.
fn clipping(client: &ComputeClient<CudaRuntime>) -> (String, bool) {
    let lens = [1usize, 33, 4099, 100_003];
    let spec = AdamW {
        lr: 1e-2,
        weight_decay: 0.1,
        ..AdamW::default()
    };
    let config = PlanConfig::bf16(MasterMode::Int8);
    let plan = AdamW::plan(config).unwrap();
    let mut rng = Rng(0xc11f);
    let inits: Vec<Vec<f32>> = lens.iter().map(|&n| rng.normals(n, 0.5)).collect();
    let mut cpu = CpuOptimizer::for_spec(&spec, config).unwrap();
    for (i, init) in inits.iter().enumerate() {
        cpu.add_tensor(&format!("t{i}"), init).unwrap();
    }
    let upload = |inits: &[Vec<f32>]| {
        let tensors = inits
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("t{i}"), HostTensor::from_f32(&plan, v)))
            .collect();
        let mut gpu = GpuOptimizer::from_host_padded(
            client.clone(),
            plan.clone(),
            spec.hyper_values().unwrap(),
            tensors,
            0xFF,
        )
        .unwrap();
        gpu.set_kernel_shape(kernel_shape());
        gpu
    };
    let mut gpu = upload(&inits);
    cpu.set_grad_clipping(Some(1.0)).unwrap();
    gpu.set_grad_clipping(Some(1.0)).unwrap();
    let mut lines = vec!["\nclipping (max_norm 1, padding poisoned with 0xFF):".to_string()];
    let mut ok = true;
    let mut check = |what: String, held: bool| {
        ok &= held;
        lines.push(format!("- {what}: {}", if held { "yes" } else { "NO" }));
    };
    let mut worst_norm = 0.0f64;
    let mut same = true;
    for _ in 0..3 {
        let g: Vec<Vec<bf16>> = lens
            .iter()
            .map(|&n| {
                rng.normals(n, 0.02)
                    .iter()
                    .map(|&x| bf16::from_f32(x))
                    .collect()
            })
            .collect();
        let bufs: Vec<GradBuf<'_>> = g.iter().map(|g| GradBuf::Bf16(g)).collect();
        gpu.write_grads(&bufs).unwrap();
        cpu.step(&bufs).unwrap();
        gpu.step().unwrap();
        let (c, d) = (cpu.last_grad_norm().unwrap(), gpu.last_grad_norm().unwrap());
        worst_norm = worst_norm.max((c - d).abs() / c);
        same &= gpu
            .download()
            .iter()
            .enumerate()
            .all(|(i, (_, t))| t == cpu.tensor(flashopt::TensorId(i)));
    }
    check(
        format!(
            "3 clipped steps (norm about {:.2}): GPU = CPU bit for bit; norms agree to {worst_norm:.1e} relative",
            cpu.last_grad_norm().unwrap()
        ),
        same && worst_norm < 1e-12,
    );
    check(
        format!(
            "step_tensor refuses to clip ({:?})",
            gpu.step_tensor(flashopt::TensorId(0)).err()
        ),
        gpu.step_tensor(flashopt::TensorId(0)).is_err(),
    );

    // A NaN written on the device after the host-checked gradients: the clipping
    // reduction finds it, with its place.
    let before = gpu.download();
    let at = gpu.tensor_range(flashopt::TensorId(3)).start + 17;
    let nan_at = |gpu: &GpuOptimizer<CudaRuntime>, value: f32| unsafe {
        poke::launch::<bf16, CudaRuntime>(
            client,
            CubeCount::Static(1, 1, 1),
            CubeDim::new_1d(1),
            ArrayArg::from_raw_parts(gpu.grad_buffer().clone(), at + 1),
            at,
            value,
        )
    };
    nan_at(&gpu, f32::NAN);
    let outcome = gpu.step().unwrap();
    let found = match &outcome {
        StepOutcome::Skipped(f) => (f.tensor.as_str(), f.index, f.count) == ("t3", 17, 1),
        StepOutcome::Applied => false,
    };
    check(
        format!(
            "a NaN written on the device after write_grads is found before the step ({outcome:?})"
        ),
        found && gpu.download() == before,
    );

    // Without clipping: the device scan (on by default) alone.
    gpu.set_grad_clipping(None).unwrap();
    let outcome = gpu.step().unwrap();
    check(
        format!("without clipping, the device scan skips it too ({outcome:?})"),
        !outcome.applied() && gpu.download() == before,
    );
    nan_at(&gpu, 0.25);
    let applied = gpu.step().unwrap().applied();
    check(
        "once repaired on the device, the step applies".to_string(),
        applied && gpu.download() != before,
    );

    // Cost, on 64M parameters: the step alone, with the device scan, with clipping.
    // Each step is followed by a device sync so that all three are timed alike.
    let n = 1 << 26;
    let big = vec![rng.normals(n, 0.5)];
    let mut gpu = upload(&big);
    let g: Vec<bf16> = rng
        .normals(n, 0.02)
        .iter()
        .map(|&x| bf16::from_f32(x))
        .collect();
    gpu.write_grads(&[GradBuf::Bf16(&g)]).unwrap();
    let time = |gpu: &mut GpuOptimizer<CudaRuntime>| {
        let mut samples = Vec::new();
        for i in 0..25 {
            let start = Instant::now();
            assert!(gpu.step().unwrap().applied());
            gpu.sync();
            if i >= 5 {
                samples.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        median(samples)
    };
    gpu.set_check_device_grads(false);
    let plain = time(&mut gpu);
    gpu.set_check_device_grads(true);
    let scanned = time(&mut gpu);
    gpu.set_grad_clipping(Some(1.0)).unwrap();
    let clipped = time(&mut gpu);
    lines.push(format!(
        "- cost, AdamW-24, 67,108,864 bf16 parameters, median of 20 steps each followed by a sync: step {plain:.3} ms; with the device NaN/Inf scan {scanned:.3} ms (+{:.3}); with clipping {clipped:.3} ms (+{:.3})",
        scanned - plain,
        clipped - plain
    ));
    (lines.join("\n"), ok)
}

static KERNEL_SHAPE: std::sync::OnceLock<KernelShape> = std::sync::OnceLock::new();

fn kernel_shape() -> KernelShape {
    *KERNEL_SHAPE.get_or_init(KernelShape::default)
}

/// `gpu_check [REPORT.md] [--lanes N] [--guards-only]`: N lanes per unit (4, 8, 16,
/// 32; default 4); `--guards-only` runs only checkpoints, skipped steps and numerics.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let lanes = args.iter().position(|a| a == "--lanes").map(|i| {
        let n: usize = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("--lanes N");
        KernelShape::new(n).expect("--lanes: 4, 8, 16 or 32")
    });
    KERNEL_SHAPE
        .set(lanes.unwrap_or_default())
        .expect("set once");
    println!("kernel shape: {:?}", kernel_shape());
    if args.iter().any(|a| a == "--guards-only") {
        let client = CudaRuntime::client(&Default::default());
        let (lines, ok) = guards(&client);
        println!("{lines}");
        if let Some(path) = args.first().filter(|a| !a.starts_with("--")) {
            std::fs::write(path, format!("{lines}\n")).expect("write the report");
        }
        if !ok {
            eprintln!("FAILED: a guard did not hold");
            std::process::exit(1);
        }
        println!("all guards held");
        return;
    }
    let out_path = args.first().filter(|a| !a.starts_with("--")).cloned();
    let client = CudaRuntime::client(&Default::default());
    let small: Vec<(String, usize)> = [1usize, 31, 32, 33, 4099, 1_000_017]
        .iter()
        .map(|&n| (format!("t{n}"), n))
        .collect();
    let mut report = String::from(
        "| optimizer | config | tensors | elements x steps | bit-exact | within tolerance | seconds |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut failed = false;
    let mut record = |name: &str, config: PlanConfig, tensors: &str, tally: Tally, secs: f64| {
        let frac = |k: u64| 100.0 * k as f64 / tally.elements.max(1) as f64;
        let ok = frac(tally.close) >= 99.99;
        failed |= !ok;
        let line = format!(
            "| {name} | {config} | {tensors} | {} | {:.4}% | {:.4}%{} | {secs:.1} |\n",
            tally.elements,
            frac(tally.exact),
            frac(tally.close),
            if ok { "" } else { " FAIL" }
        );
        print!("{line}");
        if !tally.worst.is_empty() {
            println!("    first outside tolerance: {}", tally.worst);
        }
        report.push_str(&line);
    };
    macro_rules! each_master {
        ($name:expr, $spec:expr) => {
            for master in MasterMode::ALL {
                let config = PlanConfig::bf16(master);
                let start = Instant::now();
                let tally = run_config(&client, &$spec, config, &small, 7);
                record(
                    $name,
                    config,
                    "6 (1 .. 1M+17)",
                    tally,
                    start.elapsed().as_secs_f64(),
                );
            }
        };
    }
    each_master!(
        "AdamW",
        AdamW {
            decouple_lr: true,
            initial_lr: Some(3e-3),
            ..AdamW::default()
        }
    );
    each_master!(
        "Adam",
        Adam {
            weight_decay: 0.01,
            ..Adam::default()
        }
    );
    each_master!(
        "Lion",
        Lion {
            weight_decay: 0.1,
            ..Lion::default()
        }
    );
    each_master!(
        "Sgd",
        Sgd {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.01,
            ..Sgd::default()
        }
    );
    each_master!(
        "SgdW",
        SgdW {
            momentum: 0.9,
            dampening: 0.1,
            weight_decay: 0.01,
            ..SgdW::default()
        }
    );
    for config in [
        PlanConfig {
            param: FloatDtype::F16,
            grad: FloatDtype::F16,
            master: MasterMode::Int8,
        },
        PlanConfig {
            param: FloatDtype::F16,
            grad: FloatDtype::F32,
            master: MasterMode::Int16,
        },
        PlanConfig::f32(),
    ] {
        let start = Instant::now();
        let tally = run_config(&client, &AdamW::default(), config, &small, 11);
        record(
            "AdamW",
            config,
            "6 (1 .. 1M+17)",
            tally,
            start.elapsed().as_secs_f64(),
        );
    }
    let decay = AdamW {
        lr: 1e-3,
        weight_decay: 0.1,
        ..AdamW::default()
    }
    .hyper_values()
    .unwrap();
    let no_decay = AdamW {
        lr: 3e-3,
        weight_decay: 0.0,
        ..AdamW::default()
    }
    .hyper_values()
    .unwrap();
    let config = PlanConfig::bf16(MasterMode::Int8);
    let start = Instant::now();
    let tally = run_groups::<AdamW>(
        &client,
        vec![decay.clone(), no_decay.clone()],
        config,
        &small,
        13,
        false,
    );
    record(
        "AdamW, 2 parameter groups",
        config,
        "6 (1 .. 1M+17)",
        tally,
        start.elapsed().as_secs_f64(),
    );
    let start = Instant::now();
    let tally = run_groups::<AdamW>(&client, vec![decay, no_decay], config, &small, 17, true);
    record(
        "AdamW, 2 groups, per-tensor launches",
        config,
        "6 (1 .. 1M+17)",
        tally,
        start.elapsed().as_secs_f64(),
    );
    let gpt2 = gpt2_shapes();
    let total: usize = gpt2.iter().map(|(_, n)| n).sum();
    println!(
        "GPT-2 124M: {} tensors, {total} parameters, one launch per step",
        gpt2.len()
    );
    let label = format!("GPT-2 148 tensors ({total})");
    let config = PlanConfig::bf16(MasterMode::Int8);
    let start = Instant::now();
    record(
        "AdamW",
        config,
        &label,
        run_config(&client, &AdamW::default(), config, &gpt2, 3),
        start.elapsed().as_secs_f64(),
    );
    let start = Instant::now();
    record(
        "Lion",
        config,
        &label,
        run_config(&client, &Lion::default(), config, &gpt2, 4),
        start.elapsed().as_secs_f64(),
    );
    let start = Instant::now();
    let sgd = Sgd {
        momentum: 0.9,
        ..Sgd::default()
    };
    record(
        "Sgd",
        config,
        &label,
        run_config(&client, &sgd, config, &gpt2, 5),
        start.elapsed().as_secs_f64(),
    );

    let toy = toy_problem(&client);
    println!("{toy}");
    writeln!(report, "\n{toy}").unwrap();
    let (lines, guards_ok) = guards(&client);
    println!("{lines}");
    writeln!(report, "\n{lines}").unwrap();
    failed |= !guards_ok;
    if let Some(path) = out_path {
        std::fs::write(path, &report).expect("write the report");
    }
    if failed {
        eprintln!("FAILED: some configuration is outside tolerance");
        std::process::exit(1);
    }
    println!("all configurations within tolerance");
}
