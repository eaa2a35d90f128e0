//! Custom optimizers in a few lines of DSL, trained on the CPU reference back end with
//! bf16 parameters and 24-bit master weights.
//!
//! ```text
//! cargo run --release --example custom_optimizers
//! ```

mod optimizers;
mod problems;

use flashopt::{MasterMode, OptimizerSpec, PlanConfig};
use optimizers::{Adan, Lars, Signum, SophiaClip};
use problems::{LeastSquares, Problem, Rosenbrock, train};

fn report<S: OptimizerSpec>(spec: &S, problem: &dyn Problem, label: &str, steps: usize) {
    let plan = S::plan(PlanConfig::bf16(MasterMode::Int8)).expect("compiles");
    let losses = train(spec, problem, steps);
    println!(
        "{:<11} {label:<13} {:>5.2} B/param resident   loss {:>10.4e} -> {:>10.4e} after {steps} steps",
        S::NAME,
        plan.resident_bytes_per_param(),
        losses[0],
        losses[steps - 1]
    );
}

fn main() {
    let least_squares = LeastSquares::new(256, 48, 11);
    let rosenbrock = Rosenbrock { pairs: 64 };
    report(
        &Adan {
            lr: 1e-2,
            ..Adan::default()
        },
        &least_squares,
        "least squares",
        600,
    );
    report(
        &Signum {
            lr: 3e-3,
            ..Signum::default()
        },
        &least_squares,
        "least squares",
        600,
    );
    report(
        &SophiaClip {
            lr: 1e-2,
            ..SophiaClip::default()
        },
        &least_squares,
        "least squares",
        600,
    );
    report(
        &Lars {
            lr: 1.0,
            ..Lars::default()
        },
        &least_squares,
        "least squares",
        600,
    );
    report(
        &Adan {
            lr: 2e-3,
            ..Adan::default()
        },
        &rosenbrock,
        "rosenbrock",
        3000,
    );
    report(
        &Signum {
            lr: 1e-3,
            ..Signum::default()
        },
        &rosenbrock,
        "rosenbrock",
        3000,
    );
    report(
        &SophiaClip {
            lr: 1e-2,
            ..SophiaClip::default()
        },
        &rosenbrock,
        "rosenbrock",
        3000,
    );
    println!(
        "\nThe Adan rule as the GPU back end receives it:\n{}",
        Adan::ELEMENT_RULE_TOKENS
    );
}
