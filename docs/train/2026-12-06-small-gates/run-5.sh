#!/usr/bin/env bash
# Planned, not yet run (one device command): the burn CUDA adapter check alone (now built
# through from_optimizer with clipping and a running step count); then, side by side, seed
# 1's nine missing runs (jobs-5.txt, all at once, until 570 s), the GPU tests (Adam and SgdW
# on GPT-2's tensors and write_grads in place are new) and the candle CUDA check.
# Binaries as in run-1.sh, built from the commit that added this script.
set -uo pipefail
out=${1:?OUT}
W=/tmp/small-gates-5
rm -rf $W && mkdir -p $W/logs $W/gpu
exec > >(tee "$W/run-5.log") 2>&1
tar xJf .dev/bins.tar.xz -C .dev
tar xzf .dev/autotune.tgz
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
timeout 120 .dev/bin/train --check-adapter 5 > $W/gpu/burn-adapter-check.log 2>&1
echo "burn adapter check rc=$?"; tail -2 $W/gpu/burn-adapter-check.log
echo "== jobs from ${SECONDS}s"
scripts/train_jobs.sh $W 9 $((570 - SECONDS)) docs/train/2026-12-06-small-gates/jobs-5.txt &
jobs_pid=$!
scripts/cuda_libs.sh /tmp/cudalibs > $W/gpu/candle-libs.txt
libs=$(tail -1 $W/gpu/candle-libs.txt)
LD_LIBRARY_PATH=$libs timeout 120 .dev/bin/cuda_check 5 > $W/gpu/candle-cuda-check.log 2>&1
echo "candle cuda_check rc=$?"; tail -2 $W/gpu/candle-cuda-check.log
FLASHOPT_GPU_REPORT=$W/gpu/gpu.md timeout $((565 - SECONDS)) .dev/bin/gpu-tests --test-threads 1 > $W/gpu/gpu-tests.log 2>&1
echo "gpu-tests rc=$?"
grep -E "test result|FAILED|panicked" $W/gpu/gpu-tests.log | head
wait $jobs_pid
cat $W/jobs.log
echo "== done at ${SECONDS}s"
tar czf "$out/run-5.tgz" -C $W .
