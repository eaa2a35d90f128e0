#!/usr/bin/env python3
"""Convert flashoptim 0.1.4 optimizer state to a flashopt checkpoint (safetensors).

Run where torch is. Input: a file written by

    torch.save({"params": {name: param, ...},        # in the order given to the optimizer
                "optimizer": optimizer.state_dict()}, "state.pt")

from a FlashAdamW / FlashAdam / FlashLion / FlashSGD / FlashSGDW with
`compress_state_dict=True` (the default) and one parameter group. Output: a flashopt
compressed checkpoint that `CpuOptimizer::load` / `GpuOptimizer::load` accept for the
same optimizer, storage configuration and tensor names (docs/CHECKPOINTS.md).

    python3 scripts/flashoptim_to_flashopt.py state.pt out.safetensors --optimizer adamw

Key mapping (flashoptim per-parameter state -> flashopt, for a tensor `name`):
    param (bf16/f16)                    -> name::param
    error_bits (int8 saved as the param dtype; int16 saved as a view) -> name::correction
    exp_avg::quantized / ::scales       -> name::m::codes / name::m::scales   (Adam*, Lion)
    exp_avg_sq::quantized / ::scales    -> name::v::codes / name::v::scales   (Adam*)
    momentum_buffer::quantized / ::scales -> name::buf::codes / name::buf::scales (SGD*)
    scales saved as bf16 views of f16 bits -> viewed back to f16
    state["step"]                       -> metadata steps_taken
    param_groups[0] hyper-parameters    -> metadata hyper.0.<name>
"""

import argparse
import json
import struct
import sys

import torch

# flashopt's state names and codecs per optimizer, and its hyper-parameters in
# declaration order with how to read each from a flashoptim parameter group.
OPTIMIZERS = {
    "adamw": (
        [("m", "exp_avg", "int8_softsign"), ("v", "exp_avg_sq", "uint8_sqrt")],
        ["lr", "b1", "b2", "eps", "weight_decay", "decouple_lr", "initial_lr", "bound_momentum"],
    ),
    "adam": (
        [("m", "exp_avg", "int8_softsign"), ("v", "exp_avg_sq", "uint8_sqrt")],
        ["lr", "b1", "b2", "eps", "weight_decay", "bound_momentum"],
    ),
    "lion": (
        [("m", "exp_avg", "int8_softsign")],
        ["lr", "b1", "b2", "weight_decay", "decouple_lr", "initial_lr"],
    ),
    "sgd": (
        [("buf", "momentum_buffer", "int8_softsign")],
        ["lr", "momentum", "dampening", "weight_decay", "nesterov"],
    ),
    "sgdw": (
        [("buf", "momentum_buffer", "int8_softsign")],
        ["lr", "momentum", "dampening", "weight_decay", "nesterov", "decouple_lr", "initial_lr"],
    ),
}

DTYPES = {
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.float32: "F32",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.int16: "I16",
}
NAMES = {torch.bfloat16: "bf16", torch.float16: "f16", torch.float32: "f32"}


def hyper_value(group, name):
    """A flashopt hyper-parameter from a flashoptim parameter group, as flashopt prints it."""
    if name in ("b1", "b2"):
        value = group["betas"][0 if name == "b1" else 1]
    elif name == "decouple_lr":
        value = bool(group.get("decouple_lr", False))
    elif name == "initial_lr":
        value = group.get("initial_lr", group["lr"])
    elif name == "nesterov":
        value = bool(group.get("nesterov", False))
    elif name == "bound_momentum":
        value = False  # flashoptim's arithmetic: no step cap (docs/OPTIMIZERS.md)
    else:
        value = group[name]
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(float(value))


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    offset = 0
    blobs = []
    for key, t in tensors:
        data = t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[key] = {"dtype": DTYPES[t.dtype], "shape": [t.numel()], "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def convert(state_path, out_path, optimizer):
    if optimizer not in OPTIMIZERS:
        sys.exit(f"unknown optimizer {optimizer!r}; one of {', '.join(OPTIMIZERS)}")
    states, hyper_names = OPTIMIZERS[optimizer]
    saved = torch.load(state_path, map_location="cpu", weights_only=False)
    params = saved["params"]
    opt = saved["optimizer"]
    groups = opt["param_groups"]
    if len(groups) != 1:
        sys.exit(f"{len(groups)} parameter groups; this converter handles one")
    group = groups[0]
    indices = group["params"]
    if len(indices) != len(params):
        sys.exit(f"{len(params)} named parameters but the optimizer has {len(indices)}")
    master_bytes = int(group.get("master_bytewidth") or 0)
    tensors = []
    steps = 0
    dtype = None
    for (name, p), index in zip(params.items(), indices):
        state = opt["state"].get(index, {})
        p = p.detach().reshape(-1)
        if dtype is None:
            dtype = p.dtype
        elif p.dtype != dtype:
            sys.exit(f"`{name}` is {p.dtype}, the others {dtype}: one storage configuration per file")
        n = p.numel()
        tensors.append((f"{name}::param", p))
        correction_bytes = master_bytes - p.element_size() if master_bytes else 0
        if correction_bytes > 0:
            errs = state.get("error_bits")
            if errs is None:
                errs = torch.zeros(n, dtype=torch.int8 if correction_bytes == 1 else torch.int16)
            errs = errs.reshape(-1)
            if correction_bytes == 1 and errs.dtype != torch.int8:
                errs = errs.to(torch.int8)  # saved as the param dtype (a lossless cast)
            elif correction_bytes == 2 and errs.dtype != torch.int16:
                errs = errs.view(torch.int16)  # saved as a view of the param dtype
            tensors.append((f"{name}::correction", errs))
        for ours, theirs, codec in states:
            codes = state.get(f"{theirs}::quantized")
            scales = state.get(f"{theirs}::scales")
            if codes is None and theirs in state:
                sys.exit(f"`{name}`: {theirs} was saved uncompressed; save with compress_state_dict=True")
            groups_n = (n + 31) // 32
            if codes is None:  # no step taken yet: zero state
                codes = torch.zeros(n, dtype=torch.uint8 if codec == "uint8_sqrt" else torch.int8)
                scales = torch.zeros(groups_n, dtype=torch.float16)
            if scales.dtype == torch.bfloat16:
                scales = scales.view(torch.float16)  # f16 bits saved as a bf16 view
            if scales.numel() != groups_n or codes.numel() != n:
                sys.exit(f"`{name}`: {theirs} has {codes.numel()} codes / {scales.numel()} scales for {n} elements")
            tensors.append((f"{name}::{ours}::codes", codes.reshape(-1)))
            tensors.append((f"{name}::{ours}::scales", scales.reshape(-1)))
        if "step" in state:
            steps = max(steps, int(torch.as_tensor(state["step"]).item()))
    if correction_bytes > 0:
        config = f"param {NAMES[dtype]} + int{correction_bytes * 8} correction ({master_bytes * 8}-bit master), grad {NAMES[dtype]}"
    else:
        config = f"param {NAMES[dtype]}, grad {NAMES[dtype]}"
    metadata = {
        "format": "flashopt-checkpoint",
        "version": "1",
        "kind": "compressed",
        "optimizer": optimizer,
        "config": config,
        "states": ",".join(f"{ours}:{codec}" for ours, _, codec in states),
        "steps_taken": str(steps),
        "param_groups": "1",
        "tensors": str(len(params)),
    }
    for h in hyper_names:
        metadata[f"hyper.0.{h}"] = hyper_value(group, h)
    for i, name in enumerate(params):
        metadata[f"tensor.{i}"] = name
        metadata[f"tensor.{i}.param_group"] = "0"
    write_safetensors(out_path, tensors, metadata)
    return len(params), steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("state")
    ap.add_argument("out")
    ap.add_argument("--optimizer", required=True, choices=sorted(OPTIMIZERS))
    args = ap.parse_args()
    count, steps = convert(args.state, args.out, args.optimizer)
    print(f"wrote {args.out}: {count} tensors, {steps} steps")


if __name__ == "__main__":
    main()
