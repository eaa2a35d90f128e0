#!/usr/bin/env bash
# One device command: flashopt beside flashoptim 0.1.4 and torch's fused AdamW on the
# same GPU, one after the other (flashopt-bench: AdamW-24 exact and approximate on 4M,
# 268M, GPT-2 124M and Llama-3.1-8B x4, the copy ceiling in the same process, the
# in-place lines; Lion-24 and SGD-24 on 268M; then scripts/bench_reference.py on the
# same workloads), ncu's counters of the AdamW-24 step on 64M, and the GPU tests.
# Binaries in .dev/ranges.tar.xz, built on the CPU machine and stripped:
#   cargo test --release --features gpu-tests --test gpu --no-run   -> ranges/gpu-tests
#   cargo build --release -p flashopt-bench                          -> ranges/flashopt-bench
# flashoptim 0.1.4 unpacked into .dev/pylib (carried as .dev/pylib.tgz).
set -uo pipefail
out=${1:?OUT}
W=/tmp/value-ranges
rm -rf $W && mkdir -p $W
exec > >(tee "$W/run.log") 2>&1
tar xJf .dev/ranges.tar.xz -C .dev
tar xzf .dev/pylib.tgz -C .dev
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
only="4M,268M,GPT-2 124M,Llama-3.1-8B x4 layers"
timeout 150 .dev/ranges/flashopt-bench run --out $W/adamw --masters 24 --optimizers AdamW \
  --arithmetic exact,approximate --only "$only" > $W/adamw.log 2>&1
echo "adamw rc=$? at ${SECONDS}s"; grep -h '^AdamW' $W/adamw/flashopt.csv
grep -o "gradients read in place.*" $W/adamw.log
timeout 60 .dev/ranges/flashopt-bench run --out $W/lion-sgd --masters 24 --optimizers Lion,SGD \
  --only "268M" > $W/lion-sgd.log 2>&1
echo "lion-sgd rc=$? at ${SECONDS}s"; grep -hE '^(Lion|SGD)' $W/lion-sgd/flashopt.csv
PYTHONPATH=.dev/pylib timeout 150 python3 scripts/bench_reference.py $W/reference.csv "$only" > $W/reference.log 2>&1
echo "reference rc=$? at ${SECONDS}s"; cat $W/reference.csv
scripts/ncu_step.sh .dev/ranges/flashopt-bench $W/ncu > $W/ncu.log 2>&1
echo "ncu rc=$? at ${SECONDS}s"; grep -E "inst_executed|registers|throughput|stalled" $W/ncu.log | head -12
tar czf "$out/value-ranges.tgz" -C $W .
FLASHOPT_GPU_REPORT=$W/gpu.md timeout $((585 - SECONDS)) .dev/ranges/gpu-tests --test-threads 1 > $W/gpu-tests.log 2>&1
echo "gpu-tests rc=$? at ${SECONDS}s"
grep -E "^test |test result|FAILED|panicked" $W/gpu-tests.log | tail -40
tar czf "$out/value-ranges.tgz" -C $W .
