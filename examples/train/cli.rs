//! The example's command line: unknown flags and bad values are errors that say what
//! is expected.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::optimizer::Rule;

/// Train a GPT-style byte-level language model with flashopt's optimizers beside
/// burn's AdamW (or the same rule in fp32), writing loss curves, a summary and plots.
#[derive(Parser, Debug)]
#[command(name = "train")]
pub struct Args {
    /// Where the model computes: burn's NdArray with flashopt's CPU reference, or
    /// burn's CUDA backend with flashopt's fused kernel. Default: cpu (cuda with
    /// --plot-only, for the summary's first line).
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// The model, data and schedule.
    #[arg(long, value_enum, default_value_t = Config::Tiny)]
    pub config: Config,
    /// Train this many steps instead of the configuration's.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Seed of the initial weights and the batches.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Compute the log-softmax and loss in the compute dtype (bf16 on the bf16 runs)
    /// instead of f32.
    #[arg(long)]
    pub bf16_loss: bool,
    /// The flashopt runs' rule (burn's runs are AdamW).
    #[arg(long, value_enum, default_value_t = Rule::AdamW)]
    pub optimizer: Rule,
    /// The schedule's peak learning rate, instead of the rule's own (derived from
    /// the configuration's AdamW peak: a tenth of it for Lion, a multiple for SGD).
    #[arg(long, value_parser = |s: &str| positive(s, "learning rate"))]
    pub peak_lr: Option<f64>,
    /// Clip the global gradient norm to this before each step.
    #[arg(long, value_parser = |s: &str| positive(s, "global gradient norm"))]
    pub clip: Option<f64>,
    /// End the runs after this many steps (diagnostics: no summary is written).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// The runs to make, comma-separated (see `optimizer::RUNS`); default: the
    /// configuration's.
    #[arg(long, value_delimiter = ',')]
    pub runs: Vec<String>,
    /// The folder each run's files and the summary go to.
    #[arg(long, default_value = "target/train")]
    pub out: PathBuf,
    /// Write the optimizer's inputs and outputs of the steps in --capture-steps here.
    #[arg(long, requires = "capture_steps")]
    pub capture: Option<PathBuf>,
    /// The steps --capture writes, comma-separated.
    #[arg(long, value_delimiter = ',', requires = "capture")]
    pub capture_steps: Vec<usize>,
    /// Log the elements in `state_health`'s failure state every this many steps.
    #[arg(long)]
    pub health_every: Option<usize>,
    /// Muon runs: every this many steps, per tensor, the cosine between the update
    /// from the run's momentum and from an f32 momentum fed the same gradients
    /// (momentum-error-<run>.csv; the f32 one is kept every step, on the host).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub momentum_error_every: Option<u64>,
    /// A TrueType font for the plots (DejaVu Sans is built in).
    #[arg(long)]
    pub font: Option<PathBuf>,
    /// Only summarize and plot the runs already in this folder.
    #[arg(long, conflicts_with_all = ["replay", "check_adapter"])]
    pub plot_only: Option<PathBuf>,
    /// Step a --capture folder on the CPU reference and compare with the GPU's result.
    #[arg(long, conflicts_with = "check_adapter")]
    pub replay: Option<PathBuf>,
    /// Check the CUDA adapter against the CPU reference over this many steps.
    #[arg(long)]
    pub check_adapter: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Cpu,
    Cuda,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Config {
    /// 10.9M parameters, 1500 steps.
    Small,
    /// Seconds on two CPU cores.
    Tiny,
    /// 353M parameters, 200 steps.
    Gpt350m,
}

impl Config {
    pub fn name(self) -> &'static str {
        match self {
            Config::Small => "small",
            Config::Tiny => "tiny",
            Config::Gpt350m => "gpt350m",
        }
    }
}

/// A positive, finite `what`, or the error naming it and what was given.
fn positive(s: &str, what: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("a positive, finite {what}, got `{s}`")),
    }
}
