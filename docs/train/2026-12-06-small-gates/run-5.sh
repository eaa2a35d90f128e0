#!/usr/bin/env bash
# One device command (ran 2026-12-06, `run-5/`): the burn CUDA adapter check alone (now built
# through from_optimizer with clipping and a running step count); then, side by side, seed
# 1's nine missing runs (jobs-5.txt, all at once, until 570 s), the GPU tests (Adam and SgdW
# on GPT-2's tensors and write_grads in place are new) and the candle CUDA check.
# Binaries as in run-1.sh, built from the commit that added this script. The autotune
# cache carried in is an H100's: on another GPU burn would tune the small configuration's
# shapes again (554 s alone), so there the seed-1 jobs are left out and only the checks run.
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
jobs_pid=
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H100; then
  echo "== jobs from ${SECONDS}s"
  scripts/train_jobs.sh $W 9 $((570 - SECONDS)) docs/train/2026-12-06-small-gates/jobs-5.txt &
  jobs_pid=$!
else
  echo "== not an H100: seed 1's jobs left out"
fi
scripts/cuda_libs.sh /tmp/cudalibs > $W/gpu/candle-libs.txt
libs=$(tail -1 $W/gpu/candle-libs.txt)
LD_LIBRARY_PATH=$libs timeout 120 .dev/bin/cuda_check 5 > $W/gpu/candle-cuda-check.log 2>&1
echo "candle cuda_check rc=$?"; tail -2 $W/gpu/candle-cuda-check.log
FLASHOPT_GPU_REPORT=$W/gpu/gpu.md timeout $((565 - SECONDS)) .dev/bin/gpu-tests --test-threads 1 > $W/gpu/gpu-tests.log 2>&1
echo "gpu-tests rc=$?"
grep -E "test result|FAILED|panicked" $W/gpu/gpu-tests.log | head
if [ -n "$jobs_pid" ]; then wait $jobs_pid; cat $W/jobs.log; fi
echo "== done at ${SECONDS}s"
tar czf "$out/run-5.tgz" -C $W .
