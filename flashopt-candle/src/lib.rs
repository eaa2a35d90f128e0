//! # flashopt-candle: flashopt's optimizers for candle 0.11
//!
//! [`FlashOptimizer`] implements [`candle_nn::Optimizer`] for any optimizer flashopt
//! compiles (the shipped AdamW, Adam, Lion, SGD, SGDW or one written with
//! `optimizer!`), in any of its storage formats: AdamW with a 24-bit master weight
//! keeps 2 bytes of bf16 parameter, 1 byte of correction and 2 bytes of 8-bit states
//! per parameter (plus 1/8 byte of scales) instead of 16.
//!
//! The state lives on the host and every step runs flashopt's CPU reference (the
//! same arithmetic as the fused GPU kernel, bit for bit): each step reads the
//! gradients from candle's [`GradStore`], runs the update, and writes the narrow
//! parameters back into the [`Var`]s, on whatever device they live. Made for candle's
//! CPU device, tests and small models; on a CUDA device it works the same way, with
//! a copy to the host and back each step. With the `cuda` feature,
//! `CudaFlashOptimizer` keeps the state and steps on candle's CUDA device instead
//! (docs/CANDLE.md).
//!
//! A step whose gradients hold NaN or infinity changes nothing: [`FlashOptimizer::last_outcome`]
//! says which value skipped it, [`FlashOptimizer::try_step`] returns it.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use candle_nn::Optimizer;
//! use flashopt::optimizers::AdamW;
//! use flashopt::{MasterMode, Optimizer as _, PlanConfig};
//! use flashopt_candle::{Config, FlashOptimizer};
//!
//! let w = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
//! let adamw = AdamW { lr: 0.1, weight_decay: 0.0, ..AdamW::default() };
//! let config = Config::new(&adamw, PlanConfig::bf16(MasterMode::Int8)).unwrap();
//! let mut opt = FlashOptimizer::new(vec![w.clone()], config).unwrap();
//! for _ in 0..100 {
//!     let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap(); // minimum at w = 0
//!     opt.backward_step(&loss).unwrap();
//! }
//! let w: Vec<f32> = w.as_tensor().to_vec1().unwrap();
//! assert!(w.iter().all(|x| x.abs() < 0.05), "{w:?}");
//! assert_eq!(opt.optimizer().steps_taken(), 100);
//! ```

mod config;
#[cfg(feature = "cuda")]
mod cuda;
mod optimizer;

pub use candle_core::Var;
pub use candle_core::backprop::GradStore;
pub use config::Config;
#[cfg(feature = "cuda")]
pub use cuda::{Cuda, CudaFlashOptimizer};
pub use flashopt_runtime::{NonFinite, StepOutcome};
pub use optimizer::{CandleOptimizer, FlashOptimizer, Host, Placement, vars_by_name};

/// docs/CANDLE.md's snippets, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/CANDLE.md")]
pub struct CandleSnippets;

/// What can go wrong between candle and flashopt; every message names the tensor.
#[derive(Debug, thiserror::Error)]
pub enum CandleError {
    #[error(transparent)]
    Runtime(#[from] flashopt_runtime::RuntimeError),
    #[error(transparent)]
    Checkpoint(#[from] flashopt_runtime::CheckpointError),
    #[error("tensor `{name}`: {source}")]
    Candle {
        name: String,
        source: candle_core::Error,
    },
    #[error("tensor `{name}`: gradient of shape {found:?}, the variable has shape {expected:?}")]
    GradShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{name}`: the variable is not contiguous; flashopt sets variables in place")]
    NotContiguous { name: String },
    #[error("tensor `{name}`: not on a CUDA device; CudaFlashOptimizer takes variables on one")]
    NotOnCuda { name: String },
    #[error(
        "tensor `{name}`: on another CUDA device than the first variable's; CudaFlashOptimizer takes variables on one"
    )]
    OtherCudaDevice { name: String },
    #[error("no float variable on a CUDA device to optimize")]
    NoCudaVariable,
    #[error("CUDA device copy: {0}")]
    Device(String),
    #[error("the learning rate {lr} was refused: {source}")]
    LearningRate {
        lr: f64,
        source: flashopt_runtime::RuntimeError,
    },
}

impl From<CandleError> for candle_core::Error {
    fn from(e: CandleError) -> Self {
        candle_core::Error::wrap(e)
    }
}
