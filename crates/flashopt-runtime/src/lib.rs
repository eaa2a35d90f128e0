//! # flashopt-runtime
//!
//! Owns optimizer state and runs steps. Today: the CPU reference back end (always
//! available, so tests and examples run anywhere). The CUDA and HIP back ends
//! (cubecl 0.10.0) plug in behind the same API.

pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;

pub use cpu::{CpuOptimizer, RuntimeError, TensorId};
#[cfg(feature = "gpu")]
pub use gpu::GpuOptimizer;
