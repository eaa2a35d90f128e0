//! An 8-bit momentum rounded to the nearest code does not decay to zero when its
//! gradient stops: `beta * m` maps back to the same code whenever the decay moves it
//! by less than half a code, and the element keeps stepping, at a size set by its
//! group's largest momentum, for as long as that stays large. With f32 states the same
//! element's step shrinks by `beta` every step. Dithered rounding (the shipped Sgd's,
//! `Rounding::Dithered`) decays as f32 does; `NearestRounding` is flashoptim's.
//!
//! The setting is the output layer's: a group of 32 where 31 elements keep a gradient
//! of 1 (the group's scale) and element 0 has a gradient of 0.05 for 20 steps, then 0.

use flashopt::ir::interp::{GradBuf, PartData};
use flashopt::optimizers::Sgd;
use flashopt::{
    CpuOptimizer, F32States, MasterMode, NearestRounding, Optimizer, OptimizerSpec, PlanConfig,
    TensorId,
};

const LR: f64 = 1e-2;
const GROWING: usize = 20;
const DECAYING: usize = 60;

fn sgd() -> Sgd {
    Sgd {
        lr: LR,
        momentum: 0.9,
        ..Sgd::default()
    }
}

/// In bf16; the f32 run reads the same values widened.
fn gradient(t: usize) -> Vec<half::bf16> {
    (0..32)
        .map(|i| match i {
            0 if t < GROWING => 0.05,
            0 => 0.0,
            _ => 1.0,
        })
        .map(half::bf16::from_f32)
        .collect()
}

/// Element 0's step (how far its master weight moved) at every step, and its momentum
/// code after each step where the momentum is stored in 8 bits.
fn trajectory<S: OptimizerSpec>(spec: &S, config: PlanConfig) -> (Vec<f32>, Vec<i8>) {
    let mut opt = CpuOptimizer::for_spec(spec, config).unwrap();
    let id: TensorId = opt.add_tensor("head.weight", &[0.5f32; 32]).unwrap();
    let (mut steps, mut codes) = (Vec::new(), Vec::new());
    for t in 0..GROWING + DECAYING {
        let before = opt.master(id).unwrap()[0];
        let g = gradient(t);
        let widened: Vec<f32> = g.iter().map(|x| x.to_f32()).collect();
        let grad = if config == PlanConfig::f32_params() {
            GradBuf::F32(&widened)
        } else {
            GradBuf::Bf16(&g)
        };
        opt.step(&[grad]).unwrap();
        steps.push(before - opt.master(id).unwrap()[0]);
        if let Some(PartData::I8(c)) = opt.tensor(id).unwrap().part(opt.plan(), "buf::codes") {
            codes.push(c[0]);
        }
    }
    (steps, codes)
}

/// The sum of element 0's steps after its gradient stopped.
fn tail(steps: &[f32]) -> f32 {
    steps[GROWING..].iter().sum()
}

#[test]
fn an_8_bit_momentum_rounded_to_nearest_stops_decaying() {
    let (exact, _) = trajectory(&F32States(sgd()), PlanConfig::f32_params());
    let (nearest, codes) = trajectory(&NearestRounding(sgd()), PlanConfig::bf16(MasterMode::Int8));
    assert_eq!(
        codes.len(),
        GROWING + DECAYING,
        "the momentum is stored as int8 codes"
    );

    // While the gradient lasts the two agree to a few percent.
    let peak = GROWING - 1;
    assert!((nearest[peak] / exact[peak] - 1.0).abs() < 0.05);

    // After the gradient stops, f32 decays by 0.9 a step: 0.9^60 ~ 0.002 of its peak.
    let last = GROWING + DECAYING - 1;
    assert!(exact[last] < 0.01 * exact[peak], "exact {}", exact[last]);
    // The 8-bit momentum decays for a few steps, then stops at a non-zero code and
    // stays there: the element moves by the same step for the last 40 steps.
    let stuck = codes[last];
    assert!(stuck > 0, "codes {codes:?}");
    assert!(
        codes[GROWING + 20..].iter().all(|&c| c == stuck),
        "codes {codes:?}"
    );
    assert!(
        nearest[last] > 0.2 * nearest[peak],
        "nearest {}",
        nearest[last]
    );
    assert!(
        nearest[last] > 100.0 * exact[last],
        "after {DECAYING} steps without gradient: 8-bit {} against f32 {}",
        nearest[last],
        exact[last]
    );
    // Summed over the 60 steps without gradient it travels more than twice as far as
    // exact SGD's whole tail, and the distance grows by the stuck step every step.
    eprintln!(
        "nearest: stuck code {stuck}; last step 8-bit {:e}, f32 {:e}; tail 8-bit {:e}, f32 {:e}",
        nearest[last],
        exact[last],
        tail(&nearest),
        tail(&exact)
    );
    assert!(tail(&nearest) > 2.0 * tail(&exact));
}

#[test]
fn a_dithered_8_bit_momentum_decays_as_f32_does() {
    let (exact, _) = trajectory(&F32States(sgd()), PlanConfig::f32_params());
    let (dithered, codes) = trajectory(&sgd(), PlanConfig::bf16(MasterMode::Int8));
    let peak = GROWING - 1;
    assert!((dithered[peak] / exact[peak] - 1.0).abs() < 0.05);

    // The code reaches 0 and stays there: the element stops.
    let last = GROWING + DECAYING - 1;
    let zero_from = codes.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    assert!(zero_from < last - 10, "codes {codes:?}");
    assert!(dithered[last].abs() < 1e-5, "last step {}", dithered[last]);
    // The distance travelled after the gradient stopped is f32's, to within the
    // rounding noise of a few codes.
    eprintln!(
        "dithered: code 0 from step {zero_from}; tail 8-bit {:e}, f32 {:e}; codes {codes:?}",
        tail(&dithered),
        tail(&exact)
    );
    let ratio = tail(&dithered) / tail(&exact);
    assert!((0.7..1.3).contains(&ratio), "tail ratio {ratio}");
}
