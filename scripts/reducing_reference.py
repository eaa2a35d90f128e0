#!/usr/bin/env python3
"""Step times of PyTorch implementations of LAMB and Cautious AdamW, written from their
papers, on flashopt-bench's workloads (torch's fused AdamW beside them).

    python3 scripts/reducing_reference.py OUT/reducing_reference.csv [WORKLOAD,..]

LAMB (You et al. 2019, Algorithm 2, as timm's `Lamb` computes it: bias-corrected
moments, weight decay added to the update, trust ratio ||p|| / ||update|| where both
are non-zero) and Cautious AdamW (Liang et al. 2024: the update masked where it
disagrees in sign with the gradient, rescaled by 1 / max(mean(mask), 1e-3), as the
authors' C-Optim AdamW) are written with torch's multi-tensor `_foreach` operations
(one kernel per operation over all tensors, the per-tensor norms in one
`_foreach_norm`), fp32 parameters, gradients and states. Timing as
scripts/bench_reference.py: batches of 10 steps between CUDA events, 3 warm-up
batches, the median of 21 batches, per step.
"""

import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_reference import WORKLOADS, make_params, time_step  # noqa: E402


class _Adam(torch.optim.Optimizer):
    """Adam's moments and direction m_hat / (sqrt(v_hat) + eps), for every tensor at once."""

    def __init__(self, params, lr, betas, eps, weight_decay):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.t = 0

    def directions(self, group):
        ps = [p for p in group["params"] if p.grad is not None]
        gs = [p.grad for p in ps]
        for p in ps:
            if not self.state[p]:
                self.state[p] = dict(m=torch.zeros_like(p), v=torch.zeros_like(p))
        ms = [self.state[p]["m"] for p in ps]
        vs = [self.state[p]["v"] for p in ps]
        b1, b2 = group["betas"]
        torch._foreach_lerp_(ms, gs, 1 - b1)
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, gs, gs, value=1 - b2)
        denom = torch._foreach_div(vs, 1 - b2**self.t)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["eps"])
        update = torch._foreach_div(ms, 1 - b1**self.t)
        torch._foreach_div_(update, denom)
        return ps, gs, update


class Lamb(_Adam):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01):
        super().__init__(params, lr, betas, eps, weight_decay)

    @torch.no_grad()
    def step(self):
        self.t += 1
        for group in self.param_groups:
            ps, _, update = self.directions(group)
            torch._foreach_add_(update, ps, alpha=group["weight_decay"])
            w = torch.stack(torch._foreach_norm(ps))
            u = torch.stack(torch._foreach_norm(update))
            trust = torch.where((w > 0) & (u > 0), w / u, torch.ones_like(w))
            torch._foreach_mul_(update, list((-group["lr"] * trust).unbind()))
            torch._foreach_add_(ps, update)


class CautiousAdamW(_Adam):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas, eps, weight_decay)

    @torch.no_grad()
    def step(self):
        self.t += 1
        for group in self.param_groups:
            lr = group["lr"]
            ps = [p for p in group["params"] if p.grad is not None]
            torch._foreach_mul_(ps, 1 - lr * group["weight_decay"])
            ps, gs, update = self.directions(group)
            agree = torch._foreach_mul(update, gs)
            masks = [(a > 0).to(a.dtype) for a in agree]
            means = torch.stack([m.mean() for m in masks]).clamp_(min=1e-3)
            torch._foreach_div_(masks, list(means.unbind()))
            torch._foreach_mul_(update, masks)
            torch._foreach_add_(ps, update, alpha=-lr)


def run_cases(out, only, workloads, cases, make_params):
    """Time each case on each workload (`only`: their names, or None for all) and
    write `impl,optimizer,master,workload,params,ms` rows to `out` as measured."""
    f = open(out, "w")
    f.write(f"# torch {torch.__version__} / {torch.cuda.get_device_name()}\n")
    f.write("impl,optimizer,master,workload,params,ms\n")
    for name, shapes in workloads:
        if only and name not in only:
            continue
        for impl, opt_name, master, make in cases:
            params = make_params(shapes)
            ms = time_step(make(params))
            n = sum(p.numel() for p in params)
            line = f"{impl},{opt_name},{master},{name},{n},{ms:.4f}"
            print(line, flush=True)
            f.write(line + "\n")
            f.flush()
            del params
            torch.cuda.empty_cache()
    f.close()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "reducing_reference.csv"
    only = sys.argv[2].split(",") if len(sys.argv) > 2 else None
    cases = [
        ("pytorch-foreach", "Lamb", "fp32", lambda ps: Lamb(ps)),
        ("pytorch-foreach", "CautiousAdamW", "fp32", lambda ps: CautiousAdamW(ps)),
        ("torch", "AdamW", "fp32", lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, fused=True)),
    ]
    run_cases(out, only, WORKLOADS, cases, lambda shapes: make_params(shapes, torch.float32))


if __name__ == "__main__":
    main()
