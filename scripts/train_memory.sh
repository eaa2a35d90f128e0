#!/usr/bin/env bash
# The peak-memory comparison of docs/TRAINING.md on the GPU machine: the 353M-parameter
# GPT (examples/train, config gpt350m) with flashopt's AdamW-24 and burn's AdamW, each
# run in its own process so that each starts on an empty device and its memory
# figures are its own. The binary is built on the development machine:
#
#   cargo build --release --example train && cp target/release/examples/train .dev/bin/
#
# Usage on the GPU machine: scripts/train_memory.sh OUT [RUNS]  (RUNS: a comma list of
# flashopt-bf16, flashopt-bf16-flashoptim, flashopt, flashopt-flashoptim, burn-bf16,
# burn-fp32; all six by default; `-flashoptim` is AdamW without its momentum bound).
# Then, anywhere:
#   cargo run --release --example train -- --plot-only OUT
set -uo pipefail
out=${1:?OUT folder}
runs=${2:-flashopt-bf16,flashopt-bf16-flashoptim,flashopt,flashopt-flashoptim,burn-bf16,burn-fp32}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/device.txt"
for run in ${runs//,/ }; do
  echo "== $run" | tee -a "$out/train.log"
  .dev/bin/train --backend cuda --config gpt350m --runs "$run" --out "$out" 2>&1 \
    | tr '\r' '\n' | grep -v '^\s*$' | tail -n 25 | tee -a "$out/train.log"
done
