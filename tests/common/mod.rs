//! Helpers shared by the integration tests.
#![allow(dead_code)]

/// A small deterministic generator (xorshift64*), so tests need no RNG crate and
/// every run sees the same data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    pub fn normals(&mut self, n: usize, scale: f64) -> Vec<f32> {
        (0..n).map(|_| (self.normal() * scale) as f32).collect()
    }
}

/// One vector per length, uniform in `[-scale, scale)`, the same for the same seed.
pub fn uniform_tensors(lens: &[usize], seed: u64, scale: f32) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    lens.iter()
        .map(|&n| {
            (0..n)
                .map(|_| (rng.uniform() * 2.0 - 1.0) as f32 * scale)
                .collect()
        })
        .collect()
}

/// libdevice's `__nv_powif`, with which flashoptim's `_triton_adam_kernel` computes
/// `beta^step`: f32 square-and-multiply, low bits first (measured on the GPU:
/// tests/flashoptim_vectors.rs).
pub fn powif(x: f32, n: u64) -> f32 {
    let (mut acc, mut base, mut n) = (None::<f32>, x, n);
    loop {
        if n & 1 == 1 {
            acc = Some(acc.map_or(base, |a| a * base));
        }
        n >>= 1;
        if n == 0 {
            return acc.unwrap_or(1.0);
        }
        base *= base;
    }
}
