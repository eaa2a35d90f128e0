//! # flashopt-cubecl: the GPU back end
//!
//! A lowered [`flashopt_ir::Plan`] becomes ONE fused cubecl kernel ([`define`]) that
//! steps every tensor of a model: loads, decodes, the rule in f32, encodes and stores
//! in a single pass over memory. [`emit`] compiles it to CUDA or HIP source on any
//! machine (snapshots, `flashopt emit`).

pub use cubecl;

pub mod copy;
pub mod define;
pub mod emit;
pub mod launch;
pub mod ops;
pub mod reduce;
