//! The device path on a GPU: a small candle MLP on CUDA trained with
//! `CudaFlashOptimizer` (AdamW-24, state and step on the device), and beside it
//! flashopt's CPU reference fed the very gradients candle computed on the device.
//! After every step every stored byte of the two optimizers and every variable must
//! be equal; exits with an error otherwise. Both clip the global gradient norm to
//! 0.05 (configured on the CPU optimizer the device path is built from, so the check
//! covers every setting `Config` carries). Needs a CUDA device and the `cuda`
//! feature (docs/CANDLE.md):
//!
//! ```text
//! cargo run --release -p flashopt-candle --features cuda --example cuda_check [steps]
//! ```

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use flashopt::ir::interp::{GradBuf, PartData};
use flashopt::optimizers::AdamW;
use flashopt::{CpuOptimizer, MasterMode, Optimizer as _, PlanConfig, TensorId};
use flashopt_candle::{Config, CudaFlashOptimizer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: usize = match std::env::args().nth(1) {
        Some(s) => s.parse().map_err(|e| format!("steps `{s}`: {e}"))?,
        None => 5,
    };
    let device = Device::new_cuda(0)?;
    // A 16-64-64-1 MLP with candle's initialization on the device; 200 samples.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let layers: Vec<candle_nn::Linear> = [(16, 64), (64, 64), (64, 1)]
        .iter()
        .enumerate()
        .map(|(i, &(a, b))| candle_nn::linear(a, b, vb.pp(format!("layer{i}"))))
        .collect::<candle_core::Result<_>>()?;
    let x = Tensor::randn(0f32, 1.0, (200, 16), &device)?;
    let y = x.sum_keepdim(1)?.sin()?;
    let loss = |x: &Tensor| -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (i, l) in layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i + 1 < layers.len() {
                h = h.gelu()?;
            }
        }
        (h - &y)?.sqr()?.mean_all()
    };

    let adamw = AdamW {
        lr: 1e-2,
        ..AdamW::default()
    };
    let format = PlanConfig::bf16(MasterMode::Int8);
    // The CPU reference takes the same variables' values, in the same (name) order.
    let named = flashopt_candle::vars_by_name(&varmap);
    const MAX_NORM: f64 = 0.05;
    let mut cpu = CpuOptimizer::for_spec(&adamw, format)?;
    cpu.set_grad_clipping(Some(MAX_NORM))?;
    for (name, v) in &named {
        cpu.add_tensor(name, &v.as_tensor().flatten_all()?.to_vec1::<f32>()?)?;
    }
    let mut configured = CpuOptimizer::for_spec(&adamw, format)?;
    configured.set_grad_clipping(Some(MAX_NORM))?;
    let mut gpu = CudaFlashOptimizer::from_varmap(&varmap, Config::from_optimizer(configured))?;
    if gpu.optimizer().grad_clipping() != Some(MAX_NORM) {
        return Err("the device path lost the clipping its Config set".into());
    }
    let params: usize = named.iter().map(|(_, v)| v.elem_count()).sum();
    println!(
        "cuda check: {params} parameters in {} tensors, AdamW-24, {steps} steps",
        named.len()
    );

    let mut all_equal = true;
    for step in 1..=steps {
        let l = loss(&x)?;
        let grads = l.backward()?;
        // The gradients candle computed, rounded to bf16 as the device path rounds them.
        let host: Vec<PartData> = gpu
            .vars()
            .iter()
            .map(|v| -> candle_core::Result<PartData> {
                let g = grads
                    .get(v.as_tensor())
                    .expect("every variable has a gradient");
                let g: Vec<f32> = g.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
                Ok(PartData::round_from_f32(format.grad, &g))
            })
            .collect::<candle_core::Result<_>>()?;
        let bufs: Vec<GradBuf<'_>> = host.iter().map(|g| g.as_grad().unwrap()).collect();
        let outcome = gpu.try_step(&grads)?;
        cpu.step(&bufs)?;
        let state = gpu.optimizer().download();
        let same_state = state
            .iter()
            .enumerate()
            .filter(|(i, (_, t))| cpu.tensor(TensorId(*i)).is_ok_and(|c| c == t))
            .count();
        let mut same_vars = 0;
        for (i, v) in gpu.vars().iter().enumerate() {
            let ours: Vec<f32> = v.as_tensor().flatten_all()?.to_vec1()?;
            let reference = cpu.param(TensorId(i))?;
            same_vars += ours
                .iter()
                .zip(&reference)
                .filter(|(a, b)| a.to_bits() == b.to_bits())
                .count();
        }
        let equal = outcome.applied() && same_state == state.len() && same_vars == params;
        all_equal &= equal;
        let norm = cpu.last_grad_norm().unwrap_or(f64::NAN);
        println!(
            "cuda check: step {step}: loss {:.6}, gradient norm {norm:.4} ({}); state {same_state} of {} tensors and variables {same_vars} of {params} values bit-equal to the CPU reference: {}",
            l.to_scalar::<f32>()?,
            if norm > MAX_NORM {
                "clipped"
            } else {
                "not clipped"
            },
            state.len(),
            if equal { "yes" } else { "NO" }
        );
    }
    if !all_equal {
        return Err("the device path differs from the CPU reference".into());
    }
    println!("cuda check: passed");
    Ok(())
}
