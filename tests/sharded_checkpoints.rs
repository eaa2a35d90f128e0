//! Sharded checkpoints on the CPU reference: saved by one world size, loaded by
//! another, bit-equal to the run that was not interrupted; missing, truncated and
//! mixed shards refused naming the rank; a failed save keeps the previous checkpoint.

mod common;

use std::path::{Path, PathBuf};

use flashopt::ir::interp::{GradBuf, HostTensor, PartData};
use flashopt::optimizers::{AdamW, Muon};
use flashopt::runtime::raw::part_bytes;
use flashopt::runtime::shard::{self, LocalCollective, ShardedCpuOptimizer};
use flashopt::{FloatDtype, MasterMode, OptimizerSpec, PlanConfig, TensorId};

const LENS: [usize; 5] = [1, 95, 100, 64, 257];

type Rank = ShardedCpuOptimizer<LocalCollective>;

fn values(seed: u64, scale: f32) -> Vec<Vec<f32>> {
    common::uniform_tensors(&LENS, seed, scale)
}

/// The test tensors as matrices (and vectors, one-row matrices), for Muon.
const MATRICES: [&[usize]; 5] = [&[1], &[5, 19], &[10, 10], &[8, 8], &[257]];

/// A rank of a Muon-24 world over the test tensors as [`MATRICES`], from initial
/// values `seed`: each rank holds each tensor whole or not at all.
fn muon_rank(c: LocalCollective, seed: u64) -> Rank {
    let init = values(seed, 1.0);
    let names: Vec<String> = (0..LENS.len()).map(|i| format!("t{i}")).collect();
    let tensors: Vec<(&str, &[usize], &[f32])> = names
        .iter()
        .zip(MATRICES)
        .zip(&init)
        .map(|((n, d), v)| (n.as_str(), d, v.as_slice()))
        .collect();
    let plan = Muon::plan(PlanConfig::bf16(MasterMode::Int8)).unwrap();
    let hyper = Muon::default().hyper_values().unwrap();
    ShardedCpuOptimizer::new_shaped(plan, hyper, &tensors, c).unwrap()
}

/// A rank of an AdamW-24 world over the test tensors, from initial values `seed`.
fn rank(c: LocalCollective, seed: u64) -> Rank {
    let init = values(seed, 1.0);
    let names: Vec<String> = (0..LENS.len()).map(|i| format!("t{i}")).collect();
    let tensors: Vec<(&str, &[f32])> = names
        .iter()
        .zip(&init)
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let config = PlanConfig::bf16(MasterMode::Int8);
    ShardedCpuOptimizer::for_spec(&AdamW::default(), config, &tensors, c).unwrap()
}

/// Step `step`: rank 0 holds the whole gradient and the others zeros, so every world
/// size sums to the same gradient.
fn step(opt: &mut Rank, step: u64) {
    let g: Vec<PartData> = if opt.rank() == 0 {
        values(1000 + step, 0.01)
            .iter()
            .map(|g| PartData::round_from_f32(FloatDtype::Bf16, g))
            .collect()
    } else {
        LENS.iter()
            .map(|&n| PartData::round_from_f32(FloatDtype::Bf16, &vec![0.0; n]))
            .collect()
    };
    let bufs: Vec<GradBuf<'_>> = g.iter().map(|p| p.as_grad().unwrap()).collect();
    assert!(opt.step(&bufs).unwrap().applied());
}

/// What a world holds: every parameter (rank 0's) and the assembled state, as bytes.
fn state(ranks: &[Rank]) -> Vec<Vec<u8>> {
    let plan = ranks[0].plan();
    let whole: Vec<HostTensor> = shard::assemble(
        plan,
        ranks[0].tensors(),
        ranks.iter().flat_map(|r| r.shard()),
    );
    let mut out: Vec<Vec<u8>> = whole
        .iter()
        .flat_map(|t| t.parts.iter().map(part_bytes))
        .collect();
    for i in 0..LENS.len() {
        let p = PartData::round_from_f32(FloatDtype::Bf16, &ranks[0].param(TensorId(i)).unwrap());
        out.push(part_bytes(&p));
    }
    out
}

/// Run `f` on every rank of a world of `world`, each on its own thread.
fn in_world<T: Send>(world: usize, f: impl Fn(LocalCollective) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = LocalCollective::world_of(world)
            .into_iter()
            .map(|c| {
                let f = &f;
                s.spawn(move || f(c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flashopt-sharded-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Two steps, a save into `dir`, a third step: the world's ranks afterwards.
fn save_after_two_steps(world: usize, dir: &Path) -> Vec<Rank> {
    save_after_two_steps_of(world, dir, rank)
}

/// [`save_after_two_steps`] with ranks built by `build`.
fn save_after_two_steps_of(
    world: usize,
    dir: &Path,
    build: impl Fn(LocalCollective, u64) -> Rank + Sync,
) -> Vec<Rank> {
    in_world(world, |c| {
        let mut opt = build(c, 7);
        step(&mut opt, 1);
        step(&mut opt, 2);
        opt.save(dir).unwrap();
        step(&mut opt, 3);
        opt
    })
}

#[test]
fn a_checkpoint_loads_into_any_world_size() {
    loads_into_any_world_size("adamw", rank);
}

/// Muon's ranks hold whole matrices, placed by world size: a checkpoint of one world's
/// pieces loads into another's.
#[test]
fn a_muon_checkpoint_loads_into_any_world_size() {
    loads_into_any_world_size("muon", muon_rank);
}

fn loads_into_any_world_size(label: &str, build: impl Fn(LocalCollective, u64) -> Rank + Sync) {
    for (saved, loaded) in [(2, 3), (8, 1), (1, 2), (3, 3)] {
        let dir = scratch(&format!("{label}-{saved}-{loaded}"));
        let uninterrupted = save_after_two_steps_of(saved, &dir, &build);
        let resumed = in_world(loaded, |c| {
            let mut opt = build(c, 99); // other initial values: all must come from the files
            opt.load(&dir).unwrap();
            assert_eq!(opt.steps_taken(), 2);
            step(&mut opt, 3);
            opt
        });
        assert_eq!(
            state(&resumed),
            state(&uninterrupted),
            "{label}: saved by {saved}, loaded by {loaded}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

fn load_error(world: usize, dir: &Path) -> Vec<String> {
    in_world(world, |c| {
        let mut opt = rank(c, 99);
        let before = state(std::slice::from_ref(&opt));
        let err = opt.load(dir).unwrap_err().to_string();
        assert_eq!(
            state(std::slice::from_ref(&opt)),
            before,
            "changed on error"
        );
        assert_eq!(opt.steps_taken(), 0);
        err
    })
}

#[test]
fn a_missing_or_truncated_shard_is_refused_naming_its_rank() {
    let dir = scratch("damaged");
    save_after_two_steps(3, &dir);
    let one = shard::checkpoint::shard_file(&dir, 1, 3);
    let kept = std::fs::read(&one).unwrap();
    std::fs::remove_file(&one).unwrap();
    for err in load_error(2, &dir) {
        assert!(err.starts_with("shard of rank 1 (of 3): "), "{err}");
        assert!(err.contains("shard-00001-of-00003.safetensors"), "{err}");
    }
    std::fs::write(&one, &kept[..kept.len() / 2]).unwrap();
    for err in load_error(1, &dir) {
        assert!(err.starts_with("shard of rank 1 (of 3): "), "{err}");
        assert!(err.contains("truncated or corrupt"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shards_of_two_saves_are_not_mixed() {
    let dir = scratch("mixed");
    let first = save_after_two_steps(2, &dir);
    let one = shard::checkpoint::shard_file(&dir, 1, 2);
    let old = std::fs::read(&one).unwrap();
    // A second save (step 3) of which rank 1's file is replaced by the first save's.
    in_world(2, |c| {
        let mut opt = rank(c, 7);
        for t in 1..=3 {
            step(&mut opt, t);
        }
        opt.save(&dir).unwrap();
    });
    std::fs::write(&one, old).unwrap();
    for err in load_error(2, &dir) {
        assert!(
            err.starts_with("shard of rank 1 (of 2) is from another save"),
            "{err}"
        );
    }
    drop(first);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_save_keeps_the_previous_checkpoint() {
    let dir = scratch("failed");
    let uninterrupted = save_after_two_steps(2, &dir);
    // Rank 1 cannot write its staged file (a folder is in the way).
    std::fs::create_dir_all(dir.join(".shard-00001-of-00002.staged/blocked")).unwrap();
    let errors = in_world(2, |c| {
        let mut opt = rank(c, 7);
        for t in 1..=4 {
            step(&mut opt, t);
        }
        opt.save(&dir).unwrap_err().to_string()
    });
    assert_eq!(
        errors[0],
        "1 other rank(s) failed (their errors say why); nothing changed"
    );
    assert!(
        errors[1].starts_with("shard of rank 1 (of 2): "),
        "{}",
        errors[1]
    );
    assert!(!dir.join(".shard-00000-of-00002.staged").exists());
    let resumed = in_world(2, |c| {
        let mut opt = rank(c, 99);
        opt.load(&dir).unwrap();
        step(&mut opt, 3);
        opt
    });
    assert_eq!(state(&resumed), state(&uninterrupted));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn saving_with_another_world_size_replaces_the_old_shards() {
    let dir = scratch("replace");
    save_after_two_steps(3, &dir);
    save_after_two_steps(2, &dir);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "shard-00000-of-00002.safetensors",
            "shard-00001-of-00002.safetensors"
        ]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A stray file named like a shard of an impossible world (0 ranks, or a rank past
/// its world) is an error naming it, on every rank, and nothing is loaded.
#[test]
fn stray_shard_files_of_impossible_worlds_are_refused() {
    for stray in [
        "shard-00000-of-00000.safetensors",
        "shard-00003-of-00002.safetensors",
    ] {
        let dir = scratch("stray");
        save_after_two_steps(2, &dir);
        std::fs::write(dir.join(stray), b"not a shard").unwrap();
        for err in load_error(2, &dir) {
            assert!(err.contains(stray) && err.contains("cannot exist"), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
