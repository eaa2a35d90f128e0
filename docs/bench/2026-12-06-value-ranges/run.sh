#!/usr/bin/env bash
# One device command: flashopt beside flashoptim 0.1.4 and torch's fused AdamW on the
# same GPU, in one process each after the other: flashopt-bench (AdamW-24 exact and
# approximate, Lion-24, SGD-24 on 4M, 268M, GPT-2 124M and Llama-3.1-8B x4; the copy
# ceiling in the same process; the in-place lines with and without the device gradient
# check), then scripts/bench_reference.py on the same workloads.
# Binary in .dev/ranges.tar.xz (see gpu.sh); flashoptim 0.1.4 unpacked into .dev/pylib
# (carried as .dev/pylib.tgz).
set -uo pipefail
out=${1:?OUT}
W=/tmp/value-ranges
rm -rf $W && mkdir -p $W
exec > >(tee "$W/run.log") 2>&1
tar xJf .dev/ranges.tar.xz -C .dev
tar xzf .dev/pylib.tgz -C .dev
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
only="4M,268M,GPT-2 124M,Llama-3.1-8B x4 layers"
timeout 200 .dev/ranges/flashopt-bench run --out $W/adamw --masters 24 --optimizers AdamW \
  --arithmetic exact,approximate --only "$only" > $W/adamw.log 2>&1
echo "adamw rc=$?"; grep -h '^AdamW' $W/adamw/flashopt.csv
grep -o "gradients read in place.*" $W/adamw.log
timeout 120 .dev/ranges/flashopt-bench run --out $W/lion-sgd --masters 24 --optimizers Lion,SGD \
  --only "268M,GPT-2 124M" > $W/lion-sgd.log 2>&1
echo "lion-sgd rc=$?"; grep -hE '^(Lion|SGD)' $W/lion-sgd/flashopt.csv
PYTHONPATH=.dev/pylib timeout $((590 - SECONDS)) python3 scripts/bench_reference.py $W/reference.csv "$only" > $W/reference.log 2>&1
echo "reference rc=$?"; cat $W/reference.csv
echo "== done at ${SECONDS}s"
tar czf "$out/value-ranges.tgz" -C $W .
