//! # flashopt
//!
//! Fused, memory-efficient optimizers. Write an optimizer's update rule as a scalar
//! per-element expression; flashopt adds the master-weight and state compression of
//! FlashOptim (arXiv 2602.23349, bit-compatible with the `flashoptim` 0.1.4 package)
//! and runs the whole step as one pass over memory.
//!
//! This crate is the one users depend on: it re-exports the IR ([`ir`]), the runtime
//! ([`runtime`]) and the shipped optimizers ([`optimizers`]).

// The macro's output names `::flashopt`, which must resolve inside this crate too.
extern crate self as flashopt;

pub use flashopt_ir as ir;
pub use flashopt_macros::optimizer;
pub use flashopt_runtime as runtime;

pub use flashopt_ir::interp::GradBuf;
pub use flashopt_ir::{Codec, FloatDtype, MasterMode, OptimizerSpec, PlanConfig, StateKind};
pub use flashopt_runtime::{CpuOptimizer, RuntimeError, TensorId};

pub mod optimizers;
