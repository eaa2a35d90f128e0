#!/usr/bin/env bash
# CPU (burn's NdArray backend, flashopt's CPU reference): the tiny configuration, 800
# steps, seeds 1 and 2, Adafactor with its 8-bit first moment, in fp32
# (`flashopt-fp32`: f32 parameters and states) and 24-bit (`flashopt`: bf16 parameters
# with int8 corrections, the momentum 8-bit; the states per row and column f32 in both).
# Built first: cargo build --release --example train
set -u
cd "$(dirname "$0")/../../.."
out=docs/train/2026-12-07-rows-columns
for seed in 1 2; do
  opt=adafactor_momentum
  ./target/release/examples/train --backend cpu --config tiny --steps 800 --seed $seed \
    --optimizer $opt --runs flashopt-fp32,flashopt --out $out/$opt-seed$seed > $out/$opt-seed$seed.log 2>&1
  echo "$opt seed $seed rc=$? at ${SECONDS}s"
done
