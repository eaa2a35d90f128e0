#!/usr/bin/env python3
"""Train flashoptim 0.1.4 for a few steps, convert its state with
flashoptim_to_flashopt.py, and write flashoptim's own f32 view of the same state
(reconstructed master weights, dequantized moments) for `examples/flashoptim_import.rs`
to compare against what flashopt decodes from the converted file. Needs CUDA.

    python3 scripts/flashoptim_import_check.py OUT_DIR
"""

import os
import sys

import torch
import flashoptim
from flashoptim import reconstruct_fp32_param

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flashoptim_to_flashopt import convert, write_safetensors  # noqa: E402

LENS = [1, 33, 4099, 100000]
CASES = {
    "adamw": (lambda ps: flashoptim.FlashAdamW(ps, lr=1e-2, weight_decay=0.1, master_weight_bits=24),
              [("m", "exp_avg"), ("v", "exp_avg_sq")]),
    "lion": (lambda ps: flashoptim.FlashLion(ps, lr=1e-3, master_weight_bits=24), [("m", "exp_avg")]),
    "sgd": (lambda ps: flashoptim.FlashSGD(ps, lr=1e-2, momentum=0.9, master_weight_bits=24),
            [("buf", "momentum_buffer")]),
}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    for name, (make, states) in CASES.items():
        params = {f"layer{i}.weight": torch.nn.Parameter((torch.randn(n, device="cuda") * 0.5).to(torch.bfloat16))
                  for i, n in enumerate(LENS)}
        opt = make(list(params.values()))
        for _ in range(3):
            for p in params.values():
                p.grad = (torch.randn_like(p, dtype=torch.float32) * 0.02).to(torch.bfloat16)
            opt.step()
        state_path = os.path.join(out, f"{name}-state.pt")
        torch.save({"params": params, "optimizer": opt.state_dict()}, state_path)
        count, steps = convert(state_path, os.path.join(out, f"{name}.safetensors"), name)
        ref = []
        for pname, p in params.items():
            st = opt.state[p]
            ref.append((f"{pname}::master", reconstruct_fp32_param(p.detach(), st["error_bits"]).float().reshape(-1)))
            for ours, theirs in states:
                ref.append((f"{pname}::{ours}", st[theirs].materialize().float().reshape(-1)))
        write_safetensors(os.path.join(out, f"{name}-reference.safetensors"), ref, {"steps": str(steps)})
        print(f"{name}: {count} tensors, {steps} steps converted")


if __name__ == "__main__":
    main()
