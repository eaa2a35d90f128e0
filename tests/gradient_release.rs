//! Gradient release on the CPU reference: tensors stepped one by one as their
//! gradients arrive end where the whole step ends, bit for bit.

mod common;

use flashopt::ir::interp::{GradBuf, PartData};
use flashopt::optimizers::{AdamW, Lion};
use flashopt::runtime::raw::part_bytes;
use flashopt::{
    CpuOptimizer, FloatDtype, MasterMode, Optimizer as _, OptimizerSpec, PlanConfig, RuntimeError,
    TensorId,
};

const LENS: [usize; 4] = [3, 64, 95, 200];

fn values(seed: u64, scale: f32) -> Vec<Vec<f32>> {
    common::uniform_tensors(&LENS, seed, scale)
}

fn optimizer<S: OptimizerSpec>(spec: &S) -> CpuOptimizer {
    let mut opt = CpuOptimizer::for_spec(spec, PlanConfig::bf16(MasterMode::Int8)).unwrap();
    for (i, v) in values(3, 1.0).iter().enumerate() {
        opt.add_tensor(&format!("t{i}"), v).unwrap();
    }
    opt
}

fn grads(step: u64) -> Vec<PartData> {
    values(100 + step, 0.01)
        .iter()
        .map(|g| PartData::round_from_f32(FloatDtype::Bf16, g))
        .collect()
}

fn same_state(a: &CpuOptimizer, b: &CpuOptimizer) -> bool {
    (0..LENS.len()).all(|i| {
        let (x, y) = (
            a.tensor(TensorId(i)).unwrap(),
            b.tensor(TensorId(i)).unwrap(),
        );
        x.parts
            .iter()
            .zip(&y.parts)
            .all(|(p, q)| part_bytes(p) == part_bytes(q))
    })
}

fn release_equals_whole<S: OptimizerSpec>(spec: &S) {
    let (mut whole, mut released) = (optimizer(spec), optimizer(spec));
    for step in 1..=3 {
        let g = grads(step);
        let bufs: Vec<GradBuf<'_>> = g.iter().map(|p| p.as_grad().unwrap()).collect();
        assert!(whole.step(&bufs).unwrap().applied());
        // Last layer first, as a backward pass produces them.
        for i in (0..LENS.len()).rev() {
            assert!(
                released
                    .step_tensor(TensorId(i), bufs[i])
                    .unwrap()
                    .applied()
            );
        }
        released.finish_step();
        assert!(same_state(&whole, &released), "{} step {step}", S::NAME);
        assert_eq!(released.steps_taken(), step);
    }
}

#[test]
fn tensors_stepped_one_by_one_end_as_the_whole_step() {
    release_equals_whole(&AdamW::default());
    release_equals_whole(&Lion::default());
}

#[test]
fn a_non_finite_gradient_skips_that_tensor_only() {
    let mut opt = optimizer(&AdamW::default());
    let before = opt.tensor(TensorId(1)).unwrap().clone();
    let mut g = values(7, 0.01);
    g[1][10] = f32::INFINITY;
    let g: Vec<PartData> = g
        .iter()
        .map(|v| PartData::round_from_f32(FloatDtype::Bf16, v))
        .collect();
    let outcome = opt
        .step_tensor(TensorId(1), g[1].as_grad().unwrap())
        .unwrap();
    let flashopt::runtime::StepOutcome::Skipped(found) = outcome else {
        panic!("stepped an infinite gradient");
    };
    assert_eq!((found.tensor.as_str(), found.index), ("t1", 10));
    assert_eq!(opt.tensor(TensorId(1)).unwrap(), &before);
    assert!(
        opt.step_tensor(TensorId(0), g[0].as_grad().unwrap())
            .unwrap()
            .applied()
    );
}

#[test]
fn release_refuses_clipping_and_unknown_tensors() {
    let mut opt = optimizer(&AdamW::default());
    let g = grads(1);
    let err = opt
        .step_tensor(TensorId(9), g[0].as_grad().unwrap())
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::UnknownTensor { id: 9, tensors: 4 }),
        "{err}"
    );
    let err = opt
        .step_tensor(TensorId(0), g[1].as_grad().unwrap())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `t0`: gradient: 64 elements, expected 3 (the parameter's length)"
    );
    opt.set_grad_clipping(Some(1.0)).unwrap();
    let err = opt
        .step_tensor(TensorId(0), g[0].as_grad().unwrap())
        .unwrap_err();
    assert!(matches!(err, RuntimeError::ClipNeedsWholeStep), "{err}");
}
