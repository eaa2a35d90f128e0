//! `flashopt emit <optimizer> --target cuda|hip [--master 24|32|none] [--param bf16|f16|f32] [--grad bf16|f16|f32] [--lanes 4|8|16|32] [--gradient-regions 1..8] [--approximate] [--plan]`
//!
//! Prints the fused step kernel of a shipped optimizer as CUDA or HIP source (no GPU
//! needed), or with `--plan` the lowered plan it is generated from. `--approximate`
//! emits the opt-in approximate divisions and square roots (`Arithmetic::Approximate`);
//! `--gradient-regions 8` the variant that reads gradients from several buffers per
//! launch (steps that read gradients where the trainer left them).

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use flashopt::optimizers;
use flashopt::{FloatDtype, MasterMode, PlanConfig};
use flashopt_cubecl::codegen::bindings::{Arithmetic, KernelShape, MAX_GRADIENT_REGIONS};
use flashopt_cubecl::codegen::emit::{Target, emit_pass, emit_shaped};

/// flashopt's compiler from the command line: no GPU needed.
#[derive(Parser)]
#[command(name = "flashopt", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the fused step kernel of a shipped optimizer (or, with --plan, the lowered
    /// plan it is generated from).
    Emit(Emit),
}

#[derive(clap::Args)]
struct Emit {
    /// A shipped optimizer: adamw, adam, lion, sgd, sgdw, lamb, cautious_adamw.
    #[arg(value_parser = shipped_optimizer)]
    optimizer: String,
    /// The kernel's language (required unless --plan).
    #[arg(long, value_enum)]
    target: Option<TargetArg>,
    /// The master weight: 24 or 32 bits (an int8 or int16 correction), or none; 24 by
    /// default for bf16 and f16 parameters, none for f32.
    #[arg(long, value_enum)]
    master: Option<MasterArg>,
    /// The parameters' dtype.
    #[arg(long, value_enum, default_value = "bf16")]
    param: DtypeArg,
    /// The gradients' dtype (the parameters' by default).
    #[arg(long, value_enum)]
    grad: Option<DtypeArg>,
    /// Lanes per unit of the kernel shape.
    #[arg(long, default_value_t = 4, value_parser = lanes)]
    lanes: usize,
    /// Gradient buffers one launch reads (the variant for gradients read in place).
    #[arg(long, default_value_t = 1, value_parser = gradient_regions)]
    gradient_regions: usize,
    /// The opt-in approximate divisions and square roots.
    #[arg(long)]
    approximate: bool,
    /// Print the lowered plan instead of the kernel.
    #[arg(long)]
    plan: bool,
    /// The kernel of phase N before the step (optimizers that reduce over each tensor
    /// or apply a function to its matrix compute those values in phases before the
    /// step) instead of the step's.
    #[arg(long)]
    phase: Option<usize>,
    /// The kernels that sum each reduction's group values over each tensor, two per
    /// reduction, each after a `// flashopt kernel` line, instead of the step's.
    #[arg(long, conflicts_with = "phase")]
    reduction_kernels: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetArg {
    Cuda,
    Hip,
}

#[derive(Clone, Copy, ValueEnum)]
enum MasterArg {
    #[value(name = "24")]
    Bits24,
    #[value(name = "32")]
    Bits32,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum DtypeArg {
    Bf16,
    F16,
    F32,
}

impl From<DtypeArg> for FloatDtype {
    fn from(d: DtypeArg) -> FloatDtype {
        match d {
            DtypeArg::Bf16 => FloatDtype::Bf16,
            DtypeArg::F16 => FloatDtype::F16,
            DtypeArg::F32 => FloatDtype::F32,
        }
    }
}

fn shipped_optimizer(s: &str) -> Result<String, String> {
    match optimizers::by_name(s) {
        Some(_) => Ok(s.to_string()),
        None => Err(format!(
            "shipped: {}, {}, {}",
            optimizers::NAMES.join(", "),
            optimizers::REDUCING_NAMES.join(", "),
            optimizers::ROW_COLUMN_NAMES.join(", ")
        )),
    }
}

fn lanes(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .filter(|l| KernelShape::new(*l).is_some())
        .ok_or_else(|| "4, 8, 16 or 32 lanes per unit".to_string())
}

fn gradient_regions(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .filter(|r| (1..=MAX_GRADIENT_REGIONS).contains(r))
        .ok_or_else(|| format!("1 to {MAX_GRADIENT_REGIONS}"))
}

fn emit(args: Emit) -> Result<String, String> {
    let def = optimizers::by_name(&args.optimizer).expect("checked by the parser");
    let param = FloatDtype::from(args.param);
    // f32 parameters carry no correction; bf16/f16 default to 24-bit as flashoptim does.
    let master = match args.master {
        Some(MasterArg::Bits24) => MasterMode::Int8,
        Some(MasterArg::Bits32) => MasterMode::Int16,
        Some(MasterArg::None) => MasterMode::None,
        None if param == FloatDtype::F32 => MasterMode::None,
        None => MasterMode::Int8,
    };
    let config = PlanConfig {
        param,
        grad: args.grad.map_or(param, FloatDtype::from),
        master,
    };
    let plan = flashopt::ir::compile(&def, config).map_err(|e| e.to_string())?;
    if args.plan {
        return Ok(plan.to_string());
    }
    let target = match args.target {
        Some(TargetArg::Cuda) => Target::Cuda,
        Some(TargetArg::Hip) => Target::Hip,
        None => return Err("`--target cuda|hip` is required to emit a kernel".into()),
    };
    let arithmetic = match args.approximate {
        true => Arithmetic::Approximate,
        false => Arithmetic::Exact,
    };
    let shape = KernelShape::new(args.lanes)
        .and_then(|s| {
            s.with_arithmetic(arithmetic)
                .with_gradient_regions(args.gradient_regions)
        })
        .expect("lanes and regions checked by the parser");
    if args.reduction_kernels {
        let sources = flashopt_cubecl::device::reductions::sources(&plan, target)?;
        return Ok(sources
            .iter()
            .map(|s| format!("// flashopt kernel\n{s}"))
            .collect());
    }
    match args.phase {
        None => emit_shaped(&plan, target, shape),
        Some(phase) if phase < plan.phases.len() => emit_pass(&plan, phase, target, shape),
        Some(phase) => {
            return Err(format!(
                "`{}` has {} phase(s) before the step; there is no phase {phase}",
                plan.optimizer,
                plan.phases.len()
            ));
        }
    }
    .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let Command::Emit(args) = Cli::parse().command;
    match emit(args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}
