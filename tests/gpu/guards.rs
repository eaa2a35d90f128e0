//! Checkpoints, skipped steps, the numerics check, clipping and a 1000-step problem
//! on the GPU, against the CPU reference.

use std::time::Instant;

use flashopt::GpuOptimizer;
use flashopt::ir::interp::{GradBuf, HostTensor};
use flashopt::ir::layout::Shape;
use flashopt::optimizers::{AdamW, Lion};
use flashopt::runtime::{CpuOptimizer, StepOutcome};
use flashopt::{MasterMode, Optimizer, OptimizerSpec, PlanConfig, TensorId};
use flashopt_cubecl::cubecl::cuda::CudaRuntime;
use flashopt_cubecl::cubecl::{self, prelude::*};
use half::bf16;

use crate::common::Rng;
use crate::{Client, client, report, same_bits};

pub(crate) type Gpu = GpuOptimizer<CudaRuntime>;

pub(crate) fn spec() -> AdamW {
    AdamW {
        lr: 1e-2,
        weight_decay: 0.1,
        ..AdamW::default()
    }
}

pub(crate) fn config() -> PlanConfig {
    PlanConfig::bf16(MasterMode::Int8)
}

/// The same AdamW-24 tensors on the CPU reference and on the GPU (padding poisoned).
pub(crate) fn pair(client: &Client, lens: &[usize], seed: u64) -> (CpuOptimizer, Gpu, Rng) {
    let shapes: Vec<Shape> = lens.iter().map(|&n| Shape::vector(n)).collect();
    pair_of(&spec(), config(), client, &shapes, seed)
}

/// The same tensors of `shapes`, of any optimizer and format, on the CPU reference and
/// on the GPU (padding poisoned), initial values from `seed`.
pub(crate) fn pair_of<S: OptimizerSpec>(
    spec: &S,
    config: PlanConfig,
    client: &Client,
    shapes: &[Shape],
    seed: u64,
) -> (CpuOptimizer, Gpu, Rng) {
    let plan = S::plan(config).unwrap();
    let mut rng = Rng::new(seed);
    let inits: Vec<Vec<f32>> = shapes.iter().map(|s| rng.normals(s.len, 0.5)).collect();
    let mut cpu = CpuOptimizer::for_spec(spec, config).unwrap();
    for (i, (init, shape)) in inits.iter().zip(shapes).enumerate() {
        cpu.add_shaped(&format!("t{i}"), &[shape.rows(), shape.row_len], init)
            .unwrap();
    }
    let tensors = inits
        .iter()
        .zip(shapes)
        .enumerate()
        .map(|(i, (v, &shape))| {
            (
                format!("t{i}"),
                HostTensor::from_f32_shaped(&plan, v, shape),
            )
        })
        .collect();
    let hyper = spec.hyper_values().unwrap();
    let gpu = GpuOptimizer::from_host_padded(client.clone(), plan, hyper, tensors, 0xFF).unwrap();
    (cpu, gpu, rng)
}

pub(crate) fn grads(rng: &mut Rng, lens: &[usize]) -> Vec<Vec<bf16>> {
    lens.iter()
        .map(|&n| {
            rng.normals(n, 0.02)
                .into_iter()
                .map(bf16::from_f32)
                .collect()
        })
        .collect()
}

fn step_both(cpu: &mut CpuOptimizer, gpu: &mut Gpu, g: &[Vec<bf16>]) -> (StepOutcome, StepOutcome) {
    let bufs: Vec<GradBuf<'_>> = g.iter().map(|g| GradBuf::Bf16(g)).collect();
    gpu.write_grads(&bufs).unwrap();
    (cpu.step(&bufs).unwrap(), gpu.step().unwrap())
}

pub(crate) fn same(cpu: &CpuOptimizer, gpu: &Gpu) -> bool {
    gpu.download()
        .iter()
        .enumerate()
        .all(|(i, (_, t))| same_bits(t, cpu.tensor(TensorId(i)).unwrap()))
        && cpu.steps_taken() == gpu.steps_taken()
}

fn held(what: &str, ok: bool) {
    report(&format!("- {what}: {}", if ok { "yes" } else { "NO" }));
    assert!(ok, "{what}");
}

#[test]
fn checkpoints_skipped_steps_and_numerics() {
    let client = client();
    let lens = [1usize, 33, 4099];
    let (mut cpu, mut gpu, mut rng) = pair(&client, &lens, 0x5eed);
    for _ in 0..2 {
        let g = grads(&mut rng, &lens);
        step_both(&mut cpu, &mut gpu, &g);
    }
    held(
        "GPU state after 2 steps equals the CPU reference, bit for bit",
        same(&cpu, &gpu),
    );

    // A NaN and an infinity among the gradients: both sides skip, nothing changes.
    let mut g = grads(&mut rng, &lens);
    g[2][17] = bf16::NAN;
    g[0][0] = bf16::INFINITY;
    let (c, d) = step_both(&mut cpu, &mut gpu, &g);
    held(
        &format!("a step with non-finite gradients is skipped on both ({d:?})"),
        !c.applied() && c == d && same(&cpu, &gpu),
    );

    // Checkpoints: the GPU file loads into the CPU reference and into a fresh GPU
    // optimizer; all three continue alike.
    let dir = std::env::temp_dir().join(format!("flashopt-gpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("adamw24.safetensors");
    let bytes = gpu.save(&path).unwrap();
    let mut from_file = CpuOptimizer::for_spec(&spec(), config()).unwrap();
    for (i, &n) in lens.iter().enumerate() {
        from_file
            .add_tensor(&format!("t{i}"), &vec![0.0; n])
            .unwrap();
    }
    from_file.load(&path).unwrap();
    held(
        &format!("the GPU checkpoint ({bytes} bytes) loads into the CPU reference unchanged"),
        same(&from_file, &gpu),
    );
    // The same state saves to the same bytes: the GPU's file twice, and the CPU
    // reference's (the same state) once more.
    let again = dir.join("adamw24-again.safetensors");
    gpu.save(&again).unwrap();
    let from_cpu = dir.join("adamw24-cpu.safetensors");
    cpu.save(&from_cpu).unwrap();
    let first = std::fs::read(&path).unwrap();
    held(
        "the GPU state saved twice, and the CPU reference's, are the same bytes",
        std::fs::read(&again).unwrap() == first && std::fs::read(&from_cpu).unwrap() == first,
    );
    let plan = AdamW::plan(config()).unwrap();
    let zeros = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("t{i}"), HostTensor::from_f32(&plan, &vec![0.0; n])))
        .collect();
    let mut gpu2 =
        GpuOptimizer::from_host(client.clone(), plan, spec().hyper_values().unwrap(), zeros)
            .unwrap();
    gpu2.load(&path).unwrap();
    let g = grads(&mut rng, &lens);
    step_both(&mut cpu, &mut gpu, &g);
    step_both(&mut from_file, &mut gpu2, &g);
    held(
        "after one more step: reloaded GPU = original GPU = CPU reference",
        same(&cpu, &gpu) && same(&cpu, &gpu2) && same(&from_file, &gpu2),
    );
    let lion = dir.join("lion.safetensors");
    let mut l = CpuOptimizer::for_spec(&Lion::default(), config()).unwrap();
    for (i, &n) in lens.iter().enumerate() {
        l.add_tensor(&format!("t{i}"), &vec![0.0; n]).unwrap();
    }
    l.save(&lion).unwrap();
    let before = gpu2.download();
    let refused = gpu2.load(&lion).map_err(|e| e.to_string());
    let unchanged = gpu2
        .download()
        .iter()
        .zip(&before)
        .all(|((_, a), (_, b))| same_bits(a, b));
    held(
        &format!("a Lion checkpoint is refused by the GPU AdamW ({refused:?}) and changes nothing"),
        refused.is_err() && unchanged,
    );

    // check_numerics: the same warnings from the device's parameters as from the CPU's.
    cpu.set_learning_rate(1e-7).unwrap();
    gpu.set_learning_rate(1e-7).unwrap();
    let (c, d) = (cpu.check_numerics().unwrap(), gpu.check_numerics().unwrap());
    held(
        &format!(
            "check_numerics at lr 1e-7 warns about {} tensor(s) on both",
            d.len()
        ),
        !c.is_empty() && c == d,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes one gradient value on the device, as a trainer's backward pass would:
/// nothing on the host sees it.
#[cube(launch)]
fn poke<F: Float>(grad: &mut Array<F>, index: usize, value: f32) {
    if ABSOLUTE_POS == 0 {
        grad[index] = F::cast_from(value);
    }
}

#[test]
fn clipping_and_the_device_scan() {
    let client = client();
    let lens = [1usize, 33, 4099, 100_003];
    let (mut cpu, mut gpu, mut rng) = pair(&client, &lens, 0xc11f);
    cpu.set_grad_clipping(Some(1.0)).unwrap();
    gpu.set_grad_clipping(Some(1.0)).unwrap();
    let (mut worst_norm, mut agree) = (0.0f64, true);
    for _ in 0..3 {
        let g = grads(&mut rng, &lens);
        step_both(&mut cpu, &mut gpu, &g);
        let (c, d) = (cpu.last_grad_norm().unwrap(), gpu.last_grad_norm().unwrap());
        worst_norm = worst_norm.max((c - d).abs() / c);
        agree &= same(&cpu, &gpu);
    }
    held(
        &format!(
            "3 clipped steps (norm about {:.2}, max 1, padding poisoned): GPU = CPU bit for bit; norms agree to {worst_norm:.1e} relative",
            cpu.last_grad_norm().unwrap()
        ),
        agree && worst_norm < 1e-12,
    );
    held(
        "step_tensor refuses to clip",
        gpu.step_tensor(TensorId(0)).is_err(),
    );

    // A NaN written on the device after the host-checked gradients: the clipping
    // reduction finds it, with its place.
    let before = gpu.download();
    let unchanged = |gpu: &Gpu| {
        gpu.download()
            .iter()
            .zip(&before)
            .all(|((_, a), (_, b))| same_bits(a, b))
    };
    let at = gpu.tensor_range(TensorId(3)).unwrap().start + 17;
    let set = |gpu: &Gpu, value: f32| unsafe {
        poke::launch::<bf16, CudaRuntime>(
            &client,
            CubeCount::Static(1, 1, 1),
            CubeDim::new_1d(1),
            ArrayArg::from_raw_parts(gpu.grad_buffer().clone(), at + 1),
            at,
            value,
        )
    };
    set(&gpu, f32::NAN);
    let outcome = gpu.step().unwrap();
    let found = match &outcome {
        StepOutcome::Skipped(f) => (f.tensor.as_str(), f.index, f.count) == ("t3", 17, 1),
        StepOutcome::Applied => false,
    };
    held(
        &format!(
            "a NaN written on the device after write_grads is found before the step ({outcome:?})"
        ),
        found && unchanged(&gpu),
    );
    gpu.set_grad_clipping(None).unwrap();
    let outcome = gpu.step().unwrap();
    held(
        &format!("without clipping, the device scan skips it too ({outcome:?})"),
        !outcome.applied() && unchanged(&gpu),
    );
    set(&gpu, 0.25);
    let applied = gpu.step().unwrap().applied();
    held(
        "once repaired on the device, the step applies",
        applied && !unchanged(&gpu),
    );
    let _ = cubecl::future::block_on(client.sync());
}

#[test]
fn least_squares_1000_steps() {
    let client = client();
    let (samples, features) = (256usize, 64usize);
    let mut rng = Rng::new(99);
    let x: Vec<f32> = (0..samples * features)
        .map(|_| rng.normal() as f32)
        .collect();
    let w_true: Vec<f32> = (0..features).map(|_| rng.normal() as f32).collect();
    let y: Vec<f32> = (0..samples)
        .map(|i| (0..features).map(|j| x[i * features + j] * w_true[j]).sum())
        .collect();
    let loss_grad = |w: &[f32]| -> (f32, Vec<bf16>) {
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
        (loss, g.into_iter().map(bf16::from_f32).collect())
    };
    let spec = AdamW {
        lr: 1e-2,
        weight_decay: 0.0,
        ..AdamW::default()
    };
    let mut cpu = CpuOptimizer::for_spec(&spec, config()).unwrap();
    let w = cpu.add_tensor("w", &vec![0.0; features]).unwrap();
    let plan = AdamW::plan(config()).unwrap();
    let mut gpu = GpuOptimizer::from_host(
        client.clone(),
        plan.clone(),
        spec.hyper_values().unwrap(),
        vec![(
            "w".into(),
            HostTensor::from_f32(&plan, &vec![0.0; features]),
        )],
    )
    .unwrap();
    let start = Instant::now();
    let (mut cpu_loss, mut gpu_loss) = (0.0, 0.0);
    for _ in 0..1000 {
        let (l, g) = loss_grad(&cpu.param(w).unwrap());
        cpu_loss = l;
        cpu.step(&[GradBuf::Bf16(&g)]).unwrap();
        let on_gpu = gpu.download().remove(0).1;
        let (l, g) = loss_grad(&on_gpu.param_f32());
        gpu_loss = l;
        gpu.write_grads(&[GradBuf::Bf16(&g)]).unwrap();
        gpu.step().unwrap();
    }
    let last = gpu.download().remove(0).1;
    let diff = last
        .master_f32(&plan)
        .iter()
        .zip(cpu.master(w).unwrap())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    held(
        &format!(
            "least squares, AdamW-24 bf16, 1000 steps: final loss GPU {gpu_loss:.6e}, CPU {cpu_loss:.6e}; max |master GPU - CPU| {diff:e} ({:.1} s)",
            start.elapsed().as_secs_f64()
        ),
        diff == 0.0 && gpu_loss == cpu_loss,
    );
}

/// `write_grads` writes the gradient buffer in place: a handle of it taken before (as
/// `grad_handle`'s views are) reads what was written, and the step that follows equals
/// the CPU reference's. A buffer over one 16 MiB chunk goes through the pinned copies,
/// a smaller one through cubecl's.
#[test]
fn write_grads_keeps_the_gradient_buffer() {
    write_grads_in_place(
        &[5, 4099, 9_000_001],
        "over one 16 MiB chunk: pinned copies",
    );
    write_grads_in_place(&[5, 4099, 100_003], "under one chunk: cubecl's copies");
}

fn write_grads_in_place(lens: &[usize], path: &str) {
    let client = client();
    let (mut cpu, mut gpu, mut rng) = pair(&client, lens, 0x71e5);
    step_both(&mut cpu, &mut gpu, &grads(&mut rng, lens));
    let held_before = gpu.grad_buffer().clone();
    let next = grads(&mut rng, lens);
    let bufs: Vec<GradBuf<'_>> = next.iter().map(|g| GradBuf::Bf16(g)).collect();
    gpu.write_grads(&bufs).unwrap();
    let end = gpu.tensor_range(TensorId(lens.len() - 1)).unwrap().end;
    let bytes = flashopt_cubecl::device::transfer::download(&client, &held_before, end * 2);
    let in_place = next.iter().enumerate().all(|(i, g)| {
        let range = gpu.tensor_range(TensorId(i)).unwrap();
        let written: Vec<u8> = g.iter().flat_map(|x| x.to_le_bytes()).collect();
        bytes[range.start * 2..range.end * 2] == written[..]
    });
    let cpu_outcome = cpu.step(&bufs).unwrap();
    let gpu_outcome = gpu.step().unwrap();
    held(
        &format!(
            "a handle of the gradient buffer taken before write_grads holds what it wrote (tensors of {lens:?}, {path}), and the step equals the CPU reference's"
        ),
        in_place && cpu_outcome.applied() && gpu_outcome.applied() && same(&cpu, &gpu),
    );
}
