//! # flashopt-cubecl: the GPU back end
//!
//! A lowered [`flashopt_ir::Plan`] becomes ONE fused cubecl kernel ([`define`]) that
//! steps every tensor of a model: loads, decodes, the rule in f32, encodes and stores
//! in a single pass over memory. [`emit`] compiles it to CUDA or HIP source on any
//! machine (snapshots, `flashopt emit`).

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

pub mod bindings;
pub mod copy;
pub mod define;
pub mod emit;
pub mod launch;
pub mod ops;
pub mod reduce;
