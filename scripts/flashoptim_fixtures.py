#!/usr/bin/env python3
"""Reference vectors from flashoptim 0.1.4 on a CUDA GPU, for flashopt's tests.

Run on the GPU machine (torch and triton present, the flashoptim wheel on PYTHONPATH):

    python3 scripts/flashoptim_fixtures.py OUT_DIR

For each shipped optimizer (AdamW, Adam, Lion, SGD, SGDW) and master mode (24, 32 bits)
it builds one bf16 parameter of N elements whose values span many magnitudes (with
zeros, bf16 subnormals and exact halfway cases), takes three flashoptim steps from
random gradients so the states are not zero, then records the state before a fourth
step, that step's gradient, and the state after it. One safetensors file per
configuration (`<optimizer>-<bits>.safetensors`), keys named as flashopt names a
tensor's stored parts:

    before::param, before::correction, before::<state>::codes, before::<state>::scales
    grad
    after::...   (the same keys as before::)

The metadata holds the optimizer, master bits, the step number of the recorded step
and the hyper-parameters as flashoptim received them (Python floats, `repr`).

It also writes `host_scalars.safetensors`: what flashoptim's kernels compute on the
device from their f32 arguments, for betas B and steps t = 1..T:
`one_minus_pow::<B>` = `1.0 - libdevice.pow(B, t)` (f32, as `_triton_adam_kernel`
computes its bias corrections) and `one_minus::<B>` = `1.0 - B` (f32).
"""

import os
import sys

import torch
import triton
import triton.language as tl
from safetensors.torch import save_file

import triton.language.extra.libdevice as libdevice  # as flashoptim imports it

import flashoptim

N = 3000  # not a multiple of 32: the last group is short
STEPS_BEFORE = 3


def parameter(gen):
    """bf16 values over many magnitudes, with zeros, subnormals and repeats."""
    mags = torch.empty(N).uniform_(-8.0, 2.0, generator=gen)
    signs = torch.randint(0, 2, (N,), generator=gen).float() * 2 - 1
    x = signs * torch.pow(10.0, mags)
    x[::97] = 0.0
    x[5::101] = 3.0e-39  # bf16 subnormal
    x[7::103] = -1.0e-40  # bf16 subnormal
    x[11::89] = 1.0  # exact
    x[13::83] = 1.0 + 2.0**-9  # between two bf16 values
    return x.to(torch.bfloat16)


def gradient(gen):
    mags = torch.empty(N).uniform_(-9.0, 0.0, generator=gen)
    signs = torch.randint(0, 2, (N,), generator=gen).float() * 2 - 1
    g = signs * torch.pow(10.0, mags)
    g[3::53] = 0.0
    g[17::211] = 1.0e-39  # subnormal in bf16 as well
    # A few whole groups of zeros (all-zero absmax) and one tiny group.
    g[320:352] = 0.0
    g[640:672] = 1.0e-30
    return g.to(torch.bfloat16)


CONFIGS = {
    "adamw": (
        lambda p, bits: flashoptim.FlashAdamW(
            [p], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1,
            master_weight_bits=bits,
        ),
        {"lr": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.1},
        [("m", "exp_avg"), ("v", "exp_avg_sq")],
    ),
    "adam": (
        lambda p, bits: flashoptim.FlashAdam(
            [p], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
            master_weight_bits=bits,
        ),
        {"lr": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
        [("m", "exp_avg"), ("v", "exp_avg_sq")],
    ),
    "lion": (
        lambda p, bits: flashoptim.FlashLion(
            [p], lr=1e-4, betas=(0.9, 0.99), weight_decay=0.1, master_weight_bits=bits,
        ),
        {"lr": 1e-4, "b1": 0.9, "b2": 0.99, "weight_decay": 0.1},
        [("m", "exp_avg")],
    ),
    "sgd": (
        lambda p, bits: flashoptim.FlashSGD(
            [p], lr=1e-2, momentum=0.9, dampening=0.1, weight_decay=0.01,
            master_weight_bits=bits,
        ),
        {"lr": 1e-2, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
        [("buf", "momentum_buffer")],
    ),
    "sgdw": (
        lambda p, bits: flashoptim.FlashSGDW(
            [p], lr=1e-2, momentum=0.9, dampening=0.1, weight_decay=0.01,
            master_weight_bits=bits,
        ),
        {"lr": 1e-2, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
        [("buf", "momentum_buffer")],
    ),
}


def snapshot(prefix, p, state, states):
    out = {f"{prefix}::param": p.detach().clone().cpu()}
    out[f"{prefix}::correction"] = state["error_bits"].clone().cpu()
    for name, key in states:
        q = state[key]
        out[f"{prefix}::{name}::codes"] = q.quantized.clone().cpu()
        out[f"{prefix}::{name}::scales"] = q.scales.clone().cpu()
    return out


def one_config(name, bits, seed):
    make, hyper, states = CONFIGS[name]
    gen = torch.Generator().manual_seed(seed)
    p = torch.nn.Parameter(parameter(gen).cuda())
    opt = make(p, bits)
    for _ in range(STEPS_BEFORE):
        p.grad = gradient(gen).cuda()
        opt.step()
    state = opt.state[p]
    tensors = snapshot("before", p, state, states)
    g = gradient(gen).cuda()
    tensors["grad"] = g.clone().cpu()
    p.grad = g
    opt.step()
    torch.cuda.synchronize()
    tensors.update(snapshot("after", p, state, states))
    meta = {
        "optimizer": name,
        "master_bits": str(bits),
        "step": str(STEPS_BEFORE + 1),
        "flashoptim": flashoptim.__version__ if hasattr(flashoptim, "__version__") else "0.1.4",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "device": torch.cuda.get_device_name(),
    }
    for k, v in hyper.items():
        meta[f"hyper.{k}"] = repr(v)
    return tensors, meta


@triton.jit
def _bias_corrections(beta, out_pow_ptr, out_one_minus_ptr, T: tl.constexpr):
    t = tl.arange(0, T) + 1
    # As _triton_adam_kernel: f32 beta argument, int step, libdevice.pow, f32 1.0 - x.
    tl.store(out_pow_ptr + t - 1, 1.0 - libdevice.pow(beta, t))
    tl.store(out_one_minus_ptr, 1.0 - beta)


def host_scalars():
    T = 16384
    out = {}
    for beta in [0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9995, 0.9999]:
        pw = torch.empty(T, device="cuda", dtype=torch.float32)
        om = torch.empty(1, device="cuda", dtype=torch.float32)
        _bias_corrections[(1,)](beta, pw, om, T=T)
        out[f"one_minus_pow::{beta!r}"] = pw.cpu()
        out[f"one_minus::{beta!r}"] = om.cpu()
    torch.cuda.synchronize()
    return out


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    seed = 1
    for name in CONFIGS:
        for bits in (24, 32):
            tensors, meta = one_config(name, bits, seed)
            seed += 1
            path = os.path.join(out_dir, f"{name}-{bits}.safetensors")
            save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)
            print(f"wrote {path}: {len(tensors)} tensors")
    meta = {"device": torch.cuda.get_device_name(), "triton": triton.__version__}
    save_file(host_scalars(), os.path.join(out_dir, "host_scalars.safetensors"), metadata=meta)
    print("wrote host_scalars.safetensors")


if __name__ == "__main__":
    main()
