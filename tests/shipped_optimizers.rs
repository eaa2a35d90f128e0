//! Every shipped optimizer against a transcription of flashoptim 0.1.4's arithmetic
//! (f32 parameters and states, so the comparison is of the rule alone), host scalars
//! included: hyper-parameters reach its kernels as f32 and the kernels compute
//! `1 - b`, `b^t` and `1 - decay` in f32; what its Python computes first (the decay
//! `weight_decay * lr`, `1 - dampening`) is f64 rounded once; and where LLVM contracts
//! the kernels' `a * b + c` into an FMA (the left product of a sum or difference, else
//! the right), the transcription says `mul_add`. Also the macro's compiled
//! `element_rule` against the interpreter.

mod common;

use common::{Rng, powif};
use flashopt::ir::interp::{GradBuf, PartData};
use flashopt::optimizers::{Adam, AdamW, Lion, Sgd, SgdW};
use flashopt::{Codec, CpuOptimizer, F32States, Optimizer, OptimizerSpec, PlanConfig, Rounding};

const N: usize = 1000;
const STEPS: u64 = 6;

/// A Python float as a Triton kernel receives it.
fn f(x: f64) -> f32 {
    x as f32
}

/// Runs `spec` on the CPU interpreter with f32 states, and `reference` (one step over
/// p, states, g at step t) beside it; both must agree bit for bit after every step.
fn check<S: OptimizerSpec>(spec: &S, reference: impl Fn(&mut [f32], &mut [Vec<f32>], &[f32], u64)) {
    let mut def = S::definition();
    for s in &mut def.states {
        s.codec = Some(Codec::F32);
        s.rounding = Rounding::Nearest;
    }
    let plan = flashopt::ir::compile(&def, PlanConfig::f32_params()).unwrap();
    // F32States is this optimizer in fp32: the same plan.
    let f32_states = F32States::<S>::plan(PlanConfig::f32_params()).unwrap();
    assert_eq!(f32_states.to_string(), plan.to_string(), "{}", S::NAME);
    assert_eq!(
        f32_states.resident_bytes_per_param(),
        4.0 * (1 + def.states.len()) as f64
    );
    let mut opt = CpuOptimizer::from_plan(plan);
    for (name, value) in def
        .hyper_params
        .iter()
        .map(|h| &h.name)
        .zip(spec.hyper_values().unwrap().values())
    {
        opt.set_hyper(name, *value).unwrap();
    }
    let mut rng = Rng::new(S::NAME.len() as u64);
    let init = rng.normals(N, 1.0);
    let id = opt.add_tensor("w", &init).unwrap();
    let mut p = init.clone();
    let mut states = vec![vec![0.0f32; N]; def.states.len()];
    for t in 1..=STEPS {
        let g = rng.normals(N, 0.1);
        opt.step(&[GradBuf::F32(&g)]).unwrap();
        reference(&mut p, &mut states, &g, t);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&opt.master(id).unwrap()),
            bits(&p),
            "{} step {t}: parameters",
            S::NAME
        );
        for (k, state) in states.iter().enumerate() {
            let part = format!("{}::codes", def.states[k].name);
            let Some(PartData::F32(ours)) = opt.tensor(id).unwrap().part(opt.plan(), &part) else {
                panic!("{part}")
            };
            assert_eq!(bits(ours), bits(state), "{} step {t}: state {k}", S::NAME);
        }
    }
}

#[test]
fn adamw_matches_flashoptim() {
    for decouple_lr in [false, true] {
        let spec = AdamW {
            lr: 2e-3,
            weight_decay: 0.05,
            decouple_lr,
            initial_lr: Some(4e-3),
            ..AdamW::default()
        };
        let (lr, b1, b2, eps, wd) = (2e-3f64, 0.9f64, 0.999f64, 1e-8f64, 0.05f64);
        let decay = if decouple_lr {
            wd * (lr / 4e-3)
        } else {
            wd * lr
        };
        check(&spec, |p, s, g, t| {
            let (b1, b2) = (f(b1), f(b2));
            let (bias1, bias2) = (1.0 - powif(b1, t), 1.0 - powif(b2, t));
            for i in 0..p.len() {
                s[0][i] = s[0][i].mul_add(b1, g[i] * (1.0 - b1));
                s[1][i] = s[1][i].mul_add(b2, g[i] * g[i] * (1.0 - b2));
                // param *= 1 - decay; param -= ..: one FMA.
                let update = f(lr) * (s[0][i] / bias1) / ((s[1][i] / bias2).sqrt() + f(eps));
                p[i] = p[i].mul_add(1.0 - f(decay), -update);
            }
        });
    }
}

#[test]
fn adam_matches_flashoptim() {
    let spec = Adam {
        lr: 2e-3,
        weight_decay: 0.05,
        ..Adam::default()
    };
    let (lr, b1, b2, eps, wd) = (2e-3f64, 0.9f64, 0.999f64, 1e-8f64, 0.05f64);
    check(&spec, |p, s, g, t| {
        let (b1, b2) = (f(b1), f(b2));
        let (bias1, bias2) = (1.0 - powif(b1, t), 1.0 - powif(b2, t));
        for i in 0..p.len() {
            let grad = p[i].mul_add(f(wd), g[i]);
            s[0][i] = s[0][i].mul_add(b1, grad * (1.0 - b1));
            s[1][i] = s[1][i].mul_add(b2, grad * grad * (1.0 - b2));
            p[i] -= f(lr) * (s[0][i] / bias1) / ((s[1][i] / bias2).sqrt() + f(eps));
        }
    });
}

#[test]
fn lion_matches_flashoptim() {
    for decouple_lr in [false, true] {
        let spec = Lion {
            lr: 1e-3,
            weight_decay: 0.1,
            decouple_lr,
            initial_lr: Some(3e-3),
            ..Lion::default()
        };
        let (lr, b1, b2, wd) = (1e-3f64, 0.9f64, 0.99f64, 0.1f64);
        let decay = if decouple_lr {
            wd * (lr / 3e-3)
        } else {
            wd * lr
        };
        check(&spec, |p, s, g, _| {
            let (b1, b2) = (f(b1), f(b2));
            for i in 0..p.len() {
                let update = s[0][i].mul_add(b1, g[i] * (1.0 - b1));
                let update = if update > 0.0 {
                    1.0
                } else if update < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                s[0][i] = s[0][i].mul_add(b2, g[i] * (1.0 - b2));
                p[i] = p[i].mul_add(1.0 - f(decay), -(update * f(lr)));
            }
        });
    }
}

#[test]
fn sgd_matches_flashoptim() {
    for nesterov in [false, true] {
        let dampening = if nesterov { 0.0 } else { 0.25 };
        let spec = Sgd {
            lr: 1e-2,
            momentum: 0.9,
            dampening,
            weight_decay: 0.01,
            nesterov,
        };
        let (lr, mu, wd) = (1e-2f64, 0.9f64, 0.01f64);
        check(&spec, |p, s, g, _| {
            for i in 0..p.len() {
                let grad = p[i].mul_add(f(wd), g[i]);
                // flashoptim: (1 - dampening) on every step, the first included.
                s[0][i] = s[0][i].mul_add(f(mu), grad * f(1.0 - dampening));
                let step = if nesterov {
                    f(mu).mul_add(s[0][i], grad)
                } else {
                    s[0][i]
                };
                p[i] = (-step).mul_add(f(lr), p[i]);
            }
        });
    }
}

#[test]
fn sgdw_matches_flashoptim() {
    for (nesterov, decouple_lr) in [(false, false), (true, true)] {
        let spec = SgdW {
            lr: 1e-2,
            momentum: 0.8,
            weight_decay: 0.02,
            nesterov,
            decouple_lr,
            initial_lr: Some(5e-2),
            ..SgdW::default()
        };
        let (lr, mu, wd) = (1e-2f64, 0.8f64, 0.02f64);
        let decay = if decouple_lr {
            wd * (lr / 5e-2)
        } else {
            wd * lr
        };
        check(&spec, |p, s, g, _| {
            for i in 0..p.len() {
                s[0][i] = s[0][i].mul_add(f(mu), g[i] * f(1.0 - 0.0));
                let step = if nesterov {
                    f(mu).mul_add(s[0][i], g[i])
                } else {
                    s[0][i]
                };
                p[i] = p[i].mul_add(1.0 - f(decay), -(step * f(lr)));
            }
        });
    }
}

/// The signature of the `element_rule` the macro emits for an optimizer of K states.
type ElementRule<const K: usize> = fn(f32, f32, [f32; K], &[f32]) -> (f32, [f32; K]);

/// The compiled per-element rule the macro emits computes what the interpreter does.
fn element_rule_agrees<S: OptimizerSpec, const K: usize>(spec: &S, rule: ElementRule<K>) {
    let plan = F32States::<S>::plan(PlanConfig::f32_params()).unwrap();
    let mut opt = CpuOptimizer::from_plan(plan.clone());
    for (name, value) in plan
        .hyper_params
        .iter()
        .map(|h| &h.name)
        .zip(spec.hyper_values().unwrap().values())
    {
        opt.set_hyper(name, *value).unwrap();
    }
    let mut rng = Rng::new(99);
    let init = rng.normals(256, 1.0);
    let id = opt.add_tensor("w", &init).unwrap();
    let mut p = init;
    let mut states = [[0.0f32; K]; 256];
    for t in 1..=4 {
        let g = rng.normals(256, 0.1);
        let scalars = plan.kernel_scalars(opt.hyper(0), t).unwrap();
        opt.step(&[GradBuf::F32(&g)]).unwrap();
        for i in 0..256 {
            (p[i], states[i]) = rule(p[i], g[i], states[i], &scalars);
        }
        let master = opt.master(id).unwrap();
        for i in 0..256 {
            assert_eq!(
                master[i].to_bits(),
                p[i].to_bits(),
                "{} t={t} i={i}",
                S::NAME
            );
        }
    }
}

#[test]
fn compiled_element_rules_agree_with_the_interpreter() {
    element_rule_agrees(
        &AdamW {
            decouple_lr: true,
            ..AdamW::default()
        },
        AdamW::element_rule,
    );
    element_rule_agrees(
        &Adam {
            weight_decay: 0.1,
            ..Adam::default()
        },
        Adam::element_rule,
    );
    element_rule_agrees(&Lion::default(), Lion::element_rule);
    element_rule_agrees(
        &Sgd {
            momentum: 0.9,
            nesterov: true,
            ..Sgd::default()
        },
        Sgd::element_rule,
    );
    element_rule_agrees(
        &SgdW {
            momentum: 0.9,
            weight_decay: 0.1,
            ..SgdW::default()
        },
        SgdW::element_rule,
    );
    // The plan's host scalars: the rule's, which `element_rule` takes, then the
    // reciprocals of the divisors among them (`passes::reciprocals`: `1 - b1^t`,
    // `1 - b2^t`), which only the plan's programs read.
    let plan = AdamW::plan(PlanConfig::f32_params()).unwrap();
    let (rule, derived) = plan.host.scalars.split_at(AdamW::SCALARS);
    assert!(rule.iter().all(|s| !s.reciprocal));
    assert_eq!(derived.len(), 2);
    assert!(derived.iter().all(|s| s.reciprocal));
}

#[test]
fn defaults_follow_flashoptim() {
    let adamw = AdamW::default();
    assert_eq!(
        (adamw.lr, adamw.b1, adamw.b2, adamw.eps, adamw.weight_decay),
        (1e-3, 0.9, 0.999, 1e-8, 1e-2)
    );
    assert!(!adamw.decouple_lr && adamw.initial_lr.is_none());
    let adam = Adam::default();
    assert_eq!(adam.weight_decay, 0.0);
    let lion = Lion::default();
    assert_eq!(
        (lion.lr, lion.b1, lion.b2, lion.weight_decay),
        (1e-3, 0.9, 0.99, 0.0)
    );
    let sgd = Sgd::default();
    assert_eq!(
        (
            sgd.lr,
            sgd.momentum,
            sgd.dampening,
            sgd.weight_decay,
            sgd.nesterov
        ),
        (1e-3, 0.0, 0.0, 0.0, false)
    );
    // initial_lr follows lr when not given.
    let values = AdamW {
        lr: 0.5,
        ..AdamW::default()
    }
    .hyper_values()
    .unwrap();
    assert_eq!(values.get("initial_lr"), values.get("lr"));
}
