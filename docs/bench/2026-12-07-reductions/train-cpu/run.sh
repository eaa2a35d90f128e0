#!/usr/bin/env bash
# CPU (NdArray backend, flashopt's CPU reference): tiny config, 800 steps, two seeds.
# Built first: cargo build --release --example train
set -u
cd "$(dirname "$0")/../../../.."
for seed in 1 2; do
  for opt in adamw lamb cautious_adamw; do
    ./target/release/examples/train --backend cpu --config tiny --steps 800 --seed $seed \
      --optimizer $opt --runs flashopt-fp32,flashopt --out docs/bench/2026-12-07-reductions/train-cpu/$opt-seed$seed > docs/bench/2026-12-07-reductions/train-cpu/$opt-seed$seed.log 2>&1
    echo "$opt seed $seed rc=$?"
  done
done
