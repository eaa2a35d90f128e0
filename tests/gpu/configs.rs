//! Every shipped optimizer and master mode, other dtypes, parameter groups, per-tensor
//! launches, kernel shapes and GPT-2's 148 tensors: stepped on the GPU (ONE launch for
//! all tensors, padding poisoned) and on the CPU reference with the same gradients,
//! every stored bit compared after every step.

use std::time::Instant;

use flashopt::GpuOptimizer;
use flashopt::ir::def::{OptimizerDef, Range, name};
use flashopt::ir::interp::{self, GradBuf, HostTensor, PartData};
use flashopt::ir::{HyperValues, Rounding, StateKind, compile};
use flashopt::optimizers::{Adam, AdamW, Lion, Sgd, SgdW};
use flashopt::runtime::raw;
use flashopt::{FloatDtype, MasterMode, OptimizerSpec, PlanConfig, TensorId};
use flashopt_cubecl::codegen::bindings::{Arithmetic, KernelShape};

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

/// What a GPU run agreed on with the CPU reference, over every step compared.
#[derive(Default)]
struct Compared {
    elements: u64,
    /// Elements whose master weight agrees bit for bit.
    exact_masters: u64,
    /// Every stored bit of every tensor (parameters, corrections, codes, scales).
    all_bits: bool,
    max_master_diff: f32,
    /// Stored state values (every part but the parameters) and those that differ.
    state_values: u64,
    state_differing: u64,
    /// The first stored values that differ: tensor, part, index, CPU bytes, GPU bytes.
    first_differences: Vec<String>,
}

/// Tensor `i` belongs to parameter group `i % groups`. Two CPU steps make states that
/// are not zero, then three steps on both sides (the GPU from the CPU's state each
/// time, so differences do not compound), compared after every step.
fn run<S: OptimizerSpec>(client: &Client, r: Run<'_>) -> Compared {
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
    let mut c = Compared {
        all_bits: true,
        ..Compared::default()
    };
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
        let got = gpu.download();
        let resident: Vec<&str> = plan
            .resident_parts()
            .map(|(_, p)| p.name.as_str())
            .collect();
        for ((name, got), want) in got.iter().zip(&cpu) {
            c.elements += want.len() as u64;
            c.all_bits &= same_bits(got, want);
            let (gm, cm) = (got.master_f32(&plan), want.master_f32(&plan));
            for (a, b) in gm.iter().zip(&cm) {
                c.exact_masters += u64::from(a.to_bits() == b.to_bits());
                c.max_master_diff = c.max_master_diff.max((a - b).abs());
            }
            for (k, (x, y)) in got.parts.iter().zip(&want.parts).enumerate() {
                let size = x.storage().size_bytes();
                let (x, y) = (raw::part_bytes(x), raw::part_bytes(y));
                let mut differing = 0u64;
                for (i, (a, b)) in x.chunks(size).zip(y.chunks(size)).enumerate() {
                    if a == b {
                        continue;
                    }
                    differing += 1;
                    if c.first_differences.len() < 8 {
                        c.first_differences.push(format!(
                            "step {t} tensor {name} part {} [{i} of {}]: GPU {a:?} CPU {b:?}",
                            resident[k],
                            x.len() / size
                        ));
                    }
                }
                // Part 0 is the parameter; the rest are state (and correction) values.
                if k > 0 {
                    c.state_values += (x.len() / size) as u64;
                    c.state_differing += differing;
                }
            }
        }
        if r.shape.arithmetic() == Arithmetic::Approximate {
            // Each step starts from the reference's state: one step's error, measured.
            flashopt::Optimizer::replace_tensors(&mut gpu, cpu.clone()).unwrap();
        }
    }
    c
}

fn check<S: OptimizerSpec>(label: &str, r: Run<'_>) {
    let client = client();
    let config = r.config;
    let tensors = r.tensors.len();
    let start = Instant::now();
    let c = run::<S>(&client, r);
    let line = format!(
        "| {label} | {config} | {tensors} | {} | {:.4}% | {} | {:.1} |",
        c.elements,
        100.0 * c.exact_masters as f64 / c.elements as f64,
        if c.all_bits { "yes" } else { "NO" },
        start.elapsed().as_secs_f64()
    );
    report(&line);
    for d in &c.first_differences {
        report(&format!("  - {d}"));
    }
    assert!(
        c.all_bits && c.exact_masters == c.elements,
        "{line}\n{}",
        c.first_differences.join("\n")
    );
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

/// The dither alone: a state that stores the gradient, rounded with a dither.
struct DitheredStore;

impl OptimizerSpec for DitheredStore {
    const NAME: &'static str = "dithered_store";

    fn definition() -> OptimizerDef {
        let mut def = OptimizerDef::new(Self::NAME);
        def.hyper("lr", 1e-3, Range::at_least(0.0));
        def.state_rounded("s", StateKind::Signed, None, Rounding::Dithered);
        def.assign("s", name("g"));
        def.assign("p", name("p") - name("lr") * name("s"));
        def
    }

    fn hyper_values(&self) -> Result<HyperValues, flashopt::ir::HyperError> {
        Ok(HyperValues::defaults(&Self::definition().hyper_params))
    }
}

#[test]
fn dithered_store_every_master_mode() {
    every_master("dithered store", &DitheredStore);
}

/// SgdW with momentum, dampening and weight decay all in play.
fn sgdw() -> SgdW {
    SgdW {
        momentum: 0.9,
        dampening: 0.1,
        weight_decay: 0.01,
        ..SgdW::default()
    }
}

#[test]
fn sgdw_every_master_mode() {
    every_master("SgdW", &sgdw());
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
        PlanConfig::f32_params(),
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

#[test]
fn gpt2_148_tensors_adam() {
    gpt2("Adam", &Adam::default(), 6);
}

#[test]
fn gpt2_148_tensors_sgdw() {
    gpt2("SgdW", &sgdw(), 7);
}

/// The opt-in approximate arithmetic (`Arithmetic::Approximate`) against the exact CPU
/// reference, one step at a time from the same state: how many master weights and
/// stored state values differ, and by how much. The bounds fail on a wrong kernel (a
/// wrong reciprocal or root moves every element) while allowing last-bit differences.
fn approximate<S: OptimizerSpec>(label: &str, spec: &S) {
    let client = client();
    let tensors = small();
    let c = run::<S>(
        &client,
        Run {
            groups: one_group(spec),
            config: PlanConfig::bf16(MasterMode::Int8),
            tensors: &tensors,
            seed: 29,
            release: false,
            shape: KernelShape::default().with_arithmetic(Arithmetic::Approximate),
        },
    );
    let masters = 100.0 * c.exact_masters as f64 / c.elements as f64;
    let states = 100.0 * c.state_differing as f64 / c.state_values as f64;
    let line = format!(
        "| {label} approximate | {} | {masters:.4}% of master weights bit-exact | \
         max master difference {:.3e} | {states:.4}% of stored state values differ |",
        c.elements, c.max_master_diff
    );
    report(&line);
    assert!(masters >= 99.0 && states <= 1.0, "{line}");
    assert!(c.max_master_diff <= 1e-4, "{line}");
}

#[test]
fn approximate_arithmetic_stays_close_to_the_reference() {
    approximate("AdamW-24", &AdamW::default());
    approximate("Lion-24", &Lion::default());
    approximate(
        "SGD-24",
        &Sgd {
            momentum: 0.9,
            ..Sgd::default()
        },
    );
}
