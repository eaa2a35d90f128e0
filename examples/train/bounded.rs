//! AdamW with each element's update capped at the largest value exact Adam can take,
//! written in flashopt's DSL. With m and v started at zero, Cauchy-Schwarz bounds
//! exact Adam's `|m_hat| / sqrt(v_hat)` at step t by
//! `(1 - b1) / (1 - b1^t) * sqrt((1 - b2^t) / (1 - b2)) * sqrt((1 - r^t) / (1 - r))`,
//! `r = b1^2 / b2` (about 2.35 for b1 = 0.9, b2 = 0.99): with f32 states the clamp
//! changes nothing. With 8-bit states it catches one failure: an element whose
//! second-moment code rounds to 0 (its sqrt(v) under 1/510 of its group's largest)
//! while its momentum code does not, stepped with a zero gradient (a row of the
//! embedding for a byte absent from the batch), moves by `lr * m_hat / eps` instead.

use flashopt::optimizer;

optimizer! {
    /// AdamW (flashoptim's arithmetic) with the update clamped to exact Adam's bound.
    pub BoundedAdamW {
        #[flashopt(learning_rate)]
        hyper lr: f32 = 1e-3 in 0.0..;
        hyper b1: f32 = 0.9 in 0.0..1.0;
        hyper b2: f32 = 0.999 in 0.0..1.0;
        hyper eps: f32 = 1e-8 in 0.0..;
        hyper weight_decay: f32 = 1e-2 in 0.0..;
        state m: signed;
        state v: nonneg;

        let decay = f64(weight_decay * lr);
        m = fma(m, b1, g * (1.0 - b1));
        v = fma(v, b2, g * g * (1.0 - b2));
        let bias1 = 1.0 - powi(b1, t);
        let bias2 = 1.0 - powi(b2, t);
        let r = b1 * b1 / b2;
        let bound = (1.0 - b1) / bias1 * (bias2 / (1.0 - b2)).sqrt() * ((1.0 - powi(r, t)) / (1.0 - r)).sqrt();
        let update = (m / bias1) / ((v / bias2).sqrt() + eps);
        p = fma(p, 1.0 - decay, -(lr * clamp(update, -bound, bound)));
    }
}
