#!/usr/bin/env python3
"""Step times of `torch.optim.Muon` on flashopt-bench's workloads, their matrices
only (torch's Muon takes nothing else), and torch's fused AdamW over the same
tensors; and, for the error study and CI's fixture, torch's orthogonalization of
small matrices.

    python3 scripts/matrix_reference.py OUT/matrix_reference.csv [WORKLOAD,..]

`torch.optim.Muon` with its defaults (lr 1e-3, momentum 0.95, Nesterov, weight decay
0.1, five Newton-Schulz steps in bf16), fp32 parameters and gradients. Timing as
scripts/bench_reference.py: batches of 10 steps between CUDA events, 3 warm-up
batches, the median of 21 batches, per step.
"""

import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from reducing_reference import run_cases  # noqa: E402
from row_column_reference import WORKLOADS, make_params  # noqa: E402


def matrices(shapes):
    return [s for s in shapes if len(s) == 2]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "matrix_reference.csv"
    only = sys.argv[2].split(",") if len(sys.argv) > 2 else None
    cases = [
        ("torch", "Muon", "fp32", lambda ps: torch.optim.Muon(ps)),
        ("torch", "AdamW", "fp32", lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, fused=True)),
    ]
    workloads = [(name, matrices(shapes)) for name, shapes in WORKLOADS]
    run_cases(out, only, workloads, cases, make_params)


if __name__ == "__main__":
    main()
