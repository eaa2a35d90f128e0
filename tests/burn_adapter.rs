//! The burn adapter on burn's NdArray backend (flashopt's CPU reference path): it
//! steps exactly as the CPU optimizer does on the gradients burn computed, names
//! tensors by module path, skips non-finite steps and refuses an empty module.

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use flashopt::Optimizer as _;
use flashopt::optimizers::AdamW;
use flashopt::{CpuOptimizer, GradBuf, MasterMode, OptimizerSpec, PlanConfig, TensorId};
use flashopt_burn::{BurnError, HostOptimizer};
use half::bf16;

type Ad = Autodiff<NdArray>;

#[derive(Module, Debug)]
struct Layer<B: Backend> {
    weight: Param<Tensor<B, 2>>,
    bias: Param<Tensor<B, 1>>,
}

#[derive(Module, Debug)]
struct Net<B: Backend> {
    first: Layer<B>,
    second: Layer<B>,
    /// Not used by the loss: it gets no gradient.
    unused: Param<Tensor<B, 1>>,
}

fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Param<Tensor<Ad, D>> {
    Param::from_tensor(Tensor::from_data(
        TensorData::new(values, shape),
        &Default::default(),
    ))
}

fn net() -> Net<Ad> {
    let values = |n: usize, k: f32| {
        (0..n)
            .map(|i| ((i as f32 * 0.37 + k).sin()) * 0.5)
            .collect()
    };
    let layer = |d_in, d_out, k| Layer {
        weight: tensor(values(d_in * d_out, k), [d_in, d_out]),
        bias: tensor(values(d_out, k + 1.0), [d_out]),
    };
    Net {
        first: layer(3, 4, 0.0),
        second: layer(4, 2, 2.0),
        unused: tensor(vec![0.25; 5], [5]),
    }
}

fn loss(net: &Net<Ad>, x: &Tensor<Ad, 2>) -> Tensor<Ad, 1> {
    let h = x.clone().matmul(net.first.weight.val()) + net.first.bias.val().unsqueeze::<2>();
    let y = h.tanh().matmul(net.second.weight.val()) + net.second.bias.val().unsqueeze::<2>();
    y.powf_scalar(2.0).mean()
}

fn input() -> Tensor<Ad, 2> {
    Tensor::from_data(
        TensorData::new((0..6).map(|i| i as f32 * 0.3 - 0.7).collect(), [2, 3]),
        &Default::default(),
    )
}

fn values<B: Backend>(t: Tensor<B, 1>) -> Vec<f32> {
    t.into_data().into_vec().unwrap()
}

fn adamw() -> AdamW {
    AdamW {
        lr: 1e-2,
        weight_decay: 0.1,
        ..AdamW::default()
    }
}

#[test]
fn parameters_are_named_by_their_module_path_in_visiting_order() {
    let (opt, _) = HostOptimizer::new(&adamw(), PlanConfig::bf16(MasterMode::Int8), net()).unwrap();
    let names: Vec<(&str, Vec<usize>)> = opt
        .params()
        .iter()
        .map(|p| (p.name.as_str(), p.shape.clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("first.weight", vec![3, 4]),
            ("first.bias", vec![4]),
            ("second.weight", vec![4, 2]),
            ("second.bias", vec![2]),
            ("unused", vec![5]),
        ]
    );
}

/// Three steps through the adapter equal three steps of the CPU optimizer fed the
/// gradients burn computed, rounded to bf16; the module holds the narrow parameters;
/// a parameter the loss does not reach steps with a zero gradient.
#[test]
fn the_adapter_steps_exactly_like_the_cpu_optimizer() {
    steps_like_the_cpu_optimizer(&adamw());
}

/// The optimizers that reduce over each tensor: each burn parameter is one tensor of
/// the optimizer, its norms its own.
#[test]
fn reducing_optimizers_step_through_the_adapter_as_the_cpu_optimizer() {
    steps_like_the_cpu_optimizer(&flashopt::optimizers::Lamb::default());
    steps_like_the_cpu_optimizer(&flashopt::optimizers::CautiousAdamW::default());
}

/// The optimizers with states per row or per column: each parameter's rows are its
/// last dimension, as burn stores it.
#[test]
fn row_column_optimizers_step_through_the_adapter_as_the_cpu_optimizer() {
    steps_like_the_cpu_optimizer(&flashopt::optimizers::Adafactor::default());
    steps_like_the_cpu_optimizer(&flashopt::optimizers::AdamMini::default());
}

fn steps_like_the_cpu_optimizer<S: OptimizerSpec>(spec: &S) {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let (mut opt, mut model) = HostOptimizer::new(spec, config, net()).unwrap();
    let mut reference = CpuOptimizer::for_spec(spec, config).unwrap();
    let start = net();
    let initial = [
        values(start.first.weight.val().flatten(0, 1)),
        values(start.first.bias.val()),
        values(start.second.weight.val().flatten(0, 1)),
        values(start.second.bias.val()),
        values(start.unused.val()),
    ];
    for (p, v) in opt.params().iter().zip(&initial) {
        reference.add_shaped(&p.name, &p.shape, v).unwrap();
    }
    for step in 0..3 {
        let lr = 1e-2 * (step + 1) as f64;
        let raw = loss(&model, &input()).backward();
        let grad = |p: &Param<Tensor<Ad, 2>>| -> Vec<bf16> {
            let g = p.grad(&raw).unwrap();
            g.flatten::<1>(0, 1)
                .into_data()
                .into_vec::<f32>()
                .unwrap()
                .into_iter()
                .map(bf16::from_f32)
                .collect()
        };
        let grad1 = |p: &Param<Tensor<Ad, 1>>| -> Vec<bf16> {
            let g = p.grad(&raw).unwrap();
            g.into_data()
                .into_vec::<f32>()
                .unwrap()
                .into_iter()
                .map(bf16::from_f32)
                .collect()
        };
        let expected = [
            grad(&model.first.weight),
            grad1(&model.first.bias),
            grad(&model.second.weight),
            grad1(&model.second.bias),
            vec![bf16::ZERO; 5],
        ];
        let grads = GradientsParams::from_grads(raw, &model);
        let (next, outcome) = opt.step(lr, model, grads).unwrap();
        assert!(outcome.applied());
        model = next;
        reference.set_hyper("lr", lr).unwrap();
        let bufs: Vec<GradBuf<'_>> = expected.iter().map(|g| GradBuf::Bf16(g)).collect();
        reference.step(&bufs).unwrap();
        for i in 0..5 {
            assert_eq!(
                opt.optimizer().tensor(TensorId(i)).unwrap(),
                reference.tensor(TensorId(i)).unwrap(),
                "step {step}, tensor {i}"
            );
        }
        // The module holds the narrow parameters.
        assert_eq!(
            values(model.unused.val()),
            reference.param(TensorId(4)).unwrap()
        );
        assert_eq!(
            values(model.first.weight.val().flatten(0, 1)),
            reference.param(TensorId(0)).unwrap()
        );
        assert!(model.first.weight.val().is_require_grad());
    }
    assert_eq!(opt.optimizer().steps_taken(), 3);
}

#[test]
fn a_non_finite_gradient_skips_the_step_and_keeps_the_module() {
    let (mut opt, model) =
        HostOptimizer::new(&adamw(), PlanConfig::bf16(MasterMode::Int8), net()).unwrap();
    let before = values(model.first.bias.val());
    // The square root of a negative number: its derivative is NaN, and so is every
    // gradient.
    let bad = loss(&model, &input()).sub_scalar(1e3).sqrt();
    let grads = GradientsParams::from_grads(bad.backward(), &model);
    let (model, outcome) = opt.step(1e-2, model, grads).unwrap();
    assert!(!outcome.applied(), "{outcome:?}");
    assert_eq!(values(model.first.bias.val()), before);
    assert_eq!(opt.optimizer().steps_taken(), 0);
}

#[derive(Module, Debug)]
struct Empty<B: Backend> {
    marker: std::marker::PhantomData<B>,
}

#[test]
fn a_module_without_float_parameters_is_refused() {
    let empty = Empty::<Ad> {
        marker: std::marker::PhantomData,
    };
    let err = HostOptimizer::new(&adamw(), PlanConfig::bf16(MasterMode::Int8), empty).unwrap_err();
    assert!(matches!(err, BurnError::NoParameters), "{err}");
    assert_eq!(
        err.to_string(),
        "no float parameters to optimize: the module has none, or none that this optimizer was given to select"
    );
}

/// Every parameter of `net` as f32, in visiting order.
fn all_values(net: &Net<Ad>) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for layer in [&net.first, &net.second] {
        out.push(values(layer.weight.val().flatten(0, 1)));
        out.push(values(layer.bias.val()));
    }
    out.push(values(net.unused.val()));
    out
}

/// A module split between two optimizers of one element-wise rule steps exactly as one
/// optimizer over the whole module: each half takes its own parameters' gradients
/// (the unused parameter's zeros included) and writes its own parameters back, and
/// each reports its outcome.
#[test]
fn a_split_module_steps_as_a_whole_one() {
    let format = PlanConfig::bf16(MasterMode::Int8);
    let (mut whole, mut a) = HostOptimizer::new(&adamw(), format, net()).unwrap();
    let (mut split, mut b) = flashopt_burn::SplitOptimizer::<flashopt_burn::Host>::new(
        (&adamw(), format),
        (&adamw(), format),
        net(),
        flashopt_burn::is_hidden_matrix,
    )
    .unwrap();
    let names =
        |o: &HostOptimizer| -> Vec<String> { o.params().iter().map(|p| p.name.clone()).collect() };
    assert_eq!(names(split.chosen()), ["first.weight", "second.weight"]);
    assert_eq!(names(split.rest()), ["first.bias", "second.bias", "unused"]);
    let x = input();
    for _ in 0..3 {
        let grads = GradientsParams::from_grads(loss(&a, &x).backward(), &a);
        a = whole.step(1e-2, a, grads).unwrap().0;
        let grads = GradientsParams::from_grads(loss(&b, &x).backward(), &b);
        let (next, outcomes) = split.step(1e-2, 1e-2, b, grads).unwrap();
        assert!(outcomes.iter().all(|o| o.applied()), "{outcomes:?}");
        b = next;
    }
    let bits = |n: &Net<Ad>| -> Vec<Vec<u32>> {
        all_values(n)
            .iter()
            .map(|v| v.iter().map(|x| x.to_bits()).collect())
            .collect()
    };
    assert_eq!(bits(&b), bits(&a));
    assert_ne!(bits(&b), bits(&net()), "the steps moved the parameters");
}

/// A split whose predicate leaves one side without parameters is refused.
#[test]
fn a_split_that_leaves_a_side_empty_is_refused() {
    let format = PlanConfig::bf16(MasterMode::Int8);
    let err = flashopt_burn::SplitOptimizer::<flashopt_burn::Host>::new(
        (&adamw(), format),
        (&adamw(), format),
        net(),
        |_| true,
    )
    .unwrap_err();
    assert!(matches!(err, BurnError::NoParameters), "{err}");
}

/// A parameter whose shape changed since the optimizer took it (same id) is an error
/// naming it, before anything steps: the step would write it back in the old shape.
#[test]
fn a_parameter_whose_shape_changed_is_refused() {
    let (mut opt, mut model) =
        HostOptimizer::new(&adamw(), PlanConfig::bf16(MasterMode::Int8), net()).unwrap();
    let id = model.unused.id;
    model.unused = Param::initialized(
        id,
        Tensor::from_data(TensorData::new(vec![0.5f32; 7], [7]), &Default::default()),
    );
    let grads = GradientsParams::from_grads(loss(&model, &input()).backward(), &model);
    let err = opt.step(1e-2, model, grads).unwrap_err();
    assert_eq!(
        err.to_string(),
        "parameter `unused`: shape [7], the optimizer took it as [5]; build a new optimizer for a changed model"
    );
    assert_eq!(opt.optimizer().steps_taken(), 0);
}

/// An optimizer set up by hand keeps every setting through the adapter: its clipping,
/// hyper-parameters and step count; two steps equal the CPU optimizer's with the same
/// settings, gradients clipped to the norm given.
#[test]
fn an_optimizer_set_up_by_hand_keeps_its_settings() {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let set_up = || {
        let mut cpu = CpuOptimizer::for_spec(&adamw(), config).unwrap();
        cpu.set_grad_clipping(Some(0.05)).unwrap();
        cpu.set_hyper("weight_decay", 0.3).unwrap();
        cpu.set_steps_taken(7);
        cpu
    };
    let (mut opt, mut model) = HostOptimizer::from_optimizer(set_up(), net()).unwrap();
    assert_eq!(opt.optimizer().grad_clipping(), Some(0.05));
    assert_eq!(opt.optimizer().steps_taken(), 7);
    let mut reference = set_up();
    for p in &flashopt_burn::params::collect::<Ad, _>(&net()) {
        reference.add_shaped(&p.0.name, &p.0.shape, &p.1).unwrap();
    }
    for _ in 0..2 {
        let raw = loss(&model, &input()).backward();
        let mut expected: Vec<Vec<bf16>> = Vec::new();
        let to_bf16 = |v: Vec<f32>| v.into_iter().map(bf16::from_f32).collect::<Vec<_>>();
        expected.push(to_bf16(values(
            model.first.weight.grad(&raw).unwrap().flatten(0, 1),
        )));
        expected.push(to_bf16(values(model.first.bias.grad(&raw).unwrap())));
        expected.push(to_bf16(values(
            model.second.weight.grad(&raw).unwrap().flatten(0, 1),
        )));
        expected.push(to_bf16(values(model.second.bias.grad(&raw).unwrap())));
        expected.push(vec![bf16::ZERO; 5]);
        let grads = GradientsParams::from_grads(raw, &model);
        let (next, outcome) = opt.step(1e-2, model, grads).unwrap();
        assert!(outcome.applied());
        model = next;
        reference.set_hyper("lr", 1e-2).unwrap();
        let bufs: Vec<GradBuf<'_>> = expected.iter().map(|g| GradBuf::Bf16(g)).collect();
        reference.step(&bufs).unwrap();
    }
    let norm = opt.optimizer().last_grad_norm().unwrap();
    assert!(norm > 0.05, "the gradients were clipped: norm {norm}");
    assert_eq!(opt.optimizer().last_grad_norm(), reference.last_grad_norm());
    for i in 0..5 {
        assert_eq!(
            opt.optimizer().tensor(TensorId(i)).unwrap(),
            reference.tensor(TensorId(i)).unwrap(),
            "tensor {i}"
        );
    }
    assert_eq!(opt.optimizer().steps_taken(), 9);
}

#[test]
fn an_optimizer_that_already_holds_tensors_is_refused() {
    let mut cpu = CpuOptimizer::for_spec(&adamw(), PlanConfig::bf16(MasterMode::Int8)).unwrap();
    cpu.add_tensor("elsewhere", &[1.0, 2.0]).unwrap();
    let err = HostOptimizer::from_optimizer(cpu, net()).unwrap_err();
    assert!(
        matches!(err, BurnError::OptimizerNotEmpty { tensors: 1 }),
        "{err}"
    );
}

/// A checkpoint saved through the adapter loads into a fresh one and puts its
/// parameters into the module; a file that is not a checkpoint is an error that
/// changes nothing.
#[test]
fn a_checkpoint_round_trips_through_the_adapter() {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let (mut opt, model) = HostOptimizer::new(&adamw(), config, net()).unwrap();
    let grads = GradientsParams::from_grads(loss(&model, &input()).backward(), &model);
    let (model, _) = opt.step(1e-2, model, grads).unwrap();
    let dir = std::env::temp_dir().join(format!("flashopt-burn-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("opt.safetensors");
    opt.optimizer().save(&path).unwrap();

    let (mut fresh, fresh_model) = HostOptimizer::new(&adamw(), config, net()).unwrap();
    let bad = dir.join("not-a-checkpoint.safetensors");
    std::fs::write(&bad, b"not a checkpoint").unwrap();
    assert!(matches!(
        fresh.load(&bad, fresh_model.clone()).unwrap_err(),
        BurnError::Checkpoint(_)
    ));
    assert_eq!(fresh.optimizer().steps_taken(), 0);
    let loaded = fresh.load(&path, fresh_model).unwrap();
    assert_eq!(fresh.optimizer().steps_taken(), 1);
    assert_eq!(
        values(loaded.first.weight.val().flatten(0, 1)),
        values(model.first.weight.val().flatten(0, 1))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
