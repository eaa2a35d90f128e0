//! The CPU back end: every tensor's state in host memory, stepped by the reference
//! interpreter.

use std::path::Path;

use flashopt_ir::def::Value;
use flashopt_ir::interp::{self, GradBuf, HostTensor, InterpError};

use crate::checkpoint::{self, CheckpointError, Entry, Expected};
use crate::clip;
use crate::numerics::{self, NumericsWarning, StepOutcome};
use flashopt_ir::{
    CompileError, HostEvalError, HyperError, HyperValues, OptimizerDef, OptimizerSpec, Plan,
    PlanConfig,
};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Hyper(#[from] HyperError),
    #[error("host scalars of step {step}: {source}")]
    HostScalars { step: u64, source: HostEvalError },
    #[error("tensor `{name}`: {source}")]
    Tensor { name: String, source: InterpError },
    #[error("tensor `{name}`: parameter group {group} does not exist ({groups} group(s))")]
    ParamGroup {
        name: String,
        group: usize,
        groups: usize,
    },
    #[error("check_numerics needs a hyper-parameter named `lr`; `{optimizer}` has none")]
    NoLearningRate { optimizer: String },
    #[error("a tensor named `{0}` is already registered")]
    DuplicateName(String),
    #[error(
        "step got {found} gradient(s) for {expected} tensor(s); pass one per tensor, in registration order"
    )]
    GradCount { expected: usize, found: usize },
    #[error("gradient clipping: max_norm must be positive and finite, got {0}")]
    MaxNorm(f64),
    #[error(
        "gradient clipping needs the norm of the whole step: use step(), not step_tensor() (gradient release)"
    )]
    ClipNeedsWholeStep,
    #[error("tensor id {id} does not exist ({tensors} tensor(s))")]
    UnknownTensor { id: usize, tensors: usize },
    #[error(
        "tensor `{name}`: the source buffer has {bytes} bytes, the gradient needs {needed} ({len} x {dtype})"
    )]
    SourceTooSmall {
        name: String,
        bytes: u64,
        needed: u64,
        dtype: String,
        len: usize,
    },
}

/// A tensor registered with an optimizer, by registration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorId(pub usize);

/// An optimizer over a set of named tensors, stepped on the CPU.
///
/// ```
/// use flashopt_ir::def::*;
/// use flashopt_ir::interp::GradBuf;
/// use flashopt_ir::PlanConfig;
/// use flashopt_runtime::CpuOptimizer;
///
/// let mut sgd = OptimizerDef::new("sgd");
/// sgd.hyper("lr", 0.5, Range::at_least(0.0));
/// sgd.assign("p", name("p") - name("lr") * name("g"));
///
/// let mut opt = CpuOptimizer::new(&sgd, PlanConfig::f32()).unwrap();
/// let w = opt.add_tensor("w", &[1.0, 2.0]).unwrap();
/// opt.step(&[GradBuf::F32(&[1.0, -1.0])]).unwrap();
/// assert_eq!(opt.master(w), vec![0.5, 2.5]);
/// // A bad gradient is refused and changes nothing.
/// let err = opt.step(&[GradBuf::F32(&[1.0])]).unwrap_err();
/// assert_eq!(err.to_string(), "tensor `w`: gradient: 1 elements, expected 2 (the parameter's length)");
/// assert_eq!((opt.master(w), opt.steps_taken()), (vec![0.5, 2.5], 1));
/// ```
/// The `lr` hyper-parameter's value, for the numerics check.
pub(crate) fn lr_of(plan: &Plan, hyper: &HyperValues) -> Result<f64, RuntimeError> {
    hyper
        .get("lr")
        .and_then(|v| v.as_f64())
        .ok_or_else(|| RuntimeError::NoLearningRate {
            optimizer: plan.optimizer.clone(),
        })
}

#[derive(Debug)]
pub struct CpuOptimizer {
    plan: Plan,
    hyper: HyperValues,
    steps_taken: u64,
    tensors: Vec<(String, HostTensor)>,
    /// Global gradient-norm clipping threshold.
    max_grad_norm: Option<f64>,
    last_grad_norm: Option<f64>,
}

impl CpuOptimizer {
    pub fn new(def: &OptimizerDef, config: PlanConfig) -> Result<CpuOptimizer, RuntimeError> {
        Ok(CpuOptimizer::from_plan(flashopt_ir::compile(def, config)?))
    }

    /// An optimizer from a configuration made with `optimizer!` (hyper-parameters
    /// checked against their ranges here).
    pub fn for_spec<S: OptimizerSpec>(
        spec: &S,
        config: PlanConfig,
    ) -> Result<CpuOptimizer, RuntimeError> {
        let hyper = spec.hyper_values()?;
        let mut opt = CpuOptimizer::from_plan(S::plan(config)?);
        opt.hyper = hyper;
        Ok(opt)
    }

    pub fn from_plan(plan: Plan) -> CpuOptimizer {
        let hyper = HyperValues::defaults(&plan.hyper_params);
        CpuOptimizer {
            plan,
            hyper,
            steps_taken: 0,
            tensors: Vec::new(),
            max_grad_norm: None,
            last_grad_norm: None,
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn hyper(&self) -> &HyperValues {
        &self.hyper
    }

    /// Change a hyper-parameter (checked against its range) for the next steps.
    pub fn set_hyper(&mut self, name: &str, value: impl Into<Value>) -> Result<(), RuntimeError> {
        self.hyper.set(name, value)?;
        Ok(())
    }

    /// Register a tensor with its initial f32 master weights; its states start at zero.
    pub fn add_tensor(&mut self, name: &str, values: &[f32]) -> Result<TensorId, RuntimeError> {
        if self.tensors.iter().any(|(n, _)| n == name) {
            return Err(RuntimeError::DuplicateName(name.to_string()));
        }
        self.tensors
            .push((name.to_string(), HostTensor::from_f32(&self.plan, values)));
        Ok(TensorId(self.tensors.len() - 1))
    }

    pub fn steps_taken(&self) -> u64 {
        self.steps_taken
    }

    pub fn tensor(&self, id: TensorId) -> &HostTensor {
        &self.tensors[id.0].1
    }

    /// The parameter values the model computes with: bf16/f16 widened to f32.
    pub fn param(&self, id: TensorId) -> Vec<f32> {
        self.tensors[id.0].1.param_f32()
    }

    /// The decoded f32 master weights of a tensor.
    pub fn master(&self, id: TensorId) -> Vec<f32> {
        self.tensors[id.0].1.master_f32()
    }

    /// One step of every tensor, one gradient per tensor in registration order.
    /// Everything is checked before anything is written. A step whose gradients hold
    /// NaN or infinity is skipped and reported ([`StepOutcome::Skipped`]): nothing
    /// changes, the step counter included.
    pub fn step(&mut self, grads: &[GradBuf<'_>]) -> Result<StepOutcome, RuntimeError> {
        if grads.len() != self.tensors.len() {
            return Err(RuntimeError::GradCount {
                expected: self.tensors.len(),
                found: grads.len(),
            });
        }
        let named = self
            .tensors
            .iter()
            .map(|(n, _)| n.as_str())
            .zip(grads.iter().copied());
        if let Some(found) = numerics::scan_step(named) {
            return Ok(StepOutcome::Skipped(found));
        }
        let step = self.steps_taken + 1;
        let mut scalars = self
            .plan
            .kernel_scalars(&self.hyper, step)
            .map_err(|source| RuntimeError::HostScalars { step, source })?;
        if let Some(max_norm) = self.max_grad_norm {
            let norm = grads.iter().map(clip::square_sum).sum::<f64>().sqrt();
            let slot = self.plan.grad_scale.expect("clipping scales the gradient");
            scalars[slot] = clip::scale(max_norm, norm);
            self.last_grad_norm = Some(norm);
        }
        let mut jobs = Vec::with_capacity(self.tensors.len());
        for ((name, tensor), &grad) in self.tensors.iter_mut().zip(grads) {
            let buffers = tensor.buffers(grad);
            interp::check(&self.plan, &scalars, &buffers).map_err(|source| {
                RuntimeError::Tensor {
                    name: name.clone(),
                    source,
                }
            })?;
            jobs.push((name, buffers));
        }
        for (name, buffers) in jobs {
            interp::run(&self.plan, &scalars, buffers).map_err(|source| RuntimeError::Tensor {
                name: name.clone(),
                source,
            })?;
        }
        self.steps_taken = step;
        Ok(StepOutcome::Applied)
    }

    /// Clip the global gradient norm of every later step to `max_norm` (torch's
    /// `clip_grad_norm_`; see [`crate::clip`]), or stop clipping with `None`.
    ///
    /// ```
    /// use flashopt_ir::interp::GradBuf;
    /// use flashopt_ir::{PlanConfig, def::*};
    /// use flashopt_runtime::CpuOptimizer;
    ///
    /// let mut def = OptimizerDef::new("sgd");
    /// def.hyper("lr", 1.0, Range::at_least(0.0));
    /// def.assign("p", name("p") - name("lr") * name("g"));
    /// let mut opt = CpuOptimizer::new(&def, PlanConfig::f32()).unwrap();
    /// let w = opt.add_tensor("w", &[0.0, 0.0]).unwrap();
    /// opt.set_grad_clipping(Some(1.0)).unwrap();
    /// opt.step(&[GradBuf::F32(&[3.0, 4.0])]).unwrap(); // norm 5, scaled by 1 / 5
    /// assert_eq!(opt.last_grad_norm(), Some(5.0));
    /// let p = opt.master(w);
    /// assert!((p[0] + 0.6).abs() < 1e-6 && (p[1] + 0.8).abs() < 1e-6);
    /// assert!(opt.set_grad_clipping(Some(0.0)).is_err());
    /// ```
    pub fn set_grad_clipping(&mut self, max_norm: Option<f64>) -> Result<(), RuntimeError> {
        self.max_grad_norm = max_norm.map(clip::check_max_norm).transpose()?;
        if self.max_grad_norm.is_some() {
            self.plan = self.plan.with_grad_scale();
        }
        Ok(())
    }

    pub fn grad_clipping(&self) -> Option<f64> {
        self.max_grad_norm
    }

    /// The global gradient norm of the last step applied with clipping on.
    pub fn last_grad_norm(&self) -> Option<f64> {
        self.last_grad_norm
    }

    /// flashoptim's `check_numerics`: the tensors whose largest weight a step of
    /// `lr * min_step_relative_to_lr` cannot move at their storage precision
    /// ([`numerics::min_step_relative_to_lr`] has the shipped optimizers' values).
    pub fn check_numerics(
        &self,
        min_step_relative_to_lr: f64,
    ) -> Result<Vec<NumericsWarning>, RuntimeError> {
        let lr = lr_of(&self.plan, &self.hyper)?;
        Ok(self
            .tensors
            .iter()
            .filter_map(|(name, t)| {
                let max_abs = numerics::max_abs(&t.param);
                numerics::check_tensor(name, self.plan.config, lr, min_step_relative_to_lr, max_abs)
            })
            .collect())
    }

    fn entries(&self) -> Vec<Entry<'_>> {
        self.tensors
            .iter()
            .map(|(name, tensor)| Entry {
                name,
                param_group: 0,
                tensor,
            })
            .collect()
    }

    fn expected(&self) -> Vec<Expected<'_>> {
        self.tensors
            .iter()
            .map(|(name, t)| Expected {
                name,
                len: t.len(),
                param_group: 0,
            })
            .collect()
    }

    /// Save the compressed state, step counter and hyper-parameters (safetensors,
    /// written atomically; [`checkpoint`] has the layout). Returns the file size.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<u64, CheckpointError> {
        let hyper = std::slice::from_ref(&self.hyper);
        checkpoint::save(
            path.as_ref(),
            &self.plan,
            hyper,
            self.steps_taken,
            &self.entries(),
        )
    }

    /// Restore a checkpoint of this optimizer (same tensors, registered in the same
    /// order). Everything is checked first: on error nothing changes.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let restored = checkpoint::load(
            path.as_ref(),
            &self.plan,
            std::slice::from_ref(&self.hyper),
            &self.expected(),
        )?;
        for ((_, t), new) in self.tensors.iter_mut().zip(restored.tensors) {
            *t = new;
        }
        self.hyper = restored.hyper.into_iter().next().expect("one group");
        self.steps_taken = restored.steps_taken;
        Ok(())
    }

    /// Save f32 master weights and decoded f32 states (4 bytes per value).
    pub fn export_f32(&self, path: impl AsRef<Path>) -> Result<u64, CheckpointError> {
        let hyper = std::slice::from_ref(&self.hyper);
        checkpoint::export_f32(
            path.as_ref(),
            &self.plan,
            hyper,
            self.steps_taken,
            &self.entries(),
        )
    }

    /// Replace every tensor's master weights by f32 values (`name::master` keys, as
    /// [`Self::export_f32`] writes them): the narrow parameters and their corrections
    /// are recomputed; states and the step counter stay. On error nothing changes.
    pub fn import_master_f32(&mut self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let masters = checkpoint::read_master_f32(path.as_ref(), &self.expected())?;
        for ((_, t), values) in self.tensors.iter_mut().zip(masters) {
            let encoded = HostTensor::from_f32(&self.plan, &values);
            t.param = encoded.param;
            t.correction = encoded.correction;
        }
        Ok(())
    }
}
