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
//! let err = CpuOptimizer::for_spec(&bad, PlanConfig::f32_params()).unwrap_err();
//! assert_eq!(err.to_string(), "hyper-parameter `b2` = 1.5 is outside its range [0.0, 1.0)");
//! # let _ = &mut opt;
//! ```

use crate::optimizer;

optimizer! {
    /// AdamW: Adam with decoupled weight decay (flashoptim's `FlashAdamW`), its
    /// momentum kept within what its second moment allows (`bound_momentum`).
    ///
    /// Exact Adam's moments, started at zero, satisfy `|m| <= (1 - b1) * sqrt((1 - r^t)
    /// / (1 - r) / (1 - b2)) * sqrt(v)`, `r = b1^2 / b2` (Cauchy-Schwarz; `t` for the
    /// fraction where `r = 1`), so its step `|m_hat| / sqrt(v_hat)` never exceeds
    /// `(1 - b1) / (1 - b1^t) * sqrt((1 - b2^t) / (1 - b2)) * sqrt((1 - r^t) / (1 - r))`.
    /// With f32 states the bound holds and changes nothing. With 8-bit states it
    /// fails where a group of 32 mixes gradients over 500 times apart: an element's
    /// second-moment code rounds to 0 while its momentum code does not, and
    /// flashoptim's arithmetic steps it by `lr * m_hat / eps`, 10^4 times too far
    /// (docs/OPTIMIZERS.md). The bound clamps the updated momentum back into it.
    /// `bound_momentum: false` is flashoptim 0.1.4's arithmetic bit for bit.
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
        /// Keep the momentum within what the second moment allows exact Adam;
        /// `false` is flashoptim's arithmetic.
        hyper bound_momentum: bool = true;
        state m: signed;
        state v: nonneg;

        // flashoptim computes the decay in Python (f64) and passes it to its kernel as f32.
        let decay = if decouple_lr { f64(weight_decay * (lr / initial_lr)) } else { f64(weight_decay * lr) };
        let moment = fma(m, b1, g * (1.0 - b1));
        v = fma(v, b2, g * g * (1.0 - b2));
        let bias1 = 1.0 - powi(b1, t);
        let bias2 = 1.0 - powi(b2, t);
        let root = (v / bias2).sqrt();
        let r = b1 * b1 / b2;
        let growth = if r == 1.0 { float(t) } else { (1.0 - powi(r, t)) / (1.0 - r) };
        // 1e-4 of slack: one gradient meets the bound exactly (step 1), and f32
        // rounding must not clamp it there.
        let limit = (1.0 - b1) * (growth * bias2 / (1.0 - b2)).sqrt() * 1.0001 * root;
        m = if bound_momentum { clamp(moment, -limit, limit) } else { moment };
        p = fma(p, 1.0 - decay, -(lr * (m / bias1) / (root + eps)));
    }
}

optimizer! {
    /// Adam with L2 regularization: `weight_decay * p` is added to the gradient
    /// (flashoptim's `FlashAdam`), the momentum bounded by the second moment as in
    /// [`AdamW`] (`bound_momentum: false` is flashoptim's arithmetic).
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
        /// Keep the momentum within what the second moment allows exact Adam;
        /// `false` is flashoptim's arithmetic.
        hyper bound_momentum: bool = true;
        state m: signed;
        state v: nonneg;

        let grad = fma(p, weight_decay, g);
        v = fma(v, b2, grad * grad * (1.0 - b2));
        let moment = fma(m, b1, grad * (1.0 - b1));
        let bias1 = 1.0 - powi(b1, t);
        let bias2 = 1.0 - powi(b2, t);
        let root = (v / bias2).sqrt();
        let r = b1 * b1 / b2;
        let growth = if r == 1.0 { float(t) } else { (1.0 - powi(r, t)) / (1.0 - r) };
        // 1e-4 of slack: one gradient meets the bound exactly (step 1), and f32
        // rounding must not clamp it there.
        let limit = (1.0 - b1) * (growth * bias2 / (1.0 - b2)).sqrt() * 1.0001 * root;
        m = if bound_momentum { clamp(moment, -limit, limit) } else { moment };
        p = p - lr * (m / bias1) / (root + eps);
    }
}

optimizer! {
    /// Lion with decoupled weight decay (flashoptim's `FlashLion`), its momentum's
    /// codes rounded with a dither so that they decay when the gradient stops
    /// (`NearestRounding<Lion>` is flashoptim's arithmetic bit for bit).
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
        #[flashopt(dithered)]
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
    /// included (torch's SGD skips it on the first). The momentum's codes are rounded
    /// with a dither so that they decay when the gradient stops (`NearestRounding<Sgd>`
    /// is flashoptim's arithmetic bit for bit).
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
        #[flashopt(dithered)]
        state buf: signed;

        let grad = fma(p, weight_decay, g);
        buf = fma(buf, momentum, grad * f64(1.0 - dampening));
        p = fma(-(if nesterov { fma(momentum, buf, grad) } else { buf }), lr, p);
    }

    /// SGD with decoupled weight decay (flashoptim's `FlashSGDW`): [`Sgd`]'s
    /// hyper-parameters and state, its weight decay decoupled.
    pub SgdW extends Sgd {
        /// Decoupled weight decay: `p *= 1 - weight_decay * lr` each step.
        hyper weight_decay: f32 = 0.0 in 0.0..;
        /// Scale weight decay by `lr / initial_lr` instead of `lr`.
        hyper decouple_lr: bool = false;
        /// The learning rate weight decay is relative to with `decouple_lr`.
        hyper initial_lr: f32 = lr in 0.0..;

        // flashoptim computes the decay in Python (f64) and passes it to its kernel as f32.
        let decay = if decouple_lr { f64(weight_decay * (lr / initial_lr)) } else { f64(weight_decay * lr) };
        buf = fma(buf, momentum, g * f64(1.0 - dampening));
        p = fma(p, 1.0 - decay, -((if nesterov { fma(momentum, buf, g) } else { buf }) * lr));
    }
}

optimizer! {
    /// LAMB (You et al., 2019, "Large Batch Optimization for Deep Learning"): Adam's
    /// update plus decoupled weight decay, scaled per tensor by the trust ratio
    /// `||p|| / ||update||` (1 where either norm is 0), as timm's `Lamb` computes it
    /// (bias-corrected moments, no trust clipping). The momentum is bounded by the
    /// second moment as in [`AdamW`]: with 8-bit states one element stepped by
    /// `m / eps` would also inflate the tensor's update norm and shrink every other
    /// element's step.
    ///
    /// The two norms need every element before any is updated: the step reads the
    /// parameter, gradient and states twice (a reduction phase, then the update).
    #[flashopt(min_step = 0.1)]
    pub Lamb {
        /// Learning rate.
        #[flashopt(learning_rate)]
        hyper lr: f32 = 1e-3 in 0.0..;
        /// Decay of the first moment.
        hyper b1: f32 = 0.9 in 0.0..1.0;
        /// Decay of the second moment.
        hyper b2: f32 = 0.999 in 0.0..1.0;
        /// Added to the denominator.
        hyper eps: f32 = 1e-6 in 0.0..;
        /// Weight decay, added to the update before the trust ratio scales it.
        hyper weight_decay: f32 = 1e-2 in 0.0..;
        /// Keep the momentum within what the second moment allows exact Adam.
        hyper bound_momentum: bool = true;
        state m: signed;
        state v: nonneg;

        let moment = fma(m, b1, g * (1.0 - b1));
        v = fma(v, b2, g * g * (1.0 - b2));
        let bias1 = 1.0 - powi(b1, t);
        let bias2 = 1.0 - powi(b2, t);
        let root = (v / bias2).sqrt();
        let r = b1 * b1 / b2;
        let growth = if r == 1.0 { float(t) } else { (1.0 - powi(r, t)) / (1.0 - r) };
        let limit = (1.0 - b1) * (growth * bias2 / (1.0 - b2)).sqrt() * 1.0001 * root;
        m = if bound_momentum { clamp(moment, -limit, limit) } else { moment };
        let update = (m / bias1) / (root + eps) + weight_decay * p;
        let weight_norm = tensor_norm(p);
        let update_norm = tensor_norm(update);
        let trust = if weight_norm > 0.0 && update_norm > 0.0 { weight_norm / update_norm } else { 1.0 };
        p = p - lr * trust * update;
    }
}

optimizer! {
    /// Cautious AdamW (Liang et al., 2024, "Cautious Optimizers"): AdamW's update
    /// applied only where it agrees in sign with the gradient, rescaled by the
    /// fraction of the tensor that agrees (`mask / max(mean(mask), 1e-3)`), as the
    /// authors' `AdamW` with `cautious` computes it. Momentum bounded as in [`AdamW`].
    #[flashopt(min_step = 0.1)]
    pub CautiousAdamW {
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
        /// Keep the momentum within what the second moment allows exact Adam.
        hyper bound_momentum: bool = true;
        state m: signed;
        state v: nonneg;

        let moment = fma(m, b1, g * (1.0 - b1));
        v = fma(v, b2, g * g * (1.0 - b2));
        let bias1 = 1.0 - powi(b1, t);
        let bias2 = 1.0 - powi(b2, t);
        let root = (v / bias2).sqrt();
        let r = b1 * b1 / b2;
        let growth = if r == 1.0 { float(t) } else { (1.0 - powi(r, t)) / (1.0 - r) };
        let limit = (1.0 - b1) * (growth * bias2 / (1.0 - b2)).sqrt() * 1.0001 * root;
        m = if bound_momentum { clamp(moment, -limit, limit) } else { moment };
        let update = (m / bias1) / (root + eps);
        let agrees = if update * g > 0.0 { 1.0 } else { 0.0 };
        let mask = agrees / max(tensor_mean(agrees), 1e-3);
        p = p * (1.0 - f64(weight_decay * lr)) - lr * (update * mask);
    }
}

/// The shipped optimizers' names, as `by_name` takes them. Each is flashoptim
/// 0.1.4's, operation by operation (Adam and AdamW with `bound_momentum: false`; Lion,
/// Sgd and SgdW under `NearestRounding`).
pub const NAMES: [&str; 5] = ["adamw", "adam", "lion", "sgd", "sgdw"];

/// The shipped optimizers that reduce over each tensor (no flashoptim counterpart).
pub const REDUCING_NAMES: [&str; 2] = ["lamb", "cautious_adamw"];

/// A shipped optimizer's definition by its name (one of [`NAMES`] or
/// [`REDUCING_NAMES`]).
pub fn by_name(name: &str) -> Option<flashopt_ir::OptimizerDef> {
    use flashopt_ir::OptimizerSpec;
    Some(match name {
        "lamb" => Lamb::definition(),
        "cautious_adamw" => CautiousAdamW::definition(),
        "adamw" => AdamW::definition(),
        "adam" => Adam::definition(),
        "lion" => Lion::definition(),
        "sgd" => Sgd::definition(),
        "sgdw" => SgdW::definition(),
        _ => return None,
    })
}
