//! ZeRO-1 sharding: N ranks each keep every parameter and the optimizer state of one
//! block of the flat buffers ([`layout`]); a step reduce-scatters the gradients, steps
//! the block, all-gathers the parameters ([`collective`]); [`checkpoint`] saves each
//! rank's pieces and loads them into any world size. [`cpu`] is one rank on the
//! CPU reference and [`gpu`] one rank on a CUDA GPU through NCCL; docs/DISTRIBUTED.md
//! has the design and the memory per rank.
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
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod layout;

pub use collective::{Collective, LocalCollective};
pub use cpu::{Reduction, ShardedCpuOptimizer, assemble};
#[cfg(feature = "gpu")]
pub use gpu::ShardedGpuOptimizer;
pub use layout::{Piece, ShardLayout};
