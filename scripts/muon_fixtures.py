#!/usr/bin/env python3
"""torch's Muon on small matrices, for tests/matrix_optimizers.rs (run on a GPU
machine with torch 2.11; written as safetensors by hand, no package needed):

    python3 scripts/muon_fixtures.py tests/fixtures/muon/torch.safetensors

- `ns.input.K` / `ns.torch.K` (f32): a matrix and
  `torch.optim._muon._zeropower_via_newtonschulz` of it on the GPU (bf16, cuBLAS), for
  shapes 6x40, 40x6, 16x16, 3x5, 50x130.
- `muon.param.T` (f32, 32 x 48) after step T of `torch.optim.Muon(lr=0.02)` from
  `muon.param.0` with gradient `muon.grad.T` (T = 1..3), fp32 parameters.
"""

import json
import struct
import sys

import torch
from torch.optim import _muon

SHAPES = [(6, 40), (40, 6), (16, 16), (3, 5), (50, 130)]


def values(n, seed):
    j = torch.arange(n, dtype=torch.float64)
    return (torch.sin(j * 0.7 + seed) * 0.03 + torch.cos(j * 0.13 * seed) * 0.01).float()


def save(path, tensors, metadata):
    header, blobs, at = {"__metadata__": metadata}, [], 0
    for name, t in tensors.items():
        data = t.detach().cpu().contiguous().float().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [at, at + len(data)]}
        blobs.append(data)
        at += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    out = sys.argv[1]
    tensors = {}
    for k, (r, c) in enumerate(SHAPES):
        g = values(r * c, k + 1).reshape(r, c)
        o = _muon._zeropower_via_newtonschulz(g.cuda(), (3.4445, -4.7750, 2.0315), 5, 1e-7)
        tensors[f"ns.input.{k}"] = g
        tensors[f"ns.torch.{k}"] = o.float()
    p = torch.nn.Parameter(values(32 * 48, 9).reshape(32, 48).cuda())
    opt = torch.optim.Muon([p], lr=0.02)
    tensors["muon.param.0"] = p.detach().clone()
    for t in range(1, 4):
        p.grad = values(32 * 48, 10 + t).reshape(32, 48).cuda()
        tensors[f"muon.grad.{t}"] = p.grad.clone()
        opt.step()
        tensors[f"muon.param.{t}"] = p.detach().clone()
    meta = {"torch": torch.__version__, "device": torch.cuda.get_device_name()}
    save(out, tensors, meta)
    print("wrote", out, meta)


if __name__ == "__main__":
    main()
