//! ZeRO-1 on the CPU reference: N ranks (threads, joined by the in-process collective)
//! against one unsharded optimizer given the same summed gradients, bit for bit, for
//! every shipped optimizer (those that reduce over each tensor included, and Muon,
//! whose matrices stay whole), several worlds and tensors of odd sizes; and the
//! decisions every rank must take together.

mod common;

use flashopt::ir::interp::{GradBuf, HostTensor, PartData};
use flashopt::optimizers::{Adam, AdamW, CautiousAdamW, Lamb, Lion, Sgd, SgdW};
use flashopt::runtime::raw::part_bytes;
use flashopt::runtime::shard::{self, LocalCollective, ShardedCpuOptimizer};
use flashopt::{
    CpuOptimizer, FloatDtype, MasterMode, Optimizer as _, OptimizerSpec, PlanConfig, RuntimeError,
    TensorId,
};
use half::bf16;

/// Odd sizes: single elements, partial groups, tensors cut between ranks.
const LENS: [usize; 7] = [1, 33, 95, 100, 7, 64, 257];
/// Matrices of odd shapes for an optimizer that keeps each whole (and a vector, a
/// one-row matrix to it), the largest more than a third of all elements.
const MATRICES: [&[usize]; 6] = [&[4, 8], &[33, 5], &[7], &[16, 16], &[3, 100], &[40, 12]];
const STEPS: u64 = 4;

/// A learning-rate schedule every rank and the reference follow.
fn learning_rate(step: u64) -> f64 {
    1e-3 * (1.0 + step as f64) / 2.0
}

/// The tensors of a test: their dimensions (outermost first).
struct Model {
    dims: Vec<Vec<usize>>,
}

impl Model {
    fn vectors() -> Model {
        Model {
            dims: LENS.iter().map(|&n| vec![n]).collect(),
        }
    }

    fn matrices() -> Model {
        Model {
            dims: MATRICES.iter().map(|d| d.to_vec()).collect(),
        }
    }

    fn lens(&self) -> Vec<usize> {
        self.dims.iter().map(|d| d.iter().product()).collect()
    }

    fn initial(&self) -> Vec<Vec<f32>> {
        common::uniform_tensors(&self.lens(), 0x1234_5678_9abc_def1, 1.0)
    }

    /// Rank `rank`'s bf16 gradients at `step`, as f32 values.
    fn rank_grads(&self, rank: usize, step: u64) -> Vec<Vec<f32>> {
        let seed = 0x9E37_79B9_7F4A_7C15 ^ (rank as u64 * 7919 + step * 104_729 + 1);
        let mut g = common::uniform_tensors(&self.lens(), seed, 0.01);
        for v in g.iter_mut().flatten() {
            *v = bf16::from_f32(*v).to_f32();
        }
        g
    }

    /// The sum the collective computes: f32, in rank order, rounded to bf16.
    fn summed(&self, world: usize, step: u64) -> Vec<PartData> {
        let mut total: Vec<Vec<f32>> = self.lens().iter().map(|&n| vec![0.0; n]).collect();
        for rank in 0..world {
            for (t, g) in total.iter_mut().zip(self.rank_grads(rank, step)) {
                t.iter_mut().zip(g).for_each(|(a, b)| *a += b);
            }
        }
        as_bf16(&total)
    }
}

fn as_bf16(grads: &[Vec<f32>]) -> Vec<PartData> {
    grads
        .iter()
        .map(|g| PartData::round_from_f32(FloatDtype::Bf16, g))
        .collect()
}

fn bufs(parts: &[PartData]) -> Vec<GradBuf<'_>> {
    parts.iter().map(|p| p.as_grad().unwrap()).collect()
}

/// What one rank saw after each step: its parameters and its pieces' storage.
struct Seen {
    params: Vec<Vec<PartData>>,
    shards: Vec<Vec<(shard::Piece, HostTensor)>>,
    norms: Vec<Option<f64>>,
}

fn run_ranks<S: OptimizerSpec + Sync>(
    spec: &S,
    config: PlanConfig,
    model: &Model,
    world: usize,
    clip: Option<f64>,
) -> (Vec<Seen>, Vec<flashopt::runtime::TensorInfo>) {
    let init = model.initial();
    let named: Vec<(String, &[usize], &[f32])> = init
        .iter()
        .zip(&model.dims)
        .enumerate()
        .map(|(i, (v, d))| (format!("t{i}"), d.as_slice(), v.as_slice()))
        .collect();
    let seen: Vec<(Seen, Vec<flashopt::runtime::TensorInfo>)> = std::thread::scope(|s| {
        let handles: Vec<_> = LocalCollective::world_of(world)
            .into_iter()
            .map(|c| {
                let named = &named;
                s.spawn(move || {
                    let rank = flashopt::runtime::shard::Collective::rank(&c);
                    let tensors: Vec<(&str, &[usize], &[f32])> =
                        named.iter().map(|(n, d, v)| (n.as_str(), *d, *v)).collect();
                    let (plan, hyper) = (S::plan(config).unwrap(), spec.hyper_values().unwrap());
                    let mut opt =
                        ShardedCpuOptimizer::new_shaped(plan, hyper, &tensors, c).unwrap();
                    opt.set_grad_clipping(clip).unwrap();
                    let mut seen = Seen {
                        params: Vec::new(),
                        shards: Vec::new(),
                        norms: Vec::new(),
                    };
                    for step in 1..=STEPS {
                        let g = as_bf16(&model.rank_grads(rank, step));
                        opt.set_learning_rate(learning_rate(step)).unwrap();
                        assert!(opt.step(&bufs(&g)).unwrap().applied());
                        seen.norms.push(opt.last_grad_norm());
                        seen.params.push(
                            (0..named.len())
                                .map(|i| {
                                    PartData::round_from_f32(
                                        config.param,
                                        &opt.param(TensorId(i)).unwrap(),
                                    )
                                })
                                .collect(),
                        );
                        seen.shards
                            .push(opt.shard().map(|(p, t)| (p.clone(), t.clone())).collect());
                    }
                    (seen, opt.tensors().to_vec())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let tensors = seen[0].1.clone();
    (seen.into_iter().map(|(s, _)| s).collect(), tensors)
}

fn equals_one_optimizer<S: OptimizerSpec + Sync>(
    label: &str,
    spec: &S,
    config: PlanConfig,
    clip: Option<f64>,
) {
    equals_one_optimizer_on(label, spec, config, &Model::vectors(), clip);
}

/// [`equals_one_optimizer`] on `model`'s tensors; returns every world's pieces.
fn equals_one_optimizer_on<S: OptimizerSpec + Sync>(
    label: &str,
    spec: &S,
    config: PlanConfig,
    model: &Model,
    clip: Option<f64>,
) -> Vec<Vec<shard::Piece>> {
    let mut pieces = Vec::new();
    for world in [1, 2, 3, 8] {
        let (ranks, tensors) = run_ranks(spec, config, model, world, clip);
        pieces.push(
            ranks
                .iter()
                .flat_map(|r| r.shards[0].iter().map(|(p, _)| p.clone()))
                .collect(),
        );
        let mut reference = CpuOptimizer::for_spec(spec, config).unwrap();
        for (i, (v, d)) in model.initial().iter().zip(&model.dims).enumerate() {
            reference.add_shaped(&format!("t{i}"), d, v).unwrap();
        }
        reference.set_grad_clipping(clip).unwrap();
        for step in 1..=STEPS {
            let g = model.summed(world, step);
            reference.set_learning_rate(learning_rate(step)).unwrap();
            assert!(reference.step(&bufs(&g)).unwrap().applied());
            let k = (step - 1) as usize;
            // The global norm clipping used: the same squares, summed in another order.
            if let Some(want) = reference.last_grad_norm() {
                for (rank, seen) in ranks.iter().enumerate() {
                    let got = seen.norms[k].expect("every rank measures the norm");
                    assert!(
                        (got - want).abs() <= 1e-12 * want,
                        "{label}, world {world}, rank {rank}, step {step}: norm {got} against {want}"
                    );
                }
            }
            let want: Vec<HostTensor> = (0..model.dims.len())
                .map(|i| reference.tensor(TensorId(i)).unwrap().clone())
                .collect();
            for (rank, seen) in ranks.iter().enumerate() {
                for (i, p) in seen.params[k].iter().enumerate() {
                    assert_eq!(
                        part_bytes(p),
                        part_bytes(want[i].param()),
                        "{label}, world {world}, rank {rank}, t{i}, step {step}: parameters"
                    );
                }
            }
            let plan = reference.plan();
            let whole = shard::assemble(
                plan,
                &tensors,
                ranks
                    .iter()
                    .flat_map(|r| r.shards[k].iter().map(|(p, t)| (p, t))),
            );
            for (i, (got, want)) in whole.iter().zip(&want).enumerate() {
                for (j, (a, b)) in got.parts.iter().zip(&want.parts).enumerate() {
                    assert_eq!(
                        part_bytes(a),
                        part_bytes(b),
                        "{label}, world {world}, t{i}, part {j}, step {step}"
                    );
                }
            }
        }
    }
    pieces
}

#[test]
fn every_shipped_optimizer_sharded_equals_one_optimizer() {
    let c = PlanConfig::bf16(MasterMode::Int8);
    equals_one_optimizer("AdamW", &AdamW::default(), c, None);
    equals_one_optimizer("Adam", &Adam::default(), c, None);
    equals_one_optimizer("Lion", &Lion::default(), c, None);
    equals_one_optimizer("Sgd", &Sgd::default(), c, None);
    equals_one_optimizer("SgdW", &SgdW::default(), c, None);
}

#[test]
fn other_formats_and_clipping_shard_the_same_way() {
    let adamw = AdamW::default();
    equals_one_optimizer(
        "AdamW-32",
        &adamw,
        PlanConfig::bf16(MasterMode::Int16),
        None,
    );
    equals_one_optimizer(
        "AdamW bf16",
        &adamw,
        PlanConfig::bf16(MasterMode::None),
        None,
    );
    equals_one_optimizer(
        "AdamW clipped",
        &adamw,
        PlanConfig::bf16(MasterMode::Int8),
        Some(0.01),
    );
}

/// A rank's step result, whether its parameters changed, its step count.
type RankResult = (
    Result<flashopt::runtime::StepOutcome, RuntimeError>,
    bool,
    u64,
);

/// Runs `world` ranks one step each with `grads_of(rank)`; returns each rank's result
/// and whether its parameters changed.
fn one_step(world: usize, grads_of: impl Fn(usize) -> Vec<PartData> + Sync) -> Vec<RankResult> {
    let init = Model::vectors().initial();
    std::thread::scope(|s| {
        let handles: Vec<_> = LocalCollective::world_of(world)
            .into_iter()
            .map(|c| {
                let (init, grads_of) = (&init, &grads_of);
                s.spawn(move || {
                    let rank = flashopt::runtime::shard::Collective::rank(&c);
                    let names: Vec<String> = (0..LENS.len()).map(|i| format!("t{i}")).collect();
                    let tensors: Vec<(&str, &[f32])> = names
                        .iter()
                        .zip(init)
                        .map(|(n, v)| (n.as_str(), v.as_slice()))
                        .collect();
                    let config = PlanConfig::bf16(MasterMode::Int8);
                    let mut opt =
                        ShardedCpuOptimizer::for_spec(&AdamW::default(), config, &tensors, c)
                            .unwrap();
                    let before: Vec<Vec<f32>> = (0..LENS.len())
                        .map(|i| opt.param(TensorId(i)).unwrap())
                        .collect();
                    let g = grads_of(rank);
                    let result = opt.step(&bufs(&g));
                    let after: Vec<Vec<f32>> = (0..LENS.len())
                        .map(|i| opt.param(TensorId(i)).unwrap())
                        .collect();
                    (result, before != after, opt.steps_taken())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn a_nan_on_one_rank_skips_the_step_on_every_rank() {
    let results = one_step(3, |rank| {
        let mut g = Model::vectors().rank_grads(rank, 1);
        if rank == 2 {
            g[3][5] = f32::NAN;
        }
        as_bf16(&g)
    });
    for (rank, (result, changed, steps)) in results.iter().enumerate() {
        let outcome = result.as_ref().unwrap();
        assert!(!outcome.applied(), "rank {rank} applied a NaN step");
        assert!(!changed && *steps == 0, "rank {rank} changed");
    }
    // The rank owning t3's element 5 names it.
    let named: Vec<_> = results
        .iter()
        .filter_map(|(r, _, _)| match r.as_ref().unwrap() {
            flashopt::runtime::StepOutcome::Skipped(f) if !f.tensor.is_empty() => {
                Some((f.tensor.clone(), f.index))
            }
            _ => None,
        })
        .collect();
    assert_eq!(named, [("t3".to_string(), 5)]);
}

#[test]
fn a_bad_gradient_on_one_rank_is_refused_by_every_rank() {
    let results = one_step(2, |rank| {
        let mut g = as_bf16(&Model::vectors().rank_grads(rank, 1));
        if rank == 1 {
            g[2] = PartData::round_from_f32(FloatDtype::Bf16, &[0.0; 3]);
        }
        g
    });
    let messages: Vec<String> = results
        .iter()
        .map(|(r, _, _)| r.as_ref().unwrap_err().to_string())
        .collect();
    assert_eq!(
        messages,
        [
            "1 other rank(s) refused their gradients (their errors name the tensor); no rank stepped",
            "tensor `t2`: gradient: 3 elements, expected 95 (the parameter's length)",
        ]
    );
    assert!(
        results
            .iter()
            .all(|(_, changed, steps)| !changed && *steps == 0)
    );
}

/// Ranks that disagree on the tensors, or one whose input is refused, fail together
/// when they build: every rank returns an error (none hangs in a later collective).
#[test]
fn ranks_that_disagree_fail_together_instead_of_hanging() {
    let config = PlanConfig::bf16(MasterMode::Int8);
    let build = |lens: [usize; 2], nan_on: Option<usize>| -> Vec<String> {
        std::thread::scope(|s| {
            let handles: Vec<_> = LocalCollective::world_of(2)
                .into_iter()
                .enumerate()
                .map(|(rank, c)| {
                    s.spawn(move || {
                        let mut a = vec![0.5f32; 40];
                        if nan_on == Some(rank) {
                            a[3] = f32::NAN;
                        }
                        let b = vec![0.25f32; lens[rank]];
                        let tensors: [(&str, &[f32]); 2] = [("a", &a), ("b", &b)];
                        match ShardedCpuOptimizer::for_spec(&AdamW::default(), config, &tensors, c)
                        {
                            Ok(_) => "built".to_string(),
                            Err(e) => e.to_string(),
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    assert_eq!(build([64, 64], None), ["built", "built"]);
    let disagree = "rank 1 of 2 shards other tensors or another plan than rank 0: every rank must pass the same plan and the same tensor names and lengths, in the same order";
    assert_eq!(build([64, 65], None), [disagree, disagree]);
    let refused = build([64, 64], Some(1));
    assert_eq!(
        refused[0],
        "1 other rank(s) could not build their optimizer (their errors say why); no rank did"
    );
    assert!(
        refused[1].starts_with("tensor `a`: initial value NaN"),
        "{}",
        refused[1]
    );
}

/// What each of two ranks answers when built with `spec`: its error, or "built".
fn built_by_two_ranks<S: OptimizerSpec + Sync>(spec: &S) -> Vec<String> {
    let config = PlanConfig::bf16(MasterMode::Int8);
    std::thread::scope(|s| {
        let handles: Vec<_> = LocalCollective::world_of(2)
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    let a = vec![0.5f32; 40];
                    let tensors: [(&str, &[f32]); 1] = [("a", &a)];
                    match ShardedCpuOptimizer::for_spec(spec, config, &tensors, c) {
                        Ok(_) => "built".to_string(),
                        Err(e) => e.to_string(),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The optimizers that reduce over each tensor: every rank gathers the group values of
/// every tensor and finishes each in the reference's order, so the sharded step equals
/// one optimizer's bit for bit, clipped or not, in any world.
#[test]
fn reducing_optimizers_sharded_equal_one_optimizer() {
    let c = PlanConfig::bf16(MasterMode::Int8);
    equals_one_optimizer("Lamb", &Lamb::default(), c, None);
    equals_one_optimizer("CautiousAdamW", &CautiousAdamW::default(), c, None);
    equals_one_optimizer("Lamb clipped", &Lamb::default(), c, Some(0.01));
    equals_one_optimizer(
        "CautiousAdamW-32",
        &CautiousAdamW::default(),
        PlanConfig::bf16(MasterMode::Int16),
        None,
    );
}

/// A plan with states per row or per column is refused by every rank, naming them:
/// a rank's piece of a tensor cuts its rows and columns.
#[test]
fn row_and_column_optimizers_are_refused_with_the_reason() {
    let errors = built_by_two_ranks(&flashopt::optimizers::Adafactor::default());
    let refused = "`adafactor` keeps or computes values per row or per column (state `r` (per row), state `c` (per column), `row_mean`, `col_mean`), which ZeRO-1 sharding does not support yet: step it with CpuOptimizer";
    assert_eq!(errors, [refused, refused]);
    let errors = built_by_two_ranks(&flashopt::optimizers::AdamMini::default());
    let refused = "`adammini` keeps or computes values per row or per column (state `v` (per row), `row_mean`), which ZeRO-1 sharding does not support yet: step it with CpuOptimizer";
    assert_eq!(errors, [refused, refused]);
}

/// Muon: every tensor (a matrix, or a vector as one row) lies whole on one rank, which
/// orthogonalizes it as one optimizer would: the sharded step equals one optimizer's
/// bit for bit in worlds of 1, 2, 3 and 8 ranks (more ranks than fit the tensors
/// hold nothing).
#[test]
fn matrix_optimizers_sharded_keep_each_matrix_whole_and_equal_one_optimizer() {
    let model = Model::matrices();
    let lens = model.lens();
    let worlds = equals_one_optimizer_on(
        "Muon",
        &flashopt::optimizers::Muon::default(),
        PlanConfig::bf16(MasterMode::Int8),
        &model,
        None,
    );
    for pieces in worlds {
        let mut owned: Vec<usize> = pieces.iter().map(|p| p.tensor).collect();
        owned.sort_unstable();
        assert_eq!(
            owned,
            (0..lens.len()).collect::<Vec<_>>(),
            "one piece a tensor"
        );
        for p in pieces {
            assert_eq!(p.elements, 0..lens[p.tensor], "t{} cut", p.tensor);
        }
    }
}
