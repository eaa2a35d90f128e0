//! ZeRO-1 sharding: N ranks each keep every parameter and the optimizer state of one
//! block of the flat buffers ([`layout`]); a step reduce-scatters the gradients, steps
//! the block, all-gathers the parameters ([`collective`]); [`checkpoint`] saves each
//! rank's pieces and loads them into any world size. [`rank`] is one rank over any
//! back end ([`ShardedOptimizer`]: agreement, its side of the step protocol,
//! checkpoints); [`cpu`] is its back end on the CPU reference, `flashopt_cubecl::shard`
//! its back end on a CUDA GPU through NCCL. docs/DISTRIBUTED.md has the design and the
//! memory per rank.
//!
//! Two ranks as threads of one process, each with its own gradient; both end with
//! the parameters one optimizer would reach from the summed gradient:
//!
//! ```
//! use flashopt_ir::def::*;
//! use flashopt_ir::interp::GradBuf;
//! use flashopt_ir::{HyperValues, PlanConfig};
//! use flashopt_runtime::TensorId;
//! use flashopt_runtime::shard::{LocalCollective, ShardedCpuOptimizer};
//!
//! let mut sgd = OptimizerDef::new("sgd");
//! sgd.hyper("lr", 0.5, Range::at_least(0.0));
//! sgd.assign("p", name("p") - name("lr") * name("g"));
//! let plan = flashopt_ir::compile(&sgd, PlanConfig::f32_params()).unwrap();
//! let hyper = HyperValues::defaults(&plan.hyper_params);
//! let w = vec![1.0f32; 40]; // two groups of 32: one per rank
//!
//! let params: Vec<Vec<f32>> = std::thread::scope(|s| {
//!     let ranks: Vec<_> = LocalCollective::world_of(2)
//!         .into_iter()
//!         .enumerate()
//!         .map(|(rank, c)| {
//!             let (plan, hyper, w) = (plan.clone(), hyper.clone(), &w);
//!             s.spawn(move || {
//!                 let mut opt = ShardedCpuOptimizer::new(plan, hyper, &[("w", w)], c).unwrap();
//!                 let g = vec![rank as f32; 40]; // summed: 0 + 1 = 1
//!                 opt.step(&[GradBuf::F32(&g)]).unwrap();
//!                 opt.param(TensorId(0)).unwrap()
//!             })
//!         })
//!         .collect();
//!     ranks.into_iter().map(|r| r.join().unwrap()).collect()
//! });
//! assert_eq!(params[0], vec![0.5; 40]);
//! assert_eq!(params[1], params[0]);
//! ```

pub mod checkpoint;
pub mod collective;
pub mod cpu;
pub mod layout;
pub mod rank;

pub use collective::{Collective, LocalCollective};

use flashopt_ir::Plan;

use crate::error::RuntimeError;

/// A fingerprint of what a rank shards: the plan as printed, every tensor's name and
/// shape, in order. Equal on ranks that agree (`DefaultHasher::new` has fixed keys).
pub fn layout_fingerprint<'a>(
    plan: &Plan,
    tensors: impl IntoIterator<Item = &'a (&'a str, flashopt_ir::layout::Shape)>,
) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    plan.to_string().hash(&mut h);
    for (name, shape) in tensors {
        (name, shape.len, shape.row_len).hash(&mut h);
    }
    h.finish()
}

/// Every rank builds its optimizer (`local`), then all meet once in `all_reduce`
/// (the first collective the ranks share) with their fingerprints and whether they
/// succeeded: a rank that failed returns its error, the others
/// [`RuntimeError::PeerFailed`]; ranks whose fingerprints differ from rank 0's make
/// every rank return [`RuntimeError::RankDisagreement`]. So ranks that disagree on
/// the tensors or the plan fail together instead of hanging in a later collective
/// or summing blocks that do not match.
pub fn agree<T>(
    rank: usize,
    world: usize,
    fingerprint: u64,
    local: Result<T, RuntimeError>,
    all_reduce: impl FnOnce(&mut [f64]) -> Result<(), RuntimeError>,
) -> Result<T, RuntimeError> {
    // Each rank's fingerprint in two 32-bit halves (exact in f64) and a failure flag.
    let mut slots = vec![0.0f64; 3 * world];
    slots[3 * rank] = (fingerprint >> 32) as f64;
    slots[3 * rank + 1] = (fingerprint & 0xffff_ffff) as f64;
    slots[3 * rank + 2] = f64::from(u8::from(local.is_err()));
    all_reduce(&mut slots)?;
    let local = local?;
    let failed = (0..world).filter(|&r| slots[3 * r + 2] != 0.0).count();
    if failed > 0 {
        return Err(RuntimeError::PeerFailed { ranks: failed });
    }
    let of = |r: usize| (slots[3 * r], slots[3 * r + 1]);
    match (1..world).find(|&r| of(r) != of(0)) {
        Some(other) => Err(RuntimeError::RankDisagreement { rank: other, world }),
        None => Ok(local),
    }
}
pub use cpu::{HostRank, ShardedCpuOptimizer};
pub use layout::{Piece, ShardLayout, assemble};
pub use rank::{Agreement, RankBackend, Reduction, ShardedOptimizer, Sharding};
