//! Muon sharded through NCCL: every visible GPU a rank (one thread each), each matrix
//! whole on one rank, against one CPU optimizer fed the same summed gradients: the
//! momentum bit for bit (it does not read the matrix stage), the master weights close
//! (the GEMMs sum in their own order), every rank's parameters the same bytes; a
//! checkpoint of the last step loads into fresh ranks with the same bytes.

use flashopt::ShardedGpuOptimizer;
use flashopt::ir::interp::{GradBuf, HostTensor, PartData};
use flashopt::optimizers::Muon;
use flashopt::runtime::raw::part_bytes;
use flashopt::runtime::shard;
use flashopt::{
    CpuOptimizer, FloatDtype, MasterMode, Optimizer as _, OptimizerSpec, PlanConfig, TensorId,
};
use flashopt_cubecl::cubecl::Runtime;
use flashopt_cubecl::cubecl::cuda::{CudaDevice, CudaRuntime};
use flashopt_cubecl::device::nccl::{Communicator, NcclId};

use crate::report;

/// Matrices of odd shapes, a vector (one row to Muon), one of a few hundred thousand
/// elements.
const DIMS: [&[usize]; 6] = [&[4, 8], &[33, 5], &[7], &[64, 64], &[3, 100], &[512, 768]];
const STEPS: u64 = 4;

fn lens() -> Vec<usize> {
    DIMS.iter().map(|d| d.iter().product()).collect()
}

/// Rank `rank`'s gradient at `step`: magnitudes 2^-8 to 2^-6 in bf16, so that the f32
/// sum over the ranks is exact in any order (see `sharded::rank_grads`).
fn rank_grads(rank: usize, step: u64) -> Vec<Vec<f32>> {
    let mut g = crate::common::uniform_tensors(&lens(), 1000 * step + rank as u64 + 1, 1.0);
    for v in g.iter_mut().flatten() {
        let magnitude = (1.0 + 3.0 * v.abs().min(1.0)) / 256.0;
        *v = half::bf16::from_f32(magnitude.copysign(*v)).to_f32();
    }
    g
}

fn bf16(g: &[Vec<f32>]) -> Vec<PartData> {
    g.iter()
        .map(|v| PartData::round_from_f32(FloatDtype::Bf16, v))
        .collect()
}

/// What one rank saw after each step: its parameters and its pieces; and whether a
/// rank built afresh and loaded the checkpoint saved after the last step holds the
/// same parameters and pieces.
type Seen = (Vec<(Vec<PartData>, Vec<(shard::Piece, HostTensor)>)>, bool);

fn run_world(spec: &Muon, config: PlanConfig, world: usize) -> Vec<Seen> {
    let dir = std::env::temp_dir().join(format!(
        "flashopt-sharded-muon-{world}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    // One communicator for the run, another for the ranks that load its checkpoint.
    let id = NcclId::new().expect("NCCL unique id (is libnccl installed?)");
    let reload_id = NcclId::new().expect("a second NCCL unique id");
    let init = crate::common::uniform_tensors(&lens(), 5, 0.1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let (init, dir) = (&init, &dir);
                s.spawn(move || {
                    let client = CudaRuntime::client(&CudaDevice::new(rank));
                    let comm = Communicator::new(&client, &id, rank, world).unwrap();
                    let plan = Muon::plan(config).unwrap();
                    let tensors = init
                        .iter()
                        .zip(DIMS)
                        .enumerate()
                        .map(|(i, (v, dims))| {
                            let shape = flashopt::ir::layout::Shape::of_dims(dims);
                            (
                                format!("t{i}"),
                                HostTensor::from_f32_shaped(&plan, v, shape),
                            )
                        })
                        .collect();
                    let hyper = spec.hyper_values().unwrap();
                    let mut opt = ShardedGpuOptimizer::from_host(
                        client.clone(),
                        plan.clone(),
                        hyper.clone(),
                        tensors,
                        comm,
                    )
                    .unwrap();
                    let seen: Vec<_> = (1..=STEPS)
                        .map(|step| {
                            let g = bf16(&rank_grads(rank, step));
                            let bufs: Vec<GradBuf<'_>> =
                                g.iter().map(|p| p.as_grad().unwrap()).collect();
                            opt.write_grads(&bufs).unwrap();
                            assert!(opt.step().unwrap().applied());
                            (opt.download_params(), opt.download_shard())
                        })
                        .collect();
                    opt.save(dir).unwrap();
                    drop(opt);
                    // Other initial values: everything must come from the files.
                    let others: Vec<(String, HostTensor)> = init
                        .iter()
                        .zip(DIMS)
                        .enumerate()
                        .map(|(i, (v, dims))| {
                            let shape = flashopt::ir::layout::Shape::of_dims(dims);
                            let halves = vec![0.5f32; v.len()];
                            (
                                format!("t{i}"),
                                HostTensor::from_f32_shaped(&plan, &halves, shape),
                            )
                        })
                        .collect();
                    let comm = Communicator::new(&client, &reload_id, rank, world).unwrap();
                    let mut loaded =
                        ShardedGpuOptimizer::from_host(client, plan, hyper, others, comm).unwrap();
                    loaded.load(dir).unwrap();
                    let (params, pieces) = seen.last().expect("steps");
                    let same =
                        loaded
                            .download_params()
                            .iter()
                            .zip(params)
                            .all(|(a, b)| part_bytes(a) == part_bytes(b))
                            && loaded.download_shard().iter().zip(pieces).all(
                                |((p, a), (q, b))| {
                                    p == q
                                        && a.parts
                                            .iter()
                                            .zip(&b.parts)
                                            .all(|(x, y)| part_bytes(x) == part_bytes(y))
                                },
                            );
                    (seen, same)
                })
            })
            .collect();
        let seen = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let _ = std::fs::remove_dir_all(&dir);
        seen
    })
}

#[test]
fn sharded_muon_keeps_each_matrix_whole_and_follows_the_cpu() {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let spec = Muon {
        lr: 0.02,
        ..Muon::default()
    };
    let gpus = crate::client().device_count_total().max(1);
    let worlds = if gpus > 1 { vec![1, gpus] } else { vec![1] };
    for world in worlds {
        let ranks = run_world(&spec, config, world);
        let mut cpu = CpuOptimizer::for_spec(&spec, config).unwrap();
        let init = crate::common::uniform_tensors(&lens(), 5, 0.1);
        for (i, (v, dims)) in init.iter().zip(DIMS).enumerate() {
            cpu.add_shaped(&format!("t{i}"), dims, v).unwrap();
        }
        let plan = cpu.plan().clone();
        let infos: Vec<_> = (0..DIMS.len())
            .map(|i| cpu.tensor_info(TensorId(i)).unwrap().clone())
            .collect();
        let (mut momentum_equal, mut params_agree, mut worst) = (true, true, 0.0f64);
        for step in 1..=STEPS {
            let mut total: Vec<Vec<f32>> = lens().iter().map(|&n| vec![0.0; n]).collect();
            for rank in 0..world {
                for (t, g) in total.iter_mut().zip(rank_grads(rank, step)) {
                    t.iter_mut().zip(g).for_each(|(a, b)| *a += b);
                }
            }
            let g = bf16(&total);
            let bufs: Vec<GradBuf<'_>> = g.iter().map(|p| p.as_grad().unwrap()).collect();
            cpu.step(&bufs).unwrap();
            let k = (step - 1) as usize;
            let pieces = ranks
                .iter()
                .flat_map(|r| r.0[k].1.iter().map(|(p, t)| (p, t)));
            for (p, _) in pieces.clone() {
                assert_eq!(
                    p.elements,
                    0..lens()[p.tensor],
                    "world {world}: t{} cut",
                    p.tensor
                );
            }
            let whole = shard::assemble(&plan, &infos, pieces);
            for (i, t) in whole.iter().enumerate() {
                let c = cpu.tensor(TensorId(i)).unwrap();
                let (same, apart) = crate::matrices::against_the_cpu(&plan, t, c, &init[i]);
                momentum_equal &= same;
                worst = worst.max(apart);
            }
            for r in &ranks {
                params_agree &= r.0[k]
                    .0
                    .iter()
                    .zip(&ranks[0].0[k].0)
                    .all(|(a, b)| part_bytes(a) == part_bytes(b));
            }
        }
        let reloaded = ranks.iter().all(|r| r.1);
        let line = format!(
            "| sharded Muon-24 | {world} GPU(s) through NCCL | {STEPS} steps, every matrix whole on one rank, saved and loaded into fresh ranks | momentum bit-equal {momentum_equal}, ranks' parameters equal {params_agree}, masters' distance to the CPU's over their displacement {worst:.2e}, the loaded ranks the same bytes {reloaded} |"
        );
        report(&line);
        assert!(
            momentum_equal && params_agree && reloaded && worst < 0.05,
            "{line}"
        );
    }
}
