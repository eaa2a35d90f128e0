#!/usr/bin/env bash
# The momentum error study on the CPU (this machine: 2 cores, about 45 s a run): the
# tiny configuration for 600 steps, seeds 2026 and 1, Muon-24 (8-bit momentum) and
# Muon fp32 (f32 momentum: the probe's control, every cosine 1), comparing every 10
# steps. Usage: bash docs/train/2026-12-07-muon-momentum/run.sh
set -euo pipefail
cargo build --release --example train
for seed in 2026 1; do
  mkdir -p docs/train/2026-12-07-muon-momentum/seed$seed
  target/release/examples/train --backend cpu --config tiny --optimizer muon --steps 600 \
    --seed $seed --runs flashopt,flashopt-fp32 --momentum-error-every 10 \
    --out docs/train/2026-12-07-muon-momentum/seed$seed \
    2>&1 | tee docs/train/2026-12-07-muon-momentum/seed$seed/train.log
done
