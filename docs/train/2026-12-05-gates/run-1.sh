#!/usr/bin/env bash
# Run 1 (one device command): the GPU tests of this build; the CUDA adapter check;
# flashopt-bench of this build against the build before the step protocol moved into
# flashopt-runtime (AdamW-24 on 268M, GPT-2 124M and Llama-3.1-8B x4, alternated three
# times, alone on the GPU); then the AdamW gates of jobs-1.txt, 3 at a time, until 570 s.
# Binaries built on the CPU machine and carried in .dev/bin (see docs/BENCHMARKS.md).
set -uo pipefail
out=${1:?OUT}
W=/tmp/w1
mkdir -p $W/logs $out/bench
exec > >(tee "$out/run-1.log") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
FLASHOPT_GPU_REPORT=$out/gpu.md timeout 150 .dev/bin/gpu-tests --test-threads 1 > $out/gpu-tests.log 2>&1
grep -E "test result|FAILED|panicked" $out/gpu-tests.log
timeout 60 .dev/bin/train --check-adapter 5 2>&1 | tail -2
for round in 1 2 3; do
  for build in flashopt-bench-before flashopt-bench; do
    timeout 60 .dev/bin/$build run --out $out/bench/$build-$round --masters 24 --optimizers AdamW \
      --only "268M,GPT-2 124M,Llama-3.1-8B x4 layers" > $out/bench/$build-$round.log 2>&1
    echo "$build round $round rc=$?"
  done
done
echo "== jobs from ${SECONDS}s"
scripts/train_jobs.sh $W 3 $((570 - SECONDS)) docs/train/2026-12-05-gates/jobs-1.txt
cat $W/jobs.log
tar czf "$out/run-1.tgz" -C $W .
echo "== done at ${SECONDS}s"
