//! Bad buffers are refused with an error that names the tensor, and nothing changes.

mod common;

use common::Rng;
use flashopt::Optimizer as _;
use flashopt::ir::interp::{self, GradBuf, HostTensor, PartData};
use flashopt::ir::{HyperValues, compile};
use flashopt::optimizers::AdamW;
use flashopt::{CpuOptimizer, MasterMode, OptimizerSpec, PlanConfig};
use half::{bf16, f16};

fn setup(n: usize) -> (flashopt::ir::Plan, HostTensor, Vec<f32>, Vec<bf16>) {
    let plan = compile(&AdamW::definition(), PlanConfig::bf16(MasterMode::Int8)).unwrap();
    let tensor = HostTensor::from_f32(&plan, &Rng::new(1).normals(n, 1.0));
    let scalars = plan
        .kernel_scalars(&HyperValues::defaults(&plan.hyper_params), 1)
        .unwrap();
    let grad = vec![bf16::from_f32(0.5); n];
    (plan, tensor, scalars, grad)
}

#[test]
fn each_mismatch_is_named_and_leaves_the_tensor_untouched() {
    let (plan, mut tensor, scalars, grad) = setup(100);
    let before = tensor.clone();
    let short = vec![bf16::ONE; 99];
    let f32_grad = vec![0.5f32; 100];

    let err = interp::run(&plan, &scalars, &mut tensor, GradBuf::Bf16(&short)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "gradient: 99 elements, expected 100 (the parameter's length)"
    );
    let err = interp::run(&plan, &scalars, &mut tensor, GradBuf::F32(&f32_grad)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "gradient: dtype f32, but the plan `adamw` was lowered for bf16"
    );
    let err = interp::run(&plan, &scalars[1..], &mut tensor, GradBuf::Bf16(&grad)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("host scalars: the plan `adamw` takes"),
        "{err}"
    );

    // The plan's parts: param, correction, m::codes, m::scales, v::codes, v::scales.
    let mut bad = tensor.clone();
    bad.parts.remove(1);
    let err = interp::run(&plan, &scalars, &mut bad, GradBuf::Bf16(&grad)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "parts: the plan `adamw` stores 6 part(s) per tensor (param, correction, m::codes, m::scales, v::codes, v::scales), the tensor has 5"
    );

    let mut bad = tensor.clone();
    bad.parts[3] = PartData::F16(vec![f16::ZERO; 3]);
    let err = interp::run(&plan, &scalars, &mut bad, GradBuf::Bf16(&grad)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "part `m::scales`: 3 values, expected 4 (per group of 32 of 100 elements)"
    );

    let mut bad = tensor.clone();
    bad.parts[4] = PartData::F32(vec![0.0; 100]);
    let err = interp::run(&plan, &scalars, &mut bad, GradBuf::Bf16(&grad)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "part `v::codes`: the plan `adamw` stores u8, the tensor holds f32"
    );

    assert_eq!(tensor, before, "a refused step must not write");
}

#[test]
fn zero_length_tensors_step_and_stay_empty() {
    let (plan, mut tensor, scalars, grad) = setup(0);
    interp::run(&plan, &scalars, &mut tensor, GradBuf::Bf16(&grad)).unwrap();
    assert!(tensor.is_empty());
}

#[test]
fn the_optimizer_checks_every_tensor_before_stepping_any() {
    let mut opt =
        CpuOptimizer::new(&AdamW::definition(), PlanConfig::bf16(MasterMode::Int8)).unwrap();
    let a = opt.add_tensor("encoder.weight", &[1.0; 40]).unwrap();
    let b = opt.add_tensor("encoder.bias", &[1.0; 8]).unwrap();
    assert_eq!(
        opt.add_tensor("encoder.bias", &[0.0])
            .unwrap_err()
            .to_string(),
        "a tensor named `encoder.bias` is already registered"
    );
    let good = vec![bf16::ONE; 40];
    let bad = vec![bf16::ONE; 7];
    let err = opt
        .step(&[GradBuf::Bf16(&good), GradBuf::Bf16(&bad)])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `encoder.bias`: gradient: 7 elements, expected 8 (the parameter's length)"
    );
    assert_eq!(
        opt.master(a).unwrap(),
        vec![1.0; 40],
        "the good tensor was not stepped either"
    );
    assert_eq!(opt.steps_taken(), 0);
    assert!(
        opt.step(&[GradBuf::Bf16(&good)])
            .unwrap_err()
            .to_string()
            .contains("step got 1 gradient(s) for 2 tensor(s)")
    );
    assert!(opt.set_hyper("lr", -0.5).is_err());
    opt.step(&[GradBuf::Bf16(&good), GradBuf::Bf16(&good[..8])])
        .unwrap();
    assert!(opt.master(a).unwrap()[0] < 1.0 && opt.master(b).unwrap()[0] < 1.0);
    assert_eq!(opt.steps_taken(), 1);
}

#[test]
fn f32_parameters_refuse_a_correction_mode() {
    let config = PlanConfig {
        param: flashopt::FloatDtype::F32,
        grad: flashopt::FloatDtype::F32,
        master: MasterMode::Int8,
    };
    let err = compile(&AdamW::definition(), config).unwrap_err();
    assert_eq!(
        err.to_string(),
        "optimizer `adamw`: f32 parameters are their own master weights: master mode 24-bit needs bf16 or f16 parameters; use master none"
    );
}
