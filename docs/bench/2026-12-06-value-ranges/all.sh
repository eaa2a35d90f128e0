#!/usr/bin/env bash
# One device command, when only one could be had: run.sh's timings (flashopt beside
# flashoptim 0.1.4 and torch in the same session), then gpu.sh's ncu counters and GPU
# tests in the time left. Same binaries (.dev/ranges.tar.xz) and .dev/pylib.tgz.
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
