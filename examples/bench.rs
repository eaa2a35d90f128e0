//! First step-time measurements (issue 5, partial): the device-to-device copy ceiling
//! and the median step time of AdamW-24, Lion-24 and SGD-24 (momentum) on single
//! tensors of 4M, 64M and 268M parameters and on GPT-2 124M's 148 tensors (one launch).
//!
//! Timing: each repetition is bracketed by device syncs and timed on the host; the
//! median of the repetitions after a warm-up is reported. GB/s counts the bytes the
//! plan's byte model says a step moves (params, corrections, gradients, states,
//! scales); "% of copy" divides by a copy kernel's read+write GB/s in the same process.

use std::time::Instant;

use flashopt::ir::interp::{GradBuf, HostTensor};
use flashopt::optimizers::{AdamW, Lion, Sgd};
use flashopt::runtime::GpuOptimizer;
use flashopt::{MasterMode, OptimizerSpec, PlanConfig};
use flashopt_cubecl::cubecl;
use flashopt_cubecl::cubecl::cuda::CudaRuntime;
use flashopt_cubecl::cubecl::prelude::*;
use half::bf16;

#[cube(launch_unchecked)]
fn copy_kernel(input: &Array<Vector<u32, Const<4>>>, output: &mut Array<Vector<u32, Const<4>>>) {
    if ABSOLUTE_POS < input.len() {
        output[ABSOLUTE_POS] = input[ABSOLUTE_POS];
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

const WARMUP: usize = 5;
const REPEATS: usize = 30;

fn copy_gbps(client: &ComputeClient<CudaRuntime>) -> f64 {
    let bytes = 2usize << 30;
    let vectors = bytes / 16;
    let a = client.create_from_slice(&vec![1u8; bytes]);
    let b = client.empty(bytes);
    let mut times = Vec::new();
    for i in 0..WARMUP + REPEATS {
        flashopt_cubecl::cubecl::future::block_on(client.sync()).unwrap();
        let start = Instant::now();
        unsafe {
            copy_kernel::launch_unchecked::<CudaRuntime>(
                client,
                CubeCount::Static((vectors as u32).div_ceil(256), 1, 1),
                CubeDim::new_1d(256),
                ArrayArg::from_raw_parts(a.clone(), vectors * 4),
                ArrayArg::from_raw_parts(b.clone(), vectors * 4),
            );
        }
        flashopt_cubecl::cubecl::future::block_on(client.sync()).unwrap();
        if i >= WARMUP {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    2.0 * bytes as f64 / median(times) / 1e9
}

fn bench<S: OptimizerSpec>(
    client: &ComputeClient<CudaRuntime>,
    spec: &S,
    shapes: &[usize],
) -> (f64, f64) {
    let plan = S::plan(PlanConfig::bf16(MasterMode::Int8)).unwrap();
    let tensors: Vec<(String, HostTensor)> = shapes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let init: Vec<f32> = (0..n)
                .map(|j| ((j % 2003) as f32 - 1001.0) * 1e-3)
                .collect();
            (format!("t{i}"), HostTensor::from_f32(&plan, &init))
        })
        .collect();
    let bytes: u64 = shapes
        .iter()
        .map(|&n| plan.bytes_for(n))
        .map(|(r, w)| r + w)
        .sum();
    let mut opt =
        GpuOptimizer::from_host(client.clone(), plan, spec.hyper_values().unwrap(), tensors)
            .unwrap();
    let grads: Vec<Vec<bf16>> = shapes
        .iter()
        .map(|&n| {
            (0..n)
                .map(|j| bf16::from_f32(((j % 97) as f32 - 48.0) * 1e-4))
                .collect()
        })
        .collect();
    let bufs: Vec<GradBuf<'_>> = grads.iter().map(|g| GradBuf::Bf16(g)).collect();
    opt.write_grads(&bufs).unwrap();
    let mut times = Vec::new();
    for i in 0..WARMUP + REPEATS {
        opt.sync();
        let start = Instant::now();
        opt.step().unwrap();
        opt.sync();
        if i >= WARMUP {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let t = median(times);
    (t * 1e3, bytes as f64 / t / 1e9)
}

fn main() {
    let client = CudaRuntime::client(&Default::default());
    let copy = copy_gbps(&client);
    println!("device-to-device copy (2 GiB, read+write): {copy:.0} GB/s");
    let gpt2: Vec<usize> = {
        let d = 768;
        let mut v = vec![50257 * d, 1024 * d];
        for _ in 0..12 {
            v.extend([
                d,
                d,
                3 * d * d,
                3 * d,
                d * d,
                d,
                d,
                d,
                4 * d * d,
                4 * d,
                4 * d * d,
                d,
            ]);
        }
        v.extend([d, d]);
        v
    };
    let workloads: Vec<(&str, Vec<usize>)> = vec![
        ("4M", vec![1 << 22]),
        ("64M", vec![1 << 26]),
        ("268M", vec![1 << 28]),
        ("GPT-2 148 tensors", gpt2),
    ];
    println!("| optimizer | workload | median ms | GB/s (byte model) | % of copy |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, shapes) in &workloads {
        for (opt, (ms, gbps)) in [
            ("AdamW-24", bench(&client, &AdamW::default(), shapes)),
            ("Lion-24", bench(&client, &Lion::default(), shapes)),
            (
                "SGD-24 (momentum 0.9)",
                bench(
                    &client,
                    &Sgd {
                        momentum: 0.9,
                        ..Sgd::default()
                    },
                    shapes,
                ),
            ),
        ] {
            println!(
                "| {opt} | {name} | {ms:.3} | {gbps:.0} | {:.1}% |",
                100.0 * gbps / copy
            );
        }
    }
}
