//! Stable text of the AdamW rule, its host scalars and its plans (reviewed snapshots).

use flashopt::ir::{compile, prepare, validate};
use flashopt::optimizers::AdamW;
use flashopt::{FloatDtype, MasterMode, OptimizerSpec, PlanConfig};

#[test]
fn adamw_rule() {
    insta::assert_snapshot!(validate(&AdamW::definition()).unwrap().to_string());
}

#[test]
fn adamw_host_scalars() {
    let def = AdamW::definition();
    insta::assert_snapshot!(prepare(&def).unwrap().host.to_text(&def.hyper_params));
}

#[test]
fn adamw_plans() {
    for (label, config) in [
        ("bf16_24", PlanConfig::bf16(MasterMode::Int8)),
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
        ("f32", PlanConfig::f32()),
    ] {
        let plan = compile(&AdamW::definition(), config).unwrap();
        insta::assert_snapshot!(format!("adamw_plan_{label}"), plan.to_string());
    }
}

#[test]
fn adamw_24_bit_moves_12_25_bytes_per_parameter() {
    // DESIGN.md: read p(2) ecc(1) g(2) m(1) v(1), write p ecc m v, plus 2/32 bytes of
    // scale per state each way.
    let plan = compile(&AdamW::definition(), PlanConfig::bf16(MasterMode::Int8)).unwrap();
    let t = plan.traffic();
    assert_eq!((t.read, t.write, t.total()), (7.125, 5.125, 12.25));
    assert_eq!(plan.resident_bytes_per_param(), 5.125);
    // A 33-element tensor has two groups, the second short: scales are not prorated.
    assert_eq!(plan.bytes_for(33), (33 * 7 + 2 * 4, 33 * 5 + 2 * 4));
    let fp32 = compile(&AdamW::definition(), PlanConfig::f32()).unwrap();
    assert_eq!(
        fp32.traffic().total(),
        4.0 + 4.0 + 2.0 * (1.0 + 1.0 / 16.0) + 4.0 + 2.0 * (1.0 + 1.0 / 16.0)
    );
}
