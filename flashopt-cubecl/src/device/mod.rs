//! What runs on a device: the fused step's launches ([`launch`]), the gradient
//! reduction for clipping and the NaN/Inf scan ([`reduce`]), element copies
//! ([`copy`]), host transfers ([`transfer`]), NCCL collectives ([`nccl`]), and whether a
//! driver and a device are present at all ([`probe`]).

pub mod copy;
pub mod gemm;
pub mod launch;
pub mod matrix;
pub mod nccl;
pub mod probe;
pub mod reduce;
pub mod reductions;
pub mod transfer;
