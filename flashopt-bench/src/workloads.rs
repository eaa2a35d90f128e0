//! The benchmark's workloads: tensor shapes from public model configurations.

pub struct Workload {
    pub name: &'static str,
    pub tensors: Vec<usize>,
}

impl Workload {
    pub fn params(&self) -> usize {
        self.tensors.iter().sum()
    }
}

/// GPT-2 124M (n_embd 768, 12 layers, vocab 50257, context 1024): its 148 tensors.
pub fn gpt2_124m() -> Vec<usize> {
    let d = 768;
    let mut v = vec![50257 * d, 1024 * d];
    for _ in 0..12 {
        // ln_1 w/b, attn c_attn w/b, c_proj w/b, ln_2 w/b, mlp c_fc w/b, c_proj w/b
        v.extend([
            d,
            d,
            3 * d * d,
            3 * d,
            d * d,
            d,
            d,
            d,
            4 * d * d,
            4 * d,
            4 * d * d,
            d,
        ]);
    }
    v.extend([d, d]);
    v
}

/// Four Llama-3.1-8B decoder layers (hidden 4096, 32 query and 8 key/value heads of
/// 128, intermediate 14336): 9 tensors each.
pub fn llama31_8b_layers(layers: usize) -> Vec<usize> {
    let (h, kv, ffn) = (4096, 1024, 14336);
    let mut v = Vec::new();
    for _ in 0..layers {
        // q, k, v, o projections; gate, up, down; two RMSNorm weights
        v.extend([
            h * h,
            kv * h,
            kv * h,
            h * h,
            ffn * h,
            ffn * h,
            h * ffn,
            h,
            h,
        ]);
    }
    v
}

pub fn all() -> Vec<Workload> {
    vec![
        Workload {
            name: "4M",
            tensors: vec![1 << 22],
        },
        Workload {
            name: "64M",
            tensors: vec![1 << 26],
        },
        Workload {
            name: "268M",
            tensors: vec![1 << 28],
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
        assert_eq!(gpt2.iter().sum::<usize>(), 124_439_808);
        let llama = llama31_8b_layers(4);
        assert_eq!(llama.len(), 36);
        assert_eq!(llama.iter().sum::<usize>(), 872_448_000);
    }
}
