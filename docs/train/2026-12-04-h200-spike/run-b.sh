#!/usr/bin/env bash
# Run B (one device command, one H200): the shipped AdamW-24 (step cap on) on the 353M
# GPT against burn's fp32 AdamW, f32 and bf16 loss, seeds 2026 and 7; and flashoptim's
# arithmetic (cap off) with the f32 loss. Binary: `cargo build --release --example
# train`, stripped into .dev/bin/train. Each run is its own process.
set -uo pipefail
out=${1:?OUT}
exec > >(tee "$out/run-b.log") 2>&1
t=.dev/bin/train
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
run() { # DIR RUN [FLAGS...]
  local dir=$1 r=$2; shift 2
  $t --backend cuda --config gpt350m --runs "$r" --out "/tmp/b/$dir" "$@" | grep -E "^\| $r |FAILED|final validation loss" | grep -E "^- $r:|^\| $r |FAILED"
  tar czf "$out/run-b.tgz" -C /tmp b
}
for seed in 2026 7; do
  run "seed$seed-f32-loss" burn-fp32 --seed $seed
  mkdir -p /tmp/b/seed$seed-bf16-loss
  cp /tmp/b/seed$seed-f32-loss/*burn-fp32* /tmp/b/seed$seed-bf16-loss/
  run "seed$seed-f32-loss" flashopt-bf16 --seed $seed
  run "seed$seed-bf16-loss" flashopt-bf16 --seed $seed --bf16-loss
done
run seed2026-f32-loss flashopt-bf16-flashoptim --seed 2026
run seed2026-f32-loss flashopt --seed 2026
for d in /tmp/b/*; do echo "== $d"; cat $d/summary.md; done
