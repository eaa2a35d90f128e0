#!/usr/bin/env python3
"""Step a captured optimizer state with flashoptim 0.1.4's own AdamW kernel and
compare with what flashopt's GPU step wrote. Needs CUDA, torch, safetensors and
flashoptim.

The capture comes from the train example (`--capture DIR --capture-steps N,..`):
`step-N-before.safetensors` (flashopt checkpoint before the update),
`step-N-grads.safetensors` (the bf16 gradients; metadata `lr`) and
`step-N-after.safetensors` (flashopt's GPU result). flashopt's checkpoint keys hold
flashoptim's own tensors (docs/CHECKPOINTS.md), so each tensor goes straight into
flashoptim's fused kernel with the arguments `FlashAdamW.step` passes it
(`weight_decay * lr` as a Python float, `step` counted from 1).

    python3 scripts/flashoptim_replay.py DIR [STEP ...]

Writes `DIR/flashoptim-step-N.md`: per stored part, how many values flashoptim's
result shares with flashopt's; the elements whose step exceeds exact Adam's largest
in each; and the largest of flashoptim's steps with the states that produced them.
"""

import math
import os
import re
import sys

import torch
from safetensors import safe_open

from flashoptim import reconstruct_fp32_param
from flashoptim.optimizers import _fused_adam_step


def load(path):
    with safe_open(path, framework="pt", device="cpu") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def bits(x):
    return x.view(torch.uint8) if x.element_size() == 1 else x.view(torch.int16)


def adam_cap(b1, b2, t):
    """Exact Adam's largest |m_hat| / sqrt(v_hat) at step t from zero moments."""
    r = b1 * b1 / b2
    geometric = t if abs(r - 1) < 1e-12 else (1 - r**t) / (1 - r)
    return (1 - b1) / (1 - b1**t) * math.sqrt((1 - b2**t) / (1 - b2)) * math.sqrt(geometric)


def replay(folder, step):
    before, meta = load(os.path.join(folder, f"step-{step}-before.safetensors"))
    grads, gmeta = load(os.path.join(folder, f"step-{step}-grads.safetensors"))
    after, _ = load(os.path.join(folder, f"step-{step}-after.safetensors"))
    lr = float(gmeta["lr"])
    b1, b2 = float(meta["hyper.0.b1"]), float(meta["hyper.0.b2"])
    eps, wd = float(meta["hyper.0.eps"]), float(meta["hyper.0.weight_decay"])
    t = int(meta["steps_taken"]) + 1
    cap = adam_cap(b1, b2, t)
    names = [meta[f"tensor.{i}"] for i in range(int(meta["tensors"]))]
    lines = [
        f"# Step {step} stepped by flashoptim 0.1.4's AdamW kernel\n",
        f"lr {lr:e}, step {t}, b1 {b1}, b2 {b2}, eps {eps}, weight decay {wd} "
        f"(the kernel gets weight_decay * lr = {wd * lr:e}); exact Adam's largest "
        f"|m_hat|/sqrt(v_hat): {cap:.4f}\n",
    ]
    parts = ["param", "correction", "m::codes", "m::scales", "v::codes", "v::scales"]
    equal = {p: 0 for p in parts}
    total = {p: 0 for p in parts}
    rows = []
    over_fo = over_ours = over_both = far_fo = far_ours = 0
    largest = []
    for name in names:
        d = {p: before[f"{name}::{p}"].cuda() for p in parts}
        d["m::scales"] = d["m::scales"].view(torch.float16)
        d["v::scales"] = d["v::scales"].view(torch.float16)
        state = {p: d[p].clone() for p in parts}
        g = grads[name].cuda()
        _fused_adam_step(
            mom=state["m::codes"], mom_scales_f16=state["m::scales"],
            var=state["v::codes"], var_scales_f16=state["v::scales"],
            param=state["param"], grad=g, errors=state["correction"],
            lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd * lr,
            decoupled=True, step=t, quantize_optim_states=True,
        )
        torch.cuda.synchronize()
        ours = {p: after[f"{name}::{p}"].cuda() for p in parts}
        for p in parts:
            a, b = state[p].reshape(-1), ours[p].reshape(-1).view(state[p].dtype)
            equal[p] += int((bits(a) == bits(b)).sum())
            total[p] += a.numel()
        m0 = reconstruct_fp32_param(d["param"], d["correction"]).double()
        m_fo = reconstruct_fp32_param(state["param"], state["correction"]).double()
        m_ours = reconstruct_fp32_param(ours["param"], ours["correction"]).double()
        bound = lr * (cap * 1.001 + wd * m0.abs())
        fo_over = (m_fo - m0).abs() > bound
        ours_over = (m_ours - m0).abs() > bound
        over_fo += int(fo_over.sum())
        over_ours += int(ours_over.sum())
        over_both += int((fo_over & ours_over).sum())
        far_fo += int(((m_fo - m0).abs() > 10 * bound).sum())
        far_ours += int(((m_ours - m0).abs() > 10 * bound).sum())
        if fo_over.any() or ours_over.any():
            rows.append(
                f"| `{name}` | {m0.numel()} | {int(fo_over.sum())} | {int(ours_over.sum())} | "
                f"{float(((m_fo - m0).abs() / lr).max()):.3e} | {float(((m_ours - m0).abs() / lr).max()):.3e} |"
            )
        ratio = (m_fo - m0).abs() / lr
        k = min(5, ratio.numel())
        top = torch.topk(ratio, k)
        for r, i in zip(top.values.tolist(), top.indices.tolist()):
            grp = i // 32
            largest.append((r, name, i, float(g[i]), float(m0[i]), int(d["m::codes"][i]),
                            float(d["m::scales"][grp]), int(d["v::codes"][i]), float(d["v::scales"][grp]),
                            int(d["v::codes"][grp * 32:(grp + 1) * 32].max())))
    lines.append("| part | values | equal to flashopt's GPU step |\n| --- | --- | --- |")
    for p in parts:
        lines.append(f"| {p} | {total[p]} | {equal[p]} ({100 * equal[p] / max(total[p], 1):.4f}%) |")
    lines.append(
        f"\nSteps over exact Adam's largest: flashoptim {over_fo}, flashopt {over_ours}, both {over_both}; "
        f"over 10 times as far: flashoptim {far_fo}, flashopt {far_ours}.\n"
    )
    lines.append("| tensor | elements | over the bound (flashoptim) | over the bound (flashopt) | "
                 "largest step / lr (flashoptim) | (flashopt) |\n| --- | --- | --- | --- | --- | --- |")
    lines += rows
    largest.sort(reverse=True)
    lines.append("\nflashoptim's largest steps (states as stored before the step):\n")
    lines.append("| step / lr | tensor | element | g | master before | m code | m scale | v code | v scale | "
                 "group's largest v code |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r, name, i, gi, m0i, mc, ms, vc, vs, vmax in largest[:25]:
        lines.append(f"| {r:.3e} | `{name}` | {i} | {gi:e} | {m0i:e} | {mc} | {ms:e} | {vc} | {vs:e} | {vmax} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(folder, f"flashoptim-step-{step}.md"), "w") as f:
        f.write(text)
    print(text)


def main():
    folder = sys.argv[1]
    steps = [int(s) for s in sys.argv[2:]] or sorted(
        int(m.group(1)) for f in os.listdir(folder) if (m := re.match(r"step-(\d+)-before\.safetensors$", f))
    )
    for step in steps:
        replay(folder, step)


if __name__ == "__main__":
    main()
