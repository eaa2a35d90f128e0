//! Three optimizers that neither flashoptim, bitsandbytes nor torchao ships as a fused,
//! compressed kernel, each in a few lines of the DSL.

use flashopt::optimizer;

optimizer! {
    /// Adan (Xie et al., 2022, Algorithm 1): Nesterov-style momentum from gradient
    /// differences, with decoupled weight decay. The previous gradient is a state too,
    /// kept in bf16.
    pub Adan {
        hyper lr: f32 = 1e-3 in 0.0..;
        hyper b1: f32 = 0.02 in 0.0..=1.0;
        hyper b2: f32 = 0.08 in 0.0..=1.0;
        hyper b3: f32 = 0.01 in 0.0..=1.0;
        hyper eps: f32 = 1e-8 in 0.0..;
        hyper weight_decay: f32 = 0.0 in 0.0..;
        state m: signed;
        state d: signed;
        state n: nonneg;
        state prev: signed = bf16;

        let diff = if t == 1 { 0.0 } else { g - prev };
        m = (1.0 - b1) * m + b1 * g;
        d = (1.0 - b2) * d + b2 * diff;
        let u = g + (1.0 - b2) * diff;
        n = (1.0 - b3) * n + b3 * u * u;
        prev = g;
        p = (p - lr * (m + (1.0 - b2) * d) / (n.sqrt() + eps)) / (1.0 + lr * weight_decay);
    }
}

optimizer! {
    /// Signum: signSGD with momentum (Bernstein et al., 2018), decoupled weight decay.
    pub Signum {
        hyper lr: f32 = 1e-3 in 0.0..;
        hyper beta: f32 = 0.9 in 0.0..1.0;
        hyper weight_decay: f32 = 0.0 in 0.0..;
        state m: signed;

        m = beta * m + (1.0 - beta) * g;
        p = p * (1.0 - lr * weight_decay) - lr * sign(m);
    }
}

optimizer! {
    /// A Sophia-style clipped update (Liu et al., 2023): momentum over a curvature
    /// estimate, clipped element-wise to [-1, 1]. The curvature here is an EMA of g^2
    /// refreshed every step (a Gauss-Newton-style proxy), not Sophia's Hutchinson
    /// estimate every k steps.
    pub SophiaClip {
        hyper lr: f32 = 1e-3 in 0.0..;
        hyper b1: f32 = 0.965 in 0.0..1.0;
        hyper b2: f32 = 0.99 in 0.0..1.0;
        hyper rho: f32 = 0.04 in 0.0..;
        hyper eps: f32 = 1e-12 in 0.0..;
        hyper weight_decay: f32 = 0.0 in 0.0..;
        state m: signed;
        state h: nonneg;

        m = b1 * m + (1.0 - b1) * g;
        h = b2 * h + (1.0 - b2) * g * g;
        p = p * (1.0 - lr * weight_decay) - lr * clamp(m / max(rho * h, eps), -1.0, 1.0);
    }
}

optimizer! {
    /// LARS (You et al. 2017): momentum SGD whose step is scaled per tensor by
    /// `trust * ||p|| / ||g + weight_decay * p||`, so every layer moves by a similar
    /// fraction of its norm. Two per-tensor reductions; the compiler adds a pass.
    pub Lars {
        #[flashopt(learning_rate)]
        hyper lr: f32 = 0.1 in 0.0..;
        hyper momentum: f32 = 0.9 in 0.0..1.0;
        hyper weight_decay: f32 = 1e-4 in 0.0..;
        hyper trust: f32 = 1e-2 in 0.0..;
        state m: signed;

        let update = g + weight_decay * p;
        let weights = tensor_norm(p);
        let size = tensor_norm(update);
        let ratio = if weights > 0.0 && size > 0.0 { trust * weights / size } else { 1.0 };
        m = momentum * m + lr * ratio * update;
        p = p - m;
    }
}
