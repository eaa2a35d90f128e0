#!/usr/bin/env python3
"""Step times of flashoptim 0.1.4 and torch's fused AdamW on flashopt-bench's workloads.

Run on the GPU machine, after `flashopt-bench run`, with flashoptim installed
(`pip install --no-deps flashoptim-0.1.4-py3-none-any.whl`; torch and triton present):

    python3 scripts/bench_reference.py OUT/reference.csv [WORKLOAD,..]

Timing matches flashopt-bench: batches of 10 back-to-back steps between CUDA events,
3 warm-up batches, the median of 21 batches, per step. Parameters and gradients are bf16
for flashoptim (24-bit master weights, fresh zero state); torch's fused AdamW runs twice,
on fp32 parameters and gradients and on bf16 ones (states in the parameters' dtype).
"""

import statistics
import sys

import torch

WARMUP_BATCHES, BATCHES, STEPS_PER_BATCH = 3, 21, 10


def gpt2_124m():
    d = 768
    v = [50257 * d, 1024 * d]
    for _ in range(12):
        v += [d, d, 3 * d * d, 3 * d, d * d, d, d, d, 4 * d * d, 4 * d, 4 * d * d, d]
    return v + [d, d]


def llama31_8b_layers(layers):
    h, kv, ffn = 4096, 1024, 14336
    return [x for _ in range(layers) for x in [h * h, kv * h, kv * h, h * h, ffn * h, ffn * h, h * ffn, h, h]]


WORKLOADS = [
    ("4M", [1 << 22]),
    ("64M", [1 << 26]),
    ("268M", [1 << 28]),
    ("GPT-2 124M", gpt2_124m()),
    ("Llama-3.1-8B x4 layers", llama31_8b_layers(4)),
]


def make_params(shapes, dtype):
    params = []
    for i, n in enumerate(shapes):
        j = torch.arange(n, device="cuda", dtype=torch.int64)
        p = torch.nn.Parameter(((((j + i) % 2003).float() - 1001.0) * 1e-3).to(dtype))
        p.grad = (((j % 97).float() - 48.0) * 1e-4).to(dtype)
        params.append(p)
    return params


def time_step(opt):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for batch in range(WARMUP_BATCHES + BATCHES):
        torch.cuda.synchronize()
        start.record()
        for _ in range(STEPS_PER_BATCH):
            opt.step()
        end.record()
        end.synchronize()
        if batch >= WARMUP_BATCHES:
            times.append(start.elapsed_time(end) / STEPS_PER_BATCH)
    return statistics.median(times)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "reference.csv"
    import flashoptim
    import triton

    cases = [
        ("flashoptim", "AdamW", "24", torch.bfloat16,
         lambda ps: flashoptim.FlashAdamW(ps, lr=1e-3, weight_decay=0.01, master_weight_bits=24)),
        ("flashoptim", "Lion", "24", torch.bfloat16,
         lambda ps: flashoptim.FlashLion(ps, lr=1e-4, master_weight_bits=24)),
        ("flashoptim", "SGD", "24", torch.bfloat16,
         lambda ps: flashoptim.FlashSGD(ps, lr=1e-2, momentum=0.9, master_weight_bits=24)),
        ("torch", "AdamW", "fp32", torch.float32,
         lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, fused=True)),
        # bf16 parameters, gradients and states (torch keeps states in the parameters'
        # dtype): 14 bytes per parameter moved, no master weights.
        ("torch", "AdamW", "bf16", torch.bfloat16,
         lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, fused=True)),
    ]
    only = sys.argv[2].split(",") if len(sys.argv) > 2 else None
    f = open(out, "w")
    f.write(
        f"# versions=torch {torch.__version__} / triton {triton.__version__} / "
        f"flashoptim {flashoptim.__version__} / {torch.cuda.get_device_name()}\n"
        "impl,optimizer,master,workload,params,ms\n"
    )
    for name, shapes in WORKLOADS:
        if only and name not in only:
            continue
        for impl, opt_name, master, dtype, make in cases:
            params = make_params(shapes, dtype)
            opt = make(params)
            ms = time_step(opt)
            line = f"{impl},{opt_name},{master},{name},{sum(shapes)},{ms:.4f}"
            print(line, flush=True)
            # Written as measured: a run cut short keeps its rows.
            f.write(line + "\n")
            f.flush()
            del opt, params
            torch.cuda.empty_cache()
    f.close()
    print("wrote", out)


if __name__ == "__main__":
    main()
