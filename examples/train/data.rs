//! The corpus (bytes of a public-domain book, `data/`), its split and the batches,
//! drawn from a seeded generator so that every run sees the same ones.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// xorshift64*: small, seeded, the same everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn normal(&mut self) -> f32 {
        let (u1, u2) = (self.uniform().max(1e-300), self.uniform());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

pub const CORPUS: &[u8] = include_bytes!("data/kjv-pentateuch.txt");

/// The first 90% for training, the rest for validation.
pub fn split() -> (&'static [u8], &'static [u8]) {
    CORPUS.split_at(CORPUS.len() * 9 / 10)
}

/// `batch` windows of `t + 1` bytes at random offsets: inputs and next-byte targets.
pub fn batch<B: Backend>(
    text: &[u8],
    rng: &mut Rng,
    batch: usize,
    t: usize,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let mut inputs = Vec::with_capacity(batch * t);
    let mut targets = Vec::with_capacity(batch * t);
    for _ in 0..batch {
        let start = (rng.next_u64() % (text.len() - t - 1) as u64) as usize;
        inputs.extend(text[start..start + t].iter().map(|&c| c as i64));
        targets.extend(text[start + 1..start + t + 1].iter().map(|&c| c as i64));
    }
    (
        Tensor::from_data(TensorData::new(inputs, [batch, t]), device),
        Tensor::from_data(TensorData::new(targets, [batch, t]), device),
    )
}
