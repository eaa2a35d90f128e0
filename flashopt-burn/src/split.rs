//! [`SplitOptimizer`]: one module stepped by two flashopt optimizers, each over its own
//! parameters. Muon is the reason: it is made for the matrices of hidden layers, and
//! leaves vectors, embeddings and the output head to AdamW ([`is_hidden_matrix`]).

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use flashopt_ir::{OptimizerSpec, PlanConfig};
use flashopt_runtime::{CpuOptimizer, StepOutcome};

use crate::BurnError;
use crate::optimizer::{BackendPlacement, BurnOptimizer};
use crate::params::ParamInfo;

/// Whether Muon's authors would step this parameter with Muon: a matrix (two
/// dimensions) whose module path names neither an embedding (`embed`) nor the output
/// head (`head`). Everything else (biases, norms' scales, embeddings, the head) is
/// AdamW's.
pub fn is_hidden_matrix(param: &ParamInfo) -> bool {
    let name = param.name.to_lowercase();
    param.shape.len() == 2 && !name.contains("embed") && !name.contains("head")
}

/// A burn module stepped by two flashopt optimizers: `chosen` over the parameters a
/// predicate picks, `rest` over all the others, each with its own rule, storage,
/// learning rate and state. Both take their parameters over as [`BurnOptimizer`]
/// does (on the host or on burn's device, as `P` says).
///
/// Each half scans its own gradients: a NaN or infinity skips that half's step
/// ([`StepOutcome::Skipped`]) and not the other's; gradient clipping, if set on
/// either, clips that half's gradients by that half's norm.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::module::{Module, Param};
/// use burn::optim::GradientsParams;
/// use burn::tensor::{Distribution, Tensor, backend::Backend};
/// use flashopt::optimizers::{AdamW, Muon};
/// use flashopt::{MasterMode, PlanConfig};
/// use flashopt_burn::{Host, SplitOptimizer, is_hidden_matrix};
///
/// #[derive(Module, Debug)]
/// struct Layer<B: Backend> {
///     weight: Param<Tensor<B, 2>>, // [in, out], as burn's Linear keeps it
///     bias: Param<Tensor<B, 1>>,
/// }
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let layer = Layer::<B> {
///     weight: Param::from_tensor(Tensor::random([16, 8], Distribution::Normal(0.0, 0.2), &device)),
///     bias: Param::from_tensor(Tensor::zeros([8], &device)),
/// };
/// let x = Tensor::<B, 2>::random([32, 16], Distribution::Normal(0.0, 1.0), &device);
/// let target = x.clone().narrow(1, 0, 8) * 0.5 + 0.25;
/// let muon = Muon { lr: 0.02, rows_are_inputs: true, ..Muon::default() };
/// let adamw = AdamW { lr: 1e-2, ..AdamW::default() };
/// let format = PlanConfig::bf16(MasterMode::Int8);
/// let (mut opt, mut layer) = SplitOptimizer::<Host>::new(
///     (&muon, format),
///     (&adamw, format),
///     layer,
///     is_hidden_matrix,
/// )
/// .unwrap();
/// assert_eq!(opt.chosen().params()[0].name, "weight");
/// let loss_of = |l: &Layer<B>| {
///     let y = x.clone().matmul(l.weight.val()) + l.bias.val().unsqueeze::<2>();
///     (y - target.clone()).powi_scalar(2).mean()
/// };
/// let first: f32 = loss_of(&layer).into_scalar();
/// for _ in 0..30 {
///     let grads = GradientsParams::from_grads(loss_of(&layer).backward(), &layer);
///     let (next, [matrices, others]) = opt.step(0.02, 1e-2, layer, grads).unwrap();
///     assert!(matrices.applied() && others.applied());
///     layer = next;
/// }
/// let last: f32 = loss_of(&layer).into_scalar();
/// assert!(last < 0.5 * first, "loss {first} -> {last}");
/// ```
#[derive(Debug)]
pub struct SplitOptimizer<P> {
    chosen: BurnOptimizer<P>,
    rest: BurnOptimizer<P>,
}

impl<P> SplitOptimizer<P> {
    /// `chosen_rule` over the parameters `choose` picks, `rest_rule` over the others,
    /// each stored as its format says. Either side picking no parameter is
    /// [`BurnError::NoParameters`].
    pub fn new<B, M, S, T>(
        chosen_rule: (&S, PlanConfig),
        rest_rule: (&T, PlanConfig),
        module: M,
        choose: impl Fn(&ParamInfo) -> bool,
    ) -> Result<(Self, M), BurnError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        S: OptimizerSpec,
        T: OptimizerSpec,
        P: BackendPlacement<B>,
    {
        Self::from_optimizers(
            CpuOptimizer::for_spec(chosen_rule.0, chosen_rule.1)?,
            CpuOptimizer::for_spec(rest_rule.0, rest_rule.1)?,
            module,
            choose,
        )
    }

    /// As [`Self::new`], from two optimizers set up by hand and holding no tensors
    /// (see [`BurnOptimizer::from_optimizer`]).
    pub fn from_optimizers<B, M>(
        chosen: CpuOptimizer,
        rest: CpuOptimizer,
        module: M,
        choose: impl Fn(&ParamInfo) -> bool,
    ) -> Result<(Self, M), BurnError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        P: BackendPlacement<B>,
    {
        let (chosen, module) = BurnOptimizer::from_optimizer_selecting(chosen, module, &choose)?;
        let (rest, module) = BurnOptimizer::from_optimizer_selecting(rest, module, |p| !choose(p))?;
        let split = SplitOptimizer { chosen, rest };
        Ok((split, module))
    }

    /// One step of both: the chosen parameters at `chosen_lr`, the others at
    /// `rest_lr`. Returns the module and each half's outcome, `[chosen, rest]`.
    pub fn step<B, M>(
        &mut self,
        chosen_lr: f64,
        rest_lr: f64,
        module: M,
        mut grads: GradientsParams,
    ) -> Result<(M, [StepOutcome; 2]), BurnError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        P: BackendPlacement<B>,
    {
        let (module, first) = self.chosen.step_taking(chosen_lr, module, &mut grads)?;
        let (module, second) = self.rest.step_taking(rest_lr, module, &mut grads)?;
        Ok((module, [first, second]))
    }

    /// The optimizer of the chosen parameters (its checkpoints, settings, state).
    pub fn chosen(&self) -> &BurnOptimizer<P> {
        &self.chosen
    }

    /// The optimizer of the other parameters.
    pub fn rest(&self) -> &BurnOptimizer<P> {
        &self.rest
    }

    /// See [`Self::chosen`]; [`BurnOptimizer::load`] restores its half of a module.
    pub fn chosen_mut(&mut self) -> &mut BurnOptimizer<P> {
        &mut self.chosen
    }

    /// See [`Self::rest`].
    pub fn rest_mut(&mut self) -> &mut BurnOptimizer<P> {
        &mut self.rest
    }
}
