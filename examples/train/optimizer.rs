//! What a run steps with: the rule (`--optimizer`) and, from the run's label, where
//! it computes and how flashopt stores the parameters and states.

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use flashopt::optimizers::{
    Adafactor, AdafactorMomentum, AdamMini, AdamW, CautiousAdamW, Lamb, Lion, Muon, Sgd,
};
use flashopt::{F32States, MasterMode, NearestRounding, Optimizer as _, OptimizerSpec, PlanConfig};
use flashopt_burn::{BackendPlacement, BurnError, BurnOptimizer, ParamInfo, SplitOptimizer};

/// The update rule of every flashopt run in a process (`--optimizer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Rule {
    #[value(name = "adamw")]
    AdamW,
    Lion,
    Sgd,
    Lamb,
    #[value(name = "cautious_adamw")]
    CautiousAdamW,
    Adafactor,
    #[value(name = "adafactor_momentum")]
    AdafactorMomentum,
    #[value(name = "adam_mini")]
    AdamMini,
    /// Muon over the blocks' matrices, AdamW over the rest.
    Muon,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::AdamW => "adamw",
            Rule::Lion => "lion",
            Rule::Sgd => "sgd",
            Rule::Lamb => "lamb",
            Rule::CautiousAdamW => "cautious_adamw",
            Rule::Adafactor => "adafactor",
            Rule::AdafactorMomentum => "adafactor_momentum",
            Rule::AdamMini => "adam_mini",
            Rule::Muon => "muon",
        }
    }

    /// The peak learning rate, from the configuration's AdamW peak. Lion's update is
    /// a sign (every element moves by `lr`), so it takes a tenth, with ten times the
    /// weight decay to keep `lr * weight_decay` (the Lion paper's advice). SGD's step
    /// is the gradient itself, four orders of magnitude under Adam's normalized one
    /// on these models, so it takes 100 times AdamW's rate (at 300 times, SGD in
    /// fp32 spiked after the warm-up on two seeds of four on the 353M GPT; at 100
    /// times on none: docs/TRAINING.md). LAMB moves each tensor by `lr` times its
    /// norm (the trust ratio), an element by about `lr` times the tensor's RMS,
    /// well under Adam's `lr`: it takes 10 times AdamW's rate. Adafactor's relative
    /// step moves an element by about `lr` times its tensor's RMS too: 10 times as
    /// well. Cautious AdamW and Adam-mini take AdamW's. Muon's runs take AdamW's for
    /// the parameters AdamW steps, [`MUON_LR_RATIO`] times it for the matrices.
    pub fn peak_lr(self, adamw_peak: f64) -> f64 {
        match self {
            Rule::AdamW | Rule::CautiousAdamW | Rule::AdamMini | Rule::Muon => adamw_peak,
            Rule::Lamb | Rule::Adafactor | Rule::AdafactorMomentum => adamw_peak * 10.0,
            Rule::Lion => adamw_peak / 10.0,
            Rule::Sgd => adamw_peak * 100.0,
        }
    }

    /// The hyper-parameters, in words, for the summary's first line.
    pub fn describe(self) -> &'static str {
        match self {
            Rule::AdamW => "AdamW, betas 0.9 / 0.99, eps 1e-8, weight decay 0.1",
            Rule::Lion => "Lion, betas 0.9 / 0.99, weight decay 1.0",
            Rule::Sgd => "SGD, momentum 0.9, no weight decay",
            Rule::Lamb => "LAMB, betas 0.9 / 0.99, eps 1e-6, weight decay 0.1",
            Rule::CautiousAdamW => "Cautious AdamW, betas 0.9 / 0.99, eps 1e-8, weight decay 0.1",
            Rule::Adafactor => {
                "Adafactor, beta2_decay -0.8, eps (f32 epsilon, 1e-3), d 1, weight decay 0.01"
            }
            Rule::AdafactorMomentum => {
                "Adafactor with momentum, b1 0.9, beta2_decay -0.8, eps (f32 epsilon, 1e-3), d 1, weight decay 0.01"
            }
            Rule::AdamMini => "Adam-mini, betas 0.9 / 0.99, eps 1e-8, weight decay 0.1",
            Rule::Muon => {
                "Muon (momentum 0.95, Nesterov, weight decay 0.005) at 20 times the peak rate over the blocks' matrices, AdamW (betas 0.9 / 0.99, eps 1e-8, weight decay 0.1) over the rest"
            }
        }
    }

    pub fn adamw(peak_lr: f64, bound_momentum: bool) -> AdamW {
        AdamW {
            lr: peak_lr,
            b1: 0.9,
            b2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
            bound_momentum,
            ..AdamW::default()
        }
    }

    pub fn lion(peak_lr: f64) -> Lion {
        Lion {
            lr: peak_lr,
            b1: 0.9,
            b2: 0.99,
            weight_decay: 1.0,
            ..Lion::default()
        }
    }

    pub fn lamb(peak_lr: f64) -> Lamb {
        Lamb {
            lr: peak_lr,
            b1: 0.9,
            b2: 0.99,
            weight_decay: 0.1,
            ..Lamb::default()
        }
    }

    pub fn cautious_adamw(peak_lr: f64) -> CautiousAdamW {
        CautiousAdamW {
            lr: peak_lr,
            b1: 0.9,
            b2: 0.99,
            weight_decay: 0.1,
            ..CautiousAdamW::default()
        }
    }

    /// Weight decay 0.01: torch's Adafactor scales it by `lr`, ten times AdamW's
    /// here, so that the decay per step is AdamW's.
    pub fn adafactor(peak_lr: f64) -> Adafactor {
        Adafactor {
            lr: peak_lr,
            weight_decay: 0.01,
            ..Adafactor::default()
        }
    }

    pub fn adafactor_momentum(peak_lr: f64) -> AdafactorMomentum {
        AdafactorMomentum {
            lr: peak_lr,
            weight_decay: 0.01,
            ..AdafactorMomentum::default()
        }
    }

    pub fn adam_mini(peak_lr: f64) -> AdamMini {
        AdamMini {
            lr: peak_lr,
            b1: 0.9,
            b2: 0.99,
            weight_decay: 0.1,
            ..AdamMini::default()
        }
    }

    /// Weight decay 0.005 at 20 times AdamW's rate: the same decay per step as
    /// AdamW's 0.1. The weights are burn's `[in, out]`.
    pub fn muon(peak_lr: f64) -> Muon {
        Muon {
            lr: peak_lr * MUON_LR_RATIO,
            weight_decay: 0.005,
            rows_are_inputs: true,
            ..Muon::default()
        }
    }

    pub fn sgd(peak_lr: f64) -> Sgd {
        Sgd {
            lr: peak_lr,
            momentum: 0.9,
            ..Sgd::default()
        }
    }
}

/// Where a run's forward and backward passes compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compute {
    /// f32 activations (flashopt's bf16 parameters cast where used).
    F32,
    /// burn's bf16 backend: activations, parameters and gradients in bf16.
    Bf16,
}

/// How a flashopt run stores its parameters and states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// bf16 parameters, int8 corrections (24-bit master), 8-bit states: the default.
    Master24,
    /// bf16 parameters, int16 corrections (32-bit master), 8-bit states.
    Master32,
    /// bf16 parameters, int16 corrections (32-bit master), f32 states: separates what
    /// bf16 parameters and gradients do from what 8-bit states do.
    Master32F32States,
    /// f32 parameters and f32 states ([`F32States`]): the same rule in fp32, the
    /// reference the compressed runs are gated against.
    Exact,
}

impl Storage {
    pub fn config(self) -> PlanConfig {
        match self {
            Storage::Master24 => PlanConfig::bf16(MasterMode::Int8),
            Storage::Master32 | Storage::Master32F32States => PlanConfig::bf16(MasterMode::Int16),
            Storage::Exact => PlanConfig::f32_params(),
        }
    }
}

/// Who steps a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stepper {
    Flashopt {
        storage: Storage,
        /// flashoptim 0.1.4's arithmetic: AdamW without its momentum bound, Lion and
        /// SGD with their momentum codes rounded to nearest.
        flashoptim: bool,
    },
    /// burn's own AdamW (in the compute dtype).
    Burn,
}

/// A run, as its label names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunKind {
    pub compute: Compute,
    pub stepper: Stepper,
}

const fn flashopt(compute: Compute, storage: Storage, flashoptim: bool) -> RunKind {
    RunKind {
        compute,
        stepper: Stepper::Flashopt {
            storage,
            flashoptim,
        },
    }
}

/// Every run label, in the order summaries list them.
pub const RUNS: [(&str, RunKind); 9] = [
    (
        "flashopt-fp32",
        flashopt(Compute::F32, Storage::Exact, false),
    ),
    ("flashopt", flashopt(Compute::F32, Storage::Master24, false)),
    (
        "flashopt-flashoptim",
        flashopt(Compute::F32, Storage::Master24, true),
    ),
    (
        "flashopt-bf16",
        flashopt(Compute::Bf16, Storage::Master24, false),
    ),
    (
        "flashopt-bf16-32",
        flashopt(Compute::Bf16, Storage::Master32, false),
    ),
    (
        "flashopt-bf16-32-f32-states",
        flashopt(Compute::Bf16, Storage::Master32F32States, false),
    ),
    (
        "flashopt-bf16-flashoptim",
        flashopt(Compute::Bf16, Storage::Master24, true),
    ),
    (
        "burn-fp32",
        RunKind {
            compute: Compute::F32,
            stepper: Stepper::Burn,
        },
    ),
    (
        "burn-bf16",
        RunKind {
            compute: Compute::Bf16,
            stepper: Stepper::Burn,
        },
    ),
];

/// The labels of [`RUNS`].
pub fn labels() -> Vec<&'static str> {
    RUNS.iter().map(|(label, _)| *label).collect()
}

impl RunKind {
    /// The run `label` names with `rule`, or why it cannot be run.
    pub fn parse(label: &str, rule: Rule, clip: Option<f64>) -> Result<RunKind, String> {
        let Some(&(_, kind)) = RUNS.iter().find(|(l, _)| *l == label) else {
            return Err(format!("`{label}` is not one of {:?}", labels()));
        };
        match kind.stepper {
            Stepper::Burn if rule != Rule::AdamW => Err(format!(
                "`{label}` is burn's AdamW; with --optimizer {} compare with `flashopt-fp32`",
                rule.name()
            )),
            // burn clips each parameter's gradient on its own, not their global norm.
            Stepper::Burn if clip.is_some() => Err(format!(
                "`{label}` cannot clip the global gradient norm (--clip); compare with `flashopt-fp32`"
            )),
            // Each half would clip by its own norm, not the model's.
            Stepper::Flashopt { .. } if rule == Rule::Muon && clip.is_some() => Err(format!(
                "`{label}` with --optimizer muon steps two optimizers and cannot clip the global gradient norm (--clip)"
            )),
            _ => Ok(kind),
        }
    }
}

/// Muon's rate over AdamW's on the matrices: an orthogonalized step of an `n x n`
/// matrix moves each element by about `lr / sqrt(n)`, 0.05 `lr` at the small
/// configuration's width (384), where Adam moves it by about `lr`.
pub const MUON_LR_RATIO: f64 = 20.0;

/// The parameters a Muon run steps with Muon: the blocks' weight matrices (not the
/// token and position embeddings, not the head).
pub fn muon_steps(param: &ParamInfo) -> bool {
    param.shape.len() == 2 && param.name.starts_with("blocks.")
}

/// What runs with a flashopt optimizer of any type: [`with_optimizer`] calls it with
/// the run's: one rule over every parameter, or Muon's matrices and the rest.
pub trait WithOptimizer {
    type Output;
    fn run<S: OptimizerSpec>(self, spec: &S, config: PlanConfig) -> Self::Output;
    fn run_split<S: OptimizerSpec, T: OptimizerSpec>(
        self,
        matrices: &S,
        others: &T,
        config: PlanConfig,
    ) -> Self::Output;
}

/// The flashopt optimizer of a run, over the model.
pub enum RunOptimizer<P> {
    One(BurnOptimizer<P>),
    /// Muon over [`muon_steps`]'s matrices (at [`MUON_LR_RATIO`] times the schedule's
    /// rate), AdamW over the rest.
    Split(SplitOptimizer<P>),
}

impl<P> RunOptimizer<P> {
    pub fn one<B, M, S>(spec: &S, config: PlanConfig, model: M) -> Result<(Self, M), BurnError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        S: OptimizerSpec,
        P: BackendPlacement<B>,
    {
        let (opt, model) = BurnOptimizer::new(spec, config, model)?;
        Ok((RunOptimizer::One(opt), model))
    }

    pub fn split<B, M, S, T>(
        matrices: &S,
        others: &T,
        config: PlanConfig,
        model: M,
    ) -> Result<(Self, M), BurnError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        S: OptimizerSpec,
        T: OptimizerSpec,
        P: BackendPlacement<B>,
    {
        let (opt, model) =
            SplitOptimizer::new((matrices, config), (others, config), model, muon_steps)?;
        Ok((RunOptimizer::Split(opt), model))
    }

    /// Clip the global gradient norm (a single rule's runs only: `--clip` is refused
    /// for Muon's).
    pub fn set_grad_clipping(&mut self, clip: Option<f64>) -> Result<(), BurnError>
    where
        P: flashopt_burn::Placement,
    {
        if let RunOptimizer::One(opt) = self {
            opt.optimizer_mut().set_grad_clipping(clip)?;
        }
        Ok(())
    }

    /// The single optimizer the diagnostics (`--capture`, `--health-every`) read.
    pub fn probed(&self) -> Option<&BurnOptimizer<P>> {
        match self {
            RunOptimizer::One(opt) => Some(opt),
            RunOptimizer::Split(_) => None,
        }
    }

    /// The Muon half of a split run.
    pub fn muon(&self) -> Option<&BurnOptimizer<P>> {
        match self {
            RunOptimizer::One(_) => None,
            RunOptimizer::Split(split) => Some(split.chosen()),
        }
    }

    /// The optimizers, one or both halves.
    pub fn parts(&self) -> Vec<&BurnOptimizer<P>> {
        match self {
            RunOptimizer::One(opt) => vec![opt],
            RunOptimizer::Split(split) => vec![split.chosen(), split.rest()],
        }
    }

    /// One step at the schedule's `lr`; whether every part applied it.
    pub fn step<B, M>(&mut self, lr: f64, model: M, grads: GradientsParams) -> (M, bool)
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        P: BackendPlacement<B>,
    {
        match self {
            RunOptimizer::One(opt) => {
                let (m, outcome) = opt.step(lr, model, grads).expect("flashopt step");
                (m, outcome.applied())
            }
            RunOptimizer::Split(split) => {
                let (m, [a, b]) = split
                    .step(lr * MUON_LR_RATIO, lr, model, grads)
                    .expect("flashopt step");
                (m, a.applied() && b.applied())
            }
        }
    }
}

/// Calls `f` with `rule`'s optimizer (its schedule's peak `lr`) stored as `storage`;
/// `flashoptim` gives flashoptim's arithmetic (AdamW without its momentum bound, Lion
/// and SGD rounding their momentum codes to nearest instead of dithering).
pub fn with_optimizer<F: WithOptimizer>(
    rule: Rule,
    lr: f64,
    storage: Storage,
    flashoptim: bool,
    f: F,
) -> F::Output {
    fn stored<S: OptimizerSpec, F: WithOptimizer>(spec: S, storage: Storage, f: F) -> F::Output {
        match storage {
            Storage::Exact | Storage::Master32F32States => {
                f.run(&F32States(spec), storage.config())
            }
            _ => f.run(&spec, storage.config()),
        }
    }
    match (rule, flashoptim) {
        (Rule::AdamW, _) => stored(Rule::adamw(lr, !flashoptim), storage, f),
        (Rule::Lion, false) => stored(Rule::lion(lr), storage, f),
        (Rule::Lion, true) => stored(NearestRounding(Rule::lion(lr)), storage, f),
        (Rule::Sgd, false) => stored(Rule::sgd(lr), storage, f),
        (Rule::Sgd, true) => stored(NearestRounding(Rule::sgd(lr)), storage, f),
        // No flashoptim counterpart: its arithmetic is flashopt's.
        (Rule::Lamb, _) => stored(Rule::lamb(lr), storage, f),
        (Rule::CautiousAdamW, _) => stored(Rule::cautious_adamw(lr), storage, f),
        (Rule::Adafactor, _) => stored(Rule::adafactor(lr), storage, f),
        (Rule::AdafactorMomentum, _) => stored(Rule::adafactor_momentum(lr), storage, f),
        (Rule::AdamMini, _) => stored(Rule::adam_mini(lr), storage, f),
        (Rule::Muon, _) => {
            let (muon, adamw) = (Rule::muon(lr), Rule::adamw(lr, !flashoptim));
            match storage {
                Storage::Exact | Storage::Master32F32States => {
                    f.run_split(&F32States(muon), &F32States(adamw), storage.config())
                }
                _ => f.run_split(&muon, &adamw, storage.config()),
            }
        }
    }
}
