#!/usr/bin/env python3
"""A PyTorch twin of the train example's GPT (examples/train, config gpt350m by
default), stepped by flashoptim 0.1.4's optimizers or torch's (AdamW, Lion, SGD), to
compare the implementations on the same kind of model. Needs torch, CUDA (`--device cuda`, the
default; `--device cpu` is for smoke tests with `--config tiny`), and flashoptim for
`--opt flashoptim` (CUDA only: its kernels are Triton's; importable, e.g. with
`PYTHONPATH=.dev/pylib`).

Same shape and schedule as the example: byte vocabulary, learned positions, pre-norm
LayerNorm, GELU MLP, biases everywhere, weights N(0, 0.02) (residual projections
0.02 / sqrt(2 * layers)), batch 4 x 256 from the first five books of the KJV (90%
train, 10% validation), linear warm-up then cosine to a tenth of the peak. Batches come
from torch's generator, not the example's.

`--rule` is the example's `--optimizer`, with its hyper-parameters:
  adamw  peak lr as the config's, betas 0.9 / 0.99, eps 1e-8, weight decay 0.1 on every
         parameter (decoupled, as torch's AdamW: `p *= 1 - lr * 0.1`);
  lion   a tenth of the peak lr, betas 0.9 / 0.99, decoupled weight decay 1.0 (torch has
         no Lion: `--opt torch-*` steps the Lion paper's rule written here with foreach
         operations);
  sgd    100 times the peak lr, momentum 0.9, no dampening, no weight decay;
  lamb   10 times the peak lr, betas 0.9 / 0.99, eps 1e-6, weight decay 0.1 added to the
         update; cautious_adamw: AdamW's hyper-parameters. Neither is in torch or
         flashoptim: `--opt torch-*` steps the papers' rules of scripts/reducing_reference.py;
  muon   torch.optim.Muon over the blocks' weight matrices at 20 times the peak lr
         (momentum 0.95, Nesterov, weight decay 0.005, its shape scale
         `sqrt(max(1, out / in))` with `--layout torch`: the example's Muon), AdamW's
         rule and rate above over the rest (embeddings, head, biases, norms);
  adafactor  10 times the peak lr (torch's Adafactor: the relative step's cap), weight
         decay 0.01 (scaled by lr); adam_mini: AdamW's hyper-parameters, one second
         moment per row of each weight as stored (`--layout burn` gives the example's
         rows), scripts/row_column_reference.py.
`--clip MAX_NORM` clips the global gradient norm before each step, as the example's.

`--opt` picks the parameters' dtype and the optimizer:
  flashoptim  bf16 parameters (bf16 compute), flashoptim's FlashAdamW / FlashLion /
              FlashSGD with 24-bit master weights (bf16 + an int8 correction) and 8-bit
              states (codes with an f16 scale per group of 32 values; momentum codes
              rounded to nearest);
  torch-bf16  bf16 parameters (bf16 compute), torch's optimizer (fused on CUDA where
              torch has one), whose states are then bf16 too and whose update is rounded
              to bf16: no master weights;
  torch-amp   f32 parameters and states, the forward and backward under
              `torch.autocast(bfloat16)` (matmuls in bf16, norms and the loss in f32):
              standard mixed precision, exact optimizer;
  torch-fp32  f32 parameters and f32 states, plain f32 compute: no autocast, torch's
              default matmul precision.

`--layout` decides how each weight matrix is stored, which decides what a group of 32
consecutive values of flashoptim's 8-bit states mixes: `torch` stores `[out, in]`
(nn.Linear's; a group is one output's 32 input weights), `burn` stores `[in, out]` as
the example's burn model does (a group is one input's weights for 32 outputs: for the
head, 32 different bytes). `--loss f32` computes the log-softmax and loss in f32 from
the model's logits (bf16 ones, but for torch-fp32); `bf16` rounds the logits to bf16 and
computes them in bf16. `--health` counts, after every step,
the elements whose second-moment code is 0 (or whose group's scale is) under a
non-zero momentum (flashoptim only; flashopt's `state_health`).

    python3 scripts/gpt_twin.py --opt flashoptim --layout burn --loss f32 --seed 2026 --out DIR
    python3 scripts/gpt_twin.py --rule sgd --clip 1 --opt torch-amp --layout burn --out DIR
    python3 scripts/gpt_twin.py --config tiny --device cpu --opt torch-bf16 --out DIR

Writes `DIR/twin-<opt>-<layout>-<loss>-<seed>.csv` (step, lr, train_loss, valid_loss,
health; `--config` other than gpt350m adds `-<config>` after `twin`, `--rule` other than
adamw adds `-<rule>` after that, `--clip` adds `-clip<MAX_NORM>` at the end), a row a step,
flushed as it goes; prints a line at each evaluation and, at the end, the final
validation loss, the worst training loss after the warm-up and the elapsed seconds.
Exits non-zero on any exception.
"""

import argparse
import csv
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "train", "data",
                    "kjv-pentateuch.txt")
CONFIGS = {
    # d_model, layers, heads, context, batch, steps, peak lr, warm-up, eval every, eval batches
    "gpt350m": (1024, 28, 16, 256, 4, 200, 3e-4, 20, 50, 4),
    "small": (384, 6, 6, 256, 32, 1500, 1e-3, 150, 100, 8),
    # the example's `tiny`: seconds on a CPU, for smoke tests
    "tiny": (32, 2, 2, 32, 4, 30, 3e-3, 5, 10, 2),
}


class Linear(torch.nn.Module):
    """A linear layer whose weight is stored `[out, in]` (torch) or `[in, out]` (burn)."""

    def __init__(self, d_in, d_out, std, layout):
        super().__init__()
        shape = (d_out, d_in) if layout == "torch" else (d_in, d_out)
        self.layout = layout
        self.weight = torch.nn.Parameter(torch.randn(shape) * std)
        self.bias = torch.nn.Parameter(torch.zeros(d_out))

    def forward(self, x):
        w = self.weight if self.layout == "burn" else self.weight.t()
        return x @ w + self.bias


class Block(torch.nn.Module):
    def __init__(self, d, heads, layers, layout):
        super().__init__()
        out_std = 0.02 / math.sqrt(2 * layers)
        self.heads = heads
        self.ln1 = torch.nn.LayerNorm(d, eps=1e-5)
        self.wq, self.wk, self.wv = (Linear(d, d, 0.02, layout) for _ in range(3))
        self.wo = Linear(d, d, out_std, layout)
        self.ln2 = torch.nn.LayerNorm(d, eps=1e-5)
        self.fc1 = Linear(d, 4 * d, 0.02, layout)
        self.fc2 = Linear(4 * d, d, out_std, layout)

    def forward(self, x):
        b, t, d = x.shape
        h = self.heads
        a = self.ln1(x)
        split = lambda y: y.view(b, t, h, d // h).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.wq(a)), split(self.wk(a)), split(self.wv(a))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.wo(att.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class Gpt(torch.nn.Module):
    def __init__(self, d, layers, heads, context, layout):
        super().__init__()
        self.tokens = torch.nn.Parameter(torch.randn(256, d) * 0.02)
        self.positions = torch.nn.Parameter(torch.randn(context, d) * 0.02)
        self.blocks = torch.nn.ModuleList(Block(d, heads, layers, layout) for _ in range(layers))
        self.ln_f = torch.nn.LayerNorm(d, eps=1e-5)
        self.head = Linear(d, 256, 0.02, layout)

    def loss(self, x, y, loss_dtype):
        t = x.shape[1]
        h = self.tokens[x] + self.positions[:t]
        for block in self.blocks:
            h = block(h)
        logits = self.head(self.ln_f(h)).to(loss_dtype)
        return F.cross_entropy(logits.view(-1, 256), y.reshape(-1))


def lr_at(step, peak, warmup, steps):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def batch(data, gen, b, t, device):
    starts = torch.randint(0, len(data) - t - 1, (b,), generator=gen)
    x = torch.stack([data[s:s + t] for s in starts])
    y = torch.stack([data[s + 1:s + t + 1] for s in starts])
    return x.to(device).long(), y.to(device).long()


GROUP = 32  # flashoptim's quantization group (the `group_size` of its kernels)


def health(opt):
    """Elements whose second moment decodes to 0 under a non-zero momentum.

    flashoptim keeps `state["exp_avg"]` and `state["exp_avg_sq"]` as its
    `_MaybeQuantizedTensor`: `.quantized` (int8 / uint8 codes, the parameter's shape)
    and `.scales` (f16, one per GROUP consecutive values of the flattened parameter).
    A value decodes to 0 when its code or its group's scale is 0."""
    total = 0  # becomes a tensor on the states' device: one read-back a call, not one a parameter
    for state in opt.state.values():
        m, v = state.get("exp_avg"), state.get("exp_avg_sq")
        if m is None or v is None or isinstance(m, torch.Tensor) or not m.is_quantized():
            continue
        mq, vq = m.quantized.reshape(-1), v.quantized.reshape(-1)
        n = mq.numel()
        groups = (n + GROUP - 1) // GROUP
        assert vq.numel() == n and m.scales.numel() == groups and v.scales.numel() == groups, \
            (n, vq.numel(), m.scales.numel(), v.scales.numel())
        ms = m.scales.view(torch.float16).float().repeat_interleave(GROUP)[:n]
        vs = v.scales.view(torch.float16).float().repeat_interleave(GROUP)[:n]
        momentum = (mq != 0) & (ms != 0)
        zero_v = (vq == 0) | (vs == 0)
        total = total + (momentum & zero_v).sum()
    return int(total)


class Lion(torch.optim.Optimizer):
    """The Lion paper's rule (decoupled weight decay scaled by lr), as flashoptim's
    FlashLion and the example's Lion: `p *= 1 - lr * wd`, `p -= lr * sign(b1 m + (1 - b1) g)`,
    `m = b2 m + (1 - b2) g`, states in the parameters' dtype."""

    def __init__(self, params, lr, betas, weight_decay):
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            gs = [p.grad for p in ps]
            ms = [self.state[p].setdefault("exp_avg", torch.zeros_like(p)) for p in ps]
            b1, b2 = group["betas"]
            torch._foreach_mul_(ps, 1 - group["lr"] * group["weight_decay"])
            update = torch._foreach_lerp(ms, gs, 1 - b1)
            torch._foreach_sign_(update)
            torch._foreach_add_(ps, update, alpha=-group["lr"])
            torch._foreach_lerp_(ms, gs, 1 - b2)


# Each rule as the example's `Rule` (examples/train/optimizer.rs): its peak learning rate
# from the config's (AdamW's; `Rule::peak_lr`: Lion a tenth, SGD 100 times) and its
# hyper-parameters, the same for every `--opt`.
RULES = {
    "adamw": (1.0, dict(betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)),
    "lion": (0.1, dict(betas=(0.9, 0.99), weight_decay=1.0)),
    "sgd": (100.0, dict(momentum=0.9)),
    "lamb": (10.0, dict(betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1)),
    "cautious_adamw": (1.0, dict(betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)),
    "adafactor": (10.0, dict(weight_decay=0.01)),
    "adam_mini": (1.0, dict(betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)),
    # AdamW's rate and rule over what Muon does not take; MUON_LR_RATIO times it for Muon.
    "muon": (1.0, dict(betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)),
}
# The example's `MUON_LR_RATIO` and `Rule::muon` (examples/train/optimizer.rs).
MUON_LR_RATIO = 20.0
MUON = dict(momentum=0.95, nesterov=True, weight_decay=0.005)


class Split:
    """Two optimizers stepped as one: each param group's `lr_ratio` scales the rate
    the schedule sets (`main`'s loop)."""

    def __init__(self, *optimizers):
        self.optimizers = optimizers
        self.param_groups = [g for o in optimizers for g in o.param_groups]
        self.state = {}

    def step(self):
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none=True):
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)


def make_optimizer(rule, opt, params, peak, fused, model=None):
    """`rule`'s optimizer (`RULES`) at its own `peak` learning rate (the schedule sets
    it again every step)."""
    hyper = RULES[rule][1]
    if rule == "muon":
        if opt == "flashoptim":
            sys.exit("flashoptim has no Muon: use --opt torch-fp32, torch-amp or torch-bf16")
        matrices = [p for name, p in model.named_parameters() if name.startswith("blocks.") and p.dim() == 2]
        chosen = {id(p) for p in matrices}
        rest = [p for p in params if id(p) not in chosen]
        muon = torch.optim.Muon(matrices, lr=peak * MUON_LR_RATIO, **MUON)
        muon.param_groups[0]["lr_ratio"] = MUON_LR_RATIO
        return Split(muon, torch.optim.AdamW(rest, lr=peak, **hyper, fused=fused))
    if opt == "flashoptim":
        if rule not in ("adamw", "lion", "sgd"):
            sys.exit(f"flashoptim has no {rule}: use --opt torch-fp32, torch-amp or torch-bf16")
        import flashoptim
        # 8-bit states (quantize=True), 24-bit masters and the fused Triton step; weight
        # decay scaled by the lr (decouple_lr=False) as the example's.
        common = dict(quantize=True, master_weight_bits=24, fused=True)
        if rule != "sgd":  # FlashSGD's weight decay is L2, without decouple_lr
            common["decouple_lr"] = False
        cls = {"adamw": flashoptim.FlashAdamW, "lion": flashoptim.FlashLion, "sgd": flashoptim.FlashSGD}[rule]
        return cls(params, lr=peak, **hyper, **common)
    if rule == "lion":  # torch has no Lion
        return Lion(params, lr=peak, **hyper)
    if rule in ("lamb", "cautious_adamw"):  # nor LAMB or Cautious AdamW: the papers' rules
        from reducing_reference import CautiousAdamW, Lamb

        return {"lamb": Lamb, "cautious_adamw": CautiousAdamW}[rule](params, lr=peak, **hyper)
    if rule == "adafactor":
        return torch.optim.Adafactor(params, lr=peak, **hyper)
    if rule == "adam_mini":  # nor Adam-mini: its paper's rule, one second moment per row
        from row_column_reference import AdamMini

        return AdamMini(params, lr=peak, **hyper)
    cls = {"adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[rule]
    return cls(params, lr=peak, **hyper, fused=fused)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="gpt350m", choices=sorted(CONFIGS))
    ap.add_argument("--rule", default="adamw", choices=sorted(RULES))
    ap.add_argument("--opt", required=True, choices=["flashoptim", "torch-bf16", "torch-amp", "torch-fp32"])
    ap.add_argument("--layout", default="torch", choices=["torch", "burn"])
    ap.add_argument("--loss", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--clip", type=float, help="clip the global gradient norm to this")
    ap.add_argument("--peak-lr", type=float, help="the schedule's peak, instead of the rule's own (RULES)")
    ap.add_argument("--health", action="store_true")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke tests)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpt_twin: no CUDA device (use --device cpu for a smoke test)")
    if args.opt in ("flashoptim", "torch-amp") and device.type != "cuda":
        raise SystemExit(f"gpt_twin: --opt {args.opt} needs --device cuda")
    if args.clip is not None and not args.clip > 0:
        raise SystemExit("gpt_twin: --clip must be a positive norm")
    if args.peak_lr is not None and not (0 < args.peak_lr < float("inf")):
        raise SystemExit("gpt_twin: --peak-lr must be a positive, finite rate")
    if args.opt == "torch-amp" and args.loss == "bf16":
        raise SystemExit("gpt_twin: --opt torch-amp computes the loss in f32 (autocast's choice)")
    d, layers, heads, context, b, steps, adamw_peak, warmup, eval_every, eval_batches = CONFIGS[args.config]
    peak = args.peak_lr if args.peak_lr is not None else adamw_peak * RULES[args.rule][0]
    torch.manual_seed(args.seed)
    model = Gpt(d, layers, heads, context, args.layout).to(device)
    f32_params = args.opt in ("torch-fp32", "torch-amp")
    if not f32_params:
        model = model.to(torch.bfloat16)
    params = list(model.parameters())
    want = torch.float32 if f32_params else torch.bfloat16
    assert all(p.dtype == want and p.is_contiguous() for p in params)
    if args.rule == "muon" and args.layout != "torch":
        raise SystemExit("gpt_twin: --rule muon scales by torch.optim.Muon's `[out, in]`: use --layout torch")
    opt = make_optimizer(args.rule, args.opt, params, peak, fused=device.type == "cuda", model=model)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.opt == "torch-amp")
    print(f"gpt_twin: config {args.config}, {sum(p.numel() for p in params)} parameters ({want}), "
          f"rule {args.rule} (peak lr {peak:g}), opt {args.opt}, layout {args.layout}, loss {args.loss}, seed {args.seed}, "
          f"clip {args.clip}, device {device}, torch {torch.__version__}", flush=True)
    text = torch.frombuffer(bytearray(open(DATA, "rb").read()), dtype=torch.uint8)
    split = len(text) * 9 // 10
    train, valid = text[:split], text[split:]
    gen = torch.Generator().manual_seed(args.seed ^ 0xBA7C)
    loss_dtype = torch.float32 if args.loss == "f32" else torch.bfloat16
    os.makedirs(args.out, exist_ok=True)
    tag = "twin" if args.config == "gpt350m" else f"twin-{args.config}"
    tag += "" if args.rule == "adamw" else f"-{args.rule}"
    clip = "" if args.clip is None else f"-clip{args.clip:g}"
    path = os.path.join(args.out, f"{tag}-{args.opt}-{args.layout}-{args.loss}-{args.seed}{clip}.csv")
    rows = []
    start = time.time()
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "lr", "train_loss", "valid_loss", "health"])
        f.flush()
        for step in range(steps):
            lr = lr_at(step, peak, warmup, steps)
            for group in opt.param_groups:
                group["lr"] = lr * group.get("lr_ratio", 1.0)
            x, y = batch(train, gen, b, context, device)
            with amp:
                loss = model.loss(x, y, loss_dtype)
            loss.backward()
            if args.clip is not None:
                torch.nn.utils.clip_grad_norm_(params, args.clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            valid_loss = ""
            if step % eval_every == eval_every - 1 or step + 1 == steps:
                vgen = torch.Generator().manual_seed(args.seed ^ 0x7A11D)
                with torch.no_grad(), amp:
                    valid_loss = sum(float(model.loss(*batch(valid, vgen, b, context, device), loss_dtype))
                                     for _ in range(eval_batches)) / eval_batches
            count = health(opt) if args.health and args.opt == "flashoptim" else ""
            row = (step + 1, lr, float(loss.detach()), valid_loss, count)
            rows.append(row)
            w.writerow(row)
            f.flush()
            if valid_loss != "":
                print(f"step {step + 1}/{steps}: lr {lr:.3g}, train {row[2]:.4f}, valid {valid_loss:.4f}"
                      + (f", health {count}" if count != "" else "")
                      + f", {time.time() - start:.1f} s", flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.time() - start
    # A non-finite loss counts as the worst (max() alone would skip a NaN).
    worst = max(rows[warmup:] or rows, key=lambda r: r[2] if math.isfinite(r[2]) else math.inf)
    print(f"{os.path.basename(path)}: final valid {rows[-1][3]:.4f}, worst train after warm-up "
          f"{worst[2]:.3f} (step {worst[0]}), {elapsed:.1f} s", flush=True)


if __name__ == "__main__":
    main()  # an uncaught exception exits with status 1
