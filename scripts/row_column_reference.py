#!/usr/bin/env python3
"""Step times of torch's Adafactor and of Adam-mini written from its paper, on
flashopt-bench's workloads with their tensors' shapes (Adafactor factors each 2-D
tensor: the shape, not only the size, decides its work).

    python3 scripts/row_column_reference.py OUT/row_column_reference.csv [WORKLOAD,..]

`torch.optim.Adafactor` with its defaults (lr 1e-2, `foreach` as torch picks it), fp32
parameters and gradients. Adam-mini (Zhang et al. 2024): Adam whose second moment is
one value per row, the mean of the squared gradient over the row, written with
torch's `_foreach` operations over all tensors (the row means one `mean(dim=-1)` per
tensor), fp32, decoupled weight decay 0.1. torch's fused AdamW (fp32) beside them.
Timing as scripts/bench_reference.py: batches of 10 steps between CUDA events, 3
warm-up batches, the median of 21 batches, per step.
"""

import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from reducing_reference import run_cases  # noqa: E402


def gpt2_124m():
    d = 768
    v = [[50257, d], [1024, d]]
    for _ in range(12):
        v += [[d], [d], [3 * d, d], [3 * d], [d, d], [d], [d], [d], [4 * d, d], [4 * d], [d, 4 * d], [d]]
    return v + [[d], [d]]


def llama31_8b_layers(layers):
    h, kv, ffn = 4096, 1024, 14336
    one = [[h, h], [kv, h], [kv, h], [h, h], [ffn, h], [ffn, h], [h, ffn], [h], [h]]
    return [s for _ in range(layers) for s in one]


# The names of flashopt-bench's workloads; 268M is one 16384 x 16384 matrix.
WORKLOADS = [
    ("268M", [[16384, 16384]]),
    ("GPT-2 124M", gpt2_124m()),
    ("Llama-3.1-8B x4 layers", llama31_8b_layers(4)),
]


def make_params(shapes):
    params = []
    for i, shape in enumerate(shapes):
        n = 1
        for s in shape:
            n *= s
        j = torch.arange(n, device="cuda", dtype=torch.int64)
        p = torch.nn.Parameter((((j + i) % 2003).float() - 1001.0).mul_(1e-3).reshape(shape))
        p.grad = (((j % 97).float() - 48.0) * 1e-4).reshape(shape)
        params.append(p)
    return params


class AdamMini(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.t = 0

    @torch.no_grad()
    def step(self):
        self.t += 1
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            gs = [p.grad for p in ps]
            for p in ps:
                if not self.state[p]:
                    rows = p.shape[:-1] + (1,) if p.dim() > 1 else (1,)
                    self.state[p] = dict(m=torch.zeros_like(p), v=torch.zeros(rows, device=p.device))
            ms = [self.state[p]["m"] for p in ps]
            vs = [self.state[p]["v"] for p in ps]
            b1, b2 = group["betas"]
            lr = group["lr"]
            torch._foreach_mul_(ps, 1 - lr * group["weight_decay"])
            torch._foreach_lerp_(ms, gs, 1 - b1)
            means = [g.square().mean(dim=-1, keepdim=True) if g.dim() > 1 else g.square().mean().reshape(1) for g in gs]
            torch._foreach_mul_(vs, b2)
            torch._foreach_add_(vs, means, alpha=1 - b2)
            denom = torch._foreach_div(vs, 1 - b2**self.t)
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, group["eps"])
            update = torch._foreach_div(ms, 1 - b1**self.t)
            torch._foreach_div_(update, denom)
            torch._foreach_add_(ps, update, alpha=-lr)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "row_column_reference.csv"
    only = sys.argv[2].split(",") if len(sys.argv) > 2 else None
    cases = [
        ("torch", "Adafactor", "fp32", lambda ps: torch.optim.Adafactor(ps)),
        ("pytorch-foreach", "AdamMini", "fp32", lambda ps: AdamMini(ps)),
        ("torch", "AdamW", "fp32", lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, fused=True)),
    ]
    run_cases(out, only, WORKLOADS, cases, make_params)


if __name__ == "__main__":
    main()
