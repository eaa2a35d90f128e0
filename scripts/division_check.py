#!/usr/bin/env python3
"""Check, by exhaustion on a GPU, that the reciprocals pass's division equals IEEE division.

flashopt divides by values common to a group (host scalars such as `1 - b1^t`, group
scales) as `q0 = a * r`, `e = fma(q0, d, -a)`, `q = fma(e, -r, q0)` with `r = RN(1 / d)`
(flashopt-ir/src/passes/reciprocals.rs). Away from the ends of the exponent range every
step scales exactly with the operands' exponents, so whether `q` is the correctly rounded
`a / d` depends only on the two significands. This script compares `q` with the correctly
rounded quotient (`div_rn`) for every pair of significands: `a` and `d` in [1, 2), 2^23
values each, 2^46 pairs, which covers both binades of the quotient. It first shows that
the check can fail: the uncorrected `q0` must disagree somewhere on the first divisors.

Needs torch and triton (the GPU machine has both):

    python3 scripts/division_check.py OUT.json [--first-divisor 0] [--divisors 8388608] [--seconds 420]

Writes OUT.json with the pairs checked, the mismatches (expected 0) and the first few
divisors with a mismatch, and prints the same.
"""

import argparse
import json
import time

import torch
import triton
import triton.language as tl

SIGNIFICANDS = 1 << 23
ONE_BITS = 0x3F800000
ONE = tl.constexpr(ONE_BITS)


@triton.jit
def _check(bad_ptr, first_ptr, first_divisor, CORRECTED: tl.constexpr, BLOCK: tl.constexpr, COUNT: tl.constexpr):
    pid = tl.program_id(0)
    d = (ONE + first_divisor + pid).to(tl.int32).to(tl.float32, bitcast=True)
    r = tl.math.div_rn(tl.zeros_like(d) + 1.0, d)
    bad = tl.zeros([BLOCK], dtype=tl.int32)
    first = tl.full([BLOCK], COUNT, dtype=tl.int32)
    lanes = tl.arange(0, BLOCK)
    for start in range(0, COUNT, BLOCK):
        significand = start + lanes
        a = (significand + ONE).to(tl.float32, bitcast=True)
        q0 = a * r
        if CORRECTED:
            e = tl.fma(q0, d, -a)
            q = tl.fma(e, -r, q0)
        else:
            q = q0
        exact = tl.math.div_rn(a, d)
        miss = q.to(tl.int32, bitcast=True) != exact.to(tl.int32, bitcast=True)
        bad += miss.to(tl.int32)
        first = tl.minimum(first, tl.where(miss, significand, COUNT))
    tl.store(bad_ptr + pid, tl.sum(bad))
    tl.store(first_ptr + pid, tl.min(first))


def check(first_divisor, divisors, corrected):
    bad = torch.full((divisors,), -1, dtype=torch.int32, device="cuda")  # poisoned
    first = torch.full((divisors,), -1, dtype=torch.int32, device="cuda")
    _check[(divisors,)](
        bad, first, first_divisor, CORRECTED=corrected, BLOCK=1024, COUNT=SIGNIFICANDS,
        num_warps=8, enable_fp_fusion=False,
    )
    torch.cuda.synchronize()
    if (bad < 0).any() or (first < 0).any():
        raise SystemExit("the check kernel left poisoned outputs: it did not run everywhere")
    return bad.cpu(), first.cpu()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--first-divisor", type=int, default=0)
    ap.add_argument("--divisors", type=int, default=SIGNIFICANDS)
    ap.add_argument("--chunk", type=int, default=1 << 18)
    ap.add_argument("--seconds", type=float, default=420.0, help="stop after the chunk that passes this")
    args = ap.parse_args()

    # The check must be able to fail: the uncorrected product is wrong on some pairs.
    control_bad, _ = check(0, 64, corrected=False)
    control = int(control_bad.sum())
    print(f"control (uncorrected q0 = a * r, 64 divisors x 2^23 dividends): {control} mismatches")
    if control == 0:
        raise SystemExit("the control found no mismatch: the check cannot be trusted")

    start = time.time()
    checked_divisors, mismatches, examples = 0, 0, []
    d = args.first_divisor
    end = min(SIGNIFICANDS, args.first_divisor + args.divisors)
    while d < end and time.time() - start < args.seconds:
        n = min(args.chunk, end - d)
        bad, first = check(d, n, corrected=True)
        mismatches += int(bad.sum())
        for i in torch.nonzero(bad).flatten().tolist()[: 10 - len(examples)]:
            examples.append({"divisor_bits": hex(ONE_BITS + d + i), "dividend_bits": hex(ONE_BITS + int(first[i])),
                             "mismatches": int(bad[i])})
        d += n
        checked_divisors += n
        print(f"divisor significands {args.first_divisor}..{d}: {mismatches} mismatches, "
              f"{time.time() - start:.1f} s", flush=True)
    result = {
        "device": torch.cuda.get_device_name(),
        "triton": triton.__version__,
        "first_divisor": args.first_divisor,
        "divisors_checked": checked_divisors,
        "pairs_checked": checked_divisors * SIGNIFICANDS,
        "complete": checked_divisors == SIGNIFICANDS,
        "mismatches": mismatches,
        "examples": examples,
        "control_mismatches_uncorrected": control,
        "seconds": round(time.time() - start, 1),
    }
    print(json.dumps(result, indent=2))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
