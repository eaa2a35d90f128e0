//! [`CandleOptimizer`]: candle's optimizer interface over a flashopt optimizer, written
//! once for every [`Placement`] of its state: [`FlashOptimizer`] on the host (the CPU
//! reference), `CudaFlashOptimizer` on candle's CUDA device (feature `cuda`).

use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use flashopt_runtime::{CpuOptimizer, Optimizer, StepOutcome, TensorId};

use crate::{CandleError, Config};

/// Where an adapter's optimizer state lives and steps.
pub trait Placement: Sized {
    /// The flashopt optimizer holding the state.
    type Inner: Optimizer;

    /// The state of `vars` (registered in `cpu`, in order, with every setting of the
    /// `Config`) placed here; a variable that cannot be is an error naming it.
    fn place(cpu: CpuOptimizer, vars: &[Var]) -> Result<Self, CandleError>;

    fn inner(&self) -> &Self::Inner;

    fn inner_mut(&mut self) -> &mut Self::Inner;

    /// One step from `vars`' gradients in `grads`: every gradient read and checked
    /// before anything changes; a variable without one steps with zeros.
    fn step(&mut self, vars: &[Var], grads: &GradStore) -> Result<StepOutcome, CandleError>;

    /// Set every variable to the optimizer's narrow parameters (all made before any is
    /// set).
    fn write_back(&self, vars: &[Var]) -> Result<(), CandleError>;
}

/// A flashopt optimizer over candle variables (see the crate's documentation), its
/// state placed by `P`.
#[derive(Debug)]
pub struct CandleOptimizer<P> {
    placed: P,
    vars: Vec<Var>,
    last: Option<StepOutcome>,
    /// A learning rate `set_learning_rate` could not apply (candle's interface has no
    /// error there): the next step returns the error instead of stepping.
    refused: Option<CandleError>,
}

/// The state on the host, stepped by flashopt's CPU reference.
pub type FlashOptimizer = CandleOptimizer<Host>;

impl<P: Placement> CandleOptimizer<P> {
    /// Take over named variables (names key checkpoints and error messages). Their
    /// values become the optimizer's master weights, and each variable is set to the
    /// optimizer's narrow parameter (bf16-rounded for a bf16 format), the value the
    /// model computes with from now on. Variables of integer types are left out, as
    /// candle's own optimizers do.
    pub fn from_named(
        vars: impl IntoIterator<Item = (String, Var)>,
        config: Config,
    ) -> Result<Self, CandleError> {
        let (cpu, vars) = take_over(vars, config)?;
        let placed = P::place(cpu, &vars)?;
        placed.write_back(&vars)?;
        Ok(CandleOptimizer {
            placed,
            vars,
            last: None,
            refused: None,
        })
    }

    /// Every variable of `varmap`, named by its path in the map, in name order (so a
    /// checkpoint made by one process loads in the next: `VarMap::all_vars` comes in
    /// hash order, and `Optimizer::new` names variables by position).
    pub fn from_varmap(varmap: &VarMap, config: Config) -> Result<Self, CandleError> {
        Self::from_named(vars_by_name(varmap), config)
    }

    /// One step, returning whether it was applied. Every gradient is read and checked
    /// before anything changes; a variable without a gradient (the loss did not reach
    /// it) steps with a zero gradient, as the fused GPU step does for the whole model.
    /// Gradients are rounded to the format's gradient dtype (to nearest, ties to even).
    /// A step whose gradients hold NaN or infinity changes nothing and returns
    /// [`StepOutcome::Skipped`] naming the first such value.
    pub fn try_step(&mut self, grads: &GradStore) -> Result<StepOutcome, CandleError> {
        if let Some(e) = self.refused.take() {
            return Err(e);
        }
        let outcome = self.placed.step(&self.vars, grads)?;
        if outcome.applied() {
            self.placed.write_back(&self.vars)?;
        }
        self.last = Some(outcome.clone());
        Ok(outcome)
    }

    /// The outcome of the last step (`None` before the first).
    pub fn last_outcome(&self) -> Option<&StepOutcome> {
        self.last.as_ref()
    }

    /// The variables, in registration order (`TensorId(i)` is `vars()[i]`).
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The flashopt optimizer underneath: checkpoints (`save`), clipping, numerics
    /// checks, per-group hyper-parameters.
    pub fn optimizer(&self) -> &P::Inner {
        self.placed.inner()
    }

    /// See [`Self::optimizer`]. Parameters changed through it reach the variables at
    /// the next applied step, or at once through [`Self::load`].
    pub fn optimizer_mut(&mut self) -> &mut P::Inner {
        self.placed.inner_mut()
    }

    /// Restore a checkpoint written by `optimizer().save(..)` and set the variables
    /// to its parameters. A file that does not fit changes nothing.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<(), CandleError> {
        self.placed.inner_mut().load(path)?;
        self.placed.write_back(&self.vars)
    }
}

impl<P: Placement> candle_nn::Optimizer for CandleOptimizer<P> {
    type Config = Config;

    /// Variables named `var0`, `var1`, ... by position; prefer `from_varmap` for
    /// checkpoints.
    fn new(vars: Vec<Var>, config: Config) -> candle_core::Result<Self> {
        let named = vars
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("var{i}"), v));
        Ok(Self::from_named(named, config)?)
    }

    /// `try_step`; a skipped step is not an error here (see `last_outcome`).
    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.try_step(grads)?;
        Ok(())
    }

    /// The definition's learning rate (of parameter group 0); NaN for a definition
    /// that names none.
    fn learning_rate(&self) -> f64 {
        self.placed.inner().learning_rate(0).unwrap_or(f64::NAN)
    }

    /// Out-of-range values (negative, NaN) are refused without a change, and the next
    /// step returns the error: candle's interface has no error here.
    fn set_learning_rate(&mut self, lr: f64) {
        if let Err(source) = self.placed.inner_mut().set_learning_rate(lr) {
            self.refused = Some(CandleError::LearningRate { lr, source });
        }
    }
}

/// The state on the host: flashopt's CPU reference, the variables on any device.
#[derive(Debug)]
pub struct Host {
    cpu: CpuOptimizer,
}

impl Placement for Host {
    type Inner = CpuOptimizer;

    fn place(cpu: CpuOptimizer, _: &[Var]) -> Result<Self, CandleError> {
        Ok(Host { cpu })
    }

    fn inner(&self) -> &CpuOptimizer {
        &self.cpu
    }

    fn inner_mut(&mut self) -> &mut CpuOptimizer {
        &mut self.cpu
    }

    fn step(&mut self, vars: &[Var], grads: &GradStore) -> Result<StepOutcome, CandleError> {
        let mut host = Vec::with_capacity(vars.len());
        for (i, var) in vars.iter().enumerate() {
            let name = &self.cpu.tensor_info(TensorId(i))?.name;
            host.push(match grad_of(grads, var, name)? {
                None => None,
                Some(g) => Some(to_f32(g).map_err(in_tensor(name))?),
            });
        }
        Ok(self.cpu.step_rounding(&host)?)
    }

    /// Converted to each variable's dtype and device.
    fn write_back(&self, vars: &[Var]) -> Result<(), CandleError> {
        let mut made = Vec::with_capacity(vars.len());
        for (i, var) in vars.iter().enumerate() {
            let id = TensorId(i);
            let name = &self.cpu.tensor_info(id)?.name;
            let t = Tensor::from_vec(self.cpu.param(id)?, var.shape(), &Device::Cpu)
                .and_then(|t| t.to_dtype(var.dtype()))
                .and_then(|t| t.to_device(var.device()))
                .map_err(in_tensor(name))?;
            made.push(t);
        }
        for (i, (var, t)) in vars.iter().zip(&made).enumerate() {
            var.set(t)
                .map_err(in_tensor(&self.cpu.tensor_info(TensorId(i))?.name))?;
        }
        Ok(())
    }
}

/// The float variables of `vars` (integer ones are left out, as candle's optimizers
/// do), each contiguous, registered with their values in `config`'s empty optimizer,
/// in order.
pub(crate) fn take_over(
    vars: impl IntoIterator<Item = (String, Var)>,
    config: Config,
) -> Result<(CpuOptimizer, Vec<Var>), CandleError> {
    let mut cpu = config.empty;
    let mut kept = Vec::new();
    for (name, var) in vars {
        if !var.dtype().is_float() {
            continue;
        }
        let values = to_f32(var.as_tensor()).map_err(in_tensor(&name))?;
        if !var.as_tensor().is_contiguous() {
            return Err(CandleError::NotContiguous { name });
        }
        cpu.add_shaped(&name, var.dims(), &values)?;
        kept.push(var);
    }
    Ok((cpu, kept))
}

/// `var`'s gradient in `grads`, if the loss reached it; a gradient of another shape
/// is an error naming the variable.
pub(crate) fn grad_of<'a>(
    grads: &'a GradStore,
    var: &Var,
    name: &str,
) -> Result<Option<&'a Tensor>, CandleError> {
    match grads.get(var.as_tensor()) {
        Some(g) if g.dims() != var.dims() => Err(CandleError::GradShape {
            name: name.to_string(),
            expected: var.dims().to_vec(),
            found: g.dims().to_vec(),
        }),
        g => Ok(g),
    }
}

/// A VarMap's variables with their paths, in name order: the variables and the order
/// `from_varmap` takes (`TensorId(i)` is the `i`-th), for building a reference beside
/// the adapter.
pub fn vars_by_name(varmap: &VarMap) -> Vec<(String, Var)> {
    let mut named: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .expect("a VarMap's lock is poisoned only by a panic inside candle")
        .iter()
        .map(|(name, var)| (name.clone(), var.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

pub(crate) fn to_f32(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
}

pub(crate) fn in_tensor(name: &str) -> impl FnOnce(candle_core::Error) -> CandleError + '_ {
    move |source| CandleError::Candle {
        name: name.to_string(),
        source,
    }
}
