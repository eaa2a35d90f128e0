//! `flashopt emit <optimizer> --target cuda|hip [--master 24|32|none] [--param bf16|f16|f32] [--grad bf16|f16|f32] [--lanes 4|8|16|32] [--gradient-regions 1..8] [--approximate]`
//!
//! Prints the fused step kernel of a shipped optimizer as CUDA or HIP source (no GPU
//! needed), or with `--plan` the lowered plan it is generated from. `--approximate`
//! emits the opt-in approximate divisions and square roots (`Arithmetic::Approximate`);
//! `--gradient-regions 8` the variant that reads gradients from several buffers per
//! launch (steps that read gradients where the trainer left them).

use std::process::ExitCode;

use flashopt::optimizers;
use flashopt::{FloatDtype, MasterMode, PlanConfig};
use flashopt_cubecl::codegen::bindings::{Arithmetic, KernelShape, MAX_GRADIENT_REGIONS};
use flashopt_cubecl::codegen::emit::{Target, emit_shaped};

const USAGE: &str = "usage: flashopt emit <optimizer> --target cuda|hip [--master 24|32|none] [--param bf16|f16|f32] [--grad bf16|f16|f32] [--lanes 4|8|16|32] [--gradient-regions 1..8] [--approximate] [--plan]";

fn dtype(s: &str) -> Result<FloatDtype, String> {
    FloatDtype::ALL
        .into_iter()
        .find(|d| d.name() == s)
        .ok_or_else(|| format!("unknown dtype `{s}`: bf16, f16 or f32"))
}

fn run(args: &[String]) -> Result<String, String> {
    let [command, optimizer, rest @ ..] = args else {
        return Err(USAGE.into());
    };
    if command != "emit" {
        return Err(format!("unknown command `{command}`\n{USAGE}"));
    }
    let def = optimizers::by_name(optimizer).ok_or_else(|| {
        format!(
            "unknown optimizer `{optimizer}`; shipped: {}",
            optimizers::NAMES.join(", ")
        )
    })?;
    let (mut target, mut master, mut param, mut grad, mut plan_only) =
        (None, None, FloatDtype::Bf16, None, false);
    let mut shape = KernelShape::default();
    let mut arithmetic = Arithmetic::Exact;
    let mut gradient_regions = 1;
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("`{flag}` needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--target" => {
                target = Some(match value()?.as_str() {
                    "cuda" => Target::Cuda,
                    "hip" => Target::Hip,
                    other => return Err(format!("unknown target `{other}`: cuda or hip")),
                })
            }
            "--master" => {
                master = Some(match value()?.as_str() {
                    "24" => MasterMode::Int8,
                    "32" => MasterMode::Int16,
                    "none" => MasterMode::None,
                    other => return Err(format!("unknown master mode `{other}`: 24, 32 or none")),
                })
            }
            "--param" => param = dtype(value()?)?,
            "--grad" => grad = Some(dtype(value()?)?),
            "--plan" => plan_only = true,
            "--approximate" => arithmetic = Arithmetic::Approximate,
            "--lanes" => {
                let lanes = value()?;
                shape = lanes
                    .parse()
                    .ok()
                    .and_then(KernelShape::new)
                    .ok_or_else(|| format!("`--lanes {lanes}`: 4, 8, 16 or 32 lanes per unit"))?
            }
            "--gradient-regions" => {
                let regions = value()?;
                gradient_regions = regions
                    .parse()
                    .ok()
                    .filter(|r| (1..=MAX_GRADIENT_REGIONS).contains(r))
                    .ok_or_else(|| {
                        format!("`--gradient-regions {regions}`: 1 to {MAX_GRADIENT_REGIONS}")
                    })?
            }
            other => return Err(format!("unknown flag `{other}`\n{USAGE}")),
        }
    }
    // f32 parameters carry no correction; bf16/f16 default to 24-bit as flashoptim does.
    let master = master.unwrap_or(if param == FloatDtype::F32 {
        MasterMode::None
    } else {
        MasterMode::Int8
    });
    let config = PlanConfig {
        param,
        grad: grad.unwrap_or(param),
        master,
    };
    let plan = flashopt::ir::compile(&def, config).map_err(|e| e.to_string())?;
    if plan_only {
        return Ok(plan.to_string());
    }
    let target = target.ok_or_else(|| format!("`--target` is required\n{USAGE}"))?;
    let shape = shape
        .with_arithmetic(arithmetic)
        .with_gradient_regions(gradient_regions)
        .ok_or_else(|| {
            format!(
                "`--gradient-regions`: 1 to {MAX_GRADIENT_REGIONS}, got {gradient_regions}\n{USAGE}"
            )
        })?;
    emit_shaped(&plan, target, shape).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}
