//! What the CPU and GPU optimizers share: the plan, hyper-parameters per parameter
//! group, the step counter, clipping, the tensor list ([`Core`]), and everything built
//! on those alone ([`Optimizer`]'s provided methods: hyper-parameters and the learning
//! rate, clipping, the numerics check, checkpoints). A back end supplies its storage:
//! where its tensors' parts live and how to read and replace them.

use std::path::Path;
use std::sync::Arc;

use flashopt_ir::def::Value;
use flashopt_ir::interp::{self, HostTensor};
use flashopt_ir::layout::Shape;
use flashopt_ir::{HyperValues, Plan};

use crate::checkpoint::{self, CheckpointError, Entry, Expected};
use crate::clip;
use crate::error::RuntimeError;
use crate::health::{self, StateHealth};
use crate::numerics::{self, NumericsWarning};

/// A tensor registered with an optimizer, by registration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorId(pub usize);

/// Initial master weights must be finite: a NaN or infinity would never leave the
/// optimizer's state (every step reads it), so it is refused when the tensor is
/// registered, naming the first one.
pub fn check_initial_values(name: &str, values: &[f32]) -> Result<(), RuntimeError> {
    let mut bad = values.iter().enumerate().filter(|(_, v)| !v.is_finite());
    match bad.next() {
        None => Ok(()),
        Some((index, &value)) => Err(RuntimeError::NonFiniteInitial {
            name: name.to_string(),
            index,
            value,
            count: 1 + bad.count(),
        }),
    }
}

/// Tensors checked against an optimizer's plan and registered tensors. Only
/// [`Optimizer::replace_tensors`] makes one, so a back end storing them relies on the
/// check (the GPU's kernels write every registered element without bounds checks).
pub struct CheckedTensors(Vec<HostTensor>);

impl CheckedTensors {
    pub fn as_slice(&self) -> &[HostTensor] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<HostTensor> {
        self.0
    }
}

/// A registered tensor: its name, parameter group and length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub param_group: usize,
    pub len: usize,
    /// Elements per row: row and column scopes see the tensor as a row-major matrix
    /// ([`Shape`]); `len` for a vector.
    pub row_len: usize,
}

impl TensorInfo {
    pub fn new(name: impl Into<String>, param_group: usize, shape: impl Into<Shape>) -> TensorInfo {
        let shape = shape.into();
        TensorInfo {
            name: name.into(),
            param_group,
            len: shape.len,
            row_len: shape.row_len,
        }
    }

    pub fn shape(&self) -> Shape {
        Shape {
            len: self.len,
            row_len: self.row_len,
        }
    }
}

/// The state every optimizer keeps besides its tensors' storage.
#[derive(Clone, Debug)]
pub struct Core {
    pub(crate) plan: Arc<Plan>,
    /// One set of hyper-parameter values per parameter group.
    pub(crate) hyper: Vec<HyperValues>,
    pub(crate) steps_taken: u64,
    pub(crate) max_grad_norm: Option<f64>,
    pub(crate) last_grad_norm: Option<f64>,
    pub(crate) tensors: Vec<TensorInfo>,
}

impl Core {
    /// A core for `plan` with one set of values per parameter group, each checked.
    pub fn new(plan: Plan, hyper: Vec<HyperValues>) -> Result<Core, RuntimeError> {
        for values in &hyper {
            values.check_for(&plan.hyper_params)?;
        }
        Ok(Core {
            plan: Arc::new(plan),
            hyper,
            steps_taken: 0,
            max_grad_norm: None,
            last_grad_norm: None,
            tensors: Vec::new(),
        })
    }

    /// The plan every step runs (it never changes).
    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// One set of hyper-parameter values per parameter group.
    pub fn hyper(&self) -> &[HyperValues] {
        &self.hyper
    }

    pub fn steps_taken(&self) -> u64 {
        self.steps_taken
    }

    /// The registered tensors, in registration order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Continue from a checkpoint's hyper-parameters and step count (checked against
    /// the plan where the checkpoint was read).
    pub fn restore(&mut self, hyper: Vec<HyperValues>, steps_taken: u64) {
        self.hyper = hyper;
        self.steps_taken = steps_taken;
    }

    /// Register a tensor; it must hold an element, its parameter group must exist
    /// and its name be new.
    pub fn add(&mut self, info: TensorInfo) -> Result<TensorId, RuntimeError> {
        if info.len == 0 {
            return Err(RuntimeError::EmptyTensor(info.name));
        }
        if self.tensors.iter().any(|t| t.name == info.name) {
            return Err(RuntimeError::DuplicateName(info.name));
        }
        if info.param_group >= self.hyper.len() || info.param_group >= 1 << 24 {
            return Err(RuntimeError::ParamGroup {
                name: info.name,
                group: info.param_group,
                groups: self.hyper.len(),
            });
        }
        self.tensors.push(info);
        Ok(TensorId(self.tensors.len() - 1))
    }

    pub fn tensor(&self, id: TensorId) -> Result<&TensorInfo, RuntimeError> {
        self.tensors.get(id.0).ok_or(RuntimeError::UnknownTensor {
            id: id.0,
            tensors: self.tensors.len(),
        })
    }

    /// Each parameter group's kernel scalars for step `step`, the gradient scale set
    /// to `grad_scale`.
    pub fn kernel_scalars(
        &self,
        step: u64,
        grad_scale: f32,
    ) -> Result<Vec<Vec<f32>>, RuntimeError> {
        self.hyper
            .iter()
            .map(|h| {
                let mut scalars = self
                    .plan
                    .kernel_scalars(h, step)
                    .map_err(|source| RuntimeError::HostScalars { step, source })?;
                scalars[self.plan.grad_scale()] = grad_scale;
                Ok(scalars)
            })
            .collect()
    }

    /// Change a hyper-parameter of every parameter group (checked against its range;
    /// on error nothing changes).
    pub(crate) fn set_hyper(&mut self, name: &str, value: Value) -> Result<(), RuntimeError> {
        let mut updated = self.hyper.clone();
        for h in &mut updated {
            h.set(name, value)?;
        }
        self.hyper = updated;
        Ok(())
    }

    /// The hyper-parameter the definition names as its learning rate.
    pub(crate) fn learning_rate_name(&self) -> Result<&str, RuntimeError> {
        let plan = &self.plan;
        plan.numerics
            .learning_rate
            .map(|i| plan.hyper_params[i].name.as_str())
            .ok_or_else(|| RuntimeError::NoLearningRate {
                optimizer: plan.optimizer.clone(),
            })
    }

    /// Set the learning rate of every parameter group.
    pub(crate) fn set_learning_rate(&mut self, lr: f64) -> Result<(), RuntimeError> {
        let name = self.learning_rate_name()?.to_string();
        self.set_hyper(&name, lr.into())
    }

    /// Clip later steps' global gradient norm to `max_norm` (`None`: no clipping).
    /// Only the gradient-scale scalar changes; the plan and its kernel stay.
    pub(crate) fn set_grad_clipping(&mut self, max_norm: Option<f64>) -> Result<(), RuntimeError> {
        self.max_grad_norm = max_norm.map(clip::check_max_norm).transpose()?;
        Ok(())
    }

    /// The clipping factor for a step whose gradients' squares sum to `square_sum`,
    /// recording the norm.
    pub(crate) fn clip_factor(&mut self, square_sum: f64) -> f32 {
        let norm = square_sum.sqrt();
        self.last_grad_norm = Some(norm);
        self.max_grad_norm
            .map_or(1.0, |max_norm| clip::scale(max_norm, norm))
    }

    fn expected(&self) -> Vec<Expected<'_>> {
        self.tensors
            .iter()
            .map(|t| Expected {
                name: &t.name,
                len: t.len,
                row_len: t.row_len,
                param_group: t.param_group,
            })
            .collect()
    }

    fn entries<'a>(&'a self, tensors: &[&'a HostTensor]) -> Vec<Entry<'a>> {
        self.tensors
            .iter()
            .zip(tensors)
            .map(|(t, tensor)| Entry {
                name: &t.name,
                param_group: t.param_group,
                tensor,
            })
            .collect()
    }
}

/// An optimizer over a set of named tensors: what the CPU reference
/// ([`crate::CpuOptimizer`]) and the GPU (`flashopt_cubecl::GpuOptimizer`) both do. Adapters
/// for trainers are written once against it.
pub trait Optimizer {
    fn core(&self) -> &Core;

    fn core_mut(&mut self) -> &mut Core;

    /// Every tensor's stored parts on the host, in registration order (a GPU reads
    /// them back).
    fn with_tensors<T>(&self, f: impl FnOnce(&[&HostTensor]) -> T) -> T;

    /// Store tensors [`Self::replace_tensors`] checked (a back end implements this;
    /// users call `replace_tensors`).
    fn store_tensors(&mut self, tensors: CheckedTensors);

    /// Replace every tensor's stored parts: one per registered tensor, in registration
    /// order, each of its registered length, every part in the plan's storage and of
    /// the plan's length. Everything is checked before anything changes; a mismatch
    /// is an error naming the tensor.
    fn replace_tensors(&mut self, tensors: Vec<HostTensor>) -> Result<(), RuntimeError> {
        let core = self.core();
        if tensors.len() != core.tensors.len() {
            return Err(RuntimeError::TensorCount {
                expected: core.tensors.len(),
                found: tensors.len(),
            });
        }
        for (info, t) in core.tensors.iter().zip(&tensors) {
            if t.len() != info.len {
                return Err(RuntimeError::TensorLength {
                    name: info.name.clone(),
                    expected: info.len,
                    found: t.len(),
                });
            }
            // Rows and columns change what a plan with them computes and stores.
            if t.shape() != info.shape() && core.plan.depends_on_shape() {
                return Err(RuntimeError::TensorShape {
                    name: info.name.clone(),
                    expected: info.shape(),
                    found: t.shape(),
                });
            }
        }
        // Without rows and columns a shape is a label: each tensor keeps its registered one.
        let tensors: Vec<HostTensor> = core
            .tensors
            .iter()
            .zip(tensors)
            .map(|(info, t)| HostTensor::from_parts(info.shape(), t.parts))
            .collect();
        let names = core.tensors.iter().map(|info| info.name.as_str());
        check_tensors(&core.plan, names.zip(&tensors))?;
        self.store_tensors(CheckedTensors(tensors));
        Ok(())
    }

    /// The largest `|w|` of each tensor's parameters (a GPU reads the parameters
    /// alone back, not the states).
    fn param_max_abs(&self) -> Vec<f32> {
        self.with_tensors(|tensors| {
            tensors
                .iter()
                .map(|t| numerics::max_abs(t.param()))
                .collect()
        })
    }

    /// The plan every step runs.
    fn plan(&self) -> &Plan {
        &self.core().plan
    }

    fn steps_taken(&self) -> u64 {
        self.core().steps_taken
    }

    /// Continue from a step count (state loaded from elsewhere).
    fn set_steps_taken(&mut self, steps: u64) {
        self.core_mut().steps_taken = steps;
    }

    /// The hyper-parameter values of a parameter group.
    fn hyper(&self, group: usize) -> &HyperValues {
        &self.core().hyper[group]
    }

    fn param_groups(&self) -> usize {
        self.core().hyper.len()
    }

    /// Change a hyper-parameter of every parameter group (checked against its range;
    /// on error nothing changes).
    fn set_hyper(&mut self, name: &str, value: impl Into<Value>) -> Result<(), RuntimeError> {
        self.core_mut().set_hyper(name, value.into())
    }

    /// Change a hyper-parameter of one parameter group.
    fn set_group_hyper(
        &mut self,
        group: usize,
        name: &str,
        value: impl Into<Value>,
    ) -> Result<(), RuntimeError> {
        let core = self.core_mut();
        let groups = core.hyper.len();
        let h = core
            .hyper
            .get_mut(group)
            .ok_or_else(|| RuntimeError::ParamGroup {
                name: name.to_string(),
                group,
                groups,
            })?;
        h.set(name, value)?;
        Ok(())
    }

    /// The hyper-parameter the definition names as its learning rate.
    fn learning_rate_name(&self) -> Result<&str, RuntimeError> {
        self.core().learning_rate_name()
    }

    /// Set the learning rate of every parameter group (a schedule's value).
    fn set_learning_rate(&mut self, lr: f64) -> Result<(), RuntimeError> {
        self.core_mut().set_learning_rate(lr)
    }

    /// A parameter group's learning rate; a group that does not exist is an error.
    fn learning_rate(&self, group: usize) -> Result<f64, RuntimeError> {
        let hyper = self
            .core()
            .hyper
            .get(group)
            .ok_or(RuntimeError::UnknownGroup {
                group,
                groups: self.param_groups(),
            })?;
        self.plan()
            .learning_rate(hyper)
            .ok_or_else(|| RuntimeError::NoLearningRate {
                optimizer: self.plan().optimizer.clone(),
            })
    }

    /// Clip the global gradient norm of every later step to `max_norm` (torch's
    /// `clip_grad_norm_`; see [`crate::clip`]), or stop clipping with `None`.
    fn set_grad_clipping(&mut self, max_norm: Option<f64>) -> Result<(), RuntimeError> {
        self.core_mut().set_grad_clipping(max_norm)
    }

    fn grad_clipping(&self) -> Option<f64> {
        self.core().max_grad_norm
    }

    /// The global gradient norm of the last step that measured it.
    fn last_grad_norm(&self) -> Option<f64> {
        self.core().last_grad_norm
    }

    /// How many tensors the optimizer holds (ids `0..tensor_count()`).
    fn tensor_count(&self) -> usize {
        self.core().tensors.len()
    }

    /// A tensor's registered name, parameter group and length.
    /// A registered tensor's name, parameter group and length; an id past the
    /// registered tensors (from an optimizer with more of them) is an error.
    fn tensor_info(&self, id: TensorId) -> Result<&TensorInfo, RuntimeError> {
        self.core().tensor(id)
    }

    /// flashoptim's `check_numerics`: the tensors whose largest weight a step of
    /// `lr * min_step` cannot move at their storage precision, with the minimum step
    /// the definition declares (`#[flashopt(min_step = ..)]`).
    fn check_numerics(&self) -> Result<Vec<NumericsWarning>, RuntimeError> {
        let plan = self.plan();
        let min_step =
            plan.numerics
                .min_step_relative_to_lr
                .ok_or_else(|| RuntimeError::NoMinStep {
                    optimizer: plan.optimizer.clone(),
                })?;
        self.check_numerics_with(min_step)
    }

    /// [`Self::check_numerics`] with a given minimum step relative to the learning rate.
    fn check_numerics_with(&self, min_step: f64) -> Result<Vec<NumericsWarning>, RuntimeError> {
        let lrs: Vec<f64> = (0..self.param_groups())
            .map(|g| self.learning_rate(g))
            .collect::<Result<_, _>>()?;
        let core = self.core();
        let format = (core.plan.config.param, numerics::master_bits(&core.plan));
        Ok(core
            .tensors
            .iter()
            .zip(self.param_max_abs())
            .filter_map(|(t, max_abs)| {
                numerics::check_tensor(&t.name, format, lrs[t.param_group], min_step, max_abs)
            })
            .collect())
    }

    /// The tensors with elements whose second moment decodes to 0 under a non-zero
    /// momentum (8-bit states; [`health`]), where Adam's step is
    /// `lr * m_hat / eps`: one pass over the stored codes (on a GPU optimizer, after
    /// reading them back), for a trainer to log every few steps. Empty when no
    /// element is in that state or the plan has no such pair of states.
    fn state_health(&self) -> Vec<StateHealth> {
        let core = self.core();
        self.with_tensors(|tensors| {
            core.tensors
                .iter()
                .zip(tensors)
                .filter_map(|(t, &tensor)| health::tensor_health(&core.plan, &t.name, tensor))
                .filter(|h| h.zero_denominators > 0)
                .collect()
        })
    }

    /// Save the compressed state, step counter and every parameter group's
    /// hyper-parameters (safetensors, written atomically; [`checkpoint`] has the
    /// layout). Returns the file size. CPU and GPU write the same file for the same
    /// state.
    fn save(&self, path: impl AsRef<Path>) -> Result<u64, CheckpointError> {
        let core = self.core();
        self.with_tensors(|tensors| {
            checkpoint::save(
                path.as_ref(),
                &core.plan,
                &core.hyper,
                core.steps_taken,
                &core.entries(tensors),
            )
        })
    }

    /// Save f32 master weights and decoded f32 states (4 bytes per value).
    fn export_f32(&self, path: impl AsRef<Path>) -> Result<u64, CheckpointError> {
        let core = self.core();
        self.with_tensors(|tensors| {
            checkpoint::export_f32(
                path.as_ref(),
                &core.plan,
                &core.hyper,
                core.steps_taken,
                &core.entries(tensors),
            )
        })
    }

    /// Restore a checkpoint of this optimizer (same tensors in the same order and
    /// parameter groups). Everything is checked first: on error nothing changes.
    fn load(&mut self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let core = self.core();
        let restored = checkpoint::load(path.as_ref(), &core.plan, &core.hyper, &core.expected())?;
        self.replace_tensors(restored.tensors)
            .map_err(checkpoint::unfit(path.as_ref()))?;
        let core = self.core_mut();
        core.hyper = restored.hyper;
        core.steps_taken = restored.steps_taken;
        Ok(())
    }

    /// Replace every tensor's master weights by f32 values (`name::master` keys, as
    /// [`Self::export_f32`] writes them): the parameter parts are encoded again from
    /// them; states and the step counter stay. On error nothing changes.
    fn import_master_f32(&mut self, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
        let masters = checkpoint::read_master_f32(path.as_ref(), &self.core().expected())?;
        let plan = self.core().plan.clone();
        let tensors = self.with_tensors(|tensors| {
            tensors
                .iter()
                .zip(masters)
                .map(|(&t, values)| {
                    let mut t = t.clone();
                    t.set_master(&plan, &values);
                    t
                })
                .collect()
        });
        self.replace_tensors(tensors)
            .map_err(checkpoint::unfit(path.as_ref()))
    }
}

/// Check tensors against a plan before anything keeps them.
pub fn check_tensors<'a>(
    plan: &Plan,
    tensors: impl IntoIterator<Item = (&'a str, &'a HostTensor)>,
) -> Result<(), RuntimeError> {
    for (name, t) in tensors {
        interp::check_tensor(plan, t).map_err(RuntimeError::in_tensor(name))?;
    }
    Ok(())
}
