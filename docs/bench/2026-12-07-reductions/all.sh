#!/usr/bin/env bash
# One device command: the GPU tests of the reducing optimizers first (LAMB and Cautious
# AdamW bit-equal to the CPU reference; then the whole GPU suite), then flashopt-bench's
# Lamb-24 and CautiousAdamW-24 (and AdamW-24 beside them) on 268M, GPT-2 124M and
# Llama-3.1-8B x4 with the copy ceiling in the same process, then
# scripts/reducing_reference.py (PyTorch LAMB and Cautious AdamW written from the
# papers with torch's _foreach operations, and torch's fused AdamW) on the same
# workloads. Binaries in .dev/reductions.tar.xz, built on the CPU machine and stripped:
#   cargo test --release --features gpu-tests --test gpu --no-run   -> reductions/gpu-tests
#   cargo build --release -p flashopt-bench                          -> reductions/flashopt-bench
set -uo pipefail
out=${1:?OUT}
W=/tmp/reductions
rm -rf $W && mkdir -p $W
exec > >(tee "$W/run.log") 2>&1
tar xJf .dev/reductions.tar.xz -C .dev
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
FLASHOPT_GPU_REPORT=$W/gpu-reductions.md timeout 120 .dev/reductions/gpu-tests --test-threads 1 reductions > $W/gpu-reductions.log 2>&1
echo "gpu reductions rc=$? at ${SECONDS}s"
grep -E "^\| |^test |test result|FAILED|panicked" $W/gpu-reductions.log | tail -20
only="268M,GPT-2 124M,Llama-3.1-8B x4 layers"
timeout 150 .dev/reductions/flashopt-bench run --out $W/bench --masters 24 --optimizers Lamb,CautiousAdamW,AdamW \
  --only "$only" > $W/bench.log 2>&1
echo "bench rc=$? at ${SECONDS}s"; grep -hE '^(Lamb|Cautious|AdamW|copy)' $W/bench/flashopt.csv; grep -i "copy" $W/bench.log | head -3
timeout 150 python3 scripts/reducing_reference.py $W/reducing_reference.csv "$only" > $W/reference.log 2>&1
echo "reference rc=$? at ${SECONDS}s"; cat $W/reducing_reference.csv; tail -3 $W/reference.log
tar czf "$out/reductions.tgz" -C $W .
FLASHOPT_GPU_REPORT=$W/gpu.md timeout $((585 - SECONDS)) .dev/reductions/gpu-tests --test-threads 1 > $W/gpu-tests.log 2>&1
echo "gpu-tests rc=$? at ${SECONDS}s"
grep -E "^test |test result|FAILED|panicked" $W/gpu-tests.log | tail -40
tar czf "$out/reductions.tgz" -C $W .
