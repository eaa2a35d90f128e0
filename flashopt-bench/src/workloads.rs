//! The benchmark's workloads: tensor shapes from public model configurations.
//! Matrices are as torch's `nn.Linear` and `nn.Embedding` hold them (a row per output
//! feature or token): what a per-row state (Adam-mini's) is kept for.

use flashopt::ir::layout::Shape;

pub struct Workload {
    pub name: &'static str,
    pub tensors: Vec<Shape>,
}

impl Workload {
    pub fn params(&self) -> usize {
        self.tensors.iter().map(|s| s.len).sum()
    }
}

/// GPT-2 124M (n_embd 768, 12 layers, vocab 50257, context 1024): its 148 tensors.
pub fn gpt2_124m() -> Vec<Shape> {
    let d = 768;
    let (m, v) = (Shape::matrix, Shape::vector);
    let mut out = vec![m(50257, d), m(1024, d)];
    for _ in 0..12 {
        // ln_1 w/b, attn c_attn w/b, c_proj w/b, ln_2 w/b, mlp c_fc w/b, c_proj w/b
        out.extend([
            v(d),
            v(d),
            m(3 * d, d),
            v(3 * d),
            m(d, d),
            v(d),
            v(d),
            v(d),
            m(4 * d, d),
            v(4 * d),
            m(d, 4 * d),
            v(d),
        ]);
    }
    out.extend([v(d), v(d)]);
    out
}

/// Four Llama-3.1-8B decoder layers (hidden 4096, 32 query and 8 key/value heads of
/// 128, intermediate 14336): 9 tensors each.
pub fn llama31_8b_layers(layers: usize) -> Vec<Shape> {
    let (h, kv, ffn) = (4096, 1024, 14336);
    let (m, v) = (Shape::matrix, Shape::vector);
    let mut out = Vec::new();
    for _ in 0..layers {
        // q, k, v, o projections; gate, up, down; two RMSNorm weights
        out.extend([
            m(h, h),
            m(kv, h),
            m(kv, h),
            m(h, h),
            m(ffn, h),
            m(ffn, h),
            m(h, ffn),
            v(h),
            v(h),
        ]);
    }
    out
}

pub fn all() -> Vec<Workload> {
    vec![
        Workload {
            name: "4M",
            tensors: vec![Shape::matrix(1 << 11, 1 << 11)],
        },
        Workload {
            name: "64M",
            tensors: vec![Shape::matrix(1 << 13, 1 << 13)],
        },
        Workload {
            name: "268M",
            tensors: vec![Shape::matrix(1 << 14, 1 << 14)],
        },
        Workload {
            name: "GPT-2 124M",
            tensors: gpt2_124m(),
        },
        Workload {
            name: "Llama-3.1-8B x4 layers",
            tensors: llama31_8b_layers(4),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_config_sizes() {
        let gpt2 = gpt2_124m();
        assert_eq!(gpt2.len(), 148);
        assert_eq!(gpt2.iter().map(|s| s.len).sum::<usize>(), 124_439_808);
        let llama = llama31_8b_layers(4);
        assert_eq!(llama.len(), 36);
        assert_eq!(llama.iter().map(|s| s.len).sum::<usize>(), 872_448_000);
        for w in all() {
            assert!(w.tensors.iter().all(|s| s.is_valid()), "{}", w.name);
        }
    }
}
