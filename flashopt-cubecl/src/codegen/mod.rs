//! Code generation without a device: a plan's fused kernel as cubecl IR ([`define`],
//! built from the per-lane pieces of [`ops`]), the buffers it binds ([`bindings`]),
//! and its CUDA or HIP source on the host ([`emit`]).

pub mod bindings;
pub mod define;
pub mod emit;
pub mod ops;
