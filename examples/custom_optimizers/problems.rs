//! Small real problems to train on: least squares and a batch of Rosenbrock functions.

/// A deterministic uniform generator in [-1, 1).
pub struct Uniform(u64);

impl Uniform {
    pub fn new(seed: u64) -> Uniform {
        Uniform(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
    }
}

/// A differentiable objective over one flat parameter vector.
pub trait Problem {
    fn dim(&self) -> usize;
    fn initial(&self) -> Vec<f32>;
    /// The loss at `w` and its gradient.
    fn loss_and_grad(&self, w: &[f32]) -> (f32, Vec<f32>);
}

/// Mean squared error of a linear model (weights and a bias) on noisy data.
pub struct LeastSquares {
    samples: usize,
    features: usize,
    x: Vec<f32>,
    y: Vec<f32>,
}

impl LeastSquares {
    pub fn new(samples: usize, features: usize, seed: u64) -> LeastSquares {
        let mut u = Uniform::new(seed);
        let w_true: Vec<f32> = (0..features).map(|_| u.next()).collect();
        let x: Vec<f32> = (0..samples * features).map(|_| u.next()).collect();
        let y = (0..samples)
            .map(|i| {
                let row = &x[i * features..(i + 1) * features];
                row.iter().zip(&w_true).map(|(a, b)| a * b).sum::<f32>() + 0.5 + 0.01 * u.next()
            })
            .collect();
        LeastSquares {
            samples,
            features,
            x,
            y,
        }
    }
}

impl Problem for LeastSquares {
    fn dim(&self) -> usize {
        self.features + 1
    }

    fn initial(&self) -> Vec<f32> {
        vec![0.0; self.dim()]
    }

    fn loss_and_grad(&self, w: &[f32]) -> (f32, Vec<f32>) {
        let (weights, bias) = (&w[..self.features], w[self.features]);
        let mut grad = vec![0.0f32; self.dim()];
        let mut loss = 0.0f32;
        let scale = 2.0 / self.samples as f32;
        for i in 0..self.samples {
            let row = &self.x[i * self.features..(i + 1) * self.features];
            let r = row.iter().zip(weights).map(|(a, b)| a * b).sum::<f32>() + bias - self.y[i];
            loss += r * r;
            for (g, a) in grad.iter_mut().zip(row) {
                *g += scale * r * a;
            }
            grad[self.features] += scale * r;
        }
        (loss / self.samples as f32, grad)
    }
}

/// Independent 2-D Rosenbrock functions `(1 - x)^2 + 100 (y - x^2)^2`, summed.
pub struct Rosenbrock {
    pub pairs: usize,
}

impl Problem for Rosenbrock {
    fn dim(&self) -> usize {
        2 * self.pairs
    }

    fn initial(&self) -> Vec<f32> {
        let mut u = Uniform::new(3);
        (0..self.dim()).map(|_| -1.0 + 0.5 * u.next()).collect()
    }

    fn loss_and_grad(&self, w: &[f32]) -> (f32, Vec<f32>) {
        let mut grad = vec![0.0f32; w.len()];
        let mut loss = 0.0;
        for k in 0..self.pairs {
            let (x, y) = (w[2 * k], w[2 * k + 1]);
            loss += (1.0 - x).powi(2) + 100.0 * (y - x * x).powi(2);
            grad[2 * k] = -2.0 * (1.0 - x) - 400.0 * x * (y - x * x);
            grad[2 * k + 1] = 200.0 * (y - x * x);
        }
        (loss / self.pairs as f32, grad)
    }
}

/// Train `problem` with an optimizer on bf16 parameters (24-bit master weights): the
/// gradient is taken at the bf16 values the model sees, as in mixed-precision training.
/// Returns the loss at every step.
pub fn train<S: flashopt::OptimizerSpec>(
    spec: &S,
    problem: &dyn Problem,
    steps: usize,
) -> Vec<f32> {
    use flashopt::{CpuOptimizer, GradBuf, MasterMode, PlanConfig};
    use half::bf16;
    let mut opt =
        CpuOptimizer::for_spec(spec, PlanConfig::bf16(MasterMode::Int8)).expect("valid optimizer");
    let w = opt.add_tensor("w", &problem.initial()).expect("one tensor");
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let (loss, grad) = problem.loss_and_grad(&opt.param(w).unwrap());
        losses.push(loss);
        let grad: Vec<bf16> = grad.iter().map(|&g| bf16::from_f32(g)).collect();
        opt.step(&[GradBuf::Bf16(&grad)])
            .expect("buffers fit the plan");
    }
    losses
}
