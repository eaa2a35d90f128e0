//! The custom optimizers of examples/custom_optimizers train real (small) problems on
//! the CPU reference: bf16 parameters, 24-bit master weights, compressed states.

#[path = "../examples/custom_optimizers/optimizers.rs"]
mod optimizers;
#[path = "../examples/custom_optimizers/problems.rs"]
mod problems;

use flashopt::{MasterMode, OptimizerSpec, PlanConfig};
use optimizers::{Adan, Lars, Signum, SophiaClip};
use problems::{LeastSquares, Rosenbrock, train};

/// The loss falls by at least `factor`, judged on the mean of the last 20 steps.
fn assert_falls(name: &str, losses: &[f32], factor: f32) {
    let tail = &losses[losses.len() - 20..];
    let end = tail.iter().sum::<f32>() / tail.len() as f32;
    assert!(
        end.is_finite() && end * factor < losses[0],
        "{name}: {} -> {end}",
        losses[0]
    );
}

#[test]
fn adan_trains() {
    let losses = train(
        &Adan {
            lr: 1e-2,
            ..Adan::default()
        },
        &LeastSquares::new(128, 32, 5),
        400,
    );
    assert_falls("adan / least squares", &losses, 1e3);
    let losses = train(
        &Adan {
            lr: 2e-3,
            ..Adan::default()
        },
        &Rosenbrock { pairs: 16 },
        2000,
    );
    assert_falls("adan / rosenbrock", &losses, 1e3);
}

#[test]
fn signum_trains() {
    let losses = train(
        &Signum {
            lr: 3e-3,
            ..Signum::default()
        },
        &LeastSquares::new(128, 32, 5),
        400,
    );
    assert_falls("signum / least squares", &losses, 1e3);
    let losses = train(
        &Signum {
            lr: 1e-3,
            ..Signum::default()
        },
        &Rosenbrock { pairs: 16 },
        2000,
    );
    assert_falls("signum / rosenbrock", &losses, 1e3);
}

#[test]
fn sophia_clip_trains() {
    let losses = train(
        &SophiaClip {
            lr: 1e-2,
            ..SophiaClip::default()
        },
        &LeastSquares::new(128, 32, 5),
        400,
    );
    assert_falls("sophia / least squares", &losses, 1e2);
    let losses = train(
        &SophiaClip {
            lr: 1e-2,
            ..SophiaClip::default()
        },
        &Rosenbrock { pairs: 16 },
        3000,
    );
    assert_falls("sophia / rosenbrock", &losses, 1e2);
}

#[test]
fn lars_trains() {
    let losses = train(
        &Lars {
            lr: 1.0,
            ..Lars::default()
        },
        &LeastSquares::new(128, 32, 5),
        400,
    );
    assert_falls("lars / least squares", &losses, 1e2);
    // Its norms make it a plan of two passes over memory.
    let plan = Lars::plan(PlanConfig::bf16(MasterMode::Int8)).unwrap();
    assert_eq!((plan.reductions.len(), plan.phases.len()), (2, 1));
}

#[test]
fn custom_optimizers_are_compressed() {
    // Adan keeps four states; fp32 Adan holds 4 (param) + 16 (states) bytes.
    let adan = Adan::plan(PlanConfig::bf16(MasterMode::Int8)).unwrap();
    assert_eq!(adan.resident_bytes_per_param(), 3.0 + 1.0625 * 3.0 + 2.0);
    assert_eq!(
        Signum::plan(PlanConfig::bf16(MasterMode::Int8))
            .unwrap()
            .resident_bytes_per_param(),
        4.0625
    );
    // The definitions are short: the DSL part of each is under 25 lines.
    let source = include_str!("../examples/custom_optimizers/optimizers.rs");
    for block in source.split("optimizer! {").skip(1) {
        let lines = block
            .lines()
            .take_while(|l| *l != "}")
            .filter(|l| !l.trim().is_empty())
            .count();
        assert!(lines < 25, "a definition takes {lines} lines");
    }
}
