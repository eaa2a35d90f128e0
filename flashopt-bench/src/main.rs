//! `flashopt-bench`: step times of flashopt's fused kernels on CUDA, beside flashoptim
//! 0.1.4 and torch's fused AdamW.
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
//! approximate divisions and square roots); `--matrix-gemm tma_or_ordered` runs Muon's
//! matrix stage on cubek-matmul instead of cuBLAS; `--runtime hip` runs the same code on
//! cubecl-hip (built, never run here: no AMD GPU). `report` turns the two CSV files into the markdown tables of
//! docs/BENCHMARKS.md and a plot of GB/s per workload.

mod report;
mod run;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "flashopt-bench",
    about = "Step times of flashopt's fused kernels, and their report"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure the copy ceiling, then every selected optimizer, master mode and kernel
    /// shape on every selected workload, into DIR/flashopt.csv (needs a GPU).
    Run {
        /// The folder for flashopt.csv.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Workloads by name, comma-separated (all by default); a name that matches
        /// none is an error.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Optimizers (AdamW, Adam, Lion, SGD, SGDW, and AdamW-, Lion-, SGD-flashoptim).
        #[arg(long, value_delimiter = ',')]
        optimizers: Vec<String>,
        /// Master modes: 24, 32, none.
        #[arg(long, value_delimiter = ',')]
        masters: Vec<String>,
        /// Lanes per unit (kernel shapes): 4, 8, 16, 32.
        #[arg(long, value_delimiter = ',')]
        lanes: Vec<usize>,
        /// exact, approximate.
        #[arg(long, value_delimiter = ',')]
        arithmetic: Vec<String>,
        /// cuda (default) or hip.
        #[arg(long)]
        runtime: Option<String>,
        /// The matrix stage's products (Muon): cublas (default, on CUDA where libcublas loads), tma_or_ordered,
        /// or one of cubek-matmul's routines.
        #[arg(long)]
        matrix_gemm: Option<String>,
    },
    /// The markdown tables (stdout) and a plot from DIR/flashopt.csv and
    /// DIR/reference.csv.
    Report {
        dir: PathBuf,
        /// Draw GB/s per workload into this PNG.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// A TrueType font for the plot (DejaVu Sans is built in).
        #[arg(long)]
        font: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run {
            out,
            only,
            optimizers,
            masters,
            lanes,
            arithmetic,
            runtime,
            matrix_gemm,
        } => run::run(
            &out,
            &run::Selection {
                workloads: only,
                optimizers,
                masters,
                lanes,
                arithmetic,
                runtime,
                matrix_gemm,
            },
        ),
        Command::Report { dir, plot, font } => {
            report::report(&dir, plot.as_deref(), font.as_deref()).map(|text| print!("{text}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("flashopt-bench: {message}");
            ExitCode::FAILURE
        }
    }
}
