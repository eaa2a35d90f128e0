//! # flashopt-ir
//!
//! The core of flashopt, a compiler for memory-efficient optimizers: the optimizer
//! model, its passes, the exact FlashOptim storage formats, the byte-traffic model
//! and the CPU reference interpreter. It knows nothing of GPUs or proc macros.
//!
//! The pipeline:
//!
//! ```text
//! OptimizerDef --validate--> Rule --fold--> Rule --hoist--> Hoisted --lower(config)--> Plan --optimize--> Plan --scale_grad--> Plan
//!   (def)                   (typed graph)              (host scalars     (parts, codecs as       (tables,         (the gradient read
//!                                                       split off)         instructions)           reciprocals)      through its scale)
//! ```
//!
//! ```
//! use flashopt_ir::def::*;
//! use flashopt_ir::interp::{self, GradBuf, HostTensor};
//! use flashopt_ir::{HyperValues, MasterMode, PlanConfig, StateKind};
//!
//! // Momentum SGD, by hand (the `optimizer!` macro writes this for you).
//! let mut def = OptimizerDef::new("momentum_sgd");
//! def.hyper("lr", 0.1, Range::at_least(0.0)).hyper("mu", 0.9, Range::closed_open(0.0, 1.0));
//! def.state("buf", StateKind::Signed);
//! def.assign("buf", name("mu") * name("buf") + name("g"));
//! def.assign("p", name("p") - name("lr") * name("buf"));
//!
//! let plan = flashopt_ir::compile(&def, PlanConfig::bf16(MasterMode::Int8)).unwrap();
//! let mut tensor = HostTensor::from_f32(&plan, &[1.0, -2.0, 3.0]);
//! let grad = [0.5f32, 0.5, -1.0];
//! let hyper = HyperValues::defaults(&plan.hyper_params);
//! let scalars = plan.kernel_scalars(&hyper, 1).unwrap();
//! interp::run(&plan, &scalars, &mut tensor, GradBuf::F32(&grad)).unwrap_err(); // grads are bf16 here
//! let grad: Vec<half::bf16> = grad.iter().map(|&x| half::bf16::from_f32(x)).collect();
//! interp::run(&plan, &scalars, &mut tensor, GradBuf::Bf16(&grad)).unwrap();
//! let p = tensor.master_f32(&plan);
//! assert!((p[0] - 0.95).abs() < 1e-4);
//! ```

pub mod codec;
pub mod def;
pub mod graph;
pub mod hyper;
pub mod interp;
pub mod layout;
pub mod matrix;
pub mod passes;
pub mod plan;
mod print;
pub mod program;
pub mod reduction;
pub mod scopes;
pub mod semantics;
pub mod types;
pub mod validate;
pub mod verify;

pub use def::OptimizerDef;
pub use hyper::{HyperError, HyperValues};
pub use layout::{Extent, Part, PartId, Role, Storage};
pub use passes::lower::LowerError;
pub use plan::{Plan, PlanConfig, Traffic};
pub use semantics::{HostArithmetic, HostEvalError};
pub use types::{Codec, FloatDtype, GROUP_SIZE, MasterMode, Rounding, StateKind, Type};
pub use validate::{Diagnostic, Numerics, Rule, ValidationError, validate};

/// An optimizer type: its definition and its current hyper-parameter values.
/// The `optimizer!` macro implements this for the config struct it generates.
pub trait OptimizerSpec {
    /// The optimizer's name in plans and error messages.
    const NAME: &'static str;

    /// The definition, as written in the DSL.
    fn definition() -> OptimizerDef;

    /// This configuration's values, each checked against its declared range.
    fn hyper_values(&self) -> Result<HyperValues, HyperError>;

    /// The definition lowered for one storage format.
    fn plan(config: PlanConfig) -> Result<Plan, CompileError> {
        compile(&Self::definition(), config)
    }
}

/// `S` with every state stored as plain f32 instead of its declared codec. With
/// [`PlanConfig::f32_params`] it is the optimizer in fp32 (f32 parameters, gradients
/// and states: 12 bytes per parameter for AdamW), the same operations on unrounded
/// values: the reference a compressed run is compared with.
///
/// ```
/// use flashopt_ir::{Codec, F32States, OptimizerSpec, PlanConfig};
/// # use flashopt_ir::def::*;
/// # struct Sgd;
/// # impl OptimizerSpec for Sgd {
/// #     const NAME: &'static str = "sgd";
/// #     fn definition() -> OptimizerDef {
/// #         let mut d = OptimizerDef::new("sgd");
/// #         d.hyper("lr", 0.1, Range::at_least(0.0)).learning_rate("lr");
/// #         d.state("m", flashopt_ir::StateKind::Signed);
/// #         d.assign("m", name("m") * 0.9 + name("g"));
/// #         d.assign("p", name("p") - name("lr") * name("m"));
/// #         d
/// #     }
/// #     fn hyper_values(&self) -> Result<flashopt_ir::HyperValues, flashopt_ir::HyperError> {
/// #         Ok(flashopt_ir::HyperValues::defaults(&Self::definition().hyper_params))
/// #     }
/// # }
/// let plan = F32States::<Sgd>::plan(PlanConfig::f32_params()).unwrap();
/// assert_eq!(plan.resident_bytes_per_param(), 8.0); // f32 parameter + f32 momentum
/// ```
pub struct F32States<S>(pub S);

impl<S: OptimizerSpec> OptimizerSpec for F32States<S> {
    const NAME: &'static str = S::NAME;

    fn definition() -> OptimizerDef {
        let mut def = S::definition();
        for state in &mut def.states {
            state.codec = Some(Codec::F32);
            state.rounding = Rounding::Nearest;
        }
        def
    }

    fn hyper_values(&self) -> Result<HyperValues, HyperError> {
        self.0.hyper_values()
    }
}

/// `S` with every state's codes rounded to the nearest code, as flashoptim 0.1.4
/// encodes them: the shipped Lion, Sgd and SgdW dither their momentum's rounding
/// ([`Rounding::Dithered`]), and this is their flashoptim arithmetic, bit for bit.
///
/// ```
/// use flashopt_ir::{NearestRounding, OptimizerSpec, Rounding};
/// # use flashopt_ir::def::*;
/// # struct Sgd;
/// # impl OptimizerSpec for Sgd {
/// #     const NAME: &'static str = "sgd";
/// #     fn definition() -> OptimizerDef {
/// #         let mut d = OptimizerDef::new("sgd");
/// #         d.hyper("lr", 0.1, Range::at_least(0.0)).learning_rate("lr");
/// #         d.state_rounded("m", flashopt_ir::StateKind::Signed, None, Rounding::Dithered);
/// #         d.assign("m", name("m") * 0.9 + name("g"));
/// #         d.assign("p", name("p") - name("lr") * name("m"));
/// #         d
/// #     }
/// #     fn hyper_values(&self) -> Result<flashopt_ir::HyperValues, flashopt_ir::HyperError> {
/// #         Ok(flashopt_ir::HyperValues::defaults(&Self::definition().hyper_params))
/// #     }
/// # }
/// assert_eq!(Sgd::definition().states[0].rounding, Rounding::Dithered);
/// assert_eq!(NearestRounding::<Sgd>::definition().states[0].rounding, Rounding::Nearest);
/// ```
pub struct NearestRounding<S>(pub S);

impl<S: OptimizerSpec> OptimizerSpec for NearestRounding<S> {
    const NAME: &'static str = S::NAME;

    fn definition() -> OptimizerDef {
        let mut def = S::definition();
        for state in &mut def.states {
            state.rounding = Rounding::Nearest;
        }
        def
    }

    fn hyper_values(&self) -> Result<HyperValues, HyperError> {
        self.0.hyper_values()
    }
}

/// Any failure on the way from a definition to a plan.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("optimizer `{optimizer}`: {error}")]
    Uniform {
        optimizer: String,
        error: HostEvalError,
    },
    #[error("optimizer `{optimizer}`: {error}")]
    Lower {
        optimizer: String,
        error: LowerError,
    },
}

/// Validate, fold and hoist: everything that does not depend on the storage format.
pub fn prepare(def: &OptimizerDef) -> Result<passes::Hoisted, CompileError> {
    let uniform = |error| CompileError::Uniform {
        optimizer: def.name.clone(),
        error,
    };
    let rule = validate(def)?;
    let rule = passes::fold(&rule).map_err(uniform)?;
    passes::hoist(&rule).map_err(uniform)
}

/// The whole pipeline: a definition lowered for one storage format and optimized.
pub fn compile(def: &OptimizerDef, config: PlanConfig) -> Result<Plan, CompileError> {
    let hoisted = prepare(def)?;
    let plan = passes::lower(&hoisted, config).map_err(|error| CompileError::Lower {
        optimizer: def.name.clone(),
        error,
    })?;
    let plan = passes::phases::split(&passes::scale_grad(&passes::optimize(&plan)));
    if let Err(e) = verify::verify(&plan) {
        panic!("flashopt made a plan that does not verify (a compiler bug): {e}\n{plan}");
    }
    Ok(plan)
}
