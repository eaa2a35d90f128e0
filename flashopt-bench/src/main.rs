//! `flashopt-bench`: step times of flashopt's fused kernels on CUDA, beside flashoptim
//! 0.1.4 and torch's fused AdamW (issue 5).
//!
//! ```text
//! flashopt-bench run [--out DIR] [FILTERS]  # on the GPU machine: DIR/flashopt.csv
//! python3 scripts/bench_reference.py DIR/reference.csv   # same machine: flashoptim + torch
//! flashopt-bench report DIR [--plot FILE.png] [--font FILE.ttf]   # anywhere
//! ```
//!
//! `run` measures the device-to-device copy ceiling first, then every shipped
//! optimizer x master mode on every workload ([`workloads`]), in the default kernel
//! shape. Filters (comma-separated lists) narrow it: `--only WORKLOAD,..`,
//! `--optimizers AdamW,..`, `--masters 24,32,none`, `--lanes 4,8,..` (kernel shapes), `--arithmetic exact,approximate` (the opt-in
//! approximate divisions and square roots); `--runtime hip` runs the same code on
//! cubecl-hip (built, never run here: no AMD GPU). `report` turns the two CSV files into the markdown tables of
//! docs/BENCHMARKS.md and a plot of GB/s per workload.

mod report;
mod run;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage:
  flashopt-bench run [--out DIR] [--only W,..] [--optimizers O,..] [--masters 24,32,none] [--lanes 4,8,16,32] [--arithmetic exact,approximate] [--runtime cuda|hip]
  flashopt-bench report DIR [--plot FILE.png] [--font FILE.ttf]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return if args.is_empty() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let flag = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let result = match args.first().map(String::as_str) {
        Some("run") => {
            let out = PathBuf::from(flag("--out").unwrap_or_else(|| ".".into()));
            let list = |name: &str| -> Vec<String> {
                flag(name)
                    .map(|v| v.split(',').map(|x| x.trim().to_string()).collect())
                    .unwrap_or_default()
            };
            let lanes: Result<Vec<usize>, String> = list("--lanes")
                .iter()
                .map(|l| {
                    l.parse()
                        .map_err(|_| format!("--lanes: `{l}` is not a number"))
                })
                .collect();
            lanes.and_then(|lanes| {
                let selection = run::Selection {
                    workloads: list("--only"),
                    optimizers: list("--optimizers"),
                    masters: list("--masters"),
                    lanes,
                    arithmetic: list("--arithmetic"),
                    runtime: flag("--runtime"),
                };
                run::run(&out, &selection)
            })
        }
        Some("report") => match args.get(1) {
            Some(dir) => report::report(
                &PathBuf::from(dir),
                flag("--plot").map(PathBuf::from).as_deref(),
                flag("--font").map(PathBuf::from).as_deref(),
            )
            .map(|text| print!("{text}")),
            None => Err(USAGE.to_string()),
        },
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("flashopt-bench: {message}");
            ExitCode::FAILURE
        }
    }
}
