//! Every shipped optimizer and master mode, other dtypes, parameter groups, per-tensor
//! launches, kernel shapes and GPT-2's 148 tensors: stepped on the GPU (ONE launch for
//! all tensors, padding poisoned) and on the CPU reference with the same gradients,
//! every stored bit compared after every step.

use std::time::Instant;

use flashopt::ir::interp::{self, GradBuf, HostTensor, PartData};
use flashopt::ir::{HyperValues, compile};
use flashopt::optimizers::{Adam, AdamW, Lion, Sgd, SgdW};
use flashopt::runtime::GpuOptimizer;
use flashopt::{FloatDtype, MasterMode, OptimizerSpec, PlanConfig, TensorId};
use flashopt_cubecl::bindings::KernelShape;

use crate::common::Rng;
use crate::{Client, client, gpt2_shapes, report, same_bits};

/// Lengths around the group size and past the interpreter's blocks.
fn small() -> Vec<(String, usize)> {
    [1usize, 31, 32, 33, 4099, 1_000_017]
        .iter()
        .map(|&n| (format!("t{n}"), n))
        .collect()
}

fn grad_bufs(g: &[PartData]) -> Vec<GradBuf<'_>> {
    g.iter()
        .map(|g| g.as_grad().expect("float gradients"))
        .collect()
}

struct Run<'a> {
    groups: Vec<HyperValues>,
    config: PlanConfig,
    tensors: &'a [(String, usize)],
    seed: u64,
    /// One launch per tensor (gradient release) instead of one for all.
    release: bool,
    shape: KernelShape,
}

/// Tensor `i` belongs to parameter group `i % groups`. Two CPU steps make states that
/// are not zero, then three steps on both sides; returns the elements compared, those
/// whose master weight agrees bit for bit, and whether every stored bit of every
/// tensor (parameters, corrections, codes, scales) agreed after every step.
fn run<S: OptimizerSpec>(client: &Client, r: Run<'_>) -> (u64, u64, bool) {
    let plan = compile(&S::definition(), r.config).unwrap();
    let group_of = |i: usize| i % r.groups.len();
    let mut rng = Rng::new(r.seed);
    let mut cpu: Vec<HostTensor> = r
        .tensors
        .iter()
        .map(|(_, n)| HostTensor::from_f32(&plan, &rng.normals(*n, 0.5)))
        .collect();
    let grads = |rng: &mut Rng| -> Vec<PartData> {
        r.tensors
            .iter()
            .map(|(_, n)| PartData::round_from_f32(r.config.grad, &rng.normals(*n, 0.02)))
            .collect()
    };
    let cpu_step = |cpu: &mut Vec<HostTensor>, g: &[PartData], t: u64| {
        for (i, (tensor, g)) in cpu.iter_mut().zip(grad_bufs(g)).enumerate() {
            let scalars = plan.kernel_scalars(&r.groups[group_of(i)], t).unwrap();
            interp::run(&plan, &scalars, tensor, g).unwrap();
        }
    };
    for t in 1..=2 {
        let g = grads(&mut rng);
        cpu_step(&mut cpu, &g, t);
    }
    let named = r
        .tensors
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.clone(), group_of(i), cpu[i].clone()))
        .collect();
    let mut gpu = GpuOptimizer::from_host_grouped(
        client.clone(),
        plan.clone(),
        r.groups.clone(),
        named,
        0xFF,
    )
    .unwrap();
    gpu.set_kernel_shape(r.shape);
    flashopt::Optimizer::set_steps_taken(&mut gpu, 2);
    let (mut elements, mut exact, mut all_bits) = (0u64, 0u64, true);
    for t in 3..=5 {
        let g = grads(&mut rng);
        cpu_step(&mut cpu, &g, t);
        gpu.write_grads(&grad_bufs(&g)).unwrap();
        if r.release {
            for id in 0..r.tensors.len() {
                assert!(gpu.step_tensor(TensorId(id)).unwrap().applied());
            }
            gpu.finish_step();
        } else {
            assert!(gpu.step().unwrap().applied());
        }
        for ((_, got), want) in gpu.download().iter().zip(&cpu) {
            elements += want.len() as u64;
            all_bits &= same_bits(got, want);
            let (gm, cm) = (got.master_f32(&plan), want.master_f32(&plan));
            exact += gm
                .iter()
                .zip(&cm)
                .filter(|(a, b)| a.to_bits() == b.to_bits())
                .count() as u64;
        }
    }
    (elements, exact, all_bits)
}

fn check<S: OptimizerSpec>(label: &str, r: Run<'_>) {
    let client = client();
    let config = r.config;
    let tensors = r.tensors.len();
    let start = Instant::now();
    let (elements, exact, all_bits) = run::<S>(&client, r);
    let line = format!(
        "| {label} | {config} | {tensors} | {elements} | {:.4}% | {} | {:.1} |",
        100.0 * exact as f64 / elements as f64,
        if all_bits { "yes" } else { "NO" },
        start.elapsed().as_secs_f64()
    );
    report(&line);
    assert!(all_bits && exact == elements, "{line}");
}

fn one_group<S: OptimizerSpec>(spec: &S) -> Vec<HyperValues> {
    vec![spec.hyper_values().unwrap()]
}

fn every_master<S: OptimizerSpec>(label: &str, spec: &S) {
    for master in MasterMode::ALL {
        check::<S>(
            label,
            Run {
                groups: one_group(spec),
                config: PlanConfig::bf16(master),
                tensors: &small(),
                seed: 7,
                release: false,
                shape: KernelShape::default(),
            },
        );
    }
}

#[test]
fn adamw_every_master_mode() {
    every_master(
        "AdamW",
        &AdamW {
            decouple_lr: true,
            initial_lr: Some(3e-3),
            ..AdamW::default()
        },
    );
}

#[test]
fn adam_every_master_mode() {
    every_master(
        "Adam",
        &Adam {
            weight_decay: 0.01,
            ..Adam::default()
        },
    );
}

#[test]
fn lion_every_master_mode() {
    every_master(
        "Lion",
        &Lion {
            weight_decay: 0.1,
            ..Lion::default()
        },
    );
}

#[test]
fn sgd_every_master_mode() {
    every_master(
        "Sgd",
        &Sgd {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.01,
            ..Sgd::default()
        },
    );
}

#[test]
fn sgdw_every_master_mode() {
    every_master(
        "SgdW",
        &SgdW {
            momentum: 0.9,
            dampening: 0.1,
            weight_decay: 0.01,
            ..SgdW::default()
        },
    );
}

#[test]
fn adamw_f16_and_f32_parameters() {
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
        check::<AdamW>(
            "AdamW",
            Run {
                groups: one_group(&AdamW::default()),
                config,
                tensors: &small(),
                seed: 11,
                release: false,
                shape: KernelShape::default(),
            },
        );
    }
}

fn two_groups() -> Vec<HyperValues> {
    let decay = AdamW {
        lr: 1e-3,
        weight_decay: 0.1,
        ..AdamW::default()
    };
    let no_decay = AdamW {
        lr: 3e-3,
        weight_decay: 0.0,
        ..AdamW::default()
    };
    vec![
        decay.hyper_values().unwrap(),
        no_decay.hyper_values().unwrap(),
    ]
}

#[test]
fn adamw_parameter_groups_in_one_launch_and_per_tensor() {
    for (label, release, seed) in [
        ("AdamW, 2 parameter groups", false, 13),
        ("AdamW, 2 groups, per-tensor launches", true, 17),
    ] {
        check::<AdamW>(
            label,
            Run {
                groups: two_groups(),
                config: PlanConfig::bf16(MasterMode::Int8),
                tensors: &small(),
                seed,
                release,
                shape: KernelShape::default(),
            },
        );
    }
}

#[test]
fn adamw_other_kernel_shapes() {
    for lanes in [8, 32] {
        check::<AdamW>(
            &format!("AdamW, {lanes} lanes per unit"),
            Run {
                groups: one_group(&AdamW::default()),
                config: PlanConfig::bf16(MasterMode::Int8),
                tensors: &small(),
                seed: 19,
                release: false,
                shape: KernelShape::new(lanes).unwrap(),
            },
        );
    }
}

fn gpt2<S: OptimizerSpec>(label: &str, spec: &S, seed: u64) {
    check::<S>(
        &format!("{label}, GPT-2 124M"),
        Run {
            groups: one_group(spec),
            config: PlanConfig::bf16(MasterMode::Int8),
            tensors: &gpt2_shapes(),
            seed,
            release: false,
            shape: KernelShape::default(),
        },
    );
}

#[test]
fn gpt2_148_tensors_adamw() {
    gpt2("AdamW", &AdamW::default(), 3);
}

#[test]
fn gpt2_148_tensors_lion() {
    gpt2("Lion", &Lion::default(), 4);
}

#[test]
fn gpt2_148_tensors_sgd() {
    gpt2(
        "Sgd",
        &Sgd {
            momentum: 0.9,
            ..Sgd::default()
        },
        5,
    );
}
