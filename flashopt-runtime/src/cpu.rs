//! The CPU back end: every tensor's state in host memory, stepped by the reference
//! interpreter.

use flashopt_ir::interp::{self, GradBuf, HostTensor};
use flashopt_ir::layout::Shape;
use flashopt_ir::{HyperValues, OptimizerDef, OptimizerSpec, Plan, PlanConfig};

use crate::clip;
use crate::core::{CheckedTensors, Core, Optimizer, TensorId, TensorInfo};
use crate::error::RuntimeError;
use crate::numerics::{self, StepOutcome};
use crate::step::{self, GradSource, Inspection, Scope, Stepper};

/// An optimizer over a set of named tensors, stepped on the CPU.
///
/// ```
/// use flashopt_ir::def::*;
/// use flashopt_ir::interp::GradBuf;
/// use flashopt_ir::PlanConfig;
/// use flashopt_runtime::{CpuOptimizer, Optimizer};
///
/// let mut sgd = OptimizerDef::new("sgd");
/// sgd.hyper("lr", 0.5, Range::at_least(0.0)).learning_rate("lr");
/// sgd.assign("p", name("p") - name("lr") * name("g"));
///
/// let mut opt = CpuOptimizer::new(&sgd, PlanConfig::f32_params()).unwrap();
/// let w = opt.add_tensor("w", &[1.0, 2.0]).unwrap();
/// opt.step(&[GradBuf::F32(&[1.0, -1.0])]).unwrap();
/// assert_eq!(opt.master(w).unwrap(), vec![0.5, 2.5]);
/// // A bad gradient is refused and changes nothing.
/// let err = opt.step(&[GradBuf::F32(&[1.0])]).unwrap_err();
/// assert_eq!(err.to_string(), "tensor `w`: gradient: 1 elements, expected 2 (the parameter's length)");
/// assert_eq!((opt.master(w).unwrap(), opt.steps_taken()), (vec![0.5, 2.5], 1));
/// // The learning rate is the hyper-parameter the definition names.
/// opt.set_learning_rate(0.25).unwrap();
/// assert_eq!(opt.learning_rate(0).unwrap(), 0.25);
/// ```
#[derive(Debug)]
pub struct CpuOptimizer {
    core: Core,
    tensors: Vec<HostTensor>,
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
        Ok(CpuOptimizer {
            core: Core::new(S::plan(config)?, vec![hyper])?,
            tensors: Vec::new(),
        })
    }

    /// An optimizer running `plan`, with its hyper-parameters' defaults.
    pub fn from_plan(plan: Plan) -> CpuOptimizer {
        let hyper = HyperValues::defaults(&plan.hyper_params);
        CpuOptimizer {
            core: Core::new(plan, vec![hyper]).expect("defaults fit their own plan"),
            tensors: Vec::new(),
        }
    }

    /// Register a tensor with its initial f32 master weights; its states start at zero.
    /// An empty tensor, a name already registered or a non-finite value is refused,
    /// and nothing is registered.
    pub fn add_tensor(&mut self, name: &str, values: &[f32]) -> Result<TensorId, RuntimeError> {
        self.add_shaped(name, &[values.len()], values)
    }

    /// As [`Self::add_tensor`], for a tensor of dimensions `dims` (outermost first, its
    /// values in row-major order). Only optimizers with per-row or per-column states or
    /// reductions read the shape: a row is the last dimension, every dimension before it
    /// counts rows ([`flashopt_ir::layout::Shape::of_dims`]). Dimensions that do not hold
    /// `values.len()` elements are refused.
    pub fn add_shaped(
        &mut self,
        name: &str,
        dims: &[usize],
        values: &[f32],
    ) -> Result<TensorId, RuntimeError> {
        crate::core::check_initial_values(name, values)?;
        let shape = Shape::of_dims(dims);
        if shape.len != values.len() {
            return Err(RuntimeError::ShapeMismatch {
                name: name.to_string(),
                dims: dims.to_vec(),
                product: shape.len,
                len: values.len(),
            });
        }
        let id = self.core.add(TensorInfo::new(name, 0, shape))?;
        self.tensors
            .push(HostTensor::from_f32_shaped(&self.core.plan, values, shape));
        Ok(id)
    }

    /// A registered tensor's stored parts; an unknown id is an error.
    pub fn tensor(&self, id: TensorId) -> Result<&HostTensor, RuntimeError> {
        self.core.tensor(id)?;
        Ok(&self.tensors[id.0])
    }

    /// The parameter values the model computes with: bf16/f16 widened to f32.
    pub fn param(&self, id: TensorId) -> Result<Vec<f32>, RuntimeError> {
        Ok(self.tensor(id)?.param_f32())
    }

    /// The decoded f32 master weights of a tensor.
    pub fn master(&self, id: TensorId) -> Result<Vec<f32>, RuntimeError> {
        Ok(self.tensor(id)?.master_f32(&self.core.plan))
    }

    /// One step of every tensor, one gradient per tensor in registration order.
    /// Everything is checked before anything is written. A step whose gradients hold
    /// NaN or infinity is skipped and reported ([`StepOutcome::Skipped`]): nothing
    /// changes, the step counter included.
    pub fn step(&mut self, grads: &[GradBuf<'_>]) -> Result<StepOutcome, RuntimeError> {
        step::step(self, Scope::All, GradSource::Host(grads))
    }

    /// One step from f32 gradients (one per tensor, in registration order; `None`: the
    /// tensor steps with a zero gradient), each rounded to the plan's gradient dtype
    /// first, to nearest, ties to even, as a device cast does: for trainers whose
    /// gradients come in another dtype than the plan's. Checked as [`Self::step`].
    pub fn step_rounding(
        &mut self,
        grads: &[Option<Vec<f32>>],
    ) -> Result<StepOutcome, RuntimeError> {
        let dtype = self.core.plan.config.grad;
        let rounded: Vec<interp::PartData> = grads
            .iter()
            .enumerate()
            .map(|(i, g)| match g {
                Some(values) => interp::PartData::round_from_f32(dtype, values),
                None => {
                    let len = self.core.tensors().get(i).map_or(0, |t| t.len);
                    interp::PartData::round_from_f32(dtype, &vec![0.0; len])
                }
            })
            .collect();
        let bufs: Vec<GradBuf<'_>> = rounded
            .iter()
            .map(|g| g.as_grad().expect("rounded to a float dtype"))
            .collect();
        self.step(&bufs)
    }

    /// The registered tensors' stored parts, in registration order, moved out (the
    /// settings are read first: `plan`, `hyper`, `tensor_info`, ...).
    pub fn into_tensors(self) -> Vec<HostTensor> {
        self.tensors
    }

    /// Step one tensor alone (gradient release: a trainer that produces gradients
    /// layer by layer steps each tensor as its gradient arrives and drops it). The step
    /// counter is shared: call [`Self::finish_step`] once every tensor of the step is
    /// done; each tensor steps as [`Self::step`] would step it. A gradient holding NaN
    /// or infinity skips this tensor's update only (tensors stepped before it keep
    /// theirs). Clipping needs the whole step's norm: an error.
    pub fn step_tensor(
        &mut self,
        id: TensorId,
        grad: GradBuf<'_>,
    ) -> Result<StepOutcome, RuntimeError> {
        step::step(self, Scope::Tensor(id), GradSource::Host(&[grad]))
    }

    /// Count a step whose tensors were stepped one by one with [`Self::step_tensor`].
    pub fn finish_step(&mut self) {
        step::finish_step(self);
    }
}

/// The interpreter's side of the step protocol: host gradients only.
impl Stepper for CpuOptimizer {
    type Buffer = std::convert::Infallible;
    type Bound<'g> = &'g [GradBuf<'g>];

    fn stepper_core(&self) -> &Core {
        &self.core
    }

    fn stepper_core_mut(&mut self) -> &mut Core {
        &mut self.core
    }

    fn bind<'g>(
        &mut self,
        scope: Scope,
        grads: GradSource<'g, Self::Buffer>,
        scalars: &[Vec<f32>],
    ) -> Result<&'g [GradBuf<'g>], RuntimeError> {
        let GradSource::Host(grads) = grads else {
            return Err(grads.unsupported());
        };
        step::check_count(&self.core, scope, grads.len())?;
        for (id, &grad) in step::tensor_ids(&self.core, scope).zip(grads) {
            let info = &self.core.tensors[id.0];
            interp::check(
                &self.core.plan,
                &scalars[info.param_group],
                &self.tensors[id.0],
                grad,
            )
            .map_err(RuntimeError::in_tensor(&info.name))?;
        }
        Ok(grads)
    }

    fn inspect(
        &mut self,
        scope: Scope,
        grads: &mut &[GradBuf<'_>],
        norm: bool,
    ) -> Result<Inspection, RuntimeError> {
        let ids = step::tensor_ids(&self.core, scope);
        let names = ids.map(|id| self.core.tensors[id.0].name.as_str());
        if let Some(found) = numerics::scan_step(names.zip(grads.iter().copied())) {
            return Ok(Inspection::NonFinite(found));
        }
        let square_sum = norm.then(|| grads.iter().map(clip::square_sum).sum());
        Ok(Inspection::Finite { square_sum })
    }

    fn apply(
        &mut self,
        scope: Scope,
        grads: &[GradBuf<'_>],
        scalars: &[Vec<f32>],
    ) -> Result<(), RuntimeError> {
        for (id, &grad) in step::tensor_ids(&self.core, scope).zip(grads) {
            let group = self.core.tensors[id.0].param_group;
            interp::run(
                &self.core.plan,
                &scalars[group],
                &mut self.tensors[id.0],
                grad,
            )
            .expect("checked by bind");
        }
        Ok(())
    }
}

impl Optimizer for CpuOptimizer {
    fn core(&self) -> &Core {
        &self.core
    }

    fn core_mut(&mut self) -> &mut Core {
        &mut self.core
    }

    fn with_tensors<T>(&self, f: impl FnOnce(&[&HostTensor]) -> T) -> T {
        let refs: Vec<&HostTensor> = self.tensors.iter().collect();
        f(&refs)
    }

    fn store_tensors(&mut self, tensors: CheckedTensors) {
        self.tensors = tensors.into_vec();
    }
}
