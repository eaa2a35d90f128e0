//! Fit a linear model by least squares with flashopt's AdamW, 24-bit master weights on
//! bf16 parameters (7 bytes of optimizer-side state per parameter), and compare with
//! plain fp32 AdamW on the same data. Runs on the CPU reference back end.
//!
//! ```text
//! cargo run --release --example least_squares [steps]
//! ```

use flashopt::Optimizer as _;
use flashopt::ir::interp::GradBuf;
use flashopt::optimizers::AdamW;
use flashopt::{Codec, CpuOptimizer, MasterMode, OptimizerSpec, PlanConfig};
use half::bf16;

const SAMPLES: usize = 512;
const FEATURES: usize = 96;

/// A deterministic problem: y = X w* + b* + noise.
struct Problem {
    x: Vec<f32>,
    y: Vec<f32>,
}

impl Problem {
    fn new() -> Problem {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut uniform = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ((seed >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
        };
        let w_true: Vec<f32> = (0..FEATURES).map(|_| uniform()).collect();
        let b_true = 0.5;
        let x: Vec<f32> = (0..SAMPLES * FEATURES).map(|_| uniform()).collect();
        let y = (0..SAMPLES)
            .map(|i| {
                let row = &x[i * FEATURES..(i + 1) * FEATURES];
                row.iter().zip(&w_true).map(|(a, b)| a * b).sum::<f32>() + b_true + 0.01 * uniform()
            })
            .collect();
        Problem { x, y }
    }

    /// Mean squared error and its gradients with respect to w and b.
    fn loss_and_grad(&self, w: &[f32], b: f32) -> (f32, Vec<f32>, f32) {
        let mut grad_w = vec![0.0f32; FEATURES];
        let mut grad_b = 0.0f32;
        let mut loss = 0.0f32;
        for i in 0..SAMPLES {
            let row = &self.x[i * FEATURES..(i + 1) * FEATURES];
            let residual = row.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() + b - self.y[i];
            loss += residual * residual;
            for (g, a) in grad_w.iter_mut().zip(row) {
                *g += 2.0 * residual * a / SAMPLES as f32;
            }
            grad_b += 2.0 * residual / SAMPLES as f32;
        }
        (loss / SAMPLES as f32, grad_w, grad_b)
    }
}

/// Train and return the loss curve. `bf16_model` trains on the bf16 parameters the
/// model would see (the narrow values, not the master weights).
fn train(opt: &mut CpuOptimizer, problem: &Problem, steps: usize, bf16_model: bool) -> Vec<f32> {
    let w = opt.add_tensor("w", &[0.0; FEATURES]).expect("fresh name");
    let b = opt.add_tensor("b", &[0.0]).expect("fresh name");
    let mut curve = Vec::new();
    for _ in 0..steps {
        let model = |values: Vec<f32>| -> Vec<f32> {
            if bf16_model {
                values.iter().map(|&v| bf16::from_f32(v).to_f32()).collect()
            } else {
                values
            }
        };
        let (wv, bv) = (model(opt.master(w)), model(opt.master(b)));
        let (loss, grad_w, grad_b) = problem.loss_and_grad(&wv, bv[0]);
        curve.push(loss);
        if bf16_model {
            let gw: Vec<bf16> = grad_w.iter().map(|&g| bf16::from_f32(g)).collect();
            let gb = [bf16::from_f32(grad_b)];
            opt.step(&[GradBuf::Bf16(&gw), GradBuf::Bf16(&gb)])
                .expect("buffers fit the plan");
        } else {
            opt.step(&[GradBuf::F32(&grad_w), GradBuf::F32(&[grad_b])])
                .expect("buffers fit the plan");
        }
    }
    curve
}

fn main() {
    let steps: usize = std::env::args()
        .nth(1)
        .map_or(400, |s| s.parse().expect("steps: a number"));
    let problem = Problem::new();

    let mut flash = CpuOptimizer::new(&AdamW::definition(), PlanConfig::bf16(MasterMode::Int8))
        .expect("AdamW compiles");
    flash.set_learning_rate(2e-2).expect("in range");
    flash.set_hyper("weight_decay", 0.0).expect("in range");

    let mut fp32_def = AdamW::definition();
    for s in &mut fp32_def.states {
        s.codec = Some(Codec::F32);
    }
    let mut fp32 = CpuOptimizer::new(&fp32_def, PlanConfig::f32()).expect("AdamW compiles");
    fp32.set_learning_rate(2e-2).expect("in range");
    fp32.set_hyper("weight_decay", 0.0).expect("in range");

    println!("{}", flash.plan());
    let with_grad = |opt: &CpuOptimizer| {
        opt.plan().resident_bytes_per_param() + opt.plan().config.grad.size_bytes() as f64
    };
    println!(
        "bytes per parameter, gradient included: flashopt AdamW-24 {}, fp32 AdamW {}",
        with_grad(&flash),
        with_grad(&fp32)
    );
    let flash_curve = train(&mut flash, &problem, steps, true);
    let fp32_curve = train(&mut fp32, &problem, steps, false);
    println!("{:>6} {:>14} {:>14}", "step", "AdamW-24 bf16", "AdamW fp32");
    for step in (0..steps).step_by((steps / 8).max(1)).chain([steps - 1]) {
        println!(
            "{step:>6} {:>14.6} {:>14.6}",
            flash_curve[step], fp32_curve[step]
        );
    }
}
