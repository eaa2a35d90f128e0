//! # flashopt
//!
//! Fused, memory-efficient optimizers. Write an optimizer's update rule as a scalar
//! per-element expression; flashopt adds the master-weight and state compression of
//! FlashOptim (arXiv 2602.23349, bit-compatible with the `flashoptim` 0.1.4 package)
//! and runs the whole step as one pass over memory.
//!
//! This crate is the one users depend on: it re-exports the IR ([`ir`]), the runtime
//! ([`runtime`]), the GPU optimizers and the cubecl they run on ([`cubecl`]), and
//! the shipped optimizers ([`optimizers`]).

// The macro's output names `::flashopt`, which must resolve inside this crate too.
extern crate self as flashopt;

pub use flashopt_ir as ir;
/// Define an optimizer (grammar: `docs/DSL.md`). A custom optimizer, end to end on
/// the CPU reference back end:
///
/// ```
/// use flashopt::{CpuOptimizer, GradBuf, MasterMode, PlanConfig};
///
/// flashopt::optimizer! {
///     /// signSGD with momentum.
///     pub Signum {
///         hyper lr: f32 = 1e-3 in 0.0..;
///         hyper beta: f32 = 0.9 in 0.0..1.0;
///         state m: signed;
///
///         m = beta * m + (1.0 - beta) * g;
///         p -= lr * sign(m);
///     }
/// }
///
/// let spec = Signum { lr: 0.25, ..Signum::default() };
/// let mut opt = CpuOptimizer::for_spec(&spec, PlanConfig::f32_params()).unwrap();
/// let w = opt.add_tensor("w", &[1.0, -1.0, 0.0]).unwrap();
/// opt.step(&[GradBuf::F32(&[2.0, -3.0, 0.0])]).unwrap();
/// assert_eq!(opt.master(w).unwrap(), vec![0.75, -0.75, 0.0]);
/// ```
pub use flashopt_macros::optimizer;
pub use flashopt_runtime as runtime;

/// cubecl 0.10.0, which the GPU optimizers run on: its CUDA and HIP runtimes, compute
/// clients and buffer handles.
#[cfg(feature = "gpu")]
pub use flashopt_cubecl::cubecl;
#[cfg(feature = "gpu")]
pub use flashopt_cubecl::{Arithmetic, GpuOptimizer, KernelShape, ShardedGpuOptimizer};
pub use flashopt_ir::interp::{GradBuf, HostTensor};
pub use flashopt_ir::{
    Codec, F32States, FloatDtype, MasterMode, NearestRounding, OptimizerSpec, PlanConfig, Rounding,
    StateKind,
};
pub use flashopt_runtime::{
    CheckpointError, CpuOptimizer, NonFinite, Optimizer, RuntimeError, StepOutcome, TensorId,
};

pub mod optimizers;

/// The README's Rust snippets, compiled (and run, where not `no_run`) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeSnippets;

/// docs/DSL.md's snippets as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/DSL.md")]
pub struct DslSnippets;

/// docs/CHECKPOINTS.md's snippets as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/CHECKPOINTS.md")]
pub struct CheckpointSnippets;
