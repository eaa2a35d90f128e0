//! # flashopt-runtime
//!
//! Owns optimizer state and runs steps, without any GPU dependency: the [`Optimizer`]
//! trait and its shared [`Core`], the step protocol every back end follows ([`step`]),
//! the CPU reference back end ([`cpu`], so tests and examples run anywhere) and ZeRO-1
//! sharding over any collective ([`shard`]). The CUDA/HIP optimizer is
//! `flashopt_cubecl::GpuOptimizer`, a [`step::Stepper`] of the same protocol;
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
pub mod health;
pub mod numerics;
pub mod raw;
pub mod segments;
pub mod shard;
pub mod step;

pub use checkpoint::CheckpointError;
pub use core::{CheckedTensors, Core, Optimizer, TensorId, TensorInfo, check_initial_values};
pub use cpu::CpuOptimizer;
pub use error::RuntimeError;
pub use health::StateHealth;
pub use numerics::{NonFinite, NumericsWarning, StepOutcome};
