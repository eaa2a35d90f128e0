//! # flashopt-runtime
//!
//! Owns optimizer state and runs steps: the CPU reference back end ([`cpu`], always
//! available, so tests and examples run anywhere) and the CUDA/HIP back end ([`gpu`],
//! cubecl 0.10.0) behind the same API; [`checkpoint`] saves and restores either in
//! safetensors, [`numerics`] skips non-finite steps and checks learning rates,
//! [`clip`] clips the global gradient norm.

pub mod checkpoint;
pub mod clip;
pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod numerics;
pub mod raw;

pub use checkpoint::CheckpointError;
pub use cpu::{CpuOptimizer, RuntimeError, TensorId};
#[cfg(feature = "gpu")]
pub use gpu::GpuOptimizer;
pub use numerics::{NonFinite, NumericsWarning, StepOutcome};
