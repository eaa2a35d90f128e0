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

optimizer! {
    /// Adafactor (Shazeer & Stern, 2018) as `torch.optim.Adafactor` computes it: the
    /// second moment factored into a mean per row `r` and per column `c` of each
    /// tensor (a tensor is a matrix of rows of its last dimension; a vector is one
    /// row, which makes its estimate per element), decayed by `t^beta2_decay`;
    /// the relative step `max(eps2, rms(p)) * min(lr, 1 / sqrt(t))`; the update
    /// clipped to an RMS of `d`; decoupled weight decay `p *= 1 - lr * weight_decay`.
    /// Its states are `rows + cols` f32 values per tensor: with bf16 parameters and
    /// 24-bit masters it holds 3 bytes per parameter, plus the gradient.
    ///
    /// Each step reads the gradient four times: the row and column means and the
    /// parameter's RMS, the mean of the row factor, the update's RMS, then the step.
    #[flashopt(min_step = 0.001)]
    pub Adafactor {
        /// The relative step's ceiling (`rho_t = min(lr, 1 / sqrt(t))`) and the
        /// weight decay's scale.
        #[flashopt(learning_rate)]
        hyper lr: f32 = 1e-2 in 0.0..;
        /// The decay of the second moment: its weight at step `t` is `t^beta2_decay`.
        hyper beta2_decay: f32 = -0.8 in ..=0.0;
        /// The floor of the second-moment estimate and of the row factor's mean
        /// (torch's `eps[0]`, whose default is the parameter dtype's epsilon: this is
        /// f32's, torch's for f32 parameters; bf16's is 2^-7).
        hyper eps1: f32 = 1.1920929e-7 in 0.0..;
        /// The floor of the parameter's RMS in the relative step (torch's `eps[1]`).
        hyper eps2: f32 = 1e-3 in 0.0..;
        /// The update's RMS is clipped to this.
        hyper d: f32 = 1.0 in 0.0..;
        /// Decoupled weight decay: `p *= 1 - lr * weight_decay` each step.
        hyper weight_decay: f32 = 0.0 in 0.0..;
        state r: nonneg per row;
        state c: nonneg per column;

        let decay = powf(float(t), beta2_decay);
        let alpha = max(eps2, tensor_rms(p)) * min(lr, 1.0 / sqrt(float(t)));
        r = lerp(r, row_mean(g * g), decay);
        c = lerp(c, col_mean(g * g), decay);
        // `c * (r / mean)`, not torch's `(r * c) / mean`: a vector (one row) gets
        // `r / r = 1` exactly, torch's per-element estimate `c` (while `r >= eps1`).
        let v = c * (r / max(tensor_mean(r), eps1));
        let u = g * rsqrt(max(v, eps1 * eps1));
        let clip = max(1.0, tensor_rms(u) / d);
        p = p * (1.0 - lr * weight_decay) - (alpha / clip) * u;
    }
}

optimizer! {
    /// [`Adafactor`] with the paper's optional first moment (Shazeer & Stern, 2018,
    /// algorithm 4 with `beta1 > 0`): the clipped update averaged over steps, `m =
    /// b1 * m + (1 - b1) * u / clip`, and the step `p -= alpha * m`. The momentum is
    /// 8-bit (one byte per parameter and a scale per 32): with bf16 parameters and
    /// 24-bit masters it holds 4.0625 bytes per parameter, plus the gradient.
    #[flashopt(min_step = 0.001)]
    pub AdafactorMomentum {
        /// The relative step's ceiling (`rho_t = min(lr, 1 / sqrt(t))`) and the
        /// weight decay's scale.
        #[flashopt(learning_rate)]
        hyper lr: f32 = 1e-2 in 0.0..;
        /// The decay of the first moment.
        hyper b1: f32 = 0.9 in 0.0..1.0;
        /// The decay of the second moment: its weight at step `t` is `t^beta2_decay`.
        hyper beta2_decay: f32 = -0.8 in ..=0.0;
        /// The floor of the second-moment estimate and of the row factor's mean.
        hyper eps1: f32 = 1.1920929e-7 in 0.0..;
        /// The floor of the parameter's RMS in the relative step.
        hyper eps2: f32 = 1e-3 in 0.0..;
        /// The update's RMS is clipped to this.
        hyper d: f32 = 1.0 in 0.0..;
        /// Decoupled weight decay: `p *= 1 - lr * weight_decay` each step.
        hyper weight_decay: f32 = 0.0 in 0.0..;
        state r: nonneg per row;
        state c: nonneg per column;
        state m: signed;

        let decay = powf(float(t), beta2_decay);
        let alpha = max(eps2, tensor_rms(p)) * min(lr, 1.0 / sqrt(float(t)));
        r = lerp(r, row_mean(g * g), decay);
        c = lerp(c, col_mean(g * g), decay);
        let v = c * (r / max(tensor_mean(r), eps1));
        let u = g * rsqrt(max(v, eps1 * eps1));
        let clip = max(1.0, tensor_rms(u) / d);
        m = lerp(m, u / clip, 1.0 - b1);
        p = p * (1.0 - lr * weight_decay) - alpha * m;
    }
}

optimizer! {
    /// Adam-mini (Zhang et al., 2024): Adam whose second moment is one value per
    /// block, the mean of the squared gradient over the block. A block here is a row
    /// of the tensor's last dimension (an output neuron of a `[out, in]` weight; a
    /// vector is one block): register a tensor with the dimensions whose last one is
    /// the block (`[heads, head_dim * d_model]` for a query weight's heads). The
    /// momentum is 8-bit, the second moment `rows` f32 values per tensor: with bf16
    /// parameters and 24-bit masters, 4.06 bytes per parameter, plus the gradient.
    #[flashopt(min_step = 0.1)]
    pub AdamMini {
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
        hyper weight_decay: f32 = 0.1 in 0.0..;
        state m: signed;
        state v: nonneg per row;

        m = fma(m, b1, g * (1.0 - b1));
        v = fma(v, b2, row_mean(g * g) * (1.0 - b2));
        let bias1 = 1.0 - powi(b1, t);
        let bias2 = 1.0 - powi(b2, t);
        p = p * (1.0 - f64(weight_decay * lr)) - lr * (m / bias1) / ((v / bias2).sqrt() + eps);
    }
}

optimizer! {
    /// Muon (Jordan et al., 2024: momentum orthogonalized by Newton-Schulz) as
    /// `torch.optim.Muon` computes it: the momentum `m = lerp(m, g, 1 - momentum)`,
    /// the Nesterov update `lerp(g, m, momentum)` (torch's order of arithmetic for a
    /// weight of at least 0.5), orthogonalized over each tensor's matrix by five
    /// quintic Newton-Schulz steps in bf16 (`orthogonalize`), the step scaled by
    /// `sqrt(max(1, rows / cols))`, and decoupled weight decay
    /// `p *= 1 - lr * weight_decay`. A tensor is the matrix of rows of its last
    /// dimension: register a weight as it is, `[out, in]` as torch keeps it, or
    /// `[in, out]` as burn's `Linear` does with `rows_are_inputs` (the scale is then
    /// `sqrt(max(1, cols / rows))`, the same step as torch's on the transposed weight).
    ///
    /// Muon is for the matrices of hidden layers; step embeddings, the output head
    /// and vectors with [`AdamW`]. The momentum is 8-bit: with bf16 parameters and
    /// 24-bit masters it holds 4.06 bytes per parameter, plus the gradient.
    #[flashopt(min_step = 0.01)]
    pub Muon {
        /// Learning rate.
        #[flashopt(learning_rate)]
        hyper lr: f32 = 1e-3 in 0.0..;
        /// Decay of the momentum.
        hyper momentum: f32 = 0.95 in 0.0..1.0;
        /// Orthogonalize the Nesterov update (`lerp(g, m, momentum)`) instead of `m`.
        hyper nesterov: bool = true;
        /// Decoupled weight decay: `p *= 1 - lr * weight_decay` each step.
        hyper weight_decay: f32 = 0.1 in 0.0..;
        /// The tensors are `[in, out]` (burn's `Linear`), not torch's `[out, in]`:
        /// the step is scaled by outputs over inputs either way.
        hyper rows_are_inputs: bool = false;
        state m: signed;

        m = lerp(m, g, 1.0 - momentum);
        let update = if nesterov { m - (m - g) * (1.0 - momentum) } else { m };
        let rows_over_cols = rows / cols;
        let cols_over_rows = cols / rows;
        let scale = sqrt(max(1.0, if rows_are_inputs { cols_over_rows } else { rows_over_cols }));
        p = p * (1.0 - f64(lr * weight_decay)) - (lr * scale) * orthogonalize(update);
    }
}

/// The shipped optimizers' names, as `by_name` takes them. Each is flashoptim
/// 0.1.4's, operation by operation (Adam and AdamW with `bound_momentum: false`; Lion,
/// Sgd and SgdW under `NearestRounding`).
pub const NAMES: [&str; 5] = ["adamw", "adam", "lion", "sgd", "sgdw"];

/// The shipped optimizers that reduce over each tensor (no flashoptim counterpart).
pub const REDUCING_NAMES: [&str; 2] = ["lamb", "cautious_adamw"];

/// The shipped optimizers with states per row or per column of a tensor (no
/// flashoptim counterpart). The CPU optimizer and the GPU back end step them all
/// (the GPU where each row of a tensor starts a 32-element group); ZeRO-1 sharding
/// refuses them for now.
pub const ROW_COLUMN_NAMES: [&str; 3] = ["adafactor", "adafactor_momentum", "adam_mini"];

/// The shipped optimizers that apply a function to each tensor's whole matrix (no
/// flashoptim counterpart). The CPU optimizer and the GPU back end step them; ZeRO-1
/// sharding refuses them for now.
pub const MATRIX_NAMES: [&str; 1] = ["muon"];

/// A shipped optimizer's definition by its name (one of [`NAMES`],
/// [`REDUCING_NAMES`], [`ROW_COLUMN_NAMES`] or [`MATRIX_NAMES`]).
pub fn by_name(name: &str) -> Option<flashopt_ir::OptimizerDef> {
    use flashopt_ir::OptimizerSpec;
    Some(match name {
        "lamb" => Lamb::definition(),
        "cautious_adamw" => CautiousAdamW::definition(),
        "adafactor" => Adafactor::definition(),
        "adafactor_momentum" => AdafactorMomentum::definition(),
        "adam_mini" => AdamMini::definition(),
        "muon" => Muon::definition(),
        "adamw" => AdamW::definition(),
        "adam" => Adam::definition(),
        "lion" => Lion::definition(),
        "sgd" => Sgd::definition(),
        "sgdw" => SgdW::definition(),
        _ => return None,
    })
}
