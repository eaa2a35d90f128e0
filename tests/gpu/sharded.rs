//! The sharded optimizer on GPUs through NCCL: every visible GPU a rank (one thread
//! each), against one CPU optimizer given the same summed gradients, bit for bit. On a
//! machine with one GPU this is the world-size-1 run (NCCL still does the
//! reduce-scatter, all-reduce and all-gather); with more, every world size from 2 to
//! the GPU count runs too.

use flashopt::ShardedGpuOptimizer;
use flashopt::ir::Plan;
use flashopt::ir::interp::{GradBuf, HostTensor, PartData};
use flashopt::optimizers::{AdamW, Lion};
use flashopt::runtime::TensorInfo;
use flashopt::runtime::raw::part_bytes;
use flashopt::runtime::shard::{self, LocalCollective, ShardedCpuOptimizer};
use flashopt::{
    CpuOptimizer, FloatDtype, MasterMode, Optimizer as _, OptimizerSpec, PlanConfig, TensorId,
};
use flashopt_cubecl::cubecl::Runtime;
use flashopt_cubecl::cubecl::cuda::{CudaDevice, CudaRuntime};
use flashopt_cubecl::device::nccl::{Communicator, NcclId};

use std::path::Path;

use crate::report;

const LENS: [usize; 8] = [1, 33, 95, 100, 7, 64, 257, 100_003];
const STEPS: u64 = 5;

fn values(seed: u64, scale: f32) -> Vec<Vec<f32>> {
    crate::common::uniform_tensors(&LENS, seed, scale)
}

/// Rank `rank`'s bf16 gradient at `step`, as f32 values; a NaN at step 3 on the last
/// rank when `poison`. Every rank holds one, of magnitude 2^-8 to 2^-6 (multiples of
/// 2^-15): the sum over up to 8 ranks is exact in f32 in any order NCCL adds them, so
/// the reference forms the same sum, rounded once to bf16 as both ranks round it.
fn rank_grads(rank: usize, world: usize, step: u64, poison: bool) -> Vec<Vec<f32>> {
    let mut g = values(1000 * step + rank as u64 + 1, 1.0);
    for v in g.iter_mut().flatten() {
        let magnitude = (1.0 + 3.0 * v.abs().min(1.0)) / 256.0;
        *v = half::bf16::from_f32(magnitude.copysign(*v)).to_f32();
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
    run_world_between(spec, world, poison, 1..=STEPS, None, None)
}

/// Steps `steps` on `world` GPU ranks, from the checkpoint in `load` if given, saving
/// into `save` after the last.
fn run_world_between<S: OptimizerSpec + Sync>(
    spec: &S,
    world: usize,
    poison: bool,
    steps: std::ops::RangeInclusive<u64>,
    load: Option<&Path>,
    save: Option<&Path>,
) -> Vec<Seen> {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let id = NcclId::new().expect("NCCL unique id (is libnccl installed?)");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let steps = steps.clone();
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
                    if let Some(dir) = load {
                        opt.load(dir).unwrap();
                    }
                    for step in steps {
                        let g = bf16(&rank_grads(rank, world, step, poison));
                        let bufs: Vec<GradBuf<'_>> =
                            g.iter().map(|p| p.as_grad().unwrap()).collect();
                        opt.write_grads(&bufs).unwrap();
                        seen.applied.push(opt.step().unwrap().applied());
                        seen.params.push(opt.download_params());
                        seen.shards.push(opt.download_shard());
                    }
                    if let Some(dir) = save {
                        opt.save(dir).unwrap();
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
        .map(|i| reference.tensor_info(TensorId(i)).unwrap().clone())
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
                equal &=
                    part_bytes(p) == part_bytes(reference.tensor(TensorId(i)).unwrap().param());
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
            equal &= crate::same_bits(t, reference.tensor(TensorId(i)).unwrap());
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

/// A world's state after step index `k` as bytes: the assembled state of every
/// tensor, then rank 0's parameters.
fn gpu_state(ranks: &[Seen], k: usize, plan: &Plan, infos: &[TensorInfo]) -> Vec<Vec<u8>> {
    let pieces = ranks
        .iter()
        .flat_map(|r| r.shards[k].iter().map(|(p, t)| (p, t)));
    let whole = shard::assemble(plan, infos, pieces);
    let params = ranks[0].params[k].iter().map(part_bytes);
    state_bytes(&whole).chain(params).collect()
}

fn state_bytes(whole: &[HostTensor]) -> impl Iterator<Item = Vec<u8>> + '_ {
    whole.iter().flat_map(|t| t.parts.iter().map(part_bytes))
}

/// CPU ranks of a world of `world` load `load`, save into `save`, and return their
/// state as [`gpu_state`] does.
fn cpu_world(world: usize, load: &Path, save: &Path) -> Vec<Vec<u8>> {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let init = values(5, 1.0);
    let names: Vec<String> = (0..LENS.len()).map(|i| format!("t{i}")).collect();
    let tensors: Vec<(&str, &[f32])> = names
        .iter()
        .zip(&init)
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let ranks: Vec<ShardedCpuOptimizer<LocalCollective>> = std::thread::scope(|s| {
        let handles: Vec<_> = LocalCollective::world_of(world)
            .into_iter()
            .map(|c| {
                let tensors = &tensors;
                s.spawn(move || {
                    let mut opt =
                        ShardedCpuOptimizer::for_spec(&AdamW::default(), config, tensors, c)
                            .unwrap();
                    opt.load(load).unwrap();
                    opt.save(save).unwrap();
                    opt
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let whole = shard::assemble(
        ranks[0].plan(),
        ranks[0].tensors(),
        ranks.iter().flat_map(|r| r.shard()),
    );
    let params = (0..LENS.len()).map(|i| {
        part_bytes(&PartData::round_from_f32(
            FloatDtype::Bf16,
            &ranks[0].param(TensorId(i)).unwrap(),
        ))
    });
    state_bytes(&whole).chain(params).collect()
}

/// GPU ranks save after step 3; CPU ranks of 2 load that and save again; GPU ranks
/// resume from either: every state bit-equal to the run that was not interrupted.
#[test]
fn sharded_gpu_checkpoints_reshard_through_the_cpu() {
    let spec = AdamW::default();
    let plan = AdamW::plan(PlanConfig::bf16(MasterMode::Int8)).unwrap();
    let infos: Vec<TensorInfo> = LENS
        .iter()
        .enumerate()
        .map(|(i, &len)| TensorInfo::new(format!("t{i}"), 0, len))
        .collect();
    let root = std::env::temp_dir().join(format!("flashopt-sharded-{}", std::process::id()));
    for world in worlds() {
        let whole_run = run_world(&spec, world, false);
        let gpu_dir = root.join(format!("gpu-{world}"));
        let cpu_dir = root.join(format!("cpu-from-gpu-{world}"));
        run_world_between(&spec, world, false, 1..=3, None, Some(&gpu_dir));
        let on_cpu = cpu_world(2, &gpu_dir, &cpu_dir) == gpu_state(&whole_run, 2, &plan, &infos);
        let resumed = run_world_between(&spec, world, false, 4..=5, Some(&gpu_dir), None);
        let from_cpu = run_world_between(&spec, world, false, 4..=5, Some(&cpu_dir), None);
        let same = |ranks: &[Seen]| {
            (0..2).all(|k| {
                gpu_state(ranks, k, &plan, &infos) == gpu_state(&whole_run, k + 3, &plan, &infos)
            })
        };
        let line = format!(
            "| sharded AdamW-24 checkpoint | {world} GPU(s) save after step 3 | 2 CPU ranks load it: {} | {world} GPU(s) resume from it, steps 4-5: {} | and from the CPU ranks' save: {} |",
            yes(on_cpu),
            yes(same(&resumed)),
            yes(same(&from_cpu)),
        );
        report(&line);
        assert!(on_cpu && same(&resumed) && same(&from_cpu), "{line}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

fn yes(ok: bool) -> &'static str {
    if ok { "bit-equal" } else { "DIFFERENT" }
}
