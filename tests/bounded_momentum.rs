//! The step cap of the shipped Adam and AdamW (`bound_momentum`, on by default) against
//! flashoptim's arithmetic (`bound_momentum: false`): the same bits while the cap does not
//! bind, and the cap catching 8-bit Adam's runaway step, in the state the 353M GPT's
//! output layer was caught in (docs/TRAINING.md): a group of 32 where 31 elements take
//! large gradients of alternating sign (a large second moment, a small momentum) and
//! one takes a small gradient of one sign (its second moment under 1/510 of the
//! group's largest, code 0; its momentum code not 0), then a zero gradient.
//! `state_health` counts exactly that element.

mod common;

use common::Rng;
use flashopt::ir::interp::{GradBuf, PartData};
use flashopt::optimizers::{Adam, AdamW};
use flashopt::runtime::StateHealth;
use flashopt::{Codec, CpuOptimizer, MasterMode, Optimizer, OptimizerSpec, PlanConfig, TensorId};

const LR: f64 = 1e-3;

fn f32_states<S: OptimizerSpec>(spec: &S) -> CpuOptimizer {
    let mut def = S::definition();
    for s in &mut def.states {
        s.codec = Some(Codec::F32);
    }
    let mut opt =
        CpuOptimizer::from_plan(flashopt::ir::compile(&def, PlanConfig::f32_params()).unwrap());
    for (h, value) in def
        .hyper_params
        .iter()
        .zip(spec.hyper_values().unwrap().values())
    {
        opt.set_hyper(&h.name, *value).unwrap();
    }
    opt
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn adamw(bound_momentum: bool) -> AdamW {
    AdamW {
        lr: LR,
        weight_decay: 0.1,
        bound_momentum,
        ..AdamW::default()
    }
}

/// No L2 term: it would add `weight_decay * p` to every gradient, element 0's too.
fn adam(bound_momentum: bool) -> Adam {
    Adam {
        lr: LR,
        weight_decay: 0.0,
        bound_momentum,
        ..Adam::default()
    }
}

/// With f32 states exact Adam never reaches the cap: 20 steps, bit for bit.
#[test]
fn the_cap_changes_nothing_with_exact_states() {
    for (mut a, mut b) in [
        (f32_states(&adamw(true)), f32_states(&adamw(false))),
        (f32_states(&adam(true)), f32_states(&adam(false))),
    ] {
        let mut rng = Rng::new(7);
        let init = rng.normals(4096, 1.0);
        let (ia, ib) = (
            a.add_tensor("w", &init).unwrap(),
            b.add_tensor("w", &init).unwrap(),
        );
        for t in 1..=20 {
            // Gradients of one sign for a quarter of the elements: the ratio the cap
            // bounds comes closest to it there.
            let mut g = rng.normals(4096, 0.01);
            g[..1024].iter_mut().for_each(|x| *x = x.abs());
            a.step(&[GradBuf::F32(&g)]).unwrap();
            b.step(&[GradBuf::F32(&g)]).unwrap();
            assert_eq!(
                bits(&a.master(ia).unwrap()),
                bits(&b.master(ib).unwrap()),
                "step {t}"
            );
        }
    }
}

fn bf16(v: &[f32]) -> Vec<half::bf16> {
    v.iter().map(|&x| half::bf16::from_f32(x)).collect()
}

fn code(opt: &CpuOptimizer, id: TensorId, part: &str, i: usize) -> i32 {
    match opt.tensor(id).unwrap().part(opt.plan(), part) {
        Some(PartData::I8(c)) => i32::from(c[i]),
        Some(PartData::U8(c)) => i32::from(c[i]),
        other => panic!("{part}: {other:?}"),
    }
}

/// Ten steps of the mixed group, then element 0's gradient is zero.
fn mixed_group(capped: &mut CpuOptimizer, flashoptim: &mut CpuOptimizer) -> (TensorId, TensorId) {
    let init = vec![0.5f32; 32];
    let ic = capped.add_tensor("head.weight", &init).unwrap();
    let ifo = flashoptim.add_tensor("head.weight", &init).unwrap();
    for t in 0..10 {
        let mut g: Vec<f32> = (0..32)
            .map(|_| if t % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        g[0] = 0.0015;
        capped.step(&[GradBuf::Bf16(&bf16(&g))]).unwrap();
        flashoptim.step(&[GradBuf::Bf16(&bf16(&g))]).unwrap();
    }
    (ic, ifo)
}

fn runaway_is_capped(mut capped: CpuOptimizer, mut flashoptim: CpuOptimizer) {
    let (ic, ifo) = mixed_group(&mut capped, &mut flashoptim);
    assert_eq!(
        code(&flashoptim, ifo, "v::codes", 0),
        0,
        "second moment code 0"
    );
    assert!(
        code(&flashoptim, ifo, "m::codes", 0) > 0,
        "momentum code not 0"
    );
    assert!(code(&flashoptim, ifo, "v::codes", 1) > 0);
    assert_eq!(
        flashoptim.state_health(),
        vec![StateHealth {
            tensor: "head.weight".into(),
            zero_denominators: 1,
            in_zero_scale_groups: 0,
        }]
    );
    // The cap binds on element 0 only.
    assert_eq!(
        bits(&capped.master(ic).unwrap()[1..]),
        bits(&flashoptim.master(ifo).unwrap()[1..])
    );

    let (before, capped_before) = (
        flashoptim.master(ifo).unwrap()[0],
        capped.master(ic).unwrap()[0],
    );
    let g: Vec<f32> = (0..32).map(|i| if i == 0 { 0.0 } else { 1.0 }).collect();
    capped.step(&[GradBuf::Bf16(&bf16(&g))]).unwrap();
    flashoptim.step(&[GradBuf::Bf16(&bf16(&g))]).unwrap();
    let runaway = (flashoptim.master(ifo).unwrap()[0] - before).abs();
    let step = (capped.master(ic).unwrap()[0] - capped_before).abs();
    assert!(
        runaway > 100.0 * LR as f32,
        "flashoptim's arithmetic steps {runaway}"
    );
    // Exact Adam's cap at t = 11 for b1 = 0.9, b2 = 0.999 is about 1.4 lr.
    assert!(step < 2.0 * LR as f32, "the capped step {step}");
    // The other 31 elements step alike.
    assert_eq!(
        bits(&capped.master(ic).unwrap()[1..]),
        bits(&flashoptim.master(ifo).unwrap()[1..])
    );
}

#[test]
fn adamw_caps_the_step_of_a_second_moment_rounded_to_zero() {
    let config = PlanConfig::bf16(MasterMode::Int8);
    runaway_is_capped(
        CpuOptimizer::for_spec(&adamw(true), config).unwrap(),
        CpuOptimizer::for_spec(&adamw(false), config).unwrap(),
    );
}

#[test]
fn adam_caps_the_step_of_a_second_moment_rounded_to_zero() {
    let config = PlanConfig::bf16(MasterMode::Int8);
    runaway_is_capped(
        CpuOptimizer::for_spec(&adam(true), config).unwrap(),
        CpuOptimizer::for_spec(&adam(false), config).unwrap(),
    );
}

/// A group whose largest second moment is under f16's smallest subnormal stores a
/// scale of 0: every element's second moment decodes to 0, while the momentum's
/// scale (of `|m|`, which grows faster early on) survives.
#[test]
fn state_health_counts_groups_whose_scale_underflows() {
    let mut opt =
        CpuOptimizer::for_spec(&adamw(false), PlanConfig::bf16(MasterMode::Int8)).unwrap();
    let id = opt.add_tensor("w", &[0.5f32; 40]).unwrap();
    // sqrt((1 - b2) * g^2) = 0.0316 * 5e-7 = 1.6e-8: under 2^-25, so its f16 scale
    // is 0; m = 0.1 * 5e-7 = 5e-8 rounds to an f16 subnormal.
    opt.step(&[GradBuf::Bf16(&bf16(&[5e-7f32; 40]))]).unwrap();
    let health = opt.state_health();
    assert_eq!(
        health,
        vec![StateHealth {
            tensor: "w".into(),
            zero_denominators: 40,
            in_zero_scale_groups: 40,
        }]
    );
    assert_eq!(
        code(&opt, id, "v::codes", 0),
        255,
        "the code itself is not 0"
    );
    assert!(health[0].to_string().contains("40 element(s)"));
}
