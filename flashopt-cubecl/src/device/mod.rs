//! What runs on a device: the fused step's launches ([`launch`]), the gradient
//! reduction for clipping and the NaN/Inf scan ([`reduce`]), element copies
//! ([`copy`]), host transfers ([`transfer`]) and NCCL collectives ([`nccl`]).

pub mod copy;
pub mod launch;
pub mod nccl;
pub mod reduce;
pub mod transfer;
