//! ZeRO-1 sharding: N ranks each keep every parameter and the optimizer state of one
//! block of the flat buffers ([`layout`]); a step reduce-scatters the gradients, steps
//! the block, all-gathers the parameters ([`collective`]); [`checkpoint`] saves each
//! rank's pieces and loads them into any world size. [`cpu`] is one rank on the
//! CPU reference; docs/DISTRIBUTED.md has the design and the memory per rank.

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
