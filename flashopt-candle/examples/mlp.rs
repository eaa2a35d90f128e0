//! Train a small candle MLP on a synthetic regression task with flashopt's AdamW
//! (24-bit master weights: bf16 parameter + int8 correction, 8-bit states) and with
//! candle's own fp32 AdamW, from the same initial weights on the same data, and
//! compare the losses. Runs on candle's CPU device; exits with an error if flashopt's
//! final loss is more than 2% above candle's.
//!
//! ```text
//! cargo run --release -p flashopt-candle --example mlp [steps]
//! ```

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{AdamW as CandleAdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use flashopt::optimizers::AdamW;
use flashopt::{MasterMode, Optimizer as _, PlanConfig};
use flashopt_candle::{Config, FlashOptimizer};

const SAMPLES: usize = 1024;
const INPUTS: usize = 16;
const HIDDEN: usize = 128;
const LR: f64 = 3e-3;
const WEIGHT_DECAY: f64 = 1e-4;
/// Label noise (uniform in +-NOISE): the loss floor is about NOISE^2 / 3.
const NOISE: f32 = 0.05;

/// xorshift64: the same data and initial weights on every machine.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
    }

    fn tensor(&mut self, dims: &[usize], scale: f32) -> candle_core::Result<Tensor> {
        let n = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| scale * self.uniform()).collect();
        Tensor::from_vec(v, dims, &Device::Cpu)
    }
}

struct Mlp {
    layers: Vec<candle_nn::Linear>,
}

impl Mlp {
    fn new(vb: VarBuilder) -> candle_core::Result<Mlp> {
        let dims = [INPUTS, HIDDEN, HIDDEN, 1];
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, d)| candle_nn::linear(d[0], d[1], vb.pp(format!("layer{i}"))))
            .collect::<candle_core::Result<_>>()?;
        Ok(Mlp { layers })
    }

    fn loss(&self, x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if i + 1 < self.layers.len() {
                h = h.gelu()?;
            }
        }
        (h - y)?.sqr()?.mean_all()
    }
}

/// A model with deterministic initial weights (fan-in scaled), and its variables.
fn model(seed: u64) -> candle_core::Result<(Mlp, VarMap)> {
    let varmap = VarMap::new();
    let mlp = Mlp::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    let mut rng = Rng(seed);
    let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    for name in names {
        let var = varmap.data().lock().unwrap()[&name].clone();
        let fan_in = *var.dims().last().unwrap_or(&1) as f32;
        var.set(&rng.tensor(var.dims(), fan_in.sqrt().recip())?)?;
    }
    Ok((mlp, varmap))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: usize = match std::env::args().nth(1) {
        Some(s) => s.parse().map_err(|e| format!("steps `{s}`: {e}"))?,
        None => 400,
    };
    // Data: y = sin(x . a) + x0 * x1 + noise, a fixed teacher function.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let x = rng.tensor(&[SAMPLES, INPUTS], 1.0)?;
    let a = rng.tensor(&[INPUTS, 1], 0.5)?;
    let noise = rng.tensor(&[SAMPLES, 1], NOISE)?;
    let y = ((x.matmul(&a)?.sin()? + (x.narrow(1, 0, 1)? * x.narrow(1, 1, 1)?)?)? + noise)?;

    let (flash_model, flash_vars) = model(7)?;
    let adamw = AdamW {
        lr: LR,
        weight_decay: WEIGHT_DECAY,
        ..AdamW::default()
    };
    let config = Config::new(&adamw, PlanConfig::bf16(MasterMode::Int8))?;
    let mut flash = FlashOptimizer::from_varmap(&flash_vars, config)?;

    let (candle_model, candle_vars) = model(7)?;
    let mut reference = CandleAdamW::new(
        candle_vars.all_vars(),
        ParamsAdamW {
            lr: LR,
            weight_decay: WEIGHT_DECAY,
            ..ParamsAdamW::default()
        },
    )?;

    let params: usize = flash_vars.all_vars().iter().map(|v| v.elem_count()).sum();
    let plan = flash.optimizer().plan();
    println!(
        "MLP {INPUTS}-{HIDDEN}-{HIDDEN}-1, {params} parameters; bytes per parameter between \
         steps (parameter, master correction, states): flashopt AdamW-24 {}, candle's fp32 AdamW 12",
        plan.resident_bytes_per_param()
    );
    println!("{:>6}  {:>12}  {:>12}", "step", "flashopt", "candle fp32");
    let (mut flash_loss, mut candle_loss) = (f32::NAN, f32::NAN);
    let (mut flash_time, mut candle_time) = (Duration::ZERO, Duration::ZERO);
    for step in 1..=steps {
        let loss = flash_model.loss(&x, &y)?;
        flash_loss = loss.to_scalar()?;
        let grads = loss.backward()?;
        let start = Instant::now();
        let outcome = flash.try_step(&grads)?;
        flash_time += start.elapsed();
        if !outcome.applied() {
            return Err(format!("step {step} skipped: {outcome:?}").into());
        }
        let loss = candle_model.loss(&x, &y)?;
        candle_loss = loss.to_scalar()?;
        let grads = loss.backward()?;
        let start = Instant::now();
        reference.step(&grads)?;
        candle_time += start.elapsed();
        if step == 1 || step % 50 == 0 || step == steps {
            println!("{step:>6}  {flash_loss:>12.6}  {candle_loss:>12.6}");
        }
    }
    // The loss of the last step's parameters, measured before that step's update.
    let ratio = flash_loss / candle_loss;
    println!("final loss: flashopt {flash_loss:.6}, candle {candle_loss:.6} (ratio {ratio:.4})");
    let per_step = |t: Duration| t.as_secs_f64() * 1e3 / steps as f64;
    println!(
        "optimizer step, mean: flashopt (CPU reference) {:.3} ms, candle {:.3} ms",
        per_step(flash_time),
        per_step(candle_time)
    );
    if ratio.is_nan() || ratio > 1.02 {
        return Err(format!("flashopt's loss is {ratio:.4}x candle's (over 1.02)").into());
    }
    Ok(())
}
