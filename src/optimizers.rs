//! The optimizers flashopt ships, each a few lines of the `optimizer!` DSL, following
//! flashoptim 0.1.4's arithmetic operation by operation (`docs/OPTIMIZERS.md` lists
//! the deliberate differences). Host scalars are computed as flashoptim computes them:
//! in f32 as its kernels do, and in f64 (`f64(..)`) where it computes them in Python.
//! Where its compiled Triton kernels contract `a * b + c` into one FMA (LLVM's rule:
//! the left product of a sum or difference, else the right one), the rules say `fma`;
//! checked against vectors flashoptim computed on a GPU (tests/flashoptim_vectors.rs).
//!
//! ```
//! use flashopt::optimizers::AdamW;
//! use flashopt::{CpuOptimizer, MasterMode, Optimizer, PlanConfig};
//!
//! let adamw = AdamW { lr: 3e-4, weight_decay: 0.1, ..AdamW::default() };
//! let mut opt = CpuOptimizer::for_spec(&adamw, PlanConfig::bf16(MasterMode::Int8)).unwrap();
//! assert_eq!(opt.plan().traffic().total(), 12.25);
//! // Ranges are checked when the optimizer is built, naming the value.
//! let bad = AdamW { b2: 1.5, ..AdamW::default() };
//! let err = CpuOptimizer::for_spec(&bad, PlanConfig::f32()).unwrap_err();
//! assert_eq!(err.to_string(), "hyper-parameter `b2` = 1.5 is outside its range [0.0, 1.0)");
//! # let _ = &mut opt;
//! ```

use crate::optimizer;

optimizer! {
    /// AdamW: Adam with decoupled weight decay (flashoptim's `FlashAdamW`).
    #[flashopt(min_step = 0.1)]
    pub AdamW {
        /// Learning rate.
        #[flashopt(learning_rate)]
        hyper lr: f32 = 1e-3 in 0.0..;
        /// Decay of the first moment.
        hyper b1: f32 = 0.9 in 0.0..1.0;
        /// Decay of the second moment.
        hyper b2: f32 = 0.999 in 0.0..1.0;
        /// Added to the denominator.
        hyper eps: f32 = 1e-8 in 0.0..;
        /// Decoupled weight decay: `p *= 1 - weight_decay * lr` each step.
        hyper weight_decay: f32 = 1e-2 in 0.0..;
        /// Scale weight decay by `lr / initial_lr` instead of `lr`.
        hyper decouple_lr: bool = false;
        /// The learning rate weight decay is relative to with `decouple_lr`.
        hyper initial_lr: f32 = lr in 0.0..;
        state m: signed;
        state v: nonneg;

        // flashoptim computes the decay in Python (f64) and passes it to its kernel as f32.
        let decay = if decouple_lr { f64(weight_decay * (lr / initial_lr)) } else { f64(weight_decay * lr) };
        m = fma(m, b1, g * (1.0 - b1));
        v = fma(v, b2, g * g * (1.0 - b2));
        let bias1 = 1.0 - powi(b1, t);
        let bias2 = 1.0 - powi(b2, t);
        p = fma(p, 1.0 - decay, -(lr * (m / bias1) / ((v / bias2).sqrt() + eps)));
    }
}

optimizer! {
    /// AdamW with each element's step capped at the largest one exact Adam can take:
    /// [`AdamW`]'s arithmetic, bit for bit, wherever the cap does not bind.
    ///
    /// With the moments started at zero, Cauchy-Schwarz bounds exact Adam's
    /// `|m_hat| / sqrt(v_hat)` at step `t` by `(1 - b1) / (1 - b1^t) * sqrt((1 - b2^t)
    /// / (1 - b2)) * sqrt((1 - r^t) / (1 - r))`, `r = b1^2 / b2` (`t` where `r = 1`), so
    /// with f32 states the cap changes nothing. With 8-bit states it catches one
    /// failure of flashoptim's arithmetic: an element whose second-moment code rounds
    /// to 0 (its `sqrt(v)` under 1/510 of its group's largest) while its momentum code
    /// does not moves by `lr * m_hat / eps` on a zero gradient. On a 353M-parameter GPT
    /// with bf16 compute that made the loss spike to 472 where this trains smoothly
    /// (docs/TRAINING.md). Not in flashoptim: use [`AdamW`] for its exact arithmetic.
    #[flashopt(min_step = 0.1)]
    pub BoundedAdamW {
        /// Learning rate.
        #[flashopt(learning_rate)]
        hyper lr: f32 = 1e-3 in 0.0..;
        /// Decay of the first moment.
        hyper b1: f32 = 0.9 in 0.0..1.0;
        /// Decay of the second moment.
        hyper b2: f32 = 0.999 in 0.0..1.0;
        /// Added to the denominator.
        hyper eps: f32 = 1e-8 in 0.0..;
        /// Decoupled weight decay: `p *= 1 - weight_decay * lr` each step.
        hyper weight_decay: f32 = 1e-2 in 0.0..;
        /// Scale weight decay by `lr / initial_lr` instead of `lr`.
        hyper decouple_lr: bool = false;
        /// The learning rate weight decay is relative to with `decouple_lr`.
        hyper initial_lr: f32 = lr in 0.0..;
        state m: signed;
        state v: nonneg;

        let decay = if decouple_lr { f64(weight_decay * (lr / initial_lr)) } else { f64(weight_decay * lr) };
        m = fma(m, b1, g * (1.0 - b1));
        v = fma(v, b2, g * g * (1.0 - b2));
        let bias1 = 1.0 - powi(b1, t);
        let bias2 = 1.0 - powi(b2, t);
        let r = b1 * b1 / b2;
        let growth = if r == 1.0 { float(t) } else { (1.0 - powi(r, t)) / (1.0 - r) };
        let cap = lr * ((1.0 - b1) / bias1 * (bias2 / (1.0 - b2)).sqrt() * growth.sqrt());
        p = fma(p, 1.0 - decay, -clamp(lr * (m / bias1) / ((v / bias2).sqrt() + eps), -cap, cap));
    }
}

optimizer! {
    /// Adam with L2 regularization: `weight_decay * p` is added to the gradient
    /// (flashoptim's `FlashAdam`).
    #[flashopt(min_step = 0.1)]
    pub Adam {
        /// Learning rate.
        #[flashopt(learning_rate)]
        hyper lr: f32 = 1e-3 in 0.0..;
        /// Decay of the first moment.
        hyper b1: f32 = 0.9 in 0.0..1.0;
        /// Decay of the second moment.
        hyper b2: f32 = 0.999 in 0.0..1.0;
        /// Added to the denominator.
        hyper eps: f32 = 1e-8 in 0.0..;
        /// L2 coefficient.
        hyper weight_decay: f32 = 0.0 in 0.0..;
        state m: signed;
        state v: nonneg;

        let grad = fma(p, weight_decay, g);
        m = fma(m, b1, grad * (1.0 - b1));
        v = fma(v, b2, grad * grad * (1.0 - b2));
        let bias1 = 1.0 - powi(b1, t);
        let bias2 = 1.0 - powi(b2, t);
        p = p - lr * (m / bias1) / ((v / bias2).sqrt() + eps);
    }
}

optimizer! {
    /// Lion with decoupled weight decay (flashoptim's `FlashLion`).
    #[flashopt(min_step = 1.0)]
    pub Lion {
        /// Learning rate.
        #[flashopt(learning_rate)]
        hyper lr: f32 = 1e-3 in 0.0..;
        /// Interpolation of the update between momentum and gradient.
        hyper b1: f32 = 0.9 in 0.0..=1.0;
        /// Decay of the momentum.
        hyper b2: f32 = 0.99 in 0.0..=1.0;
        /// Decoupled weight decay: `p *= 1 - weight_decay * lr` each step.
        hyper weight_decay: f32 = 0.0 in 0.0..;
        /// Scale weight decay by `lr / initial_lr` instead of `lr`.
        hyper decouple_lr: bool = false;
        /// The learning rate weight decay is relative to with `decouple_lr`.
        hyper initial_lr: f32 = lr in 0.0..;
        state m: signed;

        // flashoptim computes the decay in Python (f64) and passes it to its kernel as f32.
        let decay = if decouple_lr { f64(weight_decay * (lr / initial_lr)) } else { f64(weight_decay * lr) };
        let update = sign(fma(m, b1, g * (1.0 - b1)));
        m = fma(m, b2, g * (1.0 - b2));
        p = fma(p, 1.0 - decay, -(update * lr));
    }
}

optimizer! {
    /// SGD with momentum, dampening, Nesterov and L2 regularization (flashoptim's
    /// `FlashSGD`). As in flashoptim, `1 - dampening` applies on every step, the first
    /// included (torch's SGD skips it on the first).
    #[flashopt(min_step = 1.0)]
    pub Sgd {
        /// Learning rate.
        #[flashopt(learning_rate)]
        hyper lr: f32 = 1e-3 in 0.0..;
        /// Momentum factor.
        hyper momentum: f32 = 0.0 in 0.0..;
        /// Dampening of the gradient in the momentum buffer.
        hyper dampening: f32 = 0.0 in 0.0..=1.0;
        /// L2 coefficient.
        hyper weight_decay: f32 = 0.0 in 0.0..;
        /// Nesterov momentum (meant with momentum > 0 and dampening 0).
        hyper nesterov: bool = false;
        state buf: signed;

        let grad = fma(p, weight_decay, g);
        buf = fma(buf, momentum, grad * f64(1.0 - dampening));
        p = fma(-(if nesterov { fma(momentum, buf, grad) } else { buf }), lr, p);
    }
}

optimizer! {
    /// SGD with decoupled weight decay (flashoptim's `FlashSGDW`).
    #[flashopt(min_step = 1.0)]
    pub SgdW {
        /// Learning rate.
        #[flashopt(learning_rate)]
        hyper lr: f32 = 1e-3 in 0.0..;
        /// Momentum factor.
        hyper momentum: f32 = 0.0 in 0.0..;
        /// Dampening of the gradient in the momentum buffer.
        hyper dampening: f32 = 0.0 in 0.0..=1.0;
        /// Decoupled weight decay: `p *= 1 - weight_decay * lr` each step.
        hyper weight_decay: f32 = 0.0 in 0.0..;
        /// Nesterov momentum (meant with momentum > 0 and dampening 0).
        hyper nesterov: bool = false;
        /// Scale weight decay by `lr / initial_lr` instead of `lr`.
        hyper decouple_lr: bool = false;
        /// The learning rate weight decay is relative to with `decouple_lr`.
        hyper initial_lr: f32 = lr in 0.0..;
        state buf: signed;

        // flashoptim computes the decay in Python (f64) and passes it to its kernel as f32.
        let decay = if decouple_lr { f64(weight_decay * (lr / initial_lr)) } else { f64(weight_decay * lr) };
        buf = fma(buf, momentum, g * f64(1.0 - dampening));
        p = fma(p, 1.0 - decay, -((if nesterov { fma(momentum, buf, g) } else { buf }) * lr));
    }
}

/// The shipped optimizers that are flashoptim 0.1.4's, operation by operation.
pub const FLASHOPTIM_NAMES: [&str; 5] = ["adamw", "adam", "lion", "sgd", "sgdw"];

/// The shipped optimizers' names, as `by_name` takes them.
pub const NAMES: [&str; 6] = ["adamw", "adam", "lion", "sgd", "sgdw", "boundedadamw"];

/// A shipped optimizer's definition by its name (`adamw`, `adam`, `lion`, `sgd`, `sgdw`,
/// `boundedadamw`).
pub fn by_name(name: &str) -> Option<flashopt_ir::OptimizerDef> {
    use flashopt_ir::OptimizerSpec;
    Some(match name {
        "adamw" => AdamW::definition(),
        "adam" => Adam::definition(),
        "lion" => Lion::definition(),
        "sgd" => Sgd::definition(),
        "sgdw" => SgdW::definition(),
        "boundedadamw" => BoundedAdamW::definition(),
        _ => return None,
    })
}
