//! GPU tests: the fused kernels on a CUDA device against the CPU reference, bit for
//! bit. Behind the `gpu-tests` feature (they need a GPU; CI has none), like cubecl's
//! `runtime_tests`. Build here, run on the GPU machine:
//!
//! ```text
//! cargo test --release --features gpu-tests --test gpu --no-run   # prints the binary
//! ./gpu-<hash> --test-threads 1                                     # on the GPU
//! ```
//!
//! With `FLASHOPT_GPU_REPORT=FILE` each test appends its findings (a markdown line)
//! to FILE; docs/GPU.md holds the last run's.

#[path = "../common/mod.rs"]
mod common;

mod configs;
mod guards;
mod in_place;
mod matrices;
mod reductions;
mod sharded;
mod sharded_matrices;
mod transfer;

use std::io::Write as _;

use flashopt::ir::interp::HostTensor;
use flashopt::runtime::raw;
use flashopt_cubecl::cubecl::Runtime;
use flashopt_cubecl::cubecl::client::ComputeClient;
use flashopt_cubecl::cubecl::cuda::CudaRuntime;

pub type Client = ComputeClient<CudaRuntime>;

pub fn client() -> Client {
    CudaRuntime::client(&Default::default())
}

/// Append a line to the report file, if one was asked for, and print it.
pub fn report(line: &str) {
    println!("{line}");
    if let Ok(path) = std::env::var("FLASHOPT_GPU_REPORT") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("report file");
        writeln!(f, "{line}").expect("write the report");
    }
}

/// Whether two tensors hold the same bits in every part.
pub fn same_bits(a: &HostTensor, b: &HostTensor) -> bool {
    a.len() == b.len()
        && a.parts.len() == b.parts.len()
        && a.parts
            .iter()
            .zip(&b.parts)
            .all(|(x, y)| raw::part_bytes(x) == raw::part_bytes(y))
}

/// GPT-2 124M's 148 parameter tensors (public config: 12 layers, d=768, vocab 50257, ctx 1024).
pub fn gpt2_shapes() -> Vec<(String, usize)> {
    let d = 768;
    let mut out = vec![
        ("wte".to_string(), 50257 * d),
        ("wpe".to_string(), 1024 * d),
    ];
    for l in 0..12 {
        for (name, n) in [
            ("ln_1.weight", d),
            ("ln_1.bias", d),
            ("attn.c_attn.weight", d * 3 * d),
            ("attn.c_attn.bias", 3 * d),
            ("attn.c_proj.weight", d * d),
            ("attn.c_proj.bias", d),
            ("ln_2.weight", d),
            ("ln_2.bias", d),
            ("mlp.c_fc.weight", d * 4 * d),
            ("mlp.c_fc.bias", 4 * d),
            ("mlp.c_proj.weight", 4 * d * d),
            ("mlp.c_proj.bias", d),
        ] {
            out.push((format!("h.{l}.{name}"), n));
        }
    }
    out.push(("ln_f.weight".to_string(), d));
    out.push(("ln_f.bias".to_string(), d));
    out
}
