//! Throughput of the CPU reference interpreter: AdamW-24 on bf16 parameters.
//!
//! ```text
//! cargo run --release --example interp_throughput [elements] [steps]
//! ```

use std::time::Instant;

use flashopt::ir::interp::{self, GradBuf, HostTensor};
use flashopt::ir::{HyperValues, compile};
use flashopt::optimizers::AdamW;
use flashopt::{MasterMode, OptimizerSpec, PlanConfig};
use half::bf16;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(1 << 24, |s| s.parse().expect("elements: a number"));
    let steps: u64 = args
        .next()
        .map_or(7, |s| s.parse().expect("steps: a number"));
    let plan = compile(&AdamW::definition(), PlanConfig::bf16(MasterMode::Int8)).expect("compiles");
    let init: Vec<f32> = (0..n).map(|i| ((i % 1000) as f32 - 500.0) * 1e-3).collect();
    let grad: Vec<bf16> = (0..n)
        .map(|i| bf16::from_f32(((i % 77) as f32 - 38.0) * 1e-4))
        .collect();
    let mut tensor = HostTensor::from_f32(&plan, &init);
    let hyper = HyperValues::defaults(&plan.hyper_params);
    let mut seconds = Vec::new();
    for t in 1..=steps {
        let scalars = plan.kernel_scalars(&hyper, t).expect("valid step");
        let start = Instant::now();
        interp::run(&plan, &scalars, &mut tensor, GradBuf::Bf16(&grad)).expect("buffers fit");
        seconds.push(start.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    // What skipping non-finite steps costs: the scan of the gradients before a step.
    let mut scans = Vec::new();
    for _ in 0..steps {
        let start = Instant::now();
        let found = flashopt::runtime::numerics::scan_step([("w", GradBuf::Bf16(&grad))]);
        scans.push(start.elapsed().as_secs_f64());
        assert!(found.is_none());
    }
    scans.sort_by(f64::total_cmp);
    let scan = scans[scans.len() / 2];
    println!(
        "AdamW-24 bf16, {n} elements, {} threads: median step {:.1} ms over {steps} steps, {:.1} M elements/s",
        rayon::current_num_threads(),
        median * 1e3,
        n as f64 / median / 1e6
    );
    println!(
        "non-finite gradient scan (one thread): median {:.1} ms, {:.1}% of the step",
        scan * 1e3,
        100.0 * scan / median
    );
}
