//! # flashopt-burn: flashopt's optimizers for burn 0.21 modules
//!
//! burn 0.21 is built on cubecl 0.10.0, the version flashopt's kernels are pinned to,
//! so on CUDA the optimizer shares burn's compute client: [`CudaOptimizer`] keeps the
//! module's parameters as slices of its flat parameter buffer (bf16 with an int8
//! correction for 24-bit AdamW: 2 + 1 bytes per parameter, states 2 more) and updates
//! them in place with the fused step. [`HostOptimizer`] runs the same arithmetic on the
//! CPU reference for any backend (tests, CI, small models).
//!
//! Both are one type, [`BurnOptimizer`], with the state placed on the host ([`Host`]) or
//! on the device of burn's cubecl backend (`Cube<R>`), and are used like burn's
//! optimizers: `(module, outcome) = opt.step(lr, module, grads)?`. A step whose
//! gradients hold NaN or infinity is skipped, not applied. [`BurnOptimizer::from_optimizer`]
//! takes an optimizer set up by hand (clipping, hyper-parameters, a step count) and
//! carries all of it to either placement.
//!
//! ```
//! use burn::backend::{Autodiff, NdArray};
//! use burn::module::{Module, Param};
//! use burn::optim::GradientsParams;
//! use burn::tensor::{Tensor, TensorData, backend::Backend};
//! use flashopt_burn::HostOptimizer;
//! use flashopt_ir::{MasterMode, OptimizerSpec, PlanConfig, def::*};
//!
//! #[derive(Module, Debug)]
//! struct Line<B: Backend> {
//!     w: Param<Tensor<B, 1>>,
//! }
//!
//! // Plain SGD, written in the DSL's builder form (flashopt's `optimizer!` or its
//! // shipped `AdamW` work the same way).
//! struct Sgd;
//! impl OptimizerSpec for Sgd {
//!     const NAME: &'static str = "sgd";
//!     fn definition() -> OptimizerDef {
//!         let mut def = OptimizerDef::new("sgd");
//!         def.hyper("lr", 0.1, Range::at_least(0.0)).learning_rate("lr");
//!         def.assign("p", name("p") - name("lr") * name("g"));
//!         def
//!     }
//!     fn hyper_values(&self) -> Result<flashopt_ir::HyperValues, flashopt_ir::HyperError> {
//!         Ok(flashopt_ir::HyperValues::defaults(&Self::definition().hyper_params))
//!     }
//! }
//!
//! type B = Autodiff<NdArray>;
//! let device = Default::default();
//! let w = Tensor::<B, 1>::from_data(TensorData::from([1.0f32, -2.0]), &device);
//! let model = Line { w: Param::from_tensor(w) };
//! let (mut opt, mut model) =
//!     HostOptimizer::new(&Sgd, PlanConfig::bf16(MasterMode::Int8), model).unwrap();
//! for _ in 0..50 {
//!     let loss = model.w.val().powf_scalar(2.0).sum(); // minimum at w = 0
//!     let grads = GradientsParams::from_grads(loss.backward(), &model);
//!     let (next, outcome) = opt.step(0.1, model, grads).unwrap();
//!     assert!(outcome.applied());
//!     model = next;
//! }
//! let w: Vec<f32> = model.w.val().into_data().into_vec().unwrap();
//! assert!(w.iter().all(|x| x.abs() < 1e-3), "{w:?}");
//! ```

use flashopt_ir::{CompileError, HyperError};
use flashopt_runtime::{CheckpointError, RuntimeError};

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod host;
pub mod optimizer;
pub mod params;
pub mod split;

#[cfg(feature = "cuda")]
pub use cuda::{Cube, CudaOptimizer, CudaSplitOptimizer, DeviceOptimizer, HipOptimizer};
pub use flashopt_runtime::{NonFinite, StepOutcome};
pub use host::{Host, HostOptimizer};
pub use optimizer::{BackendPlacement, BurnOptimizer, Placement};
pub use params::ParamInfo;
pub use split::{SplitOptimizer, is_hidden_matrix};

/// docs/TRAINING.md's snippet, compiled as a doctest (it needs a CUDA device to run).
#[cfg(all(doctest, feature = "cuda"))]
#[doc = include_str!("../../docs/TRAINING.md")]
pub struct TrainingSnippets;

#[derive(Debug, thiserror::Error)]
pub enum BurnError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Hyper(#[from] HyperError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(
        "no float parameters to optimize: the module has none, or none that this optimizer was given to select"
    )]
    NoParameters,
    #[error(
        "the optimizer given to take over a module already holds {tensors} tensors; give one without tensors"
    )]
    OptimizerNotEmpty { tensors: usize },
    #[error(
        "parameter `{name}`: shape {found:?}, the optimizer took it as {expected:?}; build a new optimizer for a changed model"
    )]
    ShapeChanged {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}
