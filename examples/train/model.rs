//! A small GPT (decoder-only transformer, pre-norm, learned positions, GELU MLP)
//! written against burn's tensor API. Every parameter is cast to the backend's float
//! type where it is used, so the same code trains f32 parameters (burn's AdamW) and
//! the bf16 parameters flashopt keeps: on an f32 backend the activations are f32 in
//! both runs, on a bf16 backend the casts do nothing and everything computes in bf16.

use burn::module::{Module, Param};
use burn::tensor::activation::{gelu, log_softmax, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Element, FloatDType, Int, Tensor, TensorData};

use crate::data::Rng;

#[derive(Clone, Copy, Debug)]
pub struct GptConfig {
    pub vocab: usize,
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    pub context: usize,
}

/// A parameter in the backend's float type, which the arithmetic uses (a no-op where
/// they agree).
fn compute_of<B: Backend, const D: usize>(p: &Param<Tensor<B, D>>) -> Tensor<B, D> {
    p.val()
        .cast(FloatDType::from(<B::FloatElem as Element>::dtype()))
}

fn normal<B: Backend, const D: usize>(
    rng: &mut Rng,
    shape: [usize; D],
    std: f32,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.normal() * std).collect();
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

fn constant<B: Backend>(len: usize, value: f32, device: &B::Device) -> Param<Tensor<B, 1>> {
    Param::from_tensor(Tensor::from_data(
        TensorData::new(vec![value; len], [len]),
        device,
    ))
}

#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    weight: Param<Tensor<B, 2>>,
    bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> Linear<B> {
    fn new(rng: &mut Rng, d_in: usize, d_out: usize, std: f32, device: &B::Device) -> Self {
        Linear {
            weight: normal(rng, [d_in, d_out], std, device),
            bias: constant(d_out, 0.0, device),
        }
    }

    /// `x`: [n, d_in].
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(compute_of(&self.weight)) + compute_of(&self.bias).unsqueeze::<2>()
    }
}

#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    gamma: Param<Tensor<B, 1>>,
    beta: Param<Tensor<B, 1>>,
}

impl<B: Backend> LayerNorm<B> {
    fn new(d: usize, device: &B::Device) -> Self {
        LayerNorm {
            gamma: constant(d, 1.0, device),
            beta: constant(d, 0.0, device),
        }
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let mean = x.clone().mean_dim(1);
        let centered = x - mean;
        let var = centered.clone().powi_scalar(2).mean_dim(1);
        let normed = centered / (var + 1e-5).sqrt();
        normed * compute_of(&self.gamma).unsqueeze::<2>() + compute_of(&self.beta).unsqueeze::<2>()
    }
}

#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    ln1: LayerNorm<B>,
    wq: Linear<B>,
    wk: Linear<B>,
    wv: Linear<B>,
    wo: Linear<B>,
    ln2: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    heads: usize,
}

impl<B: Backend> Block<B> {
    fn new(rng: &mut Rng, c: &GptConfig, device: &B::Device) -> Self {
        let d = c.d_model;
        // GPT-2: residual projections scaled down by the depth.
        let out_std = 0.02 / (2.0 * c.layers as f32).sqrt();
        Block {
            ln1: LayerNorm::new(d, device),
            wq: Linear::new(rng, d, d, 0.02, device),
            wk: Linear::new(rng, d, d, 0.02, device),
            wv: Linear::new(rng, d, d, 0.02, device),
            wo: Linear::new(rng, d, d, out_std, device),
            ln2: LayerNorm::new(d, device),
            fc1: Linear::new(rng, d, 4 * d, 0.02, device),
            fc2: Linear::new(rng, 4 * d, d, out_std, device),
            heads: c.heads,
        }
    }

    /// `x`: [b * t, d]; `mask`: [1, 1, t, t], 0 where attention is allowed.
    fn forward(&self, x: Tensor<B, 2>, b: usize, t: usize, mask: Tensor<B, 4>) -> Tensor<B, 2> {
        let d = x.dims()[1];
        let (h, dh) = (self.heads, d / self.heads);
        let split = |y: Tensor<B, 2>| y.reshape([b, t, h, dh]).swap_dims(1, 2);
        let a = self.ln1.forward(x.clone());
        let q = split(self.wq.forward(a.clone()));
        let k = split(self.wk.forward(a.clone()));
        let v = split(self.wv.forward(a));
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .mul_scalar(1.0 / (dh as f64).sqrt())
            + mask;
        let att = softmax(scores, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b * t, d]);
        let x = x + self.wo.forward(att);
        let m = self
            .fc2
            .forward(gelu(self.fc1.forward(self.ln2.forward(x.clone()))));
        x + m
    }
}

#[derive(Module, Debug)]
pub struct Gpt<B: Backend> {
    tokens: Param<Tensor<B, 2>>,
    positions: Param<Tensor<B, 2>>,
    blocks: Vec<Block<B>>,
    ln_f: LayerNorm<B>,
    head: Linear<B>,
}

impl<B: Backend> Gpt<B> {
    /// Deterministic: the same seed gives the same weights on every backend.
    pub fn new(c: &GptConfig, seed: u64, device: &B::Device) -> Self {
        let mut rng = Rng::new(seed);
        Gpt {
            tokens: normal(&mut rng, [c.vocab, c.d_model], 0.02, device),
            positions: normal(&mut rng, [c.context, c.d_model], 0.02, device),
            blocks: (0..c.layers)
                .map(|_| Block::new(&mut rng, c, device))
                .collect(),
            ln_f: LayerNorm::new(c.d_model, device),
            head: Linear::new(&mut rng, c.d_model, c.vocab, 0.02, device),
        }
    }

    /// Mean cross-entropy (nats per byte) of predicting `targets` from `inputs`,
    /// both [b, t]. The log-softmax and the mean are computed in f32, as standard
    /// mixed precision does, unless `compute_dtype_loss` asks for the backend's
    /// float type (bf16 on the bf16 backend: a sum over 256 logits rounded to 8 bits).
    pub fn loss(
        &self,
        inputs: Tensor<B, 2, Int>,
        targets: Tensor<B, 2, Int>,
        mask: Tensor<B, 4>,
        compute_dtype_loss: bool,
    ) -> Tensor<B, 1> {
        let [b, t] = inputs.dims();
        let d = self.tokens.dims()[1];
        let x = compute_of(&self.tokens).select(0, inputs.reshape([b * t]));
        let pos = compute_of(&self.positions).narrow(0, 0, t).unsqueeze::<3>();
        let mut x = (x.reshape([b, t, d]) + pos).reshape([b * t, d]);
        for block in &self.blocks {
            x = block.forward(x, b, t, mask.clone());
        }
        let logits = self.head.forward(self.ln_f.forward(x));
        let logits = match compute_dtype_loss {
            true => logits,
            false => logits.cast(FloatDType::F32),
        };
        let logp = log_softmax(logits, 1);
        let picked = logp.gather(1, targets.reshape([b * t, 1]));
        picked.mean().neg()
    }
}

/// The causal mask for `t` positions: 0 on and below the diagonal, -1e9 above.
pub fn causal_mask<B: Backend>(t: usize, device: &B::Device) -> Tensor<B, 4> {
    let values: Vec<f32> = (0..t * t)
        .map(|k| if k % t > k / t { -1e9 } else { 0.0 })
        .collect();
    Tensor::from_data(TensorData::new(values, [1, 1, t, t]), device)
}
