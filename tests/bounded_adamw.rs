//! `BoundedAdamW` against `AdamW`: the same arithmetic bit for bit while the cap does
//! not bind, and the cap catching 8-bit AdamW's one runaway step (a second-moment code
//! rounded to 0 under a non-zero momentum code, stepped with a zero gradient).

mod common;

use common::Rng;
use flashopt::ir::interp::{GradBuf, PartData};
use flashopt::optimizers::{AdamW, BoundedAdamW};
use flashopt::{Codec, CpuOptimizer, MasterMode, Optimizer, OptimizerSpec, PlanConfig};

const LR: f64 = 1e-3;

fn f32_states<S: OptimizerSpec>(spec: &S) -> CpuOptimizer {
    let mut def = S::definition();
    for s in &mut def.states {
        s.codec = Some(Codec::F32);
    }
    let mut opt = CpuOptimizer::from_plan(flashopt::ir::compile(&def, PlanConfig::f32()).unwrap());
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

#[test]
fn equals_adamw_while_the_cap_does_not_bind() {
    let adamw = AdamW {
        lr: LR,
        weight_decay: 0.1,
        ..AdamW::default()
    };
    let bounded = BoundedAdamW {
        lr: LR,
        weight_decay: 0.1,
        ..BoundedAdamW::default()
    };
    let mut a = f32_states(&adamw);
    let mut b = f32_states(&bounded);
    let mut rng = Rng::new(7);
    let init = rng.normals(4096, 1.0);
    let (ia, ib) = (
        a.add_tensor("w", &init).unwrap(),
        b.add_tensor("w", &init).unwrap(),
    );
    for t in 1..=20 {
        let g = rng.normals(4096, 0.01);
        a.step(&[GradBuf::F32(&g)]).unwrap();
        b.step(&[GradBuf::F32(&g)]).unwrap();
        assert_eq!(bits(&a.master(ia)), bits(&b.master(ib)), "step {t}");
    }
}

/// Element 0 of a group takes one small gradient after the other 31 took a large one:
/// its momentum is large enough for code 1 of 127, its second moment's square root
/// under 1/510 of the group's (code 0). A zero gradient then moves it by about
/// `lr * m_hat / eps` in AdamW.
#[test]
fn caps_the_step_of_a_second_moment_rounded_to_zero() {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let mut adamw = CpuOptimizer::for_spec(
        &AdamW {
            lr: LR,
            ..AdamW::default()
        },
        config,
    )
    .unwrap();
    let mut bounded = CpuOptimizer::for_spec(
        &BoundedAdamW {
            lr: LR,
            ..BoundedAdamW::default()
        },
        config,
    )
    .unwrap();
    let init = vec![0.5f32; 32];
    let ia = adamw.add_tensor("w", &init).unwrap();
    let ib = bounded.add_tensor("w", &init).unwrap();
    let mut first = vec![1.0f32; 32];
    first[0] = 0.0;
    let mut second = vec![0.0f32; 32];
    second[0] = 0.0019;
    let zero = vec![0.0f32; 32];
    let bf16 = |v: &[f32]| {
        v.iter()
            .map(|&x| half::bf16::from_f32(x))
            .collect::<Vec<_>>()
    };
    for g in [&first, &second] {
        adamw.step(&[GradBuf::Bf16(&bf16(g))]).unwrap();
        bounded.step(&[GradBuf::Bf16(&bf16(g))]).unwrap();
    }
    let code = |opt: &CpuOptimizer, id, part: &str| match opt.tensor(id).part(opt.plan(), part) {
        Some(PartData::I8(c)) => i32::from(c[0]),
        Some(PartData::U8(c)) => i32::from(c[0]),
        other => panic!("{part}: {other:?}"),
    };
    assert_eq!(
        code(&adamw, ia, "v::codes"),
        0,
        "the second moment rounds to code 0"
    );
    assert!(code(&adamw, ia, "m::codes") > 0, "the momentum does not");
    assert_eq!(
        bits(&adamw.master(ia)),
        bits(&bounded.master(ib)),
        "no cap so far"
    );

    let before = adamw.master(ia)[0];
    adamw.step(&[GradBuf::Bf16(&bf16(&zero))]).unwrap();
    bounded.step(&[GradBuf::Bf16(&bf16(&zero))]).unwrap();
    let runaway = (adamw.master(ia)[0] - before).abs();
    let capped = (bounded.master(ib)[0] - before).abs();
    assert!(runaway > 100.0 * LR as f32, "AdamW's step {runaway}");
    // Exact Adam's cap at t = 3 for b1 = 0.9, b2 = 0.999 is about 1.0 lr.
    assert!(capped < 2.0 * LR as f32, "BoundedAdamW's step {capped}");
    // The other 31 elements step alike.
    assert_eq!(bits(&adamw.master(ia)[1..]), bits(&bounded.master(ib)[1..]));
}
