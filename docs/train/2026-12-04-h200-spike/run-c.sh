#!/usr/bin/env bash
# Run C (one device command, one H200): the shipped AdamW-24 with its momentum bounded
# by its second moment (the fix), on the 353M GPT; burn's fp32 runs are run B's (the
# same binary's baseline path and seeds). First the adapter check: the CUDA adapter's
# fused step against the CPU reference, bit for bit, over 5 steps of a small GPT.
set -uo pipefail
out=${1:?OUT}
exec > >(tee "$out/run-c.log") 2>&1
t=.dev/bin/train
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
$t --check-adapter 5 2>&1 | tail -4
run() { # DIR RUN [FLAGS...]
  local dir=$1 r=$2; shift 2
  $t --backend cuda --config gpt350m --runs "$r" --out "/tmp/c/$dir" "$@" | grep -E "^\| $r \|"
  tar czf "$out/run-c.tgz" -C /tmp c
}
run seed7-f32-loss flashopt-bf16 --seed 7
run seed7-bf16-loss flashopt-bf16 --seed 7 --bf16-loss
run seed2026-f32-loss flashopt-bf16 --seed 2026
run seed2026-bf16-loss flashopt-bf16 --seed 2026 --bf16-loss
run seed2026-f32-loss flashopt --seed 2026
