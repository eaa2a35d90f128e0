#!/usr/bin/env bash
# One device command. Alone on the GPU: the GPU tests of the reducing optimizers (LAMB,
# Cautious AdamW, Adam-mini, and Adafactor with and without momentum, the first with
# values per column on the GPU), flashopt-bench's Adafactor-24 and AdamW-24 with the copy
# ceiling in the same process, scripts/row_column_reference.py (torch's Adafactor,
# Adam-mini from its paper, torch's fused AdamW). Then side by side: the small
# configuration's training jobs (jobs-1.txt, 8 at a time), ncu of one Adafactor-24 step
# on 64M, and the other GPU tests. The archive is written after every part: a command
# cut short returns what finished. Binaries built on the CPU machine, stripped, carried
# as .dev/cols.tar.xz:
#   cargo test --release --features gpu-tests --test gpu --no-run   -> cols/gpu-tests
#   cargo build --release -p flashopt-bench                          -> cols/flashopt-bench
#   cargo build --release --example train                            -> cols/train
set -uo pipefail
out=${1:?OUT}
D=docs/bench/2026-12-07-columns-gpu
W=/tmp/cols-1
rm -rf $W && mkdir -p $W/logs
exec > >(tee "$W/run.log") 2>&1
archive() { tar czf "$out/cols-1.tgz" -C $W . ; }
tar xJf .dev/cols.tar.xz -C .dev
tar xzf docs/train/2026-12-06-sgd-rate/run-3/autotune.tgz
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
FLASHOPT_GPU_REPORT=$W/gpu-reductions.md timeout 150 .dev/cols/gpu-tests --test-threads 1 reductions > $W/gpu-reductions.log 2>&1
echo "gpu reductions rc=$? at ${SECONDS}s"
grep -E "^test |test result|FAILED|panicked" $W/gpu-reductions.log | tail -20
cat $W/gpu-reductions.md
archive
only="268M,GPT-2 124M,Llama-3.1-8B x4 layers"
timeout 150 .dev/cols/flashopt-bench run --out $W/bench --masters 24 --optimizers Adafactor,AdamW \
  --only "$only" > $W/bench.log 2>&1
echo "bench rc=$? at ${SECONDS}s"; grep -hE '^(Adafactor|AdamW)' $W/bench/flashopt.csv; grep -i "copy\|panick" $W/bench.log | head -3
archive
timeout 120 python3 scripts/row_column_reference.py $W/row_column_reference.csv "$only" > $W/row-reference.log 2>&1
echo "row reference rc=$? at ${SECONDS}s"; cat $W/row_column_reference.csv
archive
echo "== jobs from ${SECONDS}s"
MIN_SECONDS=200 scripts/train_jobs.sh $W 8 $((575 - SECONDS)) $D/jobs-1.txt &
jobs_pid=$!
timeout 80 ncu --clock-control none -k regex:flashopt --launch-skip 16 --launch-count 8 --section SpeedOfLight \
  --section LaunchStats --section MemoryWorkloadAnalysis --metrics smsp__thread_inst_executed.sum,smsp__inst_executed.sum \
  .dev/cols/flashopt-bench run --out $W/ncu-bench --only 64M --optimizers Adafactor --masters 24 > $W/ncu-Adafactor-24-64M.txt 2>&1
echo "ncu rc=$? at ${SECONDS}s"
archive
FLASHOPT_GPU_REPORT=$W/gpu.md timeout $((560 - SECONDS)) .dev/cols/gpu-tests --test-threads 1 --skip reductions > $W/gpu-tests.log 2>&1
echo "gpu-tests rc=$? at ${SECONDS}s"
grep -E "test result|FAILED|panicked" $W/gpu-tests.log | head
archive
wait $jobs_pid; cat $W/jobs.log
echo "== done at ${SECONDS}s"
archive
