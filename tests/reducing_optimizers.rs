//! The optimizers that reduce over each tensor (LAMB, Cautious AdamW) against
//! independent f64 implementations of their papers, and per-tensor reductions through
//! the CPU optimizer (each tensor its own norms, whatever else is stepped with it).

mod common;

use common::Rng;
use flashopt::ir::interp::{self, GradBuf, HostTensor};
use flashopt::ir::{HyperValues, compile, reduction};
use flashopt::optimizers::{CautiousAdamW, Lamb};
use flashopt::runtime::TensorId;
use flashopt::{CpuOptimizer, F32States, MasterMode, Optimizer, OptimizerSpec, PlanConfig};
use half::bf16;

/// Adam's moments in f64, as both papers write them.
struct Moments {
    m: Vec<f64>,
    v: Vec<f64>,
}

impl Moments {
    fn new(n: usize) -> Moments {
        Moments {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// Update with `grad` and return Adam's direction `m_hat / (sqrt(v_hat) + eps)`.
    fn direction(&mut self, grad: &[f32], t: i32, (b1, b2, eps): (f64, f64, f64)) -> Vec<f64> {
        let (bias1, bias2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        (0..grad.len())
            .map(|i| {
                let g = f64::from(grad[i]);
                self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
                self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
                (self.m[i] / bias1) / ((self.v[i] / bias2).sqrt() + eps)
            })
            .collect()
    }
}

fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// Relative distance of the interpreter's master weights from the f64 reference.
fn distance(tensor: &HostTensor, plan: &flashopt::ir::Plan, reference: &[f64]) -> f64 {
    let got = tensor.master_f32(plan);
    let diff: Vec<f64> = got
        .iter()
        .zip(reference)
        .map(|(&a, &b)| f64::from(a) - b)
        .collect();
    norm(&diff) / norm(reference)
}

/// LAMB with f32 states follows LAMB in f64 within 1e-5 over 50 steps (f32 rounding
/// of the per-element arithmetic; the norms themselves are f64).
#[test]
fn lamb_follows_the_paper_in_f64() {
    let plan = F32States::<Lamb>::plan(PlanConfig::f32_params()).unwrap();
    let hyper = HyperValues::defaults(&plan.hyper_params);
    let (lr, wd) = (1e-3, 1e-2);
    let n = 3001;
    let mut rng = Rng::new(11);
    let init = rng.normals(n, 0.05);
    let mut tensor = HostTensor::from_f32(&plan, &init);
    let mut p: Vec<f64> = init.iter().map(|&x| f64::from(x)).collect();
    let mut moments = Moments::new(n);
    let mut worst = 0.0f64;
    for t in 1..=50 {
        let grad = rng.normals(n, 0.01);
        let scalars = plan.kernel_scalars(&hyper, t as u64).unwrap();
        interp::run(&plan, &scalars, &mut tensor, GradBuf::F32(&grad)).unwrap();
        let direction = moments.direction(&grad, t, (0.9, 0.999, 1e-6));
        let update: Vec<f64> = direction.iter().zip(&p).map(|(d, w)| d + wd * w).collect();
        let trust = norm(&p) / norm(&update);
        for (w, u) in p.iter_mut().zip(&update) {
            *w -= lr * trust * u;
        }
        worst = worst.max(distance(&tensor, &plan, &p));
    }
    assert!(worst < 1e-5, "LAMB drifted {worst:e} from f64");
}

/// Cautious AdamW with f32 states follows the paper's in f64: the mask where the
/// update agrees with the gradient, rescaled by the fraction that agrees.
#[test]
fn cautious_adamw_follows_the_paper_in_f64() {
    let plan = F32States::<CautiousAdamW>::plan(PlanConfig::f32_params()).unwrap();
    let hyper = HyperValues::defaults(&plan.hyper_params);
    let (lr, wd) = (1e-3, 1e-2);
    let n = 4099;
    let mut rng = Rng::new(12);
    let init = rng.normals(n, 0.05);
    let mut tensor = HostTensor::from_f32(&plan, &init);
    let mut p: Vec<f64> = init.iter().map(|&x| f64::from(x)).collect();
    let mut moments = Moments::new(n);
    let mut worst = 0.0f64;
    let mut fractions = Vec::new();
    for t in 1..=50 {
        // A gradient that keeps a direction, so that the mask is neither all nor none.
        let grad: Vec<f32> = rng
            .normals(n, 0.01)
            .iter()
            .enumerate()
            .map(|(i, g)| g + 0.004 * ((i % 3) as f32 - 1.0))
            .collect();
        let scalars = plan.kernel_scalars(&hyper, t as u64).unwrap();
        interp::run(&plan, &scalars, &mut tensor, GradBuf::F32(&grad)).unwrap();
        let direction = moments.direction(&grad, t, (0.9, 0.999, 1e-8));
        let agrees: Vec<f64> = direction
            .iter()
            .zip(&grad)
            .map(|(d, &g)| if d * f64::from(g) > 0.0 { 1.0 } else { 0.0 })
            .collect();
        let fraction = agrees.iter().sum::<f64>() / n as f64;
        fractions.push(fraction);
        for i in 0..n {
            p[i] = p[i] * (1.0 - lr * wd) - lr * direction[i] * agrees[i] / fraction.max(1e-3);
        }
        worst = worst.max(distance(&tensor, &plan, &p));
    }
    assert!(worst < 1e-5, "Cautious AdamW drifted {worst:e} from f64");
    // The mask did mask: from all agreeing at step 1 to about half later.
    assert_eq!(fractions[0], 1.0);
    assert!(fractions[49] > 0.3 && fractions[49] < 0.9, "{fractions:?}");
}

/// A reduction is per tensor: stepping two tensors together gives each the
/// trust ratio it gets stepped alone, and the interpreter's norms are the reference
/// order's (`reduction::reduce`) of the same values, bit for bit.
#[test]
fn reductions_are_per_tensor_and_in_the_reference_order() {
    let spec = Lamb::default();
    let config = PlanConfig::bf16(MasterMode::Int16);
    let lens = [70_001usize, 33];
    let mut rng = Rng::new(5);
    let inits: Vec<Vec<f32>> = lens.iter().map(|&n| rng.normals(n, 1.0)).collect();
    let mut together = CpuOptimizer::for_spec(&spec, config).unwrap();
    let mut alone: Vec<CpuOptimizer> = Vec::new();
    for (k, init) in inits.iter().enumerate() {
        together.add_tensor(&format!("w{k}"), init).unwrap();
        let mut one = CpuOptimizer::for_spec(&spec, config).unwrap();
        one.add_tensor("w", init).unwrap();
        alone.push(one);
    }
    for _ in 0..3 {
        let grads: Vec<Vec<bf16>> = lens
            .iter()
            .map(|&n| {
                rng.normals(n, 1e-3)
                    .into_iter()
                    .map(bf16::from_f32)
                    .collect()
            })
            .collect();
        let views: Vec<GradBuf> = grads.iter().map(|g| GradBuf::Bf16(g)).collect();
        together.step(&views).unwrap();
        for (one, g) in alone.iter_mut().zip(&views) {
            one.step(&[*g]).unwrap();
        }
    }
    for (k, one) in alone.iter().enumerate() {
        assert_eq!(
            together.master(TensorId(k)).unwrap(),
            one.master(TensorId(0)).unwrap(),
            "tensor {k}"
        );
    }

    // The first reduction of LAMB's phase 0 is the norm of the master weights.
    let plan = together.plan().clone();
    let tensor = together.tensor(TensorId(0)).unwrap();
    let scalars = plan
        .kernel_scalars(&HyperValues::defaults(&plan.hyper_params), 4)
        .unwrap();
    let grad = vec![bf16::from_f32(1e-3); lens[0]];
    let reduced = interp::reductions(&plan, &scalars, tensor, GradBuf::Bf16(&grad));
    let master = tensor.master_f32(&plan);
    assert_eq!(
        reduced[0][0].to_bits(),
        reduction::reduce(flashopt::ir::graph::Reduction::Norm, &master).to_bits()
    );
}

/// The byte model: LAMB and Cautious AdamW store what AdamW stores (the norms live
/// for one step only) and read it twice.
#[test]
fn reducing_optimizers_store_what_adamw_stores() {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let adamw = compile(&flashopt::optimizers::AdamW::definition(), config).unwrap();
    for def in [Lamb::definition(), CautiousAdamW::definition()] {
        let plan = compile(&def, config).unwrap();
        assert_eq!(
            plan.resident_bytes_per_param(),
            adamw.resident_bytes_per_param()
        );
        assert_eq!(plan.phases.len(), 1, "{plan}");
        let t = plan.traffic();
        assert!(t.read > adamw.traffic().read, "{} reads again", def.name);
        assert_eq!(t.write, adamw.traffic().write);
    }
}

/// A checkpoint of LAMB holds what AdamW's holds (the norms live for one step): saved
/// mid-run and loaded into a fresh optimizer, the next steps are the uninterrupted
/// run's, bit for bit.
#[test]
fn a_lamb_checkpoint_resumes_the_same_trajectory() {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let lens = [300usize, 33];
    let mut rng = Rng::new(9);
    let inits: Vec<Vec<f32>> = lens.iter().map(|&n| rng.normals(n, 0.1)).collect();
    let grads: Vec<Vec<Vec<bf16>>> = (0..4)
        .map(|_| {
            lens.iter()
                .map(|&n| {
                    rng.normals(n, 1e-2)
                        .into_iter()
                        .map(bf16::from_f32)
                        .collect()
                })
                .collect()
        })
        .collect();
    let fresh = || {
        let mut opt = CpuOptimizer::for_spec(&Lamb::default(), config).unwrap();
        for (k, init) in inits.iter().enumerate() {
            opt.add_tensor(&format!("w{k}"), init).unwrap();
        }
        opt
    };
    let step = |opt: &mut CpuOptimizer, g: &[Vec<bf16>]| {
        let bufs: Vec<GradBuf> = g.iter().map(|g| GradBuf::Bf16(g)).collect();
        assert!(opt.step(&bufs).unwrap().applied());
    };
    let mut straight = fresh();
    for g in &grads {
        step(&mut straight, g);
    }
    let dir = std::env::temp_dir().join(format!("flashopt-lamb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lamb.safetensors");
    let mut first = fresh();
    step(&mut first, &grads[0]);
    step(&mut first, &grads[1]);
    first.save(&path).unwrap();
    let mut resumed = fresh();
    resumed.load(&path).unwrap();
    step(&mut resumed, &grads[2]);
    step(&mut resumed, &grads[3]);
    for k in 0..lens.len() {
        assert_eq!(
            resumed.tensor(TensorId(k)).unwrap(),
            straight.tensor(TensorId(k)).unwrap(),
            "tensor {k}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
