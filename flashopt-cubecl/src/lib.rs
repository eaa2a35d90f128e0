//! # flashopt-cubecl: the GPU back end
//!
//! A lowered [`flashopt_ir::Plan`] becomes ONE fused cubecl kernel that steps every
//! tensor of a model: loads, decodes, the rule in f32, encodes and stores in a single
//! pass over memory.
//!
//! - [`codegen`]: pure code generation, no device: the plan's kernel instruction by
//!   instruction ([`codegen::define`]), its buffers ([`codegen::bindings`]), CUDA or
//!   HIP source on any machine ([`codegen::emit`]; snapshots, `flashopt emit`);
//! - [`device`]: what touches a device: launches, the gradient reduction, copies,
//!   host transfers, NCCL;
//! - [`optimizer`] ([`GpuOptimizer`]) and [`shard`] ([`ShardedGpuOptimizer`]): the
//!   runtime's optimizers on cubecl's CUDA and HIP runtimes, each a `Stepper` of the
//!   runtime's step protocol.

pub use cubecl;

/// Runs `$body` with `$F` the element type cubecl's generic kernels take for
/// `$dtype`: the one place flashopt's float dtypes map to Rust types.
macro_rules! with_float_type {
    ($dtype:expr, $F:ident => $body:expr) => {
        match $dtype {
            flashopt_ir::FloatDtype::Bf16 => {
                type $F = half::bf16;
                $body
            }
            flashopt_ir::FloatDtype::F16 => {
                type $F = half::f16;
                $body
            }
            flashopt_ir::FloatDtype::F32 => {
                type $F = f32;
                $body
            }
        }
    };
}

/// Runs `$body` with `$E` the Rust element type of a part's `$storage`: the one place
/// the plan's storages map to the kernel's element types.
macro_rules! with_storage_type {
    ($storage:expr, $E:ident => $body:expr) => {
        match $storage {
            flashopt_ir::Storage::Bf16 => {
                type $E = half::bf16;
                $body
            }
            flashopt_ir::Storage::F16 => {
                type $E = half::f16;
                $body
            }
            flashopt_ir::Storage::F32 => {
                type $E = f32;
                $body
            }
            flashopt_ir::Storage::I8 => {
                type $E = i8;
                $body
            }
            flashopt_ir::Storage::I16 => {
                type $E = i16;
                $body
            }
            flashopt_ir::Storage::U8 => {
                type $E = u8;
                $body
            }
        }
    };
}

pub mod codegen;
pub mod device;
pub mod optimizer;
pub mod shard;

pub use codegen::bindings::{Arithmetic, KernelShape};
pub use optimizer::GpuOptimizer;
pub use shard::ShardedGpuOptimizer;
