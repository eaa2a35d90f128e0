//! [`BurnOptimizer`]: burn's optimizer interface over a flashopt optimizer, written once
//! for every [`Placement`] of its state: [`crate::HostOptimizer`] on the host (the CPU
//! reference, any backend), [`crate::CudaOptimizer`] and [`crate::HipOptimizer`] on the
//! device of burn's cubecl backends (feature `cuda`).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::Path;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;
use flashopt_ir::{OptimizerSpec, PlanConfig};
use flashopt_runtime::{CpuOptimizer, Optimizer, StepOutcome};

use crate::BurnError;
use crate::params::{self, ParamInfo, Replace};

/// Where an adapter's optimizer state lives: the flashopt optimizer holding it.
pub trait Placement {
    type Inner: Optimizer;

    fn inner(&self) -> &Self::Inner;

    fn inner_mut(&mut self) -> &mut Self::Inner;

    /// After a checkpoint was loaded into the inner optimizer (which may have replaced
    /// its buffers).
    fn loaded(&mut self) -> Result<(), BurnError> {
        Ok(())
    }
}

/// How a [`Placement`] takes over, steps and hands back the parameters of a module on
/// backend `B`.
pub trait BackendPlacement<B: AutodiffBackend>: Placement + Sized {
    /// A gradient as the placement keeps it between taking it from burn and the step.
    type Grad;

    /// The state of `params` (registered in `cpu`, in order, with every setting it was
    /// configured with) placed here, for a module on `device`.
    fn place(
        cpu: CpuOptimizer,
        params: &[ParamInfo],
        device: &B::Device,
    ) -> Result<Self, BurnError>;

    /// Parameter `index`'s gradient, flattened, as this placement keeps it (burn's
    /// tensor is dropped when this returns, so each is freed as soon as it is taken).
    fn take_grad(&self, index: usize, grad: Tensor<B::InnerBackend, 1>) -> Self::Grad;

    /// One step from every parameter's gradient, in visiting order (`None`: the loss
    /// did not reach it; it steps with zeros).
    fn step(&mut self, grads: Vec<Option<Self::Grad>>) -> Result<StepOutcome, BurnError>;

    /// Parameter `index` as the module's tensor, in `shape`, on `device`.
    fn param(&self, index: usize, shape: Vec<usize>, device: &B::Device) -> FloatTensor<B>;
}

/// A flashopt optimizer over a burn module's float parameters (see the crate's
/// documentation), its state placed by `P` ([`Placement`]). Used like burn's optimizers:
/// `(module, outcome) = opt.step(lr, module, grads)?`.
#[derive(Debug)]
pub struct BurnOptimizer<P> {
    placed: P,
    params: Vec<ParamInfo>,
    index: HashMap<ParamId, usize>,
}

impl<P> BurnOptimizer<P> {
    /// Take over `module`'s float parameters with `spec` stored as `config` says
    /// (`PlanConfig::bf16(MasterMode::Int8)` is FlashOptim's 24-bit master weight):
    /// their values become the master weights, and the returned module holds the
    /// optimizer's narrow parameters (bf16 for a bf16 format).
    pub fn new<B, M, S>(spec: &S, config: PlanConfig, module: M) -> Result<(Self, M), BurnError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        S: OptimizerSpec,
        P: BackendPlacement<B>,
    {
        Self::from_optimizer(CpuOptimizer::for_spec(spec, config)?, module)
    }

    /// As [`Self::new`], from an optimizer set up by hand and holding no tensors yet:
    /// everything it was given (hyper-parameters, gradient clipping, the step count)
    /// comes along to the placement.
    pub fn from_optimizer<B, M>(empty: CpuOptimizer, module: M) -> Result<(Self, M), BurnError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        P: BackendPlacement<B>,
    {
        Self::from_optimizer_selecting(empty, module, |_| true)
    }

    /// As [`Self::from_optimizer`], over only the parameters `select` picks: the
    /// others are left to the module's other optimizer (see
    /// [`crate::SplitOptimizer`]), and this one's steps neither read their gradients
    /// nor touch them.
    pub fn from_optimizer_selecting<B, M>(
        empty: CpuOptimizer,
        module: M,
        select: impl Fn(&ParamInfo) -> bool,
    ) -> Result<(Self, M), BurnError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        P: BackendPlacement<B>,
    {
        if empty.tensor_count() != 0 {
            return Err(BurnError::OptimizerNotEmpty {
                tensors: empty.tensor_count(),
            });
        }
        let collected = params::collect_where::<B, M>(&module, select);
        let device = module
            .devices()
            .into_iter()
            .next()
            .ok_or(BurnError::NoParameters)?;
        if collected.is_empty() {
            return Err(BurnError::NoParameters);
        }
        let mut cpu = empty;
        for (info, values) in &collected {
            cpu.add_shaped(&info.name, &info.shape, values)?;
        }
        let params: Vec<ParamInfo> = collected.into_iter().map(|(info, _)| info).collect();
        let placed = P::place(cpu, &params, &device)?;
        let opt = BurnOptimizer {
            placed,
            index: params::index_of(&params),
            params,
        };
        let module = opt.write_back::<B, M>(module);
        Ok((opt, module))
    }

    /// One step at learning rate `lr` (the hyper-parameter the definition names its
    /// learning rate), like burn's `Optimizer::step`. A parameter without a gradient
    /// steps with a zero gradient (the whole model steps at once; burn's optimizers
    /// skip such parameters). A step whose gradients hold NaN or infinity changes no
    /// parameter or state and returns [`StepOutcome::Skipped`]. The returned module
    /// holds the optimizer's parameters.
    pub fn step<B, M>(
        &mut self,
        lr: f64,
        module: M,
        mut grads: GradientsParams,
    ) -> Result<(M, StepOutcome), BurnError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        P: BackendPlacement<B>,
    {
        self.step_taking(lr, module, &mut grads)
    }

    /// As [`Self::step`], taking out of `grads` only this optimizer's parameters'
    /// gradients: the rest stay for another optimizer of the same module.
    pub fn step_taking<B, M>(
        &mut self,
        lr: f64,
        module: M,
        grads: &mut GradientsParams,
    ) -> Result<(M, StepOutcome), BurnError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        P: BackendPlacement<B>,
    {
        self.check_shapes(&module)?;
        self.placed.inner_mut().set_learning_rate(lr)?;
        let mut taken: Vec<Option<P::Grad>> = (0..self.params.len()).map(|_| None).collect();
        let placed = &self.placed;
        module.visit(&mut TakeGrads::<B, _> {
            grads,
            index: &self.index,
            backend: PhantomData,
            on_grad: |i: usize, g: Tensor<B::InnerBackend, 1>| {
                taken[i] = Some(placed.take_grad(i, g));
            },
        });
        let outcome = self.placed.step(taken)?;
        Ok((self.write_back::<B, M>(module), outcome))
    }

    /// The parameters, in the order burn visits them (`TensorId(i)` is the `i`-th).
    pub fn params(&self) -> &[ParamInfo] {
        &self.params
    }

    /// The flashopt optimizer underneath: checkpoints (`save`), clipping, numerics
    /// checks, hyper-parameters.
    pub fn optimizer(&self) -> &P::Inner
    where
        P: Placement,
    {
        self.placed.inner()
    }

    /// See [`Self::optimizer`]. Parameters changed through it reach the module at the
    /// next step, or at once through [`Self::load`].
    pub fn optimizer_mut(&mut self) -> &mut P::Inner
    where
        P: Placement,
    {
        self.placed.inner_mut()
    }

    /// Restore a checkpoint written by `optimizer().save(..)` and put its parameters
    /// into `module`. A file that does not fit changes nothing.
    pub fn load<B, M>(&mut self, path: impl AsRef<Path>, module: M) -> Result<M, BurnError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        P: BackendPlacement<B>,
    {
        self.placed.inner_mut().load(path)?;
        self.placed.loaded()?;
        Ok(self.write_back::<B, M>(module))
    }

    pub(crate) fn placed_mut(&mut self) -> &mut P {
        &mut self.placed
    }

    /// The module with every parameter the optimizer took set to its parameter.
    pub(crate) fn write_back<B, M>(&self, module: M) -> M
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        P: BackendPlacement<B>,
    {
        let mut make =
            |i: usize, shape: Vec<usize>, device: &B::Device| self.placed.param(i, shape, device);
        module.map(&mut Replace {
            index: &self.index,
            make: &mut make,
        })
    }

    /// Every parameter of `module` the optimizer took still has the shape it took it
    /// with (a step writes each back in that shape).
    fn check_shapes<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        module: &M,
    ) -> Result<(), BurnError> {
        for now in params::describe(module) {
            let Some(&i) = self.index.get(&now.id) else {
                continue;
            };
            if self.params[i].shape != now.shape {
                return Err(BurnError::ShapeChanged {
                    name: self.params[i].name.clone(),
                    expected: self.params[i].shape.clone(),
                    found: now.shape,
                });
            }
        }
        Ok(())
    }
}

/// Takes each visited parameter's gradient out of `grads` (so it is freed as soon as
/// `on_grad` is done with it), flattened, with the parameter's index.
struct TakeGrads<'a, B: AutodiffBackend, F> {
    grads: &'a mut GradientsParams,
    index: &'a HashMap<ParamId, usize>,
    on_grad: F,
    backend: PhantomData<B>,
}

impl<B, F> ModuleVisitor<B> for TakeGrads<'_, B, F>
where
    B: AutodiffBackend,
    F: FnMut(usize, Tensor<B::InnerBackend, 1>),
{
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(&i) = self.index.get(&param.id) else {
            return;
        };
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            (self.on_grad)(i, grad.flatten(0, D - 1));
        }
    }
}
