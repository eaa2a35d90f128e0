//! The candle adapter against flashopt's CPU reference fed the same gradients, and
//! its behaviour on bad input.

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use flashopt::ir::interp::{GradBuf, PartData};
use flashopt::optimizers::{AdamW, Lion};
use flashopt::runtime::raw::part_bytes;
use flashopt::{CpuOptimizer, MasterMode, Optimizer as _, OptimizerSpec, PlanConfig};
use flashopt_candle::{CandleError, Config, FlashOptimizer, GradStore, StepOutcome, vars_by_name};

/// A two-layer model and a variable the loss never reaches.
struct Model {
    first: candle_nn::Linear,
    second: candle_nn::Linear,
}

fn model(varmap: &VarMap, dtype: DType) -> Model {
    let vb = VarBuilder::from_varmap(varmap, dtype, &Device::Cpu);
    let first = candle_nn::linear(5, 7, vb.pp("first")).unwrap();
    let second = candle_nn::linear(7, 3, vb.pp("second")).unwrap();
    vb.get((33,), "unused").unwrap();
    Model { first, second }
}

impl Model {
    fn loss(&self, x: &Tensor) -> Tensor {
        let x = x.to_dtype(self.first.weight().dtype()).unwrap();
        let h = self.first.forward(&x).unwrap().tanh().unwrap();
        let h = self.second.forward(&h).unwrap();
        h.sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    }
}

fn input(seed: u64) -> Tensor {
    let mut s = seed;
    let v: Vec<f32> = (0..4 * 5)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, (4, 5), &Device::Cpu).unwrap()
}

fn values(var: &Var) -> Vec<f32> {
    let t = var.as_tensor().flatten_all().unwrap();
    t.to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Five steps of the adapter and of a CpuOptimizer given candle's gradients by hand:
/// every stored part (parameter, correction, codes, scales) bit-equal after each.
fn equals_the_reference(dtype: DType, format: PlanConfig) {
    let adamw = AdamW {
        lr: 0.01,
        ..AdamW::default()
    };
    spec_equals_the_reference(&adamw, dtype, format);
}

fn spec_equals_the_reference<S: OptimizerSpec>(spec: &S, dtype: DType, format: PlanConfig) {
    let varmap = VarMap::new();
    let m = model(&varmap, dtype);
    let named = vars_by_name(&varmap);
    let mut reference = CpuOptimizer::for_spec(spec, format).unwrap();
    for (name, var) in &named {
        reference
            .add_shaped(name, var.dims(), &values(var))
            .unwrap();
    }
    let mut opt = FlashOptimizer::from_varmap(&varmap, Config::new(spec, format).unwrap()).unwrap();
    let names: Vec<&str> = (0..opt.optimizer().tensor_count())
        .map(|i| {
            opt.optimizer()
                .tensor_info(flashopt::TensorId(i))
                .unwrap()
                .name
                .as_str()
        })
        .collect();
    assert_eq!(
        names,
        [
            "first.bias",
            "first.weight",
            "second.bias",
            "second.weight",
            "unused"
        ]
    );
    for step in 0..5 {
        let grads = m.loss(&input(step)).backward().unwrap();
        let by_hand: Vec<PartData> = named
            .iter()
            .map(|(_, var)| {
                let g = match grads.get(var.as_tensor()) {
                    Some(g) => g
                        .flatten_all()
                        .unwrap()
                        .to_dtype(DType::F32)
                        .unwrap()
                        .to_vec1()
                        .unwrap(),
                    None => vec![0.0; var.elem_count()],
                };
                PartData::round_from_f32(format.grad, &g)
            })
            .collect();
        let bufs: Vec<GradBuf<'_>> = by_hand.iter().map(|g| g.as_grad().unwrap()).collect();
        assert!(reference.step(&bufs).unwrap().applied());
        assert!(opt.try_step(&grads).unwrap().applied());
        for (i, (name, var)) in named.iter().enumerate() {
            let id = flashopt::TensorId(i);
            let (got, want) = (
                opt.optimizer().tensor(id).unwrap(),
                reference.tensor(id).unwrap(),
            );
            for (k, (a, b)) in got.parts.iter().zip(&want.parts).enumerate() {
                assert_eq!(
                    part_bytes(a),
                    part_bytes(b),
                    "{name}, step {step}: part {k}"
                );
            }
            assert_eq!(
                bits(&values(var)),
                bits(&reference.param(id).unwrap()),
                "{name}, step {step}"
            );
        }
    }
    assert_eq!(opt.optimizer().steps_taken(), 5);
}

#[test]
fn f32_variables_step_as_the_reference_with_a_24_bit_master() {
    equals_the_reference(DType::F32, PlanConfig::bf16(MasterMode::Int8));
}

/// LAMB and Cautious AdamW: every variable its own tensor, its own norms.
#[test]
fn reducing_optimizers_step_as_the_reference() {
    let format = PlanConfig::bf16(MasterMode::Int8);
    spec_equals_the_reference(&flashopt::optimizers::Lamb::default(), DType::F32, format);
    spec_equals_the_reference(
        &flashopt::optimizers::CautiousAdamW::default(),
        DType::F32,
        format,
    );
}

/// Adafactor and Adam-mini: each variable's rows and columns are its last dimension's.
#[test]
fn row_column_optimizers_step_as_the_reference() {
    let format = PlanConfig::bf16(MasterMode::Int8);
    spec_equals_the_reference(
        &flashopt::optimizers::Adafactor::default(),
        DType::F32,
        format,
    );
    spec_equals_the_reference(
        &flashopt::optimizers::AdamMini::default(),
        DType::F32,
        format,
    );
}

/// Muon: each variable's matrix is orthogonalized whole (candle's `Linear` keeps torch's
/// `[out, in]`); the biases and the unused vector are matrices of one row here.
#[test]
fn matrix_optimizers_step_as_the_reference() {
    let muon = flashopt::optimizers::Muon {
        lr: 0.02,
        ..flashopt::optimizers::Muon::default()
    };
    spec_equals_the_reference(&muon, DType::F32, PlanConfig::bf16(MasterMode::Int8));
}

/// Two optimizers over two lists of one model's variables (the matrices, the rest; as
/// Muon and AdamW would split it) each read only their own variables' gradients and
/// write only their own variables: with one element-wise rule on both sides, three
/// steps equal those of one optimizer over the whole model, bit for bit.
#[test]
fn two_optimizers_split_one_model() {
    let format = PlanConfig::bf16(MasterMode::Int8);
    let config = || Config::new(&AdamW::default(), format).unwrap();
    let (split, whole) = (VarMap::new(), VarMap::new());
    let (m, m_whole) = (model(&split, DType::F32), model(&whole, DType::F32));
    for (name, var) in vars_by_name(&split) {
        whole.data().lock().unwrap()[&name]
            .set(var.as_tensor())
            .unwrap();
    }
    let (matrices, others): (Vec<_>, Vec<_>) = vars_by_name(&split)
        .into_iter()
        .partition(|(_, v)| v.dims().len() == 2);
    assert_eq!(matrices.len(), 2);
    let mut halves = [
        FlashOptimizer::from_named(matrices, config()).unwrap(),
        FlashOptimizer::from_named(others, config()).unwrap(),
    ];
    let mut one = FlashOptimizer::from_varmap(&whole, config()).unwrap();
    for step in 0..3 {
        let grads = m.loss(&input(step)).backward().unwrap();
        for half in &mut halves {
            assert!(half.try_step(&grads).unwrap().applied());
        }
        let grads = m_whole.loss(&input(step)).backward().unwrap();
        assert!(one.try_step(&grads).unwrap().applied());
    }
    for ((name, a), (_, b)) in vars_by_name(&split).iter().zip(vars_by_name(&whole)) {
        assert_eq!(bits(&values(a)), bits(&values(&b)), "{name}");
    }
}

#[test]
fn bf16_variables_step_as_the_reference_with_a_32_bit_master() {
    equals_the_reference(DType::BF16, PlanConfig::bf16(MasterMode::Int16));
}

#[test]
fn taking_over_rounds_the_variables_to_the_narrow_parameter() {
    let w = Var::new(&[1.0f32 + 2f32.powi(-12), -3.0], &Device::Cpu).unwrap();
    let config = Config::new(&Lion::default(), PlanConfig::bf16(MasterMode::Int8)).unwrap();
    let opt = FlashOptimizer::new(vec![w.clone()], config).unwrap();
    assert_eq!(values(&w), [1.0, -3.0], "bf16 parameter in the variable");
    let master = opt.optimizer().master(flashopt::TensorId(0)).unwrap();
    // bf16 alone is 2^-12 off; the correction keeps the master far closer.
    let error = (master[0] - (1.0 + 2f32.powi(-12))).abs();
    assert!(
        error < 2f32.powi(-16),
        "master {} off by {error}",
        master[0]
    );
}

fn one_var() -> (Var, FlashOptimizer) {
    let w = Var::new(&[0.5f32, -0.25, 2.0], &Device::Cpu).unwrap();
    let config = Config::new(&AdamW::default(), PlanConfig::bf16(MasterMode::Int8)).unwrap();
    let opt = FlashOptimizer::new(vec![w.clone()], config).unwrap();
    (w, opt)
}

fn grads_for(w: &Var, g: &[f32]) -> GradStore {
    let mut grads = w.as_tensor().sum_all().unwrap().backward().unwrap();
    let g = Tensor::from_vec(g.to_vec(), g.len(), &Device::Cpu).unwrap();
    grads.insert(w.as_tensor(), g);
    grads
}

#[test]
fn a_non_finite_gradient_skips_the_step_and_names_the_variable() {
    let (w, mut opt) = one_var();
    let before = values(&w);
    let outcome = opt.try_step(&grads_for(&w, &[1.0, f32::NAN, 1.0])).unwrap();
    let StepOutcome::Skipped(found) = outcome else {
        panic!("applied a NaN gradient");
    };
    assert_eq!((found.tensor.as_str(), found.index), ("var0", 1));
    assert_eq!(bits(&values(&w)), bits(&before));
    assert_eq!(opt.optimizer().steps_taken(), 0);
    // candle's interface: not an error, the outcome is kept.
    opt.step(&grads_for(&w, &[f32::INFINITY, 0.0, 0.0]))
        .unwrap();
    assert!(!opt.last_outcome().unwrap().applied());
    opt.step(&grads_for(&w, &[1.0, 1.0, 1.0])).unwrap();
    assert!(opt.last_outcome().unwrap().applied());
    assert_ne!(bits(&values(&w)), bits(&before));
}

#[test]
fn a_gradient_of_the_wrong_shape_is_refused_naming_the_variable() {
    let (w, mut opt) = one_var();
    let before = values(&w);
    let err = opt.try_step(&grads_for(&w, &[1.0, 1.0])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `var0`: gradient of shape [2], the variable has shape [3]"
    );
    assert!(matches!(err, CandleError::GradShape { .. }));
    assert_eq!(bits(&values(&w)), bits(&before));
    assert_eq!(opt.optimizer().steps_taken(), 0);
}

#[test]
fn a_refused_learning_rate_changes_nothing_and_the_next_step_says_why() {
    let (w, mut opt) = one_var();
    opt.set_learning_rate(0.5);
    assert_eq!(opt.learning_rate(), 0.5);
    opt.set_learning_rate(-1.0);
    assert_eq!(opt.learning_rate(), 0.5, "the refused value is not applied");
    let err = opt.step(&grads_for(&w, &[1.0, 1.0, 1.0])).unwrap_err();
    assert!(
        err.to_string().contains("the learning rate -1 was refused"),
        "{err}"
    );
    assert_eq!(opt.optimizer().steps_taken(), 0);
    // Reported once; stepping goes on at the last good value.
    opt.step(&grads_for(&w, &[1.0, 1.0, 1.0])).unwrap();
    assert_eq!(opt.optimizer().steps_taken(), 1);
}

#[test]
fn a_checkpoint_restores_the_variables_and_the_run_continues_identically() {
    let dir = std::env::temp_dir().join(format!("flashopt-candle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("adamw.safetensors");
    let format = PlanConfig::bf16(MasterMode::Int8);
    let config = || Config::new(&AdamW::default(), format).unwrap();

    let varmap = VarMap::new();
    let m = model(&varmap, DType::F32);
    let mut opt = FlashOptimizer::from_varmap(&varmap, config()).unwrap();
    for step in 0..3 {
        opt.try_step(&m.loss(&input(step)).backward().unwrap())
            .unwrap();
    }
    opt.optimizer().save(&path).unwrap();
    opt.try_step(&m.loss(&input(3)).backward().unwrap())
        .unwrap();

    // A fresh process: other initial weights, the same names.
    let other = VarMap::new();
    let m2 = model(&other, DType::F32);
    let mut resumed = FlashOptimizer::from_varmap(&other, config()).unwrap();
    resumed.load(&path).unwrap();
    assert_eq!(resumed.optimizer().steps_taken(), 3);
    resumed
        .try_step(&m2.loss(&input(3)).backward().unwrap())
        .unwrap();
    for ((name, a), (_, b)) in vars_by_name(&varmap)
        .iter()
        .zip(vars_by_name(&other).iter())
    {
        assert_eq!(bits(&values(a)), bits(&values(b)), "{name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn integer_variables_are_left_out_as_candle_does() {
    let w = Var::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
    let count = Var::new(&[3u32], &Device::Cpu).unwrap();
    let config = Config::new(&AdamW::default(), PlanConfig::f32_params()).unwrap();
    let opt = FlashOptimizer::new(vec![count, w], config).unwrap();
    assert_eq!(opt.vars().len(), 1);
    assert_eq!(
        opt.optimizer()
            .tensor_info(flashopt::TensorId(0))
            .unwrap()
            .name,
        "var1"
    );
}
