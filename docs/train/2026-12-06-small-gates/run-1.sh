#!/usr/bin/env bash
# Run 1 (one device command, one H100): flashopt-bench of this build beside the build the
# runtime refactor started from (c5d5dec; AdamW-24 on 268M, GPT-2 124M and Llama-3.1-8B x4,
# alternated twice, alone on the GPU); then, side by side: the small configuration's gate
# jobs (jobs.txt from the top, 6 at a time, none started with under 230 s left, until 570 s,
# burn's autotune cache of docs/train/2026-12-06-sgd-rate/run-3 carried in), the GPU tests,
# the burn CUDA adapter check and the candle CUDA adapter check.
# Binaries built on the CPU machine, stripped, carried as .dev/bins.tar.xz:
#   cargo build --release --example train                            -> train
#   cargo test --release --features gpu-tests --test gpu --no-run    -> gpu-tests
#   cargo build --release -p flashopt-bench                          -> flashopt-bench
#   the same at c5d5dec (a git worktree)                             -> flashopt-bench-before
#   scripts/candle_cuda_build.sh target/candle-cuda --release        -> cuda_check
set -uo pipefail
out=${1:?OUT}
W=/tmp/small-gates-1
rm -rf $W && mkdir -p $W/logs $W/bench $W/gpu
exec > >(tee "$W/run-1.log") 2>&1
tar xJf .dev/bins.tar.xz -C .dev
tar xzf .dev/autotune.tgz
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
for round in 1 2; do
  for build in flashopt-bench-before flashopt-bench; do
    timeout 60 .dev/bin/$build run --out $W/bench/$build-$round --masters 24 --optimizers AdamW \
      --only "268M,GPT-2 124M,Llama-3.1-8B x4 layers" > $W/bench/$build-$round.log 2>&1
    echo "$build round $round rc=$?"; tail -3 $W/bench/$build-$round.log | cut -c1-150
  done
done
echo "== jobs from ${SECONDS}s"
MIN_SECONDS=230 scripts/train_jobs.sh $W 6 $((570 - SECONDS)) docs/train/2026-12-06-small-gates/jobs.txt &
jobs_pid=$!
timeout 120 .dev/bin/train --check-adapter 5 > $W/gpu/burn-adapter-check.log 2>&1
echo "burn adapter check rc=$?"; tail -2 $W/gpu/burn-adapter-check.log
libs=/tmp/cudalibs; mkdir -p $libs
for n in libcublas.so.13 libcublasLt.so.13 libnvrtc.so.13 libcurand.so.10 libcudart.so.13; do
  f=$(find /opt /usr/local /usr/lib -name "$n*" 2>/dev/null | grep -v stubs | head -1)
  echo "$n -> ${f:-MISSING}"; [ -n "$f" ] && ln -sf "$f" $libs/$n
done > $W/gpu/candle-libs.txt
LD_LIBRARY_PATH=$libs timeout 120 .dev/bin/cuda_check 5 > $W/gpu/candle-cuda-check.log 2>&1
echo "candle cuda_check rc=$?"; tail -4 $W/gpu/candle-cuda-check.log
FLASHOPT_GPU_REPORT=$W/gpu/gpu.md timeout $((560 - SECONDS)) .dev/bin/gpu-tests --test-threads 1 > $W/gpu/gpu-tests.log 2>&1
echo "gpu-tests rc=$?"
grep -E "test result|FAILED|panicked" $W/gpu/gpu-tests.log | head
wait $jobs_pid
cat $W/jobs.log
echo "== done at ${SECONDS}s"
tar czf "$out/run-1.tgz" -C $W .
