//! How far Muon's 8-bit momentum moves its orthogonalized update over a training run:
//! beside the run's own momentum (read from the optimizer before each step), an f32
//! momentum fed the same gradients; every `--momentum-error-every` steps, per tensor,
//! the cosine between the update each gives (`orthogonalize(lerp(g, m', momentum))`
//! with `m' = lerp(m, g, 1 - momentum)`, Nesterov where the rule has it, on the CPU
//! reference's bf16 orthogonalization). The run's update is the one its kernel
//! applied (from the decoded 8-bit momentum, before it is stored again); the f32 one
//! is what an uncompressed momentum would have given at the same point of the same
//! run. Writes `momentum-error-<run>.csv` (step, tensor, rows, cols, cosine).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use flashopt::ir::def::Value;
use flashopt::ir::matrix::{MatrixPrecision, NewtonSchulz, cosine, orthogonalize};
use flashopt::{Optimizer, TensorId};

/// The f32 momentum beside a run's, and what the comparison found.
pub struct MomentumError {
    every: usize,
    step: usize,
    /// Per tensor of the Muon half, in its order.
    shadow: Vec<Vec<f32>>,
    csv: String,
    /// This step's gradients and comparison, kept until the step is known applied:
    /// a skipped step moves neither momentum.
    pending: Option<Pending>,
}

struct Pending {
    steps_before: u64,
    grads: Vec<Vec<f32>>,
    rows: String,
}

impl MomentumError {
    pub fn new(every: usize) -> MomentumError {
        MomentumError {
            every: every.max(1),
            step: 0,
            shadow: Vec::new(),
            csv: String::from("step,tensor,rows,cols,cosine\n"),
            pending: None,
        }
    }

    /// Before Muon's step: its stored momentum and this step's gradients.
    pub fn before_step<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer>(
        &mut self,
        muon: &O,
        module: &M,
        grads: &GradientsParams,
    ) {
        self.step += 1;
        let plan = muon.plan();
        let hyper = muon.hyper(0);
        let momentum = hyper
            .get("momentum")
            .and_then(|v| v.as_f64())
            .expect("Muon's momentum") as f32;
        let nesterov = matches!(hyper.get("nesterov"), Some(Value::Bool(true)));
        let mut host = crate::capture::host_grads::<B, M>(module, grads);
        let ids: HashMap<String, _> = flashopt_burn::params::describe(module)
            .into_iter()
            .map(|p| (p.name, p.id))
            .collect();
        let stored: Vec<Vec<f32>> = muon.with_tensors(|tensors| {
            tensors
                .iter()
                .map(|t| {
                    let decoded = t.decoded(plan);
                    assert_eq!(decoded.len(), 2, "Muon keeps its master and one momentum");
                    decoded[1].clone()
                })
                .collect()
        });
        if self.shadow.is_empty() {
            self.shadow = stored.iter().map(|m| vec![0.0; m.len()]).collect();
        }
        let mut pending = Pending {
            steps_before: muon.steps_taken(),
            grads: Vec::new(),
            rows: String::new(),
        };
        for (i, (stored, shadow)) in stored.iter().zip(&self.shadow).enumerate() {
            let info = muon.tensor_info(TensorId(i)).expect("a tensor of the half");
            let g: Vec<f32> = match ids.get(&info.name).and_then(|id| host.remove(id)) {
                // The gradient as the optimizer reads it.
                Some(g) => flashopt::ir::interp::PartData::round_from_f32(plan.config.grad, &g)
                    .to_f32()
                    .expect("floats"),
                None => vec![0.0; info.len],
            };
            if self.step % self.every == 0 {
                let shape = info.shape();
                let update = |m: &[f32]| -> Vec<f32> {
                    let update: Vec<f32> = m
                        .iter()
                        .zip(&g)
                        .map(|(&m, &g)| {
                            let m = m + (g - m) * (1.0 - momentum);
                            match nesterov {
                                true => m - (m - g) * (1.0 - momentum),
                                false => m,
                            }
                        })
                        .collect();
                    let ns = &NewtonSchulz::MUON;
                    orthogonalize(
                        &update,
                        shape.rows(),
                        shape.cols(),
                        ns,
                        MatrixPrecision::Bf16,
                    )
                };
                let cosine = cosine(&update(stored), &update(shadow));
                let (rows, cols) = (shape.rows(), shape.cols());
                let _ = writeln!(
                    pending.rows,
                    "{},{},{rows},{cols},{cosine:.6}",
                    self.step, info.name
                );
            }
            pending.grads.push(g);
        }
        self.pending = Some(pending);
    }

    /// After Muon's step: if it was applied, the f32 momentum takes the same
    /// gradients and the comparison is kept.
    pub fn after_step<O: Optimizer>(&mut self, muon: &O) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        if muon.steps_taken() == pending.steps_before {
            return;
        }
        let momentum = muon
            .hyper(0)
            .get("momentum")
            .and_then(|v| v.as_f64())
            .expect("Muon's momentum") as f32;
        for (shadow, g) in self.shadow.iter_mut().zip(&pending.grads) {
            for (m, &g) in shadow.iter_mut().zip(g) {
                *m += (g - *m) * (1.0 - momentum);
            }
        }
        self.csv.push_str(&pending.rows);
    }

    /// Writes `momentum-error-<label>.csv` into `out` and prints each tensor's mean
    /// and lowest cosine.
    pub fn finish(self, out: &Path, label: &str) {
        let path = out.join(format!("momentum-error-{label}.csv"));
        std::fs::write(&path, &self.csv).expect("write the momentum error log");
        let mut per_tensor: Vec<(String, Vec<f64>)> = Vec::new();
        for line in self.csv.lines().skip(1) {
            let fields: Vec<&str> = line.split(',').collect();
            let value: f64 = fields[4].parse().expect("a cosine");
            match per_tensor.iter_mut().find(|(n, _)| n == fields[1]) {
                Some((_, v)) => v.push(value),
                None => per_tensor.push((fields[1].to_string(), vec![value])),
            }
        }
        println!(
            "{label}: its momentum against an f32 one, cosine of the orthogonalized updates ({}):",
            path.display()
        );
        for (name, values) in per_tensor {
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let lowest = values.iter().copied().fold(f64::INFINITY, f64::min);
            println!(
                "  {name}: mean {mean:.4}, lowest {lowest:.4} over {} steps",
                values.len()
            );
        }
    }
}
