//! How much an 8-bit momentum changes Muon's orthogonalized update: three matrix
//! regressions trained by Muon with an f32 momentum, whose gradients also feed Muon's
//! momentum stored as int8 softsign codes (the shipped `Muon`), int8 linear codes
//! (each rounded to nearest or dithered) and bf16; after each step, the cosine between the update each momentum gives
//! (`orthogonalize(lerp(g, m, momentum))`, the CPU reference) and the f32 one's.
//! Runs on the CPU reference back end.
//!
//! ```text
//! cargo run --release --example muon_momentum_error [STEPS]
//! ```

use flashopt::ir::interp::GradBuf;
use flashopt::ir::matrix::{MatrixPrecision, NewtonSchulz, cosine, orthogonalize};
use flashopt::ir::{Codec, OptimizerDef, Rounding};
use flashopt::optimizers::Muon;
use flashopt::{CpuOptimizer, F32States, Optimizer, OptimizerSpec, PlanConfig, TensorId};

/// Output x input features of each regression, and its samples.
const SHAPES: [(usize, usize); 3] = [(48, 96), (96, 48), (64, 64)];
const SAMPLES: usize = 256;
const BATCH: usize = 32;
const MOMENTUM: f32 = 0.95;

struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
    }
}

/// `Y = W* X + noise`, `W*` with singular values spread over two decades.
struct Regression {
    out: usize,
    inp: usize,
    x: Vec<f32>,
    y: Vec<f32>,
}

impl Regression {
    fn new(out: usize, inp: usize, rng: &mut Rng) -> Regression {
        let w: Vec<f32> = (0..out * inp)
            .map(|k| rng.uniform() * 0.01f32.powf((k % inp) as f32 / inp as f32))
            .collect();
        let x: Vec<f32> = (0..inp * SAMPLES).map(|_| rng.uniform()).collect();
        let y = (0..out * SAMPLES)
            .map(|k| {
                let (o, s) = (k / SAMPLES, k % SAMPLES);
                (0..inp)
                    .map(|i| w[o * inp + i] * x[i * SAMPLES + s])
                    .sum::<f32>()
                    + 0.01 * rng.uniform()
            })
            .collect();
        Regression { out, inp, x, y }
    }

    /// The mean squared error's gradient over a batch of samples.
    fn grad(&self, w: &[f32], samples: &[usize]) -> Vec<f32> {
        let mut g = vec![0.0f32; self.out * self.inp];
        for &s in samples {
            for o in 0..self.out {
                let row = &w[o * self.inp..(o + 1) * self.inp];
                let pred: f32 = (0..self.inp)
                    .map(|i| row[i] * self.x[i * SAMPLES + s])
                    .sum();
                let r = pred - self.y[o * SAMPLES + s];
                for i in 0..self.inp {
                    g[o * self.inp + i] += 2.0 * r * self.x[i * SAMPLES + s] / samples.len() as f32;
                }
            }
        }
        g
    }
}

/// A momentum tracker: Muon with `codec` for its momentum, rounded as `rounding`, and
/// a learning rate of 0.
fn tracker(codec: Codec, rounding: Rounding) -> CpuOptimizer {
    let mut def: OptimizerDef = Muon::definition();
    def.states[0].codec = Some(codec);
    def.states[0].rounding = rounding;
    let mut opt = CpuOptimizer::new(&def, PlanConfig::f32_params()).unwrap();
    opt.set_hyper("lr", 0.0).unwrap();
    opt
}

fn main() {
    let steps: usize = std::env::args()
        .nth(1)
        .map_or(150, |s| s.parse().expect("STEPS"));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let problems: Vec<Regression> = SHAPES
        .iter()
        .map(|&(o, i)| Regression::new(o, i, &mut rng))
        .collect();
    let spec = F32States(Muon {
        lr: 0.02,
        weight_decay: 0.0,
        ..Muon::default()
    });
    let mut trained = CpuOptimizer::for_spec(&spec, PlanConfig::f32_params()).unwrap();
    let mut trackers = [
        ("f32", tracker(Codec::F32, Rounding::Nearest)),
        (
            "int8 softsign",
            tracker(Codec::Int8Softsign, Rounding::Nearest),
        ),
        (
            "int8 softsign, dithered",
            tracker(Codec::Int8Softsign, Rounding::Dithered),
        ),
        ("int8 linear", tracker(Codec::Int8Linear, Rounding::Nearest)),
        (
            "int8 linear, dithered",
            tracker(Codec::Int8Linear, Rounding::Dithered),
        ),
        ("bf16", tracker(Codec::Bf16, Rounding::Nearest)),
    ];
    for (k, p) in problems.iter().enumerate() {
        let init = vec![0.0f32; p.out * p.inp];
        trained
            .add_shaped(&format!("w{k}"), &[p.out, p.inp], &init)
            .unwrap();
        for (_, t) in &mut trackers {
            t.add_shaped(&format!("w{k}"), &[p.out, p.inp], &init)
                .unwrap();
        }
    }
    // cosines[codec][tensor]: one per step.
    let mut cosines = vec![vec![Vec::new(); SHAPES.len()]; trackers.len()];
    for _ in 0..steps {
        let batch: Vec<usize> = (0..BATCH)
            .map(|_| ((rng.uniform() + 1.0) * 0.5 * SAMPLES as f32) as usize % SAMPLES)
            .collect();
        let grads: Vec<Vec<f32>> = problems
            .iter()
            .enumerate()
            .map(|(k, p)| p.grad(&trained.master(TensorId(k)).unwrap(), &batch))
            .collect();
        let bufs: Vec<GradBuf> = grads.iter().map(|g| GradBuf::F32(g)).collect();
        trained.step(&bufs).unwrap();
        let mut updates = Vec::new();
        for (_, t) in &mut trackers {
            t.step(&bufs).unwrap();
            let plan = t.plan().clone();
            let per_tensor: Vec<Vec<f32>> = (0..SHAPES.len())
                .map(|k| {
                    let m = &t.tensor(TensorId(k)).unwrap().decoded(&plan)[1];
                    let u: Vec<f32> = m
                        .iter()
                        .zip(&grads[k])
                        .map(|(&m, &g)| m - (m - g) * (1.0 - MOMENTUM))
                        .collect();
                    let (rows, cols) = SHAPES[k];
                    orthogonalize(&u, rows, cols, &NewtonSchulz::MUON, MatrixPrecision::Bf16)
                })
                .collect();
            updates.push(per_tensor);
        }
        for (c, per_tensor) in updates.iter().enumerate() {
            for (k, u) in per_tensor.iter().enumerate() {
                cosines[c][k].push(cosine(u, &updates[0][k]));
            }
        }
    }
    println!("| momentum | tensor | mean cosine to f32's update | lowest | over steps |");
    println!("| --- | --- | --- | --- | --- |");
    for (c, (name, _)) in trackers.iter().enumerate().skip(1) {
        for (k, &(o, i)) in SHAPES.iter().enumerate() {
            let v = &cosines[c][k];
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let low = v.iter().copied().fold(f64::INFINITY, f64::min);
            println!(
                "| {name} | {o} x {i} | {mean:.5} | {low:.5} | {} |",
                v.len()
            );
        }
    }
    let loss: Vec<f64> = problems
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let all: Vec<usize> = (0..SAMPLES).collect();
            let g = p.grad(&trained.master(TensorId(k)).unwrap(), &all);
            g.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
        })
        .collect();
    println!("gradient norms over all samples after {steps} steps: {loss:.4?}");
}
