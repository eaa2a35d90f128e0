//! Reviewed snapshots of every shipped optimizer: the validated rule, the host
//! scalars, the per-element code the macro emits, and the lowered plan (every part
//! and every instruction a step runs, reduction phases included) at 24-bit; AdamW's also at 32-bit, without a
//! correction, with f16 and f32 parameters and with a gradient scale, and its decode
//! and init programs. Each codec's lowering alone is in `flashopt-ir/tests/lowering.rs`.

use flashopt::ir::{OptimizerDef, compile, prepare, validate};
use flashopt::optimizers::{
    Adafactor, AdafactorMomentum, Adam, AdamMini, AdamW, CautiousAdamW, Lamb, Lion, Muon, Sgd, SgdW,
};
use flashopt::{FloatDtype, MasterMode, OptimizerSpec, PlanConfig};

fn shipped() -> Vec<(OptimizerDef, &'static str)> {
    vec![
        (AdamW::definition(), AdamW::ELEMENT_RULE_TOKENS),
        (Adam::definition(), Adam::ELEMENT_RULE_TOKENS),
        (Lion::definition(), Lion::ELEMENT_RULE_TOKENS),
        (Sgd::definition(), Sgd::ELEMENT_RULE_TOKENS),
        (SgdW::definition(), SgdW::ELEMENT_RULE_TOKENS),
        (Lamb::definition(), Lamb::ELEMENT_RULE_TOKENS),
        (
            CautiousAdamW::definition(),
            CautiousAdamW::ELEMENT_RULE_TOKENS,
        ),
        (Adafactor::definition(), Adafactor::ELEMENT_RULE_TOKENS),
        (
            AdafactorMomentum::definition(),
            AdafactorMomentum::ELEMENT_RULE_TOKENS,
        ),
        (AdamMini::definition(), AdamMini::ELEMENT_RULE_TOKENS),
        (Muon::definition(), Muon::ELEMENT_RULE_TOKENS),
    ]
}

#[test]
fn every_shipped_optimizer() {
    for (def, tokens) in shipped() {
        let name = def.name.clone();
        insta::assert_snapshot!(format!("{name}_rule"), validate(&def).unwrap().to_string());
        insta::assert_snapshot!(
            format!("{name}_host_scalars"),
            prepare(&def).unwrap().host.to_text(&def.hyper_params)
        );
        let plan = compile(&def, PlanConfig::bf16(MasterMode::Int8)).unwrap();
        insta::assert_snapshot!(format!("{name}_plan_bf16_24"), plan.to_string());
        insta::assert_snapshot!(format!("{name}_element_rule"), tokens);
    }
}

#[test]
fn adamw_with_other_dtypes() {
    for (label, config) in [
        ("bf16_32", PlanConfig::bf16(MasterMode::Int16)),
        ("bf16_none", PlanConfig::bf16(MasterMode::None)),
        (
            "f16_24_f32grad",
            PlanConfig {
                param: FloatDtype::F16,
                grad: FloatDtype::F32,
                master: MasterMode::Int8,
            },
        ),
        ("f32", PlanConfig::f32_params()),
    ] {
        let plan = compile(&AdamW::definition(), config).unwrap();
        insta::assert_snapshot!(format!("adamw_plan_{label}"), plan.to_string());
    }
}

/// What export and initialization run: the same codec lowerings as the step.
#[test]
fn adamw_decode_and_init_programs() {
    let plan = AdamW::plan(PlanConfig::bf16(MasterMode::Int8)).unwrap();
    insta::assert_snapshot!("adamw_bf16_24_side_programs", plan.side_programs_text());
}

#[test]
fn adamw_24_bit_moves_12_25_bytes_per_parameter() {
    // DESIGN.md: read p(2) ecc(1) g(2) m(1) v(1), write p ecc m v, plus 2/32 bytes of
    // scale per state each way.
    let plan = AdamW::plan(PlanConfig::bf16(MasterMode::Int8)).unwrap();
    let t = plan.traffic();
    assert_eq!((t.read, t.write, t.total()), (7.125, 5.125, 12.25));
    assert_eq!(plan.resident_bytes_per_param(), 5.125);
    // A 33-element tensor has two groups, the second short: scales are not prorated.
    assert_eq!(plan.bytes_for(33.into()), (33 * 7 + 2 * 4, 33 * 5 + 2 * 4));
    let fp32 = AdamW::plan(PlanConfig::f32_params()).unwrap();
    assert_eq!(
        fp32.traffic().total(),
        4.0 + 4.0 + 2.0 * (1.0 + 1.0 / 16.0) + 4.0 + 2.0 * (1.0 + 1.0 / 16.0)
    );
    // Lion and SGD keep one state: 1 byte + 1/16 of scale each way.
    let lion = Lion::plan(PlanConfig::bf16(MasterMode::Int8))
        .unwrap()
        .traffic();
    assert_eq!((lion.read, lion.write), (3.0 + 2.0 + 1.0625, 3.0 + 1.0625));
}
