//! The sharded optimizer on GPUs through NCCL: every visible GPU a rank (one thread
//! each), against one CPU optimizer given the same summed gradients, bit for bit. On a
//! machine with one GPU this is the world-size-1 run (NCCL still does the
//! reduce-scatter, all-reduce and all-gather); with more, every world size from 2 to
//! the GPU count runs too.

use flashopt::ir::interp::{GradBuf, HostTensor, PartData};
use flashopt::optimizers::{AdamW, Lion};
use flashopt::runtime::raw::part_bytes;
use flashopt::runtime::shard::{self, ShardedGpuOptimizer};
use flashopt::{
    CpuOptimizer, FloatDtype, MasterMode, Optimizer as _, OptimizerSpec, PlanConfig, TensorId,
};
use flashopt_cubecl::cubecl::Runtime;
use flashopt_cubecl::cubecl::cuda::{CudaDevice, CudaRuntime};
use flashopt_cubecl::nccl::{Communicator, NcclId};

use crate::report;

const LENS: [usize; 8] = [1, 33, 95, 100, 7, 64, 257, 100_003];
const STEPS: u64 = 5;

fn values(seed: u64, scale: f32) -> Vec<Vec<f32>> {
    crate::common::uniform_tensors(&LENS, seed, scale)
}

/// Rank `rank`'s bf16 gradient at `step`, as f32 values; a NaN at step 3 on the last
/// rank when `poison`. Ranks 0 and 1 hold gradients, the others zeros: the sum of two
/// bf16 values is exact in f32 and rounded once, in any order NCCL adds them, so the
/// reference can form the same sum.
fn rank_grads(rank: usize, world: usize, step: u64, poison: bool) -> Vec<Vec<f32>> {
    let scale = if rank < 2 { 0.01 } else { 0.0 };
    let mut g = values(1000 * step + rank as u64 + 1, scale);
    for v in g.iter_mut().flatten() {
        *v = half::bf16::from_f32(*v).to_f32();
    }
    if poison && step == 3 && rank + 1 == world {
        g[6][200] = f32::NAN;
    }
    g
}

fn bf16(g: &[Vec<f32>]) -> Vec<PartData> {
    g.iter()
        .map(|v| PartData::round_from_f32(FloatDtype::Bf16, v))
        .collect()
}

struct Seen {
    params: Vec<Vec<PartData>>,
    shards: Vec<Vec<(shard::Piece, HostTensor)>>,
    applied: Vec<bool>,
}

fn run_world<S: OptimizerSpec + Sync>(spec: &S, world: usize, poison: bool) -> Vec<Seen> {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let id = NcclId::new().expect("NCCL unique id (is libnccl installed?)");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                s.spawn(move || {
                    let client = CudaRuntime::client(&CudaDevice::new(rank));
                    let comm = Communicator::new(&client, &id, rank, world).unwrap();
                    let plan = S::plan(config).unwrap();
                    let tensors = values(5, 1.0)
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (format!("t{i}"), HostTensor::from_f32(&plan, v)))
                        .collect();
                    let mut opt = ShardedGpuOptimizer::from_host(
                        client,
                        plan,
                        spec.hyper_values().unwrap(),
                        tensors,
                        comm,
                    )
                    .unwrap();
                    let mut seen = Seen {
                        params: Vec::new(),
                        shards: Vec::new(),
                        applied: Vec::new(),
                    };
                    for step in 1..=STEPS {
                        let g = bf16(&rank_grads(rank, world, step, poison));
                        let bufs: Vec<GradBuf<'_>> =
                            g.iter().map(|p| p.as_grad().unwrap()).collect();
                        opt.write_grads(&bufs).unwrap();
                        seen.applied.push(opt.step().unwrap().applied());
                        seen.params.push(opt.download_params());
                        seen.shards.push(opt.download_shard());
                    }
                    seen
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn check<S: OptimizerSpec + Sync>(label: &str, spec: &S, world: usize, poison: bool) {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let ranks = run_world(spec, world, poison);
    let mut reference = CpuOptimizer::for_spec(spec, config).unwrap();
    for (i, v) in values(5, 1.0).iter().enumerate() {
        reference.add_tensor(&format!("t{i}"), v).unwrap();
    }
    let infos: Vec<_> = (0..LENS.len())
        .map(|i| reference.tensor_info(TensorId(i)).clone())
        .collect();
    let mut equal = true;
    for step in 1..=STEPS {
        // The sum NCCL computes (see `rank_grads`).
        let mut total: Vec<Vec<f32>> = LENS.iter().map(|&n| vec![0.0; n]).collect();
        for rank in 0..world {
            for (t, g) in total.iter_mut().zip(rank_grads(rank, world, step, poison)) {
                t.iter_mut().zip(g).for_each(|(a, b)| *a += b);
            }
        }
        let g = bf16(&total);
        let bufs: Vec<GradBuf<'_>> = g.iter().map(|p| p.as_grad().unwrap()).collect();
        let applied = reference.step(&bufs).unwrap().applied();
        let k = (step - 1) as usize;
        for (rank, seen) in ranks.iter().enumerate() {
            assert_eq!(
                seen.applied[k], applied,
                "{label}: rank {rank}, step {step}"
            );
            for (i, p) in seen.params[k].iter().enumerate() {
                equal &= part_bytes(p) == part_bytes(reference.tensor(TensorId(i)).param());
            }
        }
        let plan = reference.plan();
        let whole = shard::assemble(
            plan,
            &infos,
            ranks
                .iter()
                .flat_map(|r| r.shards[k].iter().map(|(p, t)| (p, t))),
        );
        for (i, t) in whole.iter().enumerate() {
            equal &= crate::same_bits(t, reference.tensor(TensorId(i)));
        }
    }
    let line = format!(
        "| sharded {label} | {world} GPU(s) through NCCL | {} steps{} | bit-equal: {} |",
        STEPS,
        if poison {
            ", a NaN on the last rank at step 3"
        } else {
            ""
        },
        if equal { "yes" } else { "NO" }
    );
    report(&line);
    assert!(equal, "{line}");
}

fn worlds() -> Vec<usize> {
    let gpus = crate::client().device_count_total().max(1);
    let mut w = vec![1];
    w.extend(2..=gpus);
    w
}

#[test]
fn sharded_steps_through_nccl_equal_the_cpu_reference() {
    for world in worlds() {
        check("AdamW-24", &AdamW::default(), world, false);
        check("Lion-24", &Lion::default(), world, false);
        check("AdamW-24 NaN", &AdamW::default(), world, true);
    }
}
