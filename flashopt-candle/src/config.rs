//! What [`crate::FlashOptimizer`] is built from: an optimizer and its storage format.

use flashopt_ir::{OptimizerDef, OptimizerSpec, PlanConfig};
use flashopt_runtime::{CpuOptimizer, RuntimeError};

/// The optimizer a [`crate::FlashOptimizer`] runs, compiled and checked, with no
/// tensors yet: candle's `Optimizer::new(vars, config)` registers the variables.
#[derive(Debug)]
pub struct Config {
    pub(crate) empty: CpuOptimizer,
}

impl Config {
    /// A shipped optimizer or one made with `optimizer!` (its hyper-parameters checked
    /// against their ranges here), stored as `format` says:
    /// `PlanConfig::bf16(MasterMode::Int8)` is FlashOptim's 24-bit master weight.
    pub fn new<S: OptimizerSpec>(spec: &S, format: PlanConfig) -> Result<Config, RuntimeError> {
        Ok(Config {
            empty: CpuOptimizer::for_spec(spec, format)?,
        })
    }

    /// An optimizer definition written with the builder API, at its defaults.
    pub fn from_def(def: &OptimizerDef, format: PlanConfig) -> Result<Config, RuntimeError> {
        Ok(Config {
            empty: CpuOptimizer::new(def, format)?,
        })
    }

    /// An optimizer set up by hand (clipping, parameter groups' hyper-parameters);
    /// it must hold no tensors yet.
    ///
    /// # Panics
    /// If `optimizer` already holds tensors.
    pub fn from_optimizer(optimizer: CpuOptimizer) -> Config {
        use flashopt_runtime::Optimizer as _;
        assert_eq!(
            optimizer.tensor_count(),
            0,
            "Config::from_optimizer takes an optimizer without tensors"
        );
        Config { empty: optimizer }
    }
}
