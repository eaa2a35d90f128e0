#!/usr/bin/env bash
# The second device command, after the reduction kernels' fix (their shared-memory tree
# unrolled at expansion), on one GPU (burn's autotune cache of the small configuration,
# carried in, was filled on an H100; its keys name shapes, not the device): alone on the GPU, the GPU tests of the reducing optimizers, flashopt-bench's
# Lamb-24, CautiousAdamW-24 and AdamW-24 with the copy ceiling in the same process, and
# scripts/reducing_reference.py; then, side by side, the small configuration's training
# jobs (jobs-small.txt, 8 at a time, none started with under 200 s left), ncu of one
# Lamb-24 step on 64M (instruction counts; durations there share the GPU) and the rest of
# the GPU tests. Binaries built on the CPU machine at 22aca52 (the commit before this line changed),
# stripped, carried as .dev/reductions.tar.xz:
#   cargo test --release --features gpu-tests --test gpu --no-run   -> reductions/gpu-tests
#   cargo build --release -p flashopt-bench                          -> reductions/flashopt-bench
#   cargo build --release --example train                            -> reductions/train
set -uo pipefail
out=${1:?OUT}
D=docs/bench/2026-12-07-reductions
W=/tmp/reductions-again
rm -rf $W && mkdir -p $W/logs
exec > >(tee "$W/run.log") 2>&1
tar xJf .dev/reductions.tar.xz -C .dev
tar xzf docs/train/2026-12-06-sgd-rate/run-3/autotune.tgz
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
FLASHOPT_GPU_REPORT=$W/gpu-reductions.md timeout 90 .dev/reductions/gpu-tests --test-threads 1 reductions > $W/gpu-reductions.log 2>&1
echo "gpu reductions rc=$? at ${SECONDS}s"
grep -E "^test |test result|FAILED|panicked" $W/gpu-reductions.log | tail -20
only="268M,GPT-2 124M,Llama-3.1-8B x4 layers"
timeout 150 .dev/reductions/flashopt-bench run --out $W/bench --masters 24 --optimizers Lamb,CautiousAdamW,AdamW \
  --only "$only" > $W/bench.log 2>&1
echo "bench rc=$? at ${SECONDS}s"; grep -hE '^(Lamb|Cautious|AdamW)' $W/bench/flashopt.csv; grep -i "copy\|panick" $W/bench.log | head -3
timeout 100 python3 scripts/reducing_reference.py $W/reducing_reference.csv "$only" > $W/reference.log 2>&1
echo "reference rc=$? at ${SECONDS}s"; cat $W/reducing_reference.csv
tar czf "$out/reductions-again.tgz" -C $W .
echo "== jobs from ${SECONDS}s"
MIN_SECONDS=200 scripts/train_jobs.sh $W 8 $((575 - SECONDS)) $D/jobs-small.txt &
jobs_pid=$!
timeout 90 ncu --clock-control none -k regex:flashopt --launch-skip 12 --launch-count 8 --section SpeedOfLight \
  --section LaunchStats --metrics smsp__thread_inst_executed.sum,smsp__inst_executed.sum \
  .dev/reductions/flashopt-bench run --out $W/ncu-bench --only 64M --optimizers Lamb --masters 24 > $W/ncu-Lamb-24-64M.txt 2>&1
echo "ncu rc=$? at ${SECONDS}s"
FLASHOPT_GPU_REPORT=$W/gpu.md timeout $((565 - SECONDS)) .dev/reductions/gpu-tests --test-threads 1 --skip reductions > $W/gpu-tests.log 2>&1
echo "gpu-tests rc=$? at ${SECONDS}s"
grep -E "test result|FAILED|panicked" $W/gpu-tests.log | head
wait $jobs_pid; cat $W/jobs.log
echo "== done at ${SECONDS}s"
tar czf "$out/reductions-again.tgz" -C $W .
