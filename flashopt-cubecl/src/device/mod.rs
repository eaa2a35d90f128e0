//! What runs on a device: the fused step's launches ([`launch`]), the gradient
//! reduction for clipping and the NaN/Inf scan ([`reduce`]), element copies
//! ([`copy`]), host transfers ([`transfer`]), the matrix stage ([`matrix`], its
//! products on cubek-matmul, [`gemm`], or cuBLAS, [`blas`]), NCCL collectives
//! ([`nccl`]), and whether a driver and a device are present at all ([`probe`]).
//!
//! What differs between runtimes is behind [`DeviceRuntime`]: each runtime's host
//! transfers and its matrix products.

pub mod blas;
pub mod copy;
pub mod gemm;
pub mod launch;
pub mod matrix;
pub mod nccl;
pub mod probe;
pub mod reduce;
pub mod reductions;
pub mod transfer;

/// A runtime flashopt's optimizers run on: its host transfers and its matrix stage.
pub trait DeviceRuntime: transfer::HostTransfers + matrix::MatrixStage {}

impl<R: transfer::HostTransfers + matrix::MatrixStage> DeviceRuntime for R {}
