//! # flashopt-runtime
//!
//! Owns optimizer state and runs steps: the CPU reference back end ([`cpu`], always
//! available, so tests and examples run anywhere) and the CUDA/HIP back end ([`gpu`],
//! cubecl 0.10.0), both behind the [`Optimizer`] trait and its shared [`Core`];
//! [`checkpoint`] saves and restores either in safetensors, [`numerics`] skips
//! non-finite steps and checks learning rates, [`clip`] clips the global gradient
//! norm, [`health`] counts the elements 8-bit states leave with a zero
//! second moment under a non-zero momentum. Buffers, byte conversion and checkpoint keys all follow the plan's part
//! list ([`raw`]).

pub mod checkpoint;
pub mod clip;
pub mod core;
pub mod cpu;
pub mod error;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod health;
pub mod numerics;
pub mod raw;
pub mod segments;
pub mod shard;

pub use checkpoint::CheckpointError;
pub use core::{CheckedTensors, Core, Optimizer, TensorId, TensorInfo, check_initial_values};
pub use cpu::CpuOptimizer;
pub use error::RuntimeError;
#[cfg(feature = "gpu")]
pub use gpu::GpuOptimizer;
pub use health::StateHealth;
pub use numerics::{NonFinite, NumericsWarning, StepOutcome};
