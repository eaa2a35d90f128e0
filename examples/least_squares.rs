//! Fit a linear model by least squares with flashopt's AdamW, 24-bit master weights on
//! bf16 parameters (7 bytes of optimizer-side state per parameter), and compare with
//! plain fp32 AdamW on the same data. Runs on the CPU reference back end.
//!
//! ```text
//! cargo run --release --example least_squares [STEPS] [--plan]
//! ```
//!
//! `--plan` prints the lowered plan too: the host scalars, the storage parts and
//! every instruction of the fused step.

use flashopt::Optimizer as _;
use flashopt::ir::interp::GradBuf;
use flashopt::optimizers::AdamW;
use flashopt::{CpuOptimizer, F32States, MasterMode, OptimizerSpec, PlanConfig, TensorId};
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
        let (wv, bv) = (model(opt.master(w).unwrap()), model(opt.master(b).unwrap()));
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let show_plan = args.iter().any(|a| a == "--plan");
    let steps: usize = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map_or(400, |s| s.parse().expect("STEPS: a number"));
    let problem = Problem::new();

    let mut flash = CpuOptimizer::new(&AdamW::definition(), PlanConfig::bf16(MasterMode::Int8))
        .expect("AdamW compiles");
    flash.set_learning_rate(2e-2).expect("in range");
    flash.set_hyper("weight_decay", 0.0).expect("in range");

    let mut fp32 = CpuOptimizer::for_spec(&F32States(AdamW::default()), PlanConfig::f32_params())
        .expect("AdamW compiles");
    fp32.set_learning_rate(2e-2).expect("in range");
    fp32.set_hyper("weight_decay", 0.0).expect("in range");

    println!(
        "Least squares, {SAMPLES} samples x {FEATURES} features, {steps} steps of AdamW (lr 2e-2):"
    );
    println!("flashopt's AdamW-24 (bf16 parameters + int8 corrections, 8-bit moments) against");
    println!("AdamW in fp32 (f32 parameters and moments), both on the CPU reference.");
    if show_plan {
        println!("\n== The lowered plan of AdamW-24\n\n{}", flash.plan());
    }
    let with_grad = |opt: &CpuOptimizer| {
        opt.plan().resident_bytes_per_param() + opt.plan().config.grad.size_bytes() as f64
    };
    println!(
        "\n== Memory: bytes per parameter (parameter, master correction, moments, gradient)\n"
    );
    println!("flashopt AdamW-24 {:>7}", with_grad(&flash));
    println!("fp32 AdamW        {:>7}", with_grad(&fp32));

    let flash_curve = train(&mut flash, &problem, steps, true);
    let fp32_curve = train(&mut fp32, &problem, steps, false);
    println!("\n== Training loss (mean squared error) by step\n");
    println!(
        "{:>6} {:>16} {:>16}",
        "step", "AdamW-24, bf16", "AdamW, fp32"
    );
    for step in (0..steps).step_by((steps / 8).max(1)).chain([steps - 1]) {
        println!(
            "{step:>6} {:>16.6} {:>16.6}",
            flash_curve[step], fp32_curve[step]
        );
    }

    // The bf16 run's model computes with bf16 parameters: 8 significant bits, so each
    // weight is off by up to 1/512 of itself, whatever the optimizer keeps. Its loss
    // stops where rounding the weights to bf16 puts it; the master weights (bf16 +
    // correction, decoded) keep improving like fp32's.
    let loss_at = |w: &[f32], b: f32| problem.loss_and_grad(w, b).0;
    let round =
        |v: Vec<f32>| -> Vec<f32> { v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect() };
    let (fw, fb) = (
        flash.master(TensorId(0)).unwrap(),
        flash.master(TensorId(1)).unwrap(),
    );
    let (pw, pb) = (
        fp32.master(TensorId(0)).unwrap(),
        fp32.master(TensorId(1)).unwrap(),
    );
    println!("\n== Why the bf16 run's loss stops higher\n");
    let flash_bf16 = loss_at(&round(fw.clone()), round(fb.clone())[0]);
    let flash_master = loss_at(&fw, fb[0]);
    let fp32_own = loss_at(&pw, pb[0]);
    let fp32_rounded = loss_at(&round(pw.clone()), round(pb)[0]);
    println!("AdamW-24, its bf16 parameters (what the model computes with) {flash_bf16:>10.6}");
    println!("AdamW-24, its 24-bit master weights                           {flash_master:>10.6}");
    println!("fp32 AdamW, its weights                                       {fp32_own:>10.6}");
    println!("fp32 AdamW, its weights rounded to bf16                       {fp32_rounded:>10.6}");
    println!(
        "Rounding fp32's own weights to bf16 (8 significant bits) alone multiplies its loss by {:.1},",
        fp32_rounded / fp32_own
    );
    println!(
        "{:.0}% of the gap between the two runs: the bf16 parameters' resolution. The rest comes",
        100.0 * (fp32_rounded - fp32_own) / (flash_bf16 - fp32_own)
    );
    println!("from gradients taken at rounded weights; the master weights keep what bf16 cannot.");
}
