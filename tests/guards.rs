//! Skipped steps on non-finite gradients and the numerics check, on the CPU reference.

use flashopt::Optimizer as _;
use flashopt::ir::def::{OptimizerDef, Range, name};
use flashopt::optimizers::AdamW;
use flashopt::{CpuOptimizer, GradBuf, MasterMode, PlanConfig, RuntimeError, TensorId};
// What a step says comes from the crate's root, as a user imports it.
use flashopt::{NonFinite, StepOutcome};
use half::bf16;

fn adamw(lr: f64) -> CpuOptimizer {
    let spec = AdamW {
        lr,
        ..AdamW::default()
    };
    let mut opt = CpuOptimizer::for_spec(&spec, PlanConfig::bf16(MasterMode::Int8)).unwrap();
    opt.add_tensor("embed", &[0.5, -1.5, 2.0, 0.25]).unwrap();
    opt.add_tensor("head", &[1.0; 40]).unwrap();
    opt
}

#[test]
fn empty_tensors_and_non_finite_initial_values_are_refused() {
    let mut opt = adamw(1e-3);
    let err = opt.add_tensor("bias", &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `bias` is empty: register tensors with at least one element"
    );
    let err = opt
        .add_tensor("scale", &[1.0, f32::NAN, 2.0, f32::INFINITY])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `scale`: initial value NaN at index 1 is not finite (2 non-finite value(s)); nothing was registered"
    );
    // Nothing was registered: the names are free and the optimizer steps as before.
    assert_eq!(opt.tensor_count(), 2);
    opt.add_tensor("scale", &[1.0, 2.0]).unwrap();
    opt.add_tensor("bias", &[0.0]).unwrap();
}

/// Ids are registration indices: one past this optimizer's tensors (from an optimizer
/// with more of them) is an error on every accessor, as is a group that does not exist.
#[test]
fn unknown_tensor_ids_and_groups_are_errors() {
    let mut bigger = adamw(1e-3);
    let foreign = bigger.add_tensor("extra", &[1.0]).unwrap();
    let opt = adamw(1e-3);
    let unknown = "tensor id 2 does not exist (2 tensor(s))";
    assert_eq!(opt.master(foreign).unwrap_err().to_string(), unknown);
    assert_eq!(opt.param(foreign).unwrap_err().to_string(), unknown);
    assert_eq!(opt.tensor(foreign).unwrap_err().to_string(), unknown);
    assert_eq!(opt.tensor_info(foreign).unwrap_err().to_string(), unknown);
    assert_eq!(
        opt.learning_rate(1).unwrap_err().to_string(),
        "parameter group 1 does not exist (1 group(s))"
    );
    assert_eq!(opt.tensor_info(TensorId(1)).unwrap().name, "head");
}

#[test]
fn step_outcomes_say_what_happened() {
    assert_eq!(StepOutcome::Applied.to_string(), "applied");
    let mut opt = adamw(1e-3);
    let mut head = [bf16::from_f32(-0.2); 40];
    head[7] = bf16::NAN;
    let outcome = opt
        .step(&[GradBuf::Bf16(&[bf16::ZERO; 4]), GradBuf::Bf16(&head)])
        .unwrap();
    assert!(outcome.to_string().starts_with("skipped: "), "{outcome}");
    assert!(outcome.to_string().contains("head"), "{outcome}");
}

#[test]
fn a_step_with_nan_or_inf_changes_nothing_and_says_where() {
    let mut opt = adamw(1e-3);
    let good = [bf16::from_f32(0.1); 4];
    let head = [bf16::from_f32(-0.2); 40];
    assert_eq!(
        opt.step(&[GradBuf::Bf16(&good), GradBuf::Bf16(&head)])
            .unwrap(),
        StepOutcome::Applied
    );
    let before = (
        opt.tensor(TensorId(0)).unwrap().clone(),
        opt.tensor(TensorId(1)).unwrap().clone(),
    );

    let mut bad_head = head;
    bad_head[7] = bf16::NAN;
    bad_head[9] = bf16::NEG_INFINITY;
    let outcome = opt
        .step(&[GradBuf::Bf16(&good), GradBuf::Bf16(&bad_head)])
        .unwrap();
    let StepOutcome::Skipped(NonFinite {
        tensor,
        index,
        count,
        ..
    }) = &outcome
    else {
        panic!("not skipped: {outcome:?}")
    };
    assert_eq!((tensor.as_str(), *index, *count), ("head", 7, 2));
    assert_eq!(
        (
            opt.tensor(TensorId(0)).unwrap().clone(),
            opt.tensor(TensorId(1)).unwrap().clone()
        ),
        before
    );
    assert_eq!(opt.steps_taken(), 1, "a skipped step is not counted");

    // f32 gradients are scanned too; the next finite step proceeds as step 2.
    let mut f32_opt = CpuOptimizer::for_spec(&AdamW::default(), PlanConfig::f32_params()).unwrap();
    f32_opt.add_tensor("w", &[1.0, 2.0]).unwrap();
    let skipped = f32_opt
        .step(&[GradBuf::F32(&[f32::INFINITY, 0.0])])
        .unwrap();
    assert!(!skipped.applied());
    assert!(
        f32_opt
            .step(&[GradBuf::F32(&[0.5, 0.0])])
            .unwrap()
            .applied()
    );
    assert_eq!(f32_opt.steps_taken(), 1);
}

#[test]
fn check_numerics_names_the_tensors_a_small_lr_cannot_move() {
    // AdamW declares its smallest step as a tenth of the learning rate.
    assert_eq!(
        adamw(1e-2).plan().numerics.min_step_relative_to_lr,
        Some(0.1)
    );
    // |w| up to 2 with a 24-bit master: steps must reach about 1.2e-4, so lr 1e-3 (Adam
    // steps of 1e-4) is already too small for `embed`, and 1e-2 is fine.
    assert!(adamw(1e-2).check_numerics().unwrap().is_empty());
    assert_eq!(adamw(1e-3).check_numerics().unwrap().len(), 1);
    // A step declared ten times larger moves `embed` at 1e-3.
    assert!(adamw(1e-3).check_numerics_with(1.0).unwrap().is_empty());
    let warnings = adamw(1e-7).check_numerics().unwrap();
    let names: Vec<&str> = warnings.iter().map(|w| w.tensor.as_str()).collect();
    assert_eq!(names, ["embed", "head"]);
    assert_eq!(warnings[0].max_abs, 2.0);
    assert_eq!(warnings[0].master_bits, 24);
    assert!(
        warnings[0].to_string().starts_with(
            "tensor `embed`: learning rate 1.000e-7 gives steps that may be too small"
        ),
        "{}",
        warnings[0]
    );
}

#[test]
fn check_numerics_needs_a_learning_rate() {
    let mut def = OptimizerDef::new("plain");
    def.hyper("step", 0.5, Range::at_least(0.0));
    def.assign("p", name("p") - name("step") * name("g"));
    let mut opt = CpuOptimizer::new(&def, PlanConfig::f32_params()).unwrap();
    opt.add_tensor("w", &[1.0]).unwrap();
    // A hyper-parameter's name does not make it the learning rate: the definition does.
    let err = opt.check_numerics_with(1.0).unwrap_err();
    assert!(matches!(err, RuntimeError::NoLearningRate { .. }));
    assert_eq!(
        err.to_string(),
        "`plain` names no learning rate: mark one f32 hyper-parameter `#[flashopt(learning_rate)]` (OptimizerDef::learning_rate)"
    );
    assert!(opt.set_learning_rate(0.1).is_err());

    def.learning_rate("step");
    let mut opt = CpuOptimizer::new(&def, PlanConfig::f32_params()).unwrap();
    opt.add_tensor("w", &[1.0]).unwrap();
    let err = opt.check_numerics().unwrap_err();
    assert!(matches!(err, RuntimeError::NoMinStep { .. }), "{err}");
    assert!(opt.check_numerics_with(1.0).unwrap().is_empty());
    opt.set_learning_rate(0.25).unwrap();
    assert_eq!(
        opt.hyper(0).get("step"),
        Some(flashopt::ir::def::Value::Float(0.25))
    );
}

fn adamw_with(config: PlanConfig) -> CpuOptimizer {
    let spec = AdamW {
        lr: 1e-2,
        weight_decay: 0.1,
        ..AdamW::default()
    };
    let mut opt = CpuOptimizer::for_spec(&spec, config).unwrap();
    opt.add_tensor("a", &[0.5, -1.5, 2.0, 0.25, 3.0]).unwrap();
    opt.add_tensor("b", &[1.0; 40]).unwrap();
    opt
}

fn bf16s(values: impl IntoIterator<Item = f32>) -> Vec<bf16> {
    values.into_iter().map(bf16::from_f32).collect()
}

#[test]
fn clipping_scales_the_widened_gradient_like_torch() {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let f32_grads = PlanConfig {
        grad: flashopt::ir::FloatDtype::F32,
        ..config
    };
    let mut clipped = adamw_with(config);
    clipped.set_grad_clipping(Some(0.5)).unwrap();
    // The reference: no clipping, fed gradients already multiplied by the factor in
    // f32, as the kernel multiplies them.
    let mut by_hand = adamw_with(f32_grads);
    for step in 0..3 {
        let a = bf16s((0..5).map(|i| (i as f32 - 2.0) * 0.7 + step as f32));
        let b = bf16s((0..40).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.05));
        let squares: f64 = a
            .iter()
            .chain(&b)
            .map(|x| f64::from(x.to_f32()).powi(2))
            .sum();
        let norm = squares.sqrt();
        assert!(norm > 0.5, "the test needs clipping to bite");
        let scale = (0.5 / (norm + 1e-6)) as f32;
        let scaled = |g: &[bf16]| -> Vec<f32> { g.iter().map(|x| x.to_f32() * scale).collect() };
        let (sa, sb) = (scaled(&a), scaled(&b));
        assert!(
            clipped
                .step(&[GradBuf::Bf16(&a), GradBuf::Bf16(&b)])
                .unwrap()
                .applied()
        );
        assert_eq!(clipped.last_grad_norm(), Some(norm));
        by_hand
            .step(&[GradBuf::F32(&sa), GradBuf::F32(&sb)])
            .unwrap();
        for i in 0..2 {
            assert_eq!(
                clipped.tensor(TensorId(i)).unwrap(),
                by_hand.tensor(TensorId(i)).unwrap(),
                "step {step}, tensor {i}"
            );
        }
    }
}

#[test]
fn clipping_under_the_threshold_changes_nothing() {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let mut clipped = adamw_with(config);
    clipped.set_grad_clipping(Some(1e6)).unwrap();
    let mut plain = adamw_with(config);
    let a = bf16s([0.1, -0.2, 0.3, 0.0, 1.0]);
    let b = bf16s((0..40).map(|i| i as f32 * 0.01));
    for opt in [&mut clipped, &mut plain] {
        opt.step(&[GradBuf::Bf16(&a), GradBuf::Bf16(&b)]).unwrap();
    }
    assert_eq!(
        clipped.tensor(TensorId(0)).unwrap(),
        plain.tensor(TensorId(0)).unwrap()
    );
    assert_eq!(
        clipped.tensor(TensorId(1)).unwrap(),
        plain.tensor(TensorId(1)).unwrap()
    );
    assert_eq!(plain.last_grad_norm(), None, "only measured when clipping");
}

#[test]
fn a_non_finite_step_is_skipped_before_clipping_sees_it() {
    let mut opt = adamw_with(PlanConfig::bf16(MasterMode::Int8));
    opt.set_grad_clipping(Some(1.0)).unwrap();
    let before = opt.tensor(TensorId(1)).unwrap().clone();
    let mut b = bf16s([0.5; 40]);
    b[3] = bf16::INFINITY;
    let a = bf16s([0.0; 5]);
    let outcome = opt.step(&[GradBuf::Bf16(&a), GradBuf::Bf16(&b)]).unwrap();
    assert!(!outcome.applied());
    assert_eq!(opt.tensor(TensorId(1)).unwrap(), &before);
    assert_eq!(opt.last_grad_norm(), None);
    let err = opt.set_grad_clipping(Some(-1.0)).unwrap_err();
    assert!(matches!(err, RuntimeError::MaxNorm(_)), "{err}");
    assert_eq!(
        opt.grad_clipping(),
        Some(1.0),
        "a refused threshold changes nothing"
    );
}

/// `replace_tensors` checks the count, each tensor's length and every part against the
/// plan before anything changes (the GPU's kernels write every registered element).
#[test]
fn replace_tensors_refuses_tensors_that_do_not_fit() {
    use flashopt::HostTensor;
    let mut opt = adamw(1e-3);
    let before: Vec<HostTensor> = (0..2)
        .map(|i| opt.tensor(TensorId(i)).unwrap().clone())
        .collect();
    let plan = opt.plan().clone();
    let fresh = |n: usize| HostTensor::from_f32(&plan, &vec![0.5; n]);

    let err = opt.replace_tensors(vec![fresh(4)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "got 1 tensor(s) for 2 registered; pass one per tensor, in registration order"
    );
    let err = opt.replace_tensors(vec![fresh(4), fresh(41)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `head`: 41 elements, expected 40 (its registered length)"
    );
    let other = CpuOptimizer::for_spec(&AdamW::default(), PlanConfig::bf16(MasterMode::Int16))
        .unwrap()
        .plan()
        .clone();
    let err = opt
        .replace_tensors(vec![fresh(4), HostTensor::from_f32(&other, &[0.5; 40])])
        .unwrap_err();
    assert!(err.to_string().starts_with("tensor `head`: "), "{err}");
    for (i, t) in before.iter().enumerate() {
        assert_eq!(opt.tensor(TensorId(i)).unwrap(), t, "nothing changed");
    }
    opt.replace_tensors(vec![fresh(4), fresh(40)]).unwrap();
    assert_eq!(opt.master(TensorId(1)).unwrap(), vec![0.5; 40]);
}
